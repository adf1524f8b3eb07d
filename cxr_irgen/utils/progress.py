"""Progress reporting: a redrawn tqdm bar on a terminal, a periodic one-line status in a log.

A bar redrawn with carriage returns turns a log file into one enormous line; where stderr is not a
terminal (a file, a pipe, a batch scheduler) every bar here writes a complete line when it starts,
then at most one every ``STATUS_INTERVAL_S`` seconds, and a last one when it ends:

    train: 120/500 (24%) [00:35<01:52, 3.40it/s, loss=0.1234]
"""

from __future__ import annotations

import math
import sys
import time

from tqdm.auto import tqdm as auto_tqdm
from tqdm.autonotebook import tqdm as notebook_or_std_tqdm
from tqdm.std import tqdm

STATUS_INTERVAL_S = 30.0


class StatusLines(tqdm):
    """tqdm for logs: full lines, one per ``interval_s`` seconds plus the first and the last."""

    def __init__(self, iterable=None, *, interval_s: float = STATUS_INTERVAL_S, **kwargs):
        self._interval_s = interval_s
        self._last_line_at = -math.inf
        self._line_open = False
        self._closing = False
        kwargs.pop("dynamic_ncols", None)
        total = kwargs.get("total", len(iterable) if hasattr(iterable, "__len__") else None)
        kwargs.setdefault("bar_format", "{desc}: {n_fmt}/{total_fmt} ({percentage:.0f}%) [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
                          if total else "{desc}: {n_fmt} [{elapsed}, {rate_fmt}{postfix}]")
        super().__init__(iterable, **kwargs)

    def display(self, msg=None, pos=None):
        if msg == "":  # tqdm clearing a bar that does not stay: just end the open line
            if self._line_open:
                self.fp.write("\n")
                self._line_open = False
            return False
        now = time.monotonic()
        if msg is None and not self._closing and now - self._last_line_at < self._interval_s:
            return False
        self.fp.write(("\n" if self._line_open else "") + (self.__str__() if msg is None else msg))
        self.fp.flush()
        self._line_open, self._last_line_at = True, now
        return True

    def close(self):
        self._closing = True
        super().close()  # its last display() is written; tqdm then ends the line itself when the bar stays


def progress_bar(iterable=None, **kwargs) -> tqdm:
    """``tqdm(iterable, **kwargs)`` on a terminal or in a notebook, else :class:`StatusLines` on the same stream."""
    stream = kwargs.get("file") or sys.stderr
    interactive = (hasattr(stream, "isatty") and stream.isatty()) or notebook_or_std_tqdm is not tqdm
    return (auto_tqdm if interactive else StatusLines)(iterable, **kwargs)
