"""Writing a file so that a reader never sees it half-written: write a temporary sibling, then rename it over the target.

    with atomic_path(out / "pairs.json") as tmp:
        tmp.write_text(text)                    # or frame.to_parquet(tmp), image.save(tmp, format="PNG")
    write_text_atomic(out / "manifest.json", text)
    replace_dir(out / "best.partial", out / "best")   # a folder written in full, swapped in for the old one
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path next to ``path`` (``<name>.tmp<pid>``, so globs for the real suffix skip it) that replaces
    ``path`` when the block ends; on an error it is removed and ``path`` is left as it was."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def replace_dir(partial: str | Path, final: str | Path) -> Path:
    """Swap the finished folder ``partial`` in as ``final`` (an old ``final`` is removed first); returns ``final``."""
    shutil.rmtree(final, ignore_errors=True)
    os.replace(partial, final)
    return Path(final)
