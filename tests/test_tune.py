"""`lmtune tune`: searches on a tiny model, resume after SIGKILL, pruning, two workers, bad inputs."""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from conftest import synthetic_rows, tiny_config, write_csv
from optuna.trial import TrialState

from lmtune.cli import main
from lmtune.config import load_config

# a few optimizer steps per trial: each trial is a complete run in a few seconds
TRAINING = {"max_steps": 4, "eval_every": 2, "logging_steps": 2, "batch_size": 8, "learning_rate": 5e-3}
LR = {"type": "float", "low": 1e-3, "high": 2e-2, "log": True}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models train 2-4x faster on one thread than on two on a shared, busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def search_yaml(tiny_model_dir, tmp_path):
    """Write a search config (tiny model, 60 learnable rows) and return its path."""
    data = write_csv(tmp_path / "reviews.csv", synthetic_rows(60))

    def make(name="search", training=None, evaluation=None, **search) -> str:
        raw = tiny_config(
            tiny_model_dir("bert"), data, tmp_path / "runs", training={**TRAINING, **(training or {})}
        )
        raw["output"]["name"] = name
        raw["evaluation"].update(evaluation or {})
        raw["search"] = {"sampler": "random", "trials": 4, "seed": 0, "pruning": "none", **search}
        raw["search"].setdefault("space", {"training.learning_rate": LR})
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        return str(path)

    return make


def study_of(tmp_path, name="search") -> optuna.Study:
    url = f"sqlite:///{tmp_path / 'runs' / name / 'study.db'}"
    return optuna.load_study(study_name=name, storage=url)


