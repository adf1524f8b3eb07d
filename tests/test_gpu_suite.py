"""benchmarks/gpu_suite.sh --dry-run: every benchmark and the smoke run (train-vision → generate → evaluate) with tiny models on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_suite_dry_run(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_suite.sh"), "--dry-run", str(tmp_path / "suite")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=3000)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    suite = json.loads((tmp_path / "suite" / "suite.json").read_text())
    assert suite["failed"] == [] and suite["torch"]
    for name, result in suite["benchmarks"].items():
        assert {"ours", "reference", "ratio", "machine", "command"} <= set(result), name
        assert result["ratio"] > 0 and result["command"].startswith("python benchmarks/"), name
    assert suite["smoke"]["images"] == 16
    assert suite["smoke"]["metrics"], "evaluate wrote no metrics"
