"""Data preparation speed: clean + exact dedup and MinHash near-dup on >= 1M synthetic rows, with peers.

Rows are generated once (seeded) into an Arrow file through `datasets.Dataset.from_generator`: sentences
of 10-40 words drawn from a 30k-word vocabulary with Zipf-Mandelbrot frequencies, with planted exact
copies (case / whitespace variants, 5%), near copies (one or two words changed, 5%) and messy rows
(HTML tags, entities, non-breaking and doubled blanks, control characters, 3%). Copies come from the
previous 20k rows.

Every measurement runs in a fresh subprocess that memory-maps that file (so the text is not held as
Python objects) and reports its wall time, peak RSS (`ru_maxrss`: includes the mapped file pages it
touched) and peak anonymous memory (RssAnon sampled every 20 ms: the process's own heap). Stages:

- read:         iterate the dataset in batches of 10k (`Dataset.iter`): the cost of getting the rows
- exact:        read + `exact_hashes` per batch + `first_copies` at the end
- clean+exact:  read + `make_cleaner(html_markup=True)` + the above (our goal: >= 50k rows/s on 2 cores)
- pandas exact: the peer: column to pandas, casefold, `\\s+` -> ' ', strip, `duplicated()`
- near:         `near_duplicates(threshold=0.8)` on the mapped Arrow column (goal: >= 5k rows/s)
- datasketch:   the peer, on a subset: `MinHash` (128 perms, default hash) per row + `MinHashLSH`
                query-then-insert (the usual streaming dedup; unverified candidates); ours on the same subset

- pipeline exact: `prepare_data` end to end on a JSONL file of the same rows (read + validate, clean
                with markup stripping, PII scrub, hash, exact dedup, hash split, exact leakage check)
- pipeline near:  the same with near-duplicate removal and the near leakage check

Timings depend on the load from other processes: the load average is printed with the table.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

BATCH = 10_000


def vocabulary(rng: np.random.Generator, size: int = 30_000) -> tuple[list[str], np.ndarray]:
    syllables = [c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou"] + ["the", "and", "of", "ing"]
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(syllables, rng.integers(1, 4))))
    ranks = np.arange(1, size + 1)
    weights = 1.0 / (ranks + 2.7) ** 1.07
    return sorted(words, key=lambda w: (len(w), w)), weights / weights.sum()


def generate(rows: int, seed: int = 0):
    """Yields {"text": ...} rows; exact and near copies point back into a 20k-row window."""
    rng = np.random.default_rng(seed)
    vocab, probs = vocabulary(rng)
    window: list[str] = []
    for start in range(0, rows, BATCH):
        n = min(BATCH, rows - start)
        lengths = rng.integers(10, 41, n)
        ids = rng.choice(len(vocab), lengths.sum(), p=probs).tolist()
        kinds = rng.random(n)
        offset = 0
        for i in range(n):
            words = [vocab[k] for k in ids[offset : offset + lengths[i]]]
            offset += lengths[i]
            text = " ".join(words)
            if window and kinds[i] < 0.05:  # exact copy under the key: case and blanks differ
                text = window[rng.integers(len(window))]
                text = text.upper() if i % 2 else "  " + text.replace(" ", "  ", 3) + "\t"
            elif window and kinds[i] < 0.10:  # near copy: one or two words changed
                copy = window[rng.integers(len(window))].split(" ")
                for p in rng.integers(0, len(copy), 1 + i % 2):
                    copy[p] = vocab[rng.integers(len(vocab))]
                text = " ".join(copy)
            elif kinds[i] < 0.13:  # mess for the cleaner
                text = f"<p>{text}</p> &amp; more\u00a0 words\u200b here  \x07"
            window.append(text)
            yield {"text": text}
        del window[: max(0, len(window) - 20_000)]


class PeakAnon:
    """Samples RssAnon from /proc (Linux) in a thread: the peak of the process's own memory."""

    def __init__(self) -> None:
        self.peak, self.running = 0, True
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def sample(self) -> int:
        try:
            with open("/proc/self/status") as handle:
                for line in handle:
                    if line.startswith("RssAnon:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.sample())
            time.sleep(0.02)

    def stop(self) -> int:
        self.running = False
        self.thread.join()
        return max(self.peak, self.sample())


def child(stage: str, arrow: str, rows: int, threshold: float) -> dict[str, Any]:
    from datasets import Dataset

    from lmtune.data.clean import make_cleaner
    from lmtune.data.dedup import exact_hashes, first_copies, near_duplicates, shingles

    data = Dataset.from_file(arrow).select(range(rows))  # memory-mapped, contiguous: no copy
    column = data.data.column("text")
    if stage.startswith("pipeline"):
        from lmtune.config import validate  # imports before the clock starts
        from lmtune.data.pipeline import prepare_data

        source = Path(arrow).with_name(f"rows-{rows}.jsonl")
        if not source.exists():  # written before the clock and the memory probe start
            with open(source, "w", encoding="utf-8") as handle:
                for i, text in enumerate(column.to_pylist()):
                    handle.write(json.dumps({"text": text, "label": "abc"[i % 3]}) + "\n")
    anon = PeakAnon()
    out: dict[str, Any] = {}
    start = time.perf_counter()
    if stage in ("read", "exact", "clean+exact"):
        clean = make_cleaner(html_markup=True) if stage == "clean+exact" else None
        hashes, done = np.empty(rows, dtype=np.uint64), 0
        for batch in data.iter(batch_size=BATCH):
            texts = batch["text"]
            if stage != "read":
                hashes[done : done + len(texts)] = exact_hashes(map(clean, texts) if clean else texts)
            done += len(texts)
        if stage != "read":
            out["dropped"] = int((~first_copies(hashes)).sum())
    elif stage == "pandas exact":
        series = column.to_pandas()
        keys = series.str.casefold().str.replace(r"\s+", " ", regex=True).str.strip()
        out["dropped"] = int(keys.duplicated(keep="first").sum())
    elif stage == "near":
        result = near_duplicates(column, threshold=threshold)
        out.update(dropped=result.dropped, candidates=result.candidates, lsh=f"{result.bands}x{result.rows}")
    elif stage == "datasketch":
        from datasketch import MinHash, MinHashLSH

        lsh, dropped = MinHashLSH(threshold=threshold, num_perm=128), 0
        for i, text in enumerate(column.to_pylist()):
            m = MinHash(num_perm=128)
            m.update_batch([g.encode() for g in shingles(text, 3)])
            if lsh.query(m):
                dropped += 1
            else:
                lsh.insert(str(i), m)
        out["dropped"] = dropped
    elif stage.startswith("pipeline"):
        near = stage == "pipeline near"
        data_config = {
            "train": str(source),
            "clean": {"html": True},
            "dedup": {"near": near, "threshold": threshold},
            "leakage": {"near": near},
        }
        report = prepare_data(validate({"data": data_config}, "bench"), "labelled").report
        out["steps"] = {f"{s['step']} {s['split']}": s["seconds"] for s in report["steps"]}
        out["dropped"] = rows - sum(s["rows"] for s in report["splits"].values())
    else:
        raise SystemExit(f"unknown stage {stage}")
    seconds = time.perf_counter() - start
    peak_anon = anon.stop()
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return dict(
        out,
        stage=stage,
        rows=rows,
        seconds=seconds,
        rows_per_s=rows / seconds,
        peak_rss_mb=peak_rss / 2**20,
        peak_anon_mb=peak_anon / 2**20,
    )


def measure(stage: str, arrow: str, rows: int, threshold: float) -> dict[str, Any]:
    load = os.getloadavg()[0]
    command = [sys.executable, __file__, "--child", stage, "--arrow", arrow, "--rows", str(rows)]
    done = subprocess.run(command + ["--threshold", str(threshold)], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{stage} at {rows} rows failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["load_before"] = load
    print(
        f"  {stage:<13} {rows:>9,} rows  {result['seconds']:7.1f} s  {result['rows_per_s']:>9,.0f} rows/s  "
        f"peak RSS {result['peak_rss_mb']:6.0f} MB  anon {result['peak_anon_mb']:6.0f} MB  "
        f"dropped {result.get('dropped', '-')}  load {load:.2f}",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--peer-rows", type=int, default=50_000, help="subset for the datasketch peer")
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--workdir", type=Path, help="keep the generated Arrow file here")
    parser.add_argument("--json", type=Path, help="write all results here")
    parser.add_argument("--only", nargs="+", metavar="STAGE", help="run only these stages (no ratios)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--arrow", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.arrow, args.rows, args.threshold)))
        return

    from datasets import Dataset, disable_progress_bars

    disable_progress_bars()
    print(f"cores: {os.cpu_count()}  load average at start (1, 5, 15 min): {os.getloadavg()}")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="lmtune-data-speed-"))
    if not args.workdir:  # a generated 1M-row file is ~100 MB, its JSONL copies more: never left behind
        atexit.register(shutil.rmtree, work, True)
    start = time.perf_counter()
    data = Dataset.from_generator(
        generate, gen_kwargs={"rows": args.rows}, cache_dir=str(work / "hf"), fingerprint=f"rows{args.rows}"
    )
    arrow = data.cache_files[0]["filename"]
    size_mb = Path(arrow).stat().st_size / 2**20
    print(
        f"generated {len(data):,} rows -> {arrow} ({size_mb:.0f} MB) in {time.perf_counter() - start:.0f} s"
    )
    half, full, peer = args.rows // 2, args.rows, min(args.peer_rows, args.rows)

    results = []
    stages = ("read", "exact", "clean+exact", "pandas exact", "near", "pipeline exact", "pipeline near")
    for stage in args.only or stages:
        for rows in (half, full):
            results.append(measure(stage, arrow, rows, args.threshold))
    if args.only:
        return
    results.append(measure("near", arrow, peer, args.threshold))
    results.append(measure("datasketch", arrow, peer, args.threshold))

    def get(stage: str, rows: int) -> dict[str, Any]:
        return next(r for r in results if r["stage"] == stage and r["rows"] == rows)

    print(f"\nload average at end: {os.getloadavg()}")
    print("\n| stage | rows | rows/s | peak RSS MB | peak anon MB | dropped |\n|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['stage']} | {r['rows']:,} | {r['rows_per_s']:,.0f} | {r['peak_rss_mb']:.0f} | "
            f"{r['peak_anon_mb']:.0f} | {r.get('dropped', '-')} |"
        )
    print("\nratios (ours / peer, rows/s):")
    print(
        f"  exact (no clean) / pandas exact at {full:,}: "
        f"{get('exact', full)['rows_per_s'] / get('pandas exact', full)['rows_per_s']:.2f}"
    )
    print(
        f"  clean+exact / pandas exact at {full:,}: "
        f"{get('clean+exact', full)['rows_per_s'] / get('pandas exact', full)['rows_per_s']:.2f}"
    )
    print(
        f"  near / datasketch at {peer:,}: "
        f"{get('near', peer)['rows_per_s'] / [r for r in results if r['stage'] == 'datasketch'][0]['rows_per_s']:.2f}"
    )
    print(f"doubling ({half:,} -> {full:,} rows) of peak anon / peak RSS:")
    for stage in ("clean+exact", "pandas exact", "near", "pipeline exact", "pipeline near"):
        a, b = get(stage, half), get(stage, full)
        print(
            f"  {stage:<13} anon {a['peak_anon_mb']:.0f} -> {b['peak_anon_mb']:.0f} MB, "
            f"RSS {a['peak_rss_mb']:.0f} -> {b['peak_rss_mb']:.0f} MB"
        )
    for stage in ("pipeline exact", "pipeline near"):
        steps = get(stage, full)["steps"]
        print(
            f"{stage} at {full:,} rows, seconds per step: "
            + ", ".join(f"{k} {v:.1f}" for k, v in steps.items())
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
