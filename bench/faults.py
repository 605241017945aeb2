"""Fault injection at ≥ 20 points: SIGKILL lmtune anywhere from its data pipeline to its publish, recover
as a user would, and count what was lost (tests/faultcases.py holds the cases; CI runs five of them).

    .venv/bin/python bench/faults.py [--points 24] [--seed 0]

For each point: was the child really killed (SIGKILL), did the recovery command succeed, are the final
metrics (or the prepared data, or the export) bit-identical to the uninterrupted run's, the largest
|difference| of any metric, did the earlier run and the data file keep their hashes, and what was left
behind (scratch folders of dead processes, partials, locks, replaced runs). Prints one line per point as it
finishes, then the totals.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from conftest import CONFIGS, synthetic_rows  # noqa: E402
from faultcases import Scenario, points, run_point  # noqa: E402
from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: E402

from lmtune.assets import resolve_model  # noqa: E402
from lmtune.cli import main as lmtune  # noqa: E402


def tiny_bert(folder: Path) -> Path:
    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model("bundled:minilm")))
    AutoModelForSequenceClassification.from_config(CONFIGS["bert"](len(tokenizer))).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def quiet(argv: list[str]) -> int:
    """lmtune's own command, its progress and tables kept off this script's output."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return lmtune(argv)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lmtune-faults-") as tmp:
        root = Path(tmp)
        model = tiny_bert(root / "tiny-bert")
        (root / "work").mkdir()
        scenario = Scenario(root / "work", model, synthetic_rows(160), quiet)
        print(f"reference runs ready in {time.monotonic() - started:.0f} s", flush=True)
        results = []
        for i, point in enumerate(points(args.points, args.seed), 1):
            start = time.monotonic()
            result = run_point(scenario, point)
            results.append(result)
            print(
                f"[{i:2d}/{args.points}] {result['point']:<22} killed={result['killed']!s:<5} "
                f"recovery='{result['recovery']}' rc={result['rc']} identical={result['identical']!s:<5} "
                f"max|Δ|={result['max_delta']:.3g} protected={result['protected_unchanged']!s:<5} "
                f"stray={len(result['stray'])} ({time.monotonic() - start:.0f} s)",
                flush=True,
            )
    bad = {
        "not killed (point never reached)": sum(not r["killed"] for r in results),
        "recovery failed": sum(r["rc"] != 0 for r in results),
        "not bit-identical": sum(not r["identical"] for r in results),
        "protected file changed (data loss)": sum(not r["protected_unchanged"] for r in results),
        "stray leftovers": sum(bool(r["stray"]) for r in results),
    }
    print(f"\n{len(results)} kill points, {time.monotonic() - started:.0f} s in all")
    for what, n in bad.items():
        print(f"  {what}: {n}")
    sites = sorted({r["point"].split(":")[0] for r in results})
    print(f"  sites: {', '.join(sites)}")
    sys.exit(1 if any(bad.values()) else 0)


if __name__ == "__main__":
    main()