def finished(study) -> list:
    return [t for t in study.get_trials() if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


def trial_dirs(tmp_path, name="search") -> set[str]:
    return {p.name for p in (tmp_path / "runs" / name / "trials").iterdir()}


def test_random_search_writes_leaderboard_best_yaml_and_report(search_yaml, tmp_path, capfd):
    space = {
        "training.learning_rate": LR,
        "training.warmup_ratio": {"type": "float", "low": 0.0, "high": 0.2},
    }
    path = search_yaml(space=space)
    assert main(["tune", path]) == 0
    out = capfd.readouterr().out
    assert "trial 4/4" in out and "Leaderboard" in out and "best: trial #" in out
    folder = tmp_path / "runs" / "search"
    study = study_of(tmp_path)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    best = max(study.trials, key=lambda t: (t.value, -t.number))  # the best; the first of equals
    for trial in study.trials:  # each trial is a complete run whose best validation score is the value
        metrics = json.loads((folder / "trials" / f"trial-{trial.number:04d}" / "metrics.json").read_text())
        assert metrics["best_validation"] == pytest.approx(trial.value)
        config = yaml.safe_load((folder / "trials" / f"trial-{trial.number:04d}" / "config.yaml").read_text())
        assert config["training"]["learning_rate"] == pytest.approx(trial.params["training.learning_rate"])
        assert config["evaluation"]["baselines"] == []  # no costly extras inside trials

    with open(folder / "leaderboard.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 and rows[0]["rank"] == "1" and int(rows[0]["trial"]) == best.number
    assert float(rows[0]["value"]) == pytest.approx(best.value)

    best_config = load_config(folder / "best.yaml")  # validates
    assert best_config.output.name == "search-best" and best_config.search is None
    assert best_config.training.learning_rate == pytest.approx(best.params["training.learning_rate"])
    assert best_config.training.warmup_ratio == pytest.approx(best.params["training.warmup_ratio"])
    assert "search" not in yaml.safe_load((folder / "best.yaml").read_text())

    page = (folder / "report.html").read_text()
    assert "Leaderboard" in page and "Optimization history" in page and "Parameter importance" in page
    assert page.count("data:image/png;base64,") >= 2 and "https://" not in page
    summary = json.loads((folder / "search.json").read_text())
    assert summary["counts"]["complete"] == 4 and summary["best"]["trial"] == best.number

    assert main(["train", str(folder / "best.yaml")]) == 0  # and it runs as an ordinary training run
    assert (tmp_path / "runs" / "search-best" / "metrics.json").is_file()


def test_grid_search_runs_exactly_the_grid(search_yaml, tmp_path):
    space = {
        "training.learning_rate": {"type": "categorical", "choices": [3e-3, 1e-2]},
        "training.batch_size": {"type": "int", "low": 8, "high": 16, "step": 8},
    }
    path = search_yaml(sampler="grid", trials=None, space=space, training={"max_steps": 2})
    assert main(["tune", path]) == 0
    trials = study_of(tmp_path).trials
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    seen = sorted((t.params["training.learning_rate"], t.params["training.batch_size"]) for t in trials)
    assert seen == sorted(itertools.product([3e-3, 1e-2], [8, 16]))
    assert main(["tune", path]) == 0  # done: a re-run only summarises
    assert len(study_of(tmp_path).trials) == 4


def test_a_bad_combination_fails_its_trial_and_the_search_goes_on(search_yaml, tmp_path, capfd):
    # each value is valid alone; test 0.85 with validation 0.2 leaves no training rows
    space = {
        "data.split.test": {"type": "categorical", "choices": [0.2, 0.85]},
        "data.split.validation": {"type": "categorical", "choices": [0.1, 0.2]},
    }
    path = search_yaml(sampler="grid", trials=None, space=space, training={"max_steps": 2})
    assert main(["tune", path]) == 0
    trials = study_of(tmp_path).trials
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(trials) == 4 and len(failed) == 1
    assert failed[0].params == {"data.split.test": 0.85, "data.split.validation": 0.2}
    assert "leaves no training rows" in failed[0].user_attrs["error"]
    out = capfd.readouterr().out
    assert "FAILED: trial" in out and "3 of 4 trials done" in out


def test_a_bug_in_a_trial_fails_loudly(search_yaml, tmp_path, monkeypatch):
    from lmtune.tune import worker

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(worker, "train_trial", broken)
    with pytest.raises(ZeroDivisionError):
        main(["tune", search_yaml()])
    (trial,) = study_of(tmp_path).trials
    assert trial.state == TrialState.FAIL and "ZeroDivisionError" in trial.user_attrs["error"]


@pytest.mark.parametrize(
    ("search", "message"),
    [
        (
            {"space": {"training.learning_rate": {"type": "float", "low": 1e-3, "high": 1e-5}}},
            "search.space['training.learning_rate']: empty range low=0.001 >= high=1e-05",
        ),
        (
            {"space": {"training.lerning_rate": LR}},
            "search.space['training.lerning_rate']: unknown config key (no 'lerning_rate' in training); "
            "did you mean 'training.learning_rate'?",
        ),
        ({"sampler": "bayes"}, "search.sampler = 'bayes': Input should be 'grid', 'random' or 'tpe'"),
        (
            {
                "sampler": "grid",
                "space": {"training.warmup_ratio": {"type": "float", "low": 0.0, "high": 0.2}},
            },
            "search.space['training.warmup_ratio']: sampler grid needs finite dimensions",
        ),
        (
            {"space": {"training.learning_rate": {"type": "float", "low": 1e-4, "high": 2.0}}},
            "search.space['training.learning_rate']: high: training.learning_rate = 2.0: Input should be less than 1",
        ),
        (
            {"space": {"training.batch_size": {"type": "float", "low": 8, "high": 32}}},
            "search.space['training.batch_size']: a value between",
        ),
        (
            {"space": {"method.lora.r": {"type": "categorical", "choices": []}}},
            "search.space['method.lora.r']: choices must be a non-empty list",
        ),
        ({"space": {"training.learning_rate": {**LR, "low": 0.0}}}, "log scale needs low > 0, got low=0.0"),
    ],
)
def test_bad_search_inputs_are_one_line_errors(search_yaml, search, message, capsys):
    path = search_yaml(**search)
    assert main(["tune", path]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"lmtune: error: {path}") and len(err.splitlines()) == 1
    assert message in err


def test_config_without_search_or_validation_is_refused(search_yaml, capsys):
    path = search_yaml()
    raw = yaml.safe_load(Path(path).read_text())
    raw["data"]["split"]["validation"] = 0.0
    Path(path).write_text(yaml.safe_dump(raw))
    assert main(["tune", path]) == 2
    assert "no validation split; set data.split.validation" in capsys.readouterr().err
    del raw["search"]
    Path(path).write_text(yaml.safe_dump(raw))
    assert main(["tune", path]) == 2
    assert "no search: section" in capsys.readouterr().err


def test_cross_validation_inside_a_search_is_refused(search_yaml, capsys):
    path = search_yaml(training={"cv_folds": 3})
    assert main(["tune", path]) == 2
    assert "training.cv_folds cannot be searched over" in capsys.readouterr().err


def test_changed_space_against_an_existing_study_is_refused(search_yaml, tmp_path, capsys):
    path = search_yaml(trials=1, training={"max_steps": 2})
    assert main(["tune", path]) == 0
    raw = yaml.safe_load(Path(path).read_text())
    raw["search"]["space"]["training.learning_rate"]["high"] = 0.05
    Path(path).write_text(yaml.safe_dump(raw))
    assert main(["tune", path]) == 2
    err = capsys.readouterr().err
    assert "was made with a different config (changed: search.space['training.learning_rate'])" in err
    assert "--overwrite" in err


def _tune_process(path, *extra):
    return subprocess.Popen(
        [sys.executable, "-m", "lmtune.cli", "tune", path, *extra],
        env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _running_after_a_completed_one(db) -> int | None:
    """Read the study read-only (creating optuna's tables here would race the search's own)."""
    # a trial counts as running once its worker is named and its values are sampled (named first: a
    # kill between the two leaves a trial with no values, which is failed and not retried)
    query = (
        "select number, state, exists(select 1 from trial_user_attributes a where a.trial_id = t.trial_id "
        "and a.key = 'worker') and exists(select 1 from trial_params p where p.trial_id = t.trial_id) "
        "from trials t"
    )
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as connection:
            rows = connection.execute(query).fetchall()
    except sqlite3.OperationalError:  # not created yet
        return None
    running = [number for number, state, named in rows if state == "RUNNING" and named]
    return running[0] if running and any(state == "COMPLETE" for _, state, _ in rows) else None


def test_killed_search_continues_without_repeating_finished_trials(search_yaml, tmp_path):
    path = search_yaml(trials=3, training={"max_steps": 8})  # trials long enough to be caught running
    process = _tune_process(path)
    deadline = time.time() + 300
    db = tmp_path / "runs" / "search" / "study.db"
    while _running_after_a_completed_one(db) is None:  # kill it during a trial, not the first
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        assert time.time() < deadline, "no trial completed"
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed = _running_after_a_completed_one(db)  # the one left RUNNING
    assert killed is not None

    assert main(["tune", path]) == 0
    study = study_of(tmp_path)
    done = finished(study)
    assert len(done) == 3  # the budget counts the work done before the kill
    assert (
        study.trials[killed].state == TrialState.FAIL and "died" in study.trials[killed].user_attrs["error"]
    )
    retried = [t for t in done if t.user_attrs.get("retry_of") == killed]
    assert len(retried) == 1 and retried[0].params == study.trials[killed].params
    values = [t.params["training.learning_rate"] for t in done]
    assert len(set(values)) == len(values)  # no finished trial ran twice
    assert trial_dirs(tmp_path) == {f"trial-{t.number:04d}" for t in done}  # no partial left over


def test_median_pruner_stops_a_clearly_worse_trial(search_yaml, tmp_path):
    from lmtune.tune import study as studies

    # validation loss: 0.9 without warmup diverges (loss ~3 at the first evaluation; 1e-3 stays at 0.69)
    path = search_yaml(
        trials=3,
        pruning="median",
        pruning_startup=1,
        space={"training.learning_rate": {"type": "float", "low": 1e-4, "high": 0.95, "log": True}},
        training={"warmup_ratio": 0.0},
        evaluation={"metric": "loss"},
    )
    config = load_config(path)
    (tmp_path / "runs" / "search").mkdir(parents=True)
    (tmp_path / "runs" / "search" / studies.MARKER).write_text("{}")
    study = studies.create_or_check(
        config, studies.open_storage(studies.storage_url(config)), overwrite=False
    )
    # good, diverging, the good one again: after a pruned trial the next one runs exactly as before
    # (with one completed trial to compare with, any other value slightly worse would be pruned)
    for rate in (1e-3, 0.9, 1e-3):
        study.enqueue_trial({"training.learning_rate": rate})
    assert main(["tune", path]) == 0
    trials = study_of(tmp_path).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.COMPLETE]
    assert trials[1].user_attrs["note"].startswith("pruned at evaluation 1")
    assert trials[2].value == trials[0].value
    assert trial_dirs(tmp_path) == {"trial-0000", "trial-0002"}  # the pruned trial's run is removed


def test_two_workers_share_one_study(search_yaml, tmp_path, capfd):
    path = search_yaml(trials=4)  # trials longer than the workers' start-up skew: both take some
    assert main(["tune", path, "--workers", "2"]) == 0
    trials = study_of(tmp_path).trials
    assert len(trials) == 4 and len(finished(study_of(tmp_path))) == 4  # the budget, not more
    workers = {t.user_attrs["worker"] for t in trials}
    assert len(workers) == 2  # two processes took trials
    cores = len(os.sched_getaffinity(0))
    assert {t.user_attrs["threads"] for t in trials} == {max(1, cores // 2)}
    assert "[worker 1]" in capfd.readouterr().out
