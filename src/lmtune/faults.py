"""Named points where the fault-injection tests kill this process, to prove that nothing is lost.

`LMTUNE_FAULT=site:n` SIGKILLs the process the n-th time it reaches `point(site)` (n defaults to 1):
no cleanup runs, exactly as when a machine dies or the OOM killer strikes. The variable is read
once at import; without it `point` is one comparison. Sites: data.batch (every 4,096 rows read),
train.step (each training step, before the optimizer step), checkpoint.weights (weights written,
optimizer and trainer state not yet), checkpoint.saved (a whole checkpoint written), run.swap
(between moving the old run aside and the new one into place), prepare.write (data prepare's
splits half written), export.write (an export written, not yet published).
"""

from __future__ import annotations

import os
import signal
from collections import Counter

ENV = "LMTUNE_FAULT"


def _target(spec: str | None) -> tuple[str, int] | None:
    if not spec:
        return None
    site, _, count = spec.partition(":")
    return site, int(count or 1)


_TARGET = _target(os.environ.get(ENV))
_reached: Counter = Counter()


def point(site: str) -> None:
    if _TARGET is None or _TARGET[0] != site:
        return
    _reached[site] += 1
    if _reached[site] >= _TARGET[1]:
        os.kill(os.getpid(), signal.SIGKILL)
