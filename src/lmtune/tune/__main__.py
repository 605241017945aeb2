"""One search worker process (`lmtune tune --workers N` starts N of these): `python -m lmtune.tune CONFIG`.

Exit status: 0 done, 2 a one-line error (printed), 130 interrupted, 1 a bug (traceback printed).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from lmtune.cli import quiet_optuna  # importing lmtune.cli also sets the entry point's environment
from lmtune.config import load_config
from lmtune.errors import LmtuneError


def _die_with_parent(parent: int) -> None:
    """Linux: a worker whose `lmtune tune` is killed (even by SIGKILL) dies too, rather than training on
    alone; the trial it leaves RUNNING is failed and re-run by the next invocation."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmtune.tune")
    parser.add_argument("config")
    parser.add_argument("--worker", type=int, default=0, help="this worker's index, 0..workers-1")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own)")
    parser.add_argument("--parent", type=int, help="die with this process (Linux)")
    args = parser.parse_args(argv)
    quiet_optuna()
    if args.parent:
        _die_with_parent(args.parent)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from lmtune.tune.worker import work

    try:
        work(load_config(args.config), worker=args.worker, workers=args.workers)
    except LmtuneError as error:
        print(f"lmtune: error: [worker {args.worker + 1}] {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
