"""On-disk parquet caches of derived tables (index, report sections), written atomically."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from cxr_irgen.utils.files import atomic_path

log = logging.getLogger(__name__)


def write_cache(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` to ``path`` via a temporary file; an unwritable folder only logs a warning."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            frame.to_parquet(tmp, index=False)
    except OSError as err:
        log.warning("cannot write the cache file %s (%s); set data.cache_dir to a writable folder", path, err.strerror or err)
