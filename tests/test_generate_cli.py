"""`cxr-irgen generate` from the command line: every bad input refused before a model loads (exit 2, one line,
no run folder), the vision run as the unit (its data is the reference pool), atomic sidecars under kill and rerun,
two processes writing the same pairs as one."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_helpers import refused
from vision_helpers import one_thread  # noqa: F401  (autouse fixture)

from cxr_irgen.cli import main, run_command

TINY_VISION = ["vision/model=unet-tiny", "trainer=cpu-tiny", "trainer.max_steps=2", "trainer.batch_size=4", "max_images=24", "sample_every=0"]
FAST = ["vision.scheduler=ddim", "vision.steps=2", "mode=images"]


@pytest.fixture(scope="module")
def vision_run(phantom_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("vision")
    run_command("train-vision", [*TINY_VISION, f"data.root={phantom_root}", f"hydra.run.dir={out}"])
    return out


@pytest.mark.parametrize("argv,expected", [
    (["--labels", ",,,"], ["names no observation"]),
    (["--labels", "Edema=1, edema=0, Heart=1, Cardiomegaly=2"], ["Edema given twice", "unknown label 'Heart'", "bad value '2' for Cardiomegaly"]),
    (["--labels", "Edema=1", "--n", "abc"], ["n='abc': give a positive whole number"]),
    (["--labels", "Edema=1", "--n", "0"], ["n='0'"]),
    (["--labels", "Edema=1", "--n", "-1"], ["n='-1'"]),
    (["--labels", "Edema=1", "vision.checkpoint=RUN", "mode=pairs", "language.checkpoint=RUN"], ["is a train-vision run, not a train-language stage=prior run"]),
    (["--labels", "Edema=1", "vision.checkpoint=RUN", "mode=pairs", "language.checkpoint=RUN", "language.avoid_copies=true"], ["set language.do_sample=true"]),
    (["--labels", "Edema=1", "vision.checkpoint=PHANTOMS"], ["is not a cxr-irgen run dir, not a finished train-vision run"]),
    (["--labels", "Edema=1", "vision.checkpoint=RUN", "data.root=ELSEWHERE"], ["the vision run was trained on data=phantom", "vision.allow_reference_mismatch=true"]),
    (["--labels", "Edema=1", "vision.chekpoint=RUN"], ["unknown config key 'vision.chekpoint'", "did you mean vision.checkpoint"]),
])
def test_bad_generate_input_is_refused_before_loading(argv, expected, vision_run, phantom_root, tmp_path, capsys, monkeypatch):
    paths = {"RUN": str(vision_run), "PHANTOMS": str(phantom_root), "ELSEWHERE": str(tmp_path)}
    argv = [next((a.replace(k, v) for k, v in paths.items() if k in a), a) for a in argv]
    if not any(a.startswith("vision.checkpoint") for a in argv):
        argv.append(f"vision.checkpoint={vision_run}")
    (tmp_path / "cwd").mkdir()
    started = time.perf_counter()
    line = refused(["generate", *FAST, *argv], capsys, tmp_path / "cwd", monkeypatch)
    assert all(piece in line for piece in expected), line
    assert time.perf_counter() - started < 10  # refused up front, not after loading models


def test_generate_takes_the_reference_pool_from_the_vision_run(vision_run, phantom_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no data/phantoms here: the data must come from the vision run
    out = tmp_path / "gen"
    main(["generate", "--labels", "Cardiomegaly=1, Pleural Effusion=-1", "--n", "2", f"vision.checkpoint={vision_run}", *FAST, f"hydra.run.dir={out}"])
    from cxr_irgen.data.mimic import load_index

    train_ids = set(load_index(phantom_root)["dicom_id"])
    rows = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(row["reference_id"] in train_ids for row in rows)
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["reference_pool"]["root"] == str(phantom_root.resolve()) and provenance["reference_pool"]["max_images"] == 24
    assert provenance["vision"]["run"] == str(vision_run.resolve()) and provenance["sampler"]["steps"] == 2
    gallery = (out / "index.html").read_text()
    assert str(phantom_root.resolve()) in gallery and "legend" in gallery and 'src="pairs/0000.png"' in gallery
    main(["evaluate", f"generated={out}", "eval.metrics=[diversity]", "eval.real.views=[PA,AP]", f"hydra.run.dir={tmp_path / 'ev'}"])
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["real"]["root"] == str(phantom_root.resolve())  # real data from the runs


def test_text_only_model_records_no_reference(phantom_root, tmp_path):
    run = tmp_path / "text-only"
    run_command("train-vision", [*TINY_VISION, "vision.model.conditioning.mode=text", f"data.root={phantom_root}", f"hydra.run.dir={run}"])
    main(["generate", "--labels", "Edema=1", f"vision.checkpoint={run}", *FAST, f"hydra.run.dir={tmp_path / 'gen'}"])
    row = json.loads((tmp_path / "gen" / "pairs.jsonl").read_text())
    assert "reference_id" not in row
    assert json.loads((tmp_path / "gen" / "provenance.json").read_text())["reference_pool"] is None


def _generate_cmd(vision_run: Path, out: Path, n: int, steps: int) -> list[str]:
    return ["generate", "labels='Cardiomegaly=1'", f"n={n}", f"vision.checkpoint={vision_run}", "mode=images", "vision.scheduler=ddim",
            f"vision.steps={steps}", "batch_size=1", "device=cpu", f"hydra.run.dir={out}"]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
            "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}


def _pngs(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "pairs").glob("*.png"))}


def _run_cli(argv: list[str]) -> None:
    try:
        main(argv)
    except SystemExit as stop:
        os._exit(stop.code or 0)
    os._exit(0)


@pytest.mark.slow
def test_killed_generate_reruns_to_the_same_pairs(vision_run, tmp_path):
    """SIGKILL mid-run, plus a torn sidecar write: the rerun skips only finished pairs and ends as an uninterrupted run."""
    import multiprocessing

    n, steps = 6, 10
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    main(_generate_cmd(vision_run, straight, n, steps))
    proc = multiprocessing.get_context("fork").Process(target=_run_cli, args=(_generate_cmd(vision_run, killed, n, steps),))
    proc.start()  # a forked CLI run: killed for real, without a fresh interpreter's import time
    deadline = time.time() + 300
    while not (killed / "pairs" / "0001.json").exists() and time.time() < deadline and proc.is_alive():
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    done = sorted(p.name for p in (killed / "pairs").glob("*.json"))
    assert 2 <= len(done) < n, f"the kill came too late to test anything: {done}"
    (killed / "pairs" / f"{n - 1:04d}.json.tmp4242").write_text('{"labels": "Cardio')  # a sidecar torn mid-write
    main(_generate_cmd(vision_run, killed, n, steps))
    assert _pngs(killed) == _pngs(straight)
    rows = [json.loads(line) for line in (killed / "pairs.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(n))


@pytest.mark.slow
def test_two_process_generate_writes_the_pairs_of_one(vision_run, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    main(_generate_cmd(vision_run, one, 4, 3))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "cxr_irgen.cli", *_generate_cmd(vision_run, two, 4, 3)]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _pngs(two) == _pngs(one) and len(_pngs(two)) == 4
    rows = [json.loads(line) for line in (two / "pairs.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == [0, 1, 2, 3]
    printed = done.stdout + done.stderr
    assert "2 left for process 0" in printed and "2 left for process 1" in printed  # each rank took its share


def test_gallery_thumbnails_dicom_and_16bit_with_relative_paths(tmp_path):
    import numpy as np
    from PIL import Image
    from test_data_imageio import _write_dicom

    from cxr_irgen.gallery import write_gallery, write_thumbnail

    _write_dicom(tmp_path / "a.dcm", np.linspace(0, 4095, 64 * 64).reshape(64, 64), "MONOCHROME2", 12)
    Image.fromarray(np.linspace(0, 65535, 64 * 64).astype(np.uint16).reshape(64, 64)).save(tmp_path / "deep.png")
    out = tmp_path / "run"
    rows = []
    for i, name in enumerate(("a.dcm", "deep.png")):
        thumb = write_thumbnail(tmp_path / name, out / "thumbs" / f"{i:04d}.png", size=32)
        with Image.open(thumb) as im:
            assert im.mode == "L" and im.size == (32, 32) and np.asarray(im).max() > 200  # 8-bit, full range kept
        rows.append({"image": str(tmp_path / name), "thumbnail": f"thumbs/{i:04d}.png", "labels": None, "report": "No acute process.", "report_labels": ""})
    info = {"mode": "reports", "language": {"what": "train-language stage=prior", "run": "/runs/prior", "data": "phantom", "data_root": "/d", "steps": 5},
            "warning": "the report model was trained on procedural phantoms"}
    html = write_gallery(rows, out / "index.html", info).read_text()
    assert 'src="thumbs/0000.png"' in html and 'src="thumbs/0001.png"' in html and str(tmp_path) + "/a.dcm\"" not in html
    assert html.count("trained on procedural phantoms") == 3  # header + one note per card
    shutil.move(str(out), str(tmp_path / "moved"))  # the folder works from anywhere
    assert all((tmp_path / "moved" / f"thumbs/{i:04d}.png").is_file() for i in range(2))


def test_reports_mode_skips_a_bad_image_only_with_skip_bad(tmp_path):
    import numpy as np
    from PIL import Image

    from cxr_irgen.errors import UserError
    from cxr_irgen.generate import collect_pairs, readable_images

    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "good.png")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff truncated")
    batch = [{"index": 0, "path": tmp_path / "good.png"}, {"index": 1, "path": tmp_path / "bad.jpg"}]
    (tmp_path / "pairs").mkdir()
    with pytest.raises(UserError, match=r"bad\.jpg.*data\.skip_bad=true"):
        readable_images(batch, 8, False, tmp_path / "pairs")
    kept, images = readable_images(batch, 8, True, tmp_path / "pairs")
    assert [item["index"] for item in kept] == [0] and images[0].shape == (1, 8, 8)
    rows, skipped = collect_pairs(tmp_path)
    assert rows == [] and len(skipped) == 1 and skipped[0]["image"].endswith("bad.jpg")  # counted, listed, and not redone on rerun


def test_a_torn_sidecar_write_leaves_no_done_marker(tmp_path, monkeypatch):
    """A sidecar's existence marks a pair done: a write that dies half way must not leave one (a plain write_text would)."""
    import torch

    from cxr_irgen.vision.pipeline import save_images

    write_text = Path.write_text

    def torn(self, data, *args, **kwargs):
        write_text(self, data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_text", torn)
    with pytest.raises(OSError):
        save_images(torch.rand(1, 1, 8, 8), [{"name": "0000", "labels": "Edema=1"}], tmp_path)
    assert (tmp_path / "0000.png").exists() and not (tmp_path / "0000.json").exists()
