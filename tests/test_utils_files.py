"""One atomic write (the target, file or folder, is replaced whole, or left as it was when writing fails), one device rule
and the process-group teardown."""

from __future__ import annotations

import pytest
import torch

from cxr_irgen.utils.device import close_process_group, resolve_device
from cxr_irgen.utils.files import atomic_path, replace_dir, write_text_atomic


def test_a_finished_write_replaces_the_target_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "pairs.json"
    target.write_text("old")
    write_text_atomic(target, "new")
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["pairs.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "table.parquet"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        assert not tmp.match("*.parquet")  # globs for the real suffix never see a half-written file
        raise RuntimeError("disk full")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["table.parquet"]


def test_auto_is_the_gpu_when_there_is_one_and_names_pass_through():
    assert resolve_device("cpu").type == "cpu" and resolve_device("cuda:1") == torch.device("cuda:1")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_the_teardown_closes_an_open_process_group_and_is_a_no_op_without_one(tmp_path):
    import torch.distributed as dist

    close_process_group()  # none open: nothing to do
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    assert dist.is_initialized()
    close_process_group()
    assert not dist.is_initialized()


def test_a_finished_folder_replaces_the_old_one(tmp_path):
    old, partial = tmp_path / "best", tmp_path / "best.partial"
    old.mkdir()
    (old / "stale.pt").write_text("old")
    partial.mkdir()
    (partial / "model.safetensors").write_text("new")
    assert replace_dir(partial, old) == old
    assert [p.name for p in old.iterdir()] == ["model.safetensors"] and not partial.exists()
