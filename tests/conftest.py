"""Shared fixtures: offline environment, a small phantom dataset, the real data in ../shared."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # `make test` runs one worker per core: one torch thread each


def _absl_logs_to_the_real_stderr() -> None:
    """rouge_score logs through absl, whose handler keeps the ``sys.stderr`` it was created under and closes it when
    Hydra's logging setup closes every handler (``logging.config``): under pytest that stream is a capture file, and
    every later test of the process failed with "I/O operation on closed file". The real stderr is never closed."""
    from absl import logging as absl_logging

    absl_logging.get_absl_handler().python_handler.stream = sys.__stderr__


_absl_logs_to_the_real_stderr()

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real radiographs); tests using it skip when it is absent."""
    if not (SHARED_DATA / "covid-cxr" / "metadata.csv").exists():
        pytest.skip(f"real data not found at {SHARED_DATA} (see ../shared/data/README.md)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory) -> Path:
    """A small phantom dataset in the MIMIC-CXR-JPG layout (240 images, 64 px), built once per session."""
    from cxr_irgen.data.phantoms import make_phantoms

    return make_phantoms(tmp_path_factory.mktemp("phantoms"), n=240, seed=0, size=64)


@pytest.fixture(scope="session")
def report_phantoms(tmp_path_factory) -> Path:
    """1,200 phantoms (64 px) for the tests where report models must learn from images, built once per session."""
    from cxr_irgen.data.phantoms import make_phantoms

    return make_phantoms(tmp_path_factory.mktemp("phantoms-reports"), n=1200, seed=0, size=64)
