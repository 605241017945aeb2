"""Fault injection: SIGKILL lmtune at a named point (lmtune.faults), recover the way a user would, and check
that nothing was lost. Shared by tests/test_faults.py (a seeded CI subset) and bench/faults.py (≥ 20 points).

Recovery for each point, as a user would do it after a crash:
- killed before the run directory existed (data pipeline): run the same command again;
- killed during training with a checkpoint on disk: `--resume`; without one: `--overwrite`;
- killed while replacing an older run (`--overwrite` between its two renames): the same command again;
- killed in `data prepare` / `export`: the same command again.
Then: the final metrics equal the uninterrupted run's bit for bit (CPU, same seed: the Trainer restores
the RNG states, the data order and the optimizer from the checkpoint), the earlier run and the data files
hash the same as before, and no scratch folder, `.partial`, lock or replaced folder is left behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
STEPS = 28  # 112 training rows / batch 8 = 14 steps per epoch, 2 epochs
CHECKPOINTS = STEPS // 4  # one every 4 steps (eval_every)


@dataclass
class Point:
    site: str
    count: int = 1

    @property
    def spec(self) -> str:
        return f"{self.site}:{self.count}"


def tree_hash(folder: Path) -> str:
    """Every file's path and bytes under `folder`: equal before and after means nothing changed."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def points(n: int, seed: int) -> list[Point]:
    """`n` kill points, seeded: every site at least once (when n allows), the rest random steps and
    checkpoints, so a run is killed anywhere from its data pipeline to its publish."""
    rng = random.Random(seed)
    fixed = [
        Point("data.batch"),
        Point("train.step", rng.randint(1, 3)),  # before the first checkpoint
        Point("checkpoint.weights", rng.randint(2, CHECKPOINTS)),
        Point("checkpoint.saved", rng.randint(1, CHECKPOINTS)),
        Point("run.swap"),
        Point("prepare.write", rng.randint(1, 3)),
        Point("export.write"),
    ]
    chosen = fixed[:n]
    while len(chosen) < n:  # distinct points, as long as there are untried ones
        site = rng.choice(["train.step", "train.step", "checkpoint.weights", "checkpoint.saved"])
        top = STEPS if site == "train.step" else CHECKPOINTS
        point = Point(site, rng.randint(1, top))
        if point not in chosen or len(chosen) >= STEPS + 2 * CHECKPOINTS:
            chosen.append(point)
    return chosen


