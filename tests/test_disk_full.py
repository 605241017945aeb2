"""A full disk at each place lmtune writes: one line, exit 1, nothing published half-written, earlier work kept.

The output goes to a small tmpfs (mounting one needs root; elsewhere these tests skip, saying so). Its
size decides where the writing fails: the data splits, a checkpoint's weights, its optimizer state,
the final model, a prepared-data folder, an export.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import synthetic_rows, tiny_config, write_csv
from faultcases import tree_hash

from lmtune.cli import main


def _mount(folder: Path, size_kb: int) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(folder)], capture_output=True
    )
    return done.returncode == 0


@pytest.fixture
def small_disk(tmp_path):
    """A function size_kb -> a fresh folder on a tmpfs of that size; unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root; run as root to test a full disk")
    mounted = []

    def make(size_kb: int) -> Path:
        folder = tmp_path / f"disk-{len(mounted)}"
        if not _mount(folder, size_kb):
            pytest.skip("this machine does not allow mounting a tmpfs (no CAP_SYS_ADMIN)")
        mounted.append(folder)
        return folder

    yield make
    for folder in mounted:
        subprocess.run(["umount", str(folder)], capture_output=True)


def _full_disk_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    last = err[-1] if err else ""
    assert last.startswith("lmtune: error: ") and "No space left on device" in last, err
    assert not [line for line in err if "Traceback" in line], err
    return last


# sizes that run out while writing: the data splits, the first checkpoint's weights, its optimizer
# state, a later checkpoint or the final model (the tiny model's weights are ~4 MB, its optimizer ~8 MB)
@pytest.mark.parametrize("size_kb", [24, 2048, 9000, 30000])
def test_training_onto_a_full_disk(tiny_model_dir, tmp_path, capsys, small_disk, size_kb):
    disk = small_disk(size_kb)
    data = write_csv(tmp_path / "train.csv", synthetic_rows(120))
    raw = tiny_config(tiny_model_dir("bert"), data, disk, training={"epochs": 1})
    earlier = disk / "earlier"
    earlier.mkdir()
    (earlier / "lmtune_run.json").write_text('{"task": "classify"}')
    before = tree_hash(earlier)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["train", str(path)]) == 1
    _full_disk_line(capsys)
    assert not (disk / "run").exists()  # never published
    partial = disk / "run.partial"
    # a partial stays only when it holds a whole checkpoint to resume from
    assert not partial.exists() or list((partial / "checkpoints").glob("checkpoint-*/trainer_state.json"))
    assert tree_hash(earlier) == before
    assert not (disk / ".run.lock").exists()


def test_data_prepare_and_export_onto_a_full_disk(tiny_model_dir, tmp_path, capsys, small_disk):
    data = write_csv(tmp_path / "train.csv", synthetic_rows(400))
    raw = tiny_config(tiny_model_dir("bert"), data, tmp_path / "runs", training={"epochs": 1})
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    disk = small_disk(40)
    assert main(["data", "prepare", str(path), "--out", str(disk / "prepared")]) == 1
    _full_disk_line(capsys)
    assert sorted(p.name for p in disk.iterdir()) == []  # no output, no partial, no lock

    assert main(["train", str(path)]) == 0
    capsys.readouterr()
    disk = small_disk(1024)
    assert main(["export", str(tmp_path / "runs" / "run"), "--merge", str(disk / "out")]) == 1
    _full_disk_line(capsys)
    assert sorted(p.name for p in disk.iterdir()) == []
