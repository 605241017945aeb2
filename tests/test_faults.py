"""SIGKILL at seeded points from the data pipeline to the publish; recovery reproduces the uninterrupted
run bit for bit, with nothing lost and nothing left behind (tests/faultcases.py; bench/faults.py runs ≥ 20)."""

from __future__ import annotations

import pytest
from conftest import synthetic_rows
from faultcases import Point, Scenario, run_point

from lmtune.cli import main

# the five points CI runs: the data pipeline, a random step before any checkpoint, inside a checkpoint's
# writing, between the two renames that replace an older run, and inside an export
POINTS = [
    Point("data.batch"),
    Point("train.step", 3),
    Point("checkpoint.weights", 3),
    Point("run.swap"),
    Point("export.write"),
]


@pytest.fixture(scope="module")
def scenario(tiny_model_dir, tmp_path_factory):
    return Scenario(tmp_path_factory.mktemp("faults"), tiny_model_dir("bert"), synthetic_rows(160), main)


@pytest.mark.parametrize("point", POINTS, ids=[p.spec for p in POINTS])
def test_a_kill_anywhere_loses_nothing(scenario, point):
    result = run_point(scenario, point)
    assert result["killed"], result  # the fault point was reached: the child died of SIGKILL
    assert result["rc"] == 0, result
    assert result["identical"] and result["max_delta"] == 0.0, result
    assert result["protected_unchanged"], result
    assert result["stray"] == [], result
