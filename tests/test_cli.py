"""The `cxr-irgen` entry point: command listing, per-command Hydra help, one-line user errors, wheel configs."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from cli_helpers import refused

from cxr_irgen.cli import COMMANDS, main, run_command, translate_flags

REPO = Path(__file__).resolve().parents[1]
EXE = [sys.executable, "-m", "cxr_irgen.cli"]


def test_help_lists_every_command(capsys):
    main(["--help"])
    out = capsys.readouterr().out
    for name, command in COMMANDS.items():
        assert f"  {name}" in out and command.summary in out


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_command_help_shows_its_config(name, capsys):
    with pytest.raises(SystemExit) as stop:
        run_command(name, ["--help"])
    assert stop.value.code in (0, None)
    out = capsys.readouterr().out
    assert "== Config ==" in out and "seed:" in out


def test_unknown_override_is_one_line_without_traceback(tmp_path):
    proc = subprocess.run([*EXE, "make-phantoms", "no_such_key=1"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no_such_key" in lines[0] and "Traceback" not in proc.stderr


def test_unknown_command_is_rejected():
    proc = subprocess.run([*EXE, "train-everything"], capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown command" in proc.stderr


def test_flags_become_quoted_overrides():
    assert translate_flags(["--labels", "Cardiomegaly=1, Pleural Effusion=-1", "--n", "4", "-m", "seed=1"]) == [
        "labels='Cardiomegaly=1, Pleural Effusion=-1'",
        "n='4'",
        "-m",
        "seed=1",
    ]
    assert translate_flags(["--labels=Edema=0"]) == ["labels='Edema=0'"]


def test_configs_ship_inside_the_wheel(tmp_path):
    """Configs must be found from an installed wheel, not only from a checkout."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "whl"), str(REPO)],
        check=True, capture_output=True,
    )
    wheel = next((tmp_path / "whl").glob("*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(tmp_path / "site")
    proc = subprocess.run(
        [sys.executable, "-c", "from cxr_irgen.cli import main; main(['prepare-data', '--cfg', 'job'])"],
        capture_output=True, text=True, cwd=tmp_path, env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "name: phantom" in proc.stdout
    assert proc.stdout and str(tmp_path / "site") in subprocess.run(
        [sys.executable, "-c", "import cxr_irgen; print(cxr_irgen.__file__)"],
        capture_output=True, text=True, cwd=tmp_path, env={"PYTHONPATH": str(tmp_path / "site")},
    ).stdout


def test_misspelt_key_names_the_closest_valid_key(tmp_path, capsys, monkeypatch):
    for override in ("trainer.max_step=5", "+trainer.max_step=5"):  # `+key` would be accepted by Hydra and then ignored
        line = refused(["train-vision", override], capsys, tmp_path, monkeypatch)
        assert "unknown config key 'trainer.max_step'" in line and "did you mean trainer.max_steps" in line, line


def test_resume_with_nothing_to_resume_is_refused(tmp_path, capsys, monkeypatch):
    assert "add hydra.run.dir=RUN_DIR" in refused(["train-vision", "trainer.resume=latest"], capsys, tmp_path, monkeypatch)
    line = refused(["train-vision", "trainer.resume=latest", f"hydra.run.dir={tmp_path / 'no-run'}"], capsys, tmp_path, monkeypatch)
    assert "nothing to resume" in line


def test_resume_from_the_run_dir_alone_continues_its_saved_config_bit_exact(phantom_root, tmp_path, capsys, monkeypatch):
    """A run killed after its step-2 checkpoint (later files removed) resumed with only its run dir equals the uninterrupted run."""
    from safetensors.torch import load_file

    straight = tmp_path / "straight"
    run_command("train-vision", ["vision/model=unet-tiny", "trainer=cpu-tiny", "sample_every=0", "max_images=24", "trainer.batch_size=4",
                                 "trainer.max_steps=4", "trainer.checkpoint_every=2", "trainer.keep_checkpoints=3",
                                 f"data.root={phantom_root}", f"hydra.run.dir={straight}"])
    killed = tmp_path / "killed"
    shutil.copytree(straight, killed)
    shutil.rmtree(killed / "checkpoints" / "step-0000004")
    shutil.rmtree(killed / "model")
    saved = (killed / "config.yaml").read_bytes()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    main(["train-vision", f"hydra.run.dir={killed}", "trainer.resume=latest"])  # the defaults (unet-sd14, 5,000 steps) must not apply
    assert (killed / "config.yaml").read_bytes() == saved
    for part in ("backbone/diffusion_pytorch_model.safetensors", "conditioning.safetensors"):
        a, b = load_file(str(straight / "model" / part)), load_file(str(killed / "model" / part))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part
    assert json.loads((killed / "resumes.jsonl").read_text())["overrides"] == []
    line = refused(["train-vision", f"hydra.run.dir={killed}", "trainer.resume=latest", "vision/model=uvit-tiny"], capsys, tmp_path / "elsewhere", monkeypatch)
    assert "would change vision.model" in line and (killed / "config.yaml").read_bytes() == saved


def _generated(folder: Path, phantom_root: Path, corrupt: bool) -> Path:
    """Three phantom PA images as "generated" images with one label vector, plus a corrupt PNG when asked."""
    from cxr_irgen.data.mimic import load_index

    folder.mkdir()
    table = load_index(phantom_root)
    paths = table[table["view"] == "PA"]["image_path"].head(3).tolist()
    for i, path in enumerate(paths):
        shutil.copy(path, folder / f"{i:04d}.png")
    if corrupt:
        (folder / "0003.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    for png in folder.glob("*.png"):
        png.with_suffix(".json").write_text(json.dumps({"labels": "Cardiomegaly=1"}))
    return folder


def test_bad_image_names_the_file_and_skip_bad_counts_it(phantom_root, tmp_path, capsys, monkeypatch):
    gen = _generated(tmp_path / "gen", phantom_root, corrupt=True)
    args = ["evaluate", f"generated={gen}", f"data.root={phantom_root}", "eval.metrics=[diversity]", "eval.real.views=[PA,AP]"]
    (tmp_path / "cwd").mkdir()
    line = refused([*args, f"hydra.run.dir={tmp_path / 'cwd' / 'ev'}"], capsys, tmp_path / "cwd", monkeypatch)
    assert "0003.png" in line and "data.skip_bad=true" in line
    main([*args, "data.skip_bad=true", f"hydra.run.dir={tmp_path / 'ev'}"])
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["skipped_images"]["n"] == 1 and metrics["skipped_images"]["generated"][0]["image"].endswith("0003.png")
    assert metrics["diversity"]["n_pairs"] == 3 and "skipped 1 bad image" in capsys.readouterr().out


def test_fid_from_random_weights_is_refused_or_marked(phantom_root, tmp_path, capsys, monkeypatch):
    gen = _generated(tmp_path / "gen", phantom_root, corrupt=False)
    args = ["evaluate", f"generated={gen}", f"data.root={phantom_root}", "eval.metrics=[fid]", "eval.real.views=[PA,AP]", "eval.real.n=4"]
    (tmp_path / "cwd").mkdir()
    line = refused([*args, f"hydra.run.dir={tmp_path / 'cwd' / 'ev'}"], capsys, tmp_path / "cwd", monkeypatch)
    assert "XRV DenseNet-121 feature extractor with random weights" in line and "eval.xrv_weights=" in line and "eval.allow_random_weights=true" in line
    main([*args, "eval.allow_random_weights=true", f"hydra.run.dir={tmp_path / 'ev'}"])
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert "random" in metrics["fid"]["random_weights"] and metrics["fid"]["n_generated"] == 3
    row = next(r for r in (tmp_path / "ev" / "tables.md").read_text().splitlines() if r.startswith("| generated"))
    assert "[random weights: fid]" in row and "(RANDOM WEIGHTS)" in row and "skipped: not in eval.metrics" in row
    assert "N gen=3, N real=4" in (tmp_path / "ev" / "tables.md").read_text()


def test_auroc_cells_carry_their_counts_and_skips_their_reason():
    from cxr_irgen.eval.tables import table2, table3

    block = {"per_pathology": {"Pneumonia": {"auroc": 0.43, "n_positive": 1, "n_no_finding": 12}}, "mean": 0.43}
    _, header, rows = table2({"model": "m", "auroc": {"generated": block}, "skipped": {}})
    assert header == ["Images", "Pneumonia", "Mean"] and rows[0][1] == "0.4300 (1+/12−)"
    _, _, rows = table3({"model": "m", "skipped": {"text": "no generated reports", "chexpert_f1": "no generated reports"}})
    assert rows[0][1] == "skipped: no generated reports"


def test_help_lists_only_the_groups_a_command_uses(capsys):
    with pytest.raises(SystemExit):
        run_command("train-vision", ["--help"])
    out = capsys.readouterr().out
    groups = [line.split(":")[0].strip() for line in out.split("== Config ==")[0].splitlines() if line.startswith("  ")]
    assert groups == ["data", "experiment", "trainer", "vision/model", "vision/model/noise_schedule", "weights"]
    assert "unet-tiny" in out and "base," not in out and "paper_unet," not in out and "paper_unet_5k_rie" in out


def test_missing_data_root_is_refused_before_training(tmp_path, capsys, monkeypatch):
    line = refused(["train-vision", "vision/model=unet-tiny", f"data.root={tmp_path / 'nowhere'}"], capsys, tmp_path, monkeypatch)
    assert f"data.root={tmp_path / 'nowhere'}: not found" in line and "make-phantoms" in line
    assert "needs data.root=PATH" in refused(["train-language", "data=mimic"], capsys, tmp_path, monkeypatch)


def test_user_error_inside_a_run_removes_the_folder_hydra_made(phantom_root, tmp_path, capsys, monkeypatch):
    gen = _generated(tmp_path / "gen", phantom_root, corrupt=False)
    (tmp_path / "cwd").mkdir()
    line = refused(["evaluate", f"generated={gen}", f"data.root={phantom_root}", "eval.metrics=[diversity]", "eval.real.views=[XRAY]"],
                   capsys, tmp_path / "cwd", monkeypatch)  # found after Hydra made outputs/evaluate/<time>/: it is removed again
    assert "no real XRAY images" in line


def test_a_log_gets_whole_status_lines_not_a_redrawn_bar(tmp_path):
    proc = subprocess.run([*EXE, "make-phantoms", f"out={tmp_path / 'ph'}", "n=8", "size=32", f"hydra.run.dir={tmp_path / 'run'}"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr
    status = [line for line in proc.stderr.splitlines() if line.startswith("phantoms: ")]
    assert status[0].startswith("phantoms: 0/8 (0%)") and status[-1].startswith("phantoms: 8/8 (100%)")


def test_status_lines_are_written_at_most_once_per_interval():
    from cxr_irgen.utils.progress import StatusLines

    log = io.StringIO()
    bar = StatusLines(total=1000, desc="train", file=log, interval_s=3600)
    for _ in range(1000):
        bar.update(1)
        bar.set_postfix(loss="0.1")
    bar.close()
    assert log.getvalue().splitlines() == [line for line in log.getvalue().split("\n") if line]
    assert [line.split(" [")[0] for line in log.getvalue().splitlines()] == ["train: 0/1000 (0%)", "train: 1000/1000 (100%)"]
