"""The `cxr-irgen` entry point: command listing, per-command Hydra help, one-line user errors, wheel configs."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

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
