"""Helpers for CLI-level tests: a refused command exits 2 with one line, no traceback and no folder left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxr_irgen.cli import main


def refused(argv: list[str], capsys, cwd: Path, monkeypatch) -> str:
    """Run the CLI in ``cwd``; assert exit status 2, one stderr line, no traceback and nothing new in ``cwd``; return the line."""
    before = sorted(cwd.iterdir())
    capsys.readouterr()  # only this command's output counts
    monkeypatch.chdir(cwd)
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and "it/s]" not in line]  # a progress bar drawn before the error is not part of it
    assert stop.value.code == 2, err
    assert len(lines) == 1 and lines[0].startswith("cxr-irgen ") and "Traceback" not in err, err
    assert sorted(cwd.iterdir()) == before, sorted(cwd.iterdir())
    return lines[0]
