"""Fuzzing at full size: >= 10,000 generated run configs and >= 10,000 generated data rows (spread over
many files of every format) through config validation and the data pipeline.

The rule every case must keep: it succeeds, or it raises an `LmtuneError` whose message is one line of
at most 2,000 characters, in bounded time and memory. The generators live in tests/fuzzing.py (shared
with tests/test_fuzz.py, which runs a few hundred of the same cases in CI):

- configs: YAML files dumped from the real schema (every dotted key of `RunConfig`, walked recursively)
  with valid and hostile values, unknown keys, wrong nesting and text-level damage; YAML edge cases
  (deep nesting, alias bombs, recursive anchors, tags, several documents, huge files, odd encodings,
  hostile file names); `--set` overrides with hostile keys and values; raw mappings for `validate`.
  Each goes through `load_config` (+ `dump_config` and back) and, when it has one, its raw mapping
  through `validate`.
- data: files in CSV/TSV/any separator, JSONL, JSON, TXT and Parquet with quotes, separators in
  fields, encodings, control characters, NUL bytes, huge fields, empty fields, mixed types, missing
  and extra columns, damaged lines; each file through `prepare_data` (labelled and generative, on_error
  skip and fail, PII on or off) and `lmtune data inspect`.

Prints the cases run, succeeded, LmtuneError and failed per category, the failures by kind and by
exception type, and every distinct failure signature with its count, the lmtune frames it came through
and the smallest reproducer seen. Exit status 1 when any case failed.

    python bench/fuzz.py                         # 10k configs + 10k rows, seed 0 (~15 min on 2 cores)
    python bench/fuzz.py --configs 500 --rows 500 --seed 3 --failures /tmp/fuzz.jsonl
"""

from __future__ import annotations

import argparse
import faulthandler
import itertools
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import fuzzing  # noqa: E402


class Progress:
    """Plain progress lines every few seconds (no TTY needed): done/target, rate, ETA, outcomes."""

    def __init__(self, name: str, target: int, tally: fuzzing.Tally, every: float = 5.0):
        self.name, self.target, self.tally, self.every = name, target, tally, every
        self.start = self.last = time.perf_counter()

    def tick(self, done: int, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self.last < self.every:
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        eta = max(self.target - done, 0) / rate if rate > 0 else float("inf")
        t = self.tally
        print(
            f"[{self.name}] {done:,}/{self.target:,} ({rate:.1f}/s, ETA {_clock(eta)}) | cases "
            f"{sum(t.cases.values()):,}: ok {sum(t.ok.values()):,}, LmtuneError {sum(t.errors.values()):,}, "
            f"failed {sum(t.failed.values()):,} | distinct failures {len(t.findings)}",
            flush=True,
        )


def _clock(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def stream(name, strategy, run_case, done, target: int, seed: int, tally, folder: Path) -> None:
    """Hypothesis rounds (seeds seed*1000, seed*1000+1, …) until `done()` reaches `target`; a round
    ends early (fuzzing.Enough) once it does."""
    progress = Progress(name, target, tally)
    numbers = itertools.count()
    for round_ in itertools.count():
        if done() >= target:
            break

        def body(case):
            if done() >= target:
                raise fuzzing.Enough
            run_case(tally, case, folder / f"{name}-{next(numbers)}")
            progress.tick(done())

        fuzzing.explore(strategy, body, max(100, target - done()), seed=seed * 1000 + round_)
    progress.tick(done(), force=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", type=int, default=10_000, help="generated configs (default 10,000)")
    parser.add_argument("--rows", type=int, default=10_000, help="generated data rows (default 10,000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--failures", type=Path, help="also write every distinct failure as JSON lines here")
    parser.add_argument(
        "--memory-gb", type=float, default=12.0, help="address-space cap of this process (0: none)"
    )
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(errors="backslashreplace")  # reproducers may hold lone surrogates
    faulthandler.enable()  # a crash in C code still says where
    if args.memory_gb:
        cap = int(args.memory_gb * (1 << 30))
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    import lmtune

    print(f"lmtune from {Path(lmtune.__file__).parent}; seed {args.seed}", flush=True)
    tally = fuzzing.Tally()
    with tempfile.TemporaryDirectory(prefix="lmtune-fuzz-") as tmp:
        folder = Path(tmp)
        if args.configs:
            stream(
                "configs",
                fuzzing.config_cases(),
                fuzzing.run_config_case,
                lambda: tally.configs,
                args.configs,
                args.seed,
                tally,
                folder,
            )
        if args.rows:
            stream(
                "data rows",
                fuzzing.data_cases(),
                fuzzing.run_data_case,
                lambda: tally.rows,
                args.rows,
                args.seed,
                tally,
                folder,
            )
    print()
    print(tally.summary())
    print()
    print(tally.details())
    if args.failures:
        with open(args.failures, "w", encoding="utf-8") as handle:
            for f in [*tally.findings.values(), *tally.notes.values()]:
                handle.write(
                    json.dumps(
                        {
                            "signature": f.signature,
                            "kind": f.kind,
                            "count": f.count,
                            "categories": dict(f.categories),
                            "exception": f.exc_type,
                            "message": f.message,
                            "lmtune_frames": f.frames,
                            "innermost": f.innermost,
                            "reproducer": f.reproducer,
                            "variants": dict(f.variants.most_common(20)),
                        },
                        ensure_ascii=True,  # messages may hold lone surrogates
                    )
                    + "\n"
                )
        print(f"\nfailures written to {args.failures}")
    return 1 if tally.findings else 0


if __name__ == "__main__":
    sys.exit(main())
