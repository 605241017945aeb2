"""What the peer benchmarks share: each side trains in its own subprocess, so that its peak RSS (os.wait4)
and its CPU time are its own, and the cores other processes kept busy meanwhile are measured."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def busy_seconds() -> float:
    """CPU seconds used by all processes since boot (Linux /proc/stat; 0 where it is missing)."""
    stat = Path("/proc/stat")
    if not stat.is_file():
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq = map(int, stat.read_text().split()[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def run_child(cmd: list[str], log: Path) -> dict[str, Any]:
    """Run one side; its exit code, its own peak RSS (wait4, not RUSAGE_CHILDREN) and the cores other
    processes kept busy meanwhile (the machine's busy time less the side's own CPU time, per second)."""
    started, busy = time.perf_counter(), busy_seconds()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    others = busy_seconds() - busy - usage.ru_utime - usage.ru_stime
    return {
        "code": os.waitstatus_to_exitcode(status),
        "peak_rss_mib": usage.ru_maxrss / 1024,
        "others_cores": max(0.0, others) / (time.perf_counter() - started),
    }


def _checked(side: str, cmd: list[str], folder: Path) -> dict[str, Any]:
    out = run_child(cmd, folder / "log.txt")
    if (code := out.pop("code")) != 0:
        tail = (folder / "log.txt").read_text(errors="replace")[-3000:]
        raise SystemExit(f"{side} failed (exit {code}); log {folder / 'log.txt'}:\n{tail}")
    return out


def trl_side(side: str, folder: Path, script: Path, spec: dict[str, Any]) -> dict[str, Any]:
    """`script --trl-worker spec.json` (the peer's own trainer) in its own process: its measurements,
    the worker's result.json and where it saved its adapter."""
    folder.mkdir()
    spec = spec | {
        "out": str(folder / "out"),
        "adapter": str(folder / "adapter"),
        "result": str(folder / "result.json"),
    }
    (folder / "spec.json").write_text(json.dumps(spec))
    out = _checked(side, [sys.executable, str(script), "--trl-worker", str(folder / "spec.json")], folder)
    return out | json.loads((folder / "result.json").read_text()) | {"adapter": spec["adapter"]}


def lmtune_side(folder: Path, cmd: list[str], run_dir: Path) -> tuple[dict[str, Any], dict]:
    """`lmtune train` in its own process: its measurements and the run's metrics.json."""
    folder.mkdir()
    out = _checked("lmtune", cmd, folder)
    return out | {"adapter": str(run_dir / "model")}, json.loads((run_dir / "metrics.json").read_text())


def verdicts(results: dict[str, dict[str, Any]], quality: str, key: str, digits: int = 4) -> list[str]:
    """The lines under a side-by-side table: busy-machine warnings, what trl-no-gc is, and lmtune's
    ratios to each peer (tokens/s, peak RSS) with the difference in the quality column `key`."""
    lines = [
        f"WARNING: other processes kept cores busy during {side}: its timing is not comparable"
        for side, r in results.items()
        if r["others_cores"] > 0.15
    ]
    if "trl-no-gc" in results:
        lines.append(
            "trl-no-gc: TRL with gradient_checkpointing=False, NOT its default (a diagnostic variant)"
        )
    if "lmtune-no-group" in results:
        lines.append("lmtune-no-group: lmtune with training.group_by_length false (a diagnostic variant)")
    if "lmtune-no-share" in results:
        lines.append("lmtune-no-share: lmtune with preference.shared_prompt false (a diagnostic variant)")
    lines.append("")
    for ours in (side for side in results if side.startswith("lmtune")):
        for peer in (peer for peer in ("trl", "trl-no-gc") if peer in results):
            a, b = results[ours], results[peer]
            lines.append(
                f"{ours} / {peer}: tokens/s {a['tokens_per_s'] / b['tokens_per_s']:.2f}x, "
                f"peak RSS {a['peak_rss_mib'] / b['peak_rss_mib']:.2f}x; "
                f"{quality} {ours} - {peer} = {a[key] - b[key]:+.{digits}f}"
            )
    return lines
