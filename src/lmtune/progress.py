"""Progress of long loops: a tqdm bar on a terminal, plain lines everywhere else.

tqdm redraws its bar with carriage returns, which fill a log file or a CI page with hundreds of
frames. Where stderr is not a terminal, `progress` prints a plain line instead every EVERY_S
seconds (and one at the end of a loop that took longer): what, how many of how many, the rate
and the time left.
"""

from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm

EVERY_S = 30.0


class PlainProgress:
    """The part of tqdm's interface lmtune uses (update, close, a context manager), as plain lines."""

    def __init__(self, total: int | None, desc: str, unit: str, file=None, every: float = EVERY_S):
        self.total, self.desc, self.unit = total, desc, unit.strip()
        self.file, self.every = file, every
        self.n = 0
        self.start = self.last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self._line(now)

    def _line(self, now: float) -> None:
        elapsed = max(now - self.start, 1e-9)
        rate = self.n / elapsed
        done = f"{self.n:,}" + (f"/{self.total:,}" if self.total else "")
        parts = [f"{self.desc}: {done} {self.unit}", f"{rate:,.1f} {self.unit}/s"]
        if self.total and rate > 0 and self.n < self.total:
            parts.append(f"ETA {(self.total - self.n) / rate:,.0f} s")
        elif self.n and (not self.total or self.n >= self.total):
            parts.append(f"done in {elapsed:,.1f} s")
        print(" · ".join(parts), file=self.file or sys.stderr, flush=True)

    def close(self) -> None:
        now = time.monotonic()
        if now - self.start >= self.every:  # short loops stay silent, long ones say they finished
            self._line(now)

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(total: int | None = None, *, desc: str, unit: str = "it", enabled: bool = True, **options):
    """A tqdm bar where stderr is a terminal, else PlainProgress; `enabled=False` shows nothing."""
    if not enabled:
        return tqdm(total=total, disable=True)
    if sys.stderr.isatty():
        return tqdm(total=total, desc=desc, unit=unit, leave=False, **options)
    return PlainProgress(total, desc, unit)