class Scenario:
    """A tiny classify run in `root`: its config, an earlier finished run beside it, and the reference
    outcome of the uninterrupted commands (metrics, prepared data, export)."""

    def __init__(self, root: Path, model_dir: Path, rows: list[tuple[str, str]], main):
        from conftest import tiny_config, write_csv

        self.root, self.main = root, main
        self.data = write_csv(root / "train.csv", rows)
        raw = tiny_config(
            model_dir,
            self.data,
            root / "runs",
            training={
                "epochs": 2,
                "eval_every": 4,
                "early_stopping": {"patience": None},
                "save_total_limit": 3,
            },
        )
        raw["evaluation"]["baselines"] = []
        self.raw = raw
        self.config = self._write("run", raw)
        assert (
            main(["train", self._write("earlier", {**raw, "output": {**raw["output"], "name": "earlier"}})])
            == 0
        )
        assert main(["train", self.config]) == 0
        self.reference = self.metrics()
        self.prepared_ref = root / "prepared-ref"
        assert main(["data", "prepare", self.config, "--out", str(self.prepared_ref)]) == 0
        self.export_ref = root / "export-ref"
        assert main(["export", str(self.run_dir), "--merge", str(self.export_ref)]) == 0
        self.protected = {"earlier": root / "runs" / "earlier", "data": self.data}

    def _write(self, name: str, raw: dict) -> str:
        path = self.root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(raw))
        return str(path)

    @property
    def run_dir(self) -> Path:
        return self.root / "runs" / "run"

    def metrics(self) -> dict:
        metrics = json.loads((self.run_dir / "metrics.json").read_text())
        return {
            "test": metrics["test"],
            "best_validation": metrics["best_validation"],
            "steps": metrics["steps"],
        }

    def hashes(self) -> dict[str, str]:
        return {
            name: tree_hash(path) if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
            for name, path in self.protected.items()
        }

    def command(self, point: Point) -> list[str]:
        """The command killed at `point`: a fresh run, a replacing run, a data prepare or an export."""
        if point.site == "prepare.write":
            return ["data", "prepare", self.config, "--out", str(self.root / "prepared"), "--overwrite"]
        if point.site == "export.write":
            return ["export", str(self.run_dir), "--merge", str(self.root / "exported"), "--overwrite"]
        return ["train", self.config, "--overwrite"]

    def kill_at(self, point: Point) -> int:
        """Run the command in a child process with the fault armed; its exit status (-9: killed)."""
        env = {**os.environ, "LMTUNE_FAULT": point.spec, "PYTHONUNBUFFERED": "1"}
        child = subprocess.run(
            [sys.executable, "-m", "lmtune.cli", *self.command(point)],
            env=env,
            capture_output=True,  # the child's output is not shown: only how it ended matters
            timeout=600,
            cwd=self.root,
        )
        return child.returncode

    def recover(self, point: Point) -> list[str]:
        """What a user runs after the crash."""
        if point.site in ("prepare.write", "export.write"):
            return self.command(point)
        partial = self.root / "runs" / "run.partial"
        if any((partial / "checkpoints").glob("checkpoint-*/trainer_state.json")):
            return ["train", self.config, "--resume"]
        return ["train", self.config, "--overwrite"]

    def check(self, point: Point, before: dict[str, str]) -> dict:
        """After recovery: equal outcome, protected files unchanged, nothing stray. A dict of findings."""
        if point.site == "prepare.write":  # the splits; the report holds timings
            same = _files(self.root / "prepared", "*.jsonl") == _files(self.prepared_ref, "*.jsonl")
            delta = 0.0 if same else float("inf")
        elif point.site == "export.write":
            out, ref = self.root / "exported", self.export_ref
            same = _files(out) == _files(ref)
            delta = 0.0 if same else float("inf")
        else:
            after = self.metrics()
            delta = max_delta(self.reference, after)
            same = after == self.reference
        stray = self.stray()
        return {
            "identical": same,
            "max_delta": delta,
            "protected_unchanged": self.hashes() == before,
            "stray": stray,
        }

    def stray(self) -> list[str]:
        """Leftovers: scratch folders of dead processes, partials, locks, replaced runs."""
        host = socket.gethostname()
        left = [str(p) for p in Path(tempfile.gettempdir()).glob(f"lmtune-data-{host}-*") if _dead(p, host)]
        for folder in (self.root, self.root / "runs"):
            left += [
                str(p)
                for p in folder.iterdir()
                if p.name.endswith((".partial", ".lock", ".replaced")) or ".export." in p.name
            ]
        return left


def _files(folder: Path, pattern: str = "*") -> dict[str, str]:
    """A folder's files (matching `pattern`) and their hashes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob(pattern))
        if p.is_file()
    }


def _dead(folder: Path, host: str) -> bool:
    pid = folder.name.removeprefix(f"lmtune-data-{host}-").split("-", 1)[0]
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def max_delta(a, b) -> float:
    """The largest |difference| between two nested dicts of numbers (inf where their shapes differ)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return float("inf")
        return max((max_delta(a[k], b[k]) for k in a), default=0.0)
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return float("inf")
        return max((max_delta(x, y) for x, y in zip(a, b, strict=True)), default=0.0)
    if isinstance(a, int | float) and isinstance(b, int | float):
        return abs(float(a) - float(b))
    return 0.0 if a == b else float("inf")


def run_point(scenario: Scenario, point: Point) -> dict:
    """Kill at `point`, recover, check. The command must really have been killed (SIGKILL)."""
    before = scenario.hashes()
    status = scenario.kill_at(point)
    recovery = scenario.recover(point)
    rc = scenario.main(recovery)
    found = scenario.check(point, before)
    return {
        "point": point.spec,
        "killed": status == -9,
        "recovery": " ".join(word for word in recovery if not word.startswith("/")),  # not its paths
        "rc": rc,
        **found,
    }
