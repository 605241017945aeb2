"""Cross-validation (training.cv_folds): k fold runs in one directory, folds as validation splits, the
same test split, mean ± std as numpy computes them, one-line errors, and atomic publishing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from conftest import synthetic_rows, tiny_config, write_csv

from lmtune.cli import main


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def test_cv_trains_one_run_per_fold_with_its_fold_as_validation(cv_run):
    run_dir, _, printed = cv_run
    folds = [run_dir / "folds" / f"fold-{i}" for i in (1, 2, 3)]
    assert sorted(p.name for p in (run_dir / "folds").iterdir()) == ["fold-1", "fold-2", "fold-3"]
    splits = []
    for i, fold in enumerate(folds):
        for name in ("lmtune_run.json", "metrics.json", "report.html", "model/lmtune_model.json"):
            assert (fold / name).is_file(), fold / name
        config = yaml.safe_load((fold / "config.yaml").read_text())
        assert config["data"]["split"]["folds"] == 3 and config["data"]["split"]["fold"] == i
        assert config["training"]["cv_folds"] is None
        splits.append(
            {name: read_jsonl(fold / "data" / f"{name}.jsonl") for name in ("train", "validation", "test")}
        )
        assert {row["fold"] for row in splits[-1]["train"]} == {0, 1, 2} - {i}  # the other folds train
    validation = [{row["where"] for row in s["validation"]} for s in splits]
    pool = {row["where"] for row in splits[0]["train"] + splits[0]["validation"]}
    assert all(a.isdisjoint(b) for j, a in enumerate(validation) for b in validation[j + 1 :])
    assert set().union(*validation) == pool
    for s in splits:  # every fold trains on the same pool, minus its own fold
        assert {row["where"] for row in s["train"] + s["validation"]} == pool
    assert splits[0]["test"] == splits[1]["test"] == splits[2]["test"]
    assert len(pool) + len(splits[0]["test"]) == 120
    assert pool.isdisjoint(row["where"] for row in splits[0]["test"])

    cv = json.loads((run_dir / "cv_metrics.json").read_text())
    per_fold = [json.loads((fold / "metrics.json").read_text()) for fold in folds]
    assert cv["folds"] == 3 and cv["validation_metric"] == "f1_macro"
    assert {"accuracy", "f1_macro", "precision_macro", "recall_macro"} <= set(cv["mean"]["test"])
    for name in cv["mean"]["test"]:
        values = [m["test"]["tuned"][name] for m in per_fold]
        assert [f["test"][name] for f in cv["per_fold"]] == values
        assert cv["mean"]["test"][name] == pytest.approx(np.mean(values))
        assert cv["std"]["test"][name] == pytest.approx(np.std(values))
    best = [m["best_validation"] for m in per_fold]
    assert cv["mean"]["best_validation"] == pytest.approx(np.mean(best))
    assert cv["std"]["best_validation"] == pytest.approx(np.std(best))

    assert json.loads((run_dir / "lmtune_run.json").read_text())["cv_folds"] == 3
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["training"]["cv_folds"] == 3
    page = (run_dir / "report.html").read_text()
    assert "Scores across folds" in page and "folds/fold-3/report.html" in page
    assert [line for line in printed.splitlines() if line.startswith("===== fold")] == [
        f"===== fold {i}/3 (validation: data.split.fold = {i - 1}) =====" for i in (1, 2, 3)
    ]
    accuracy = next(line for line in printed.splitlines() if line.startswith("accuracy "))
    assert f"{cv['mean']['test']['accuracy']:.4f} ± {cv['std']['test']['accuracy']:.4f}" in accuracy
    assert not list(run_dir.parent.glob("*.partial"))


def test_eval_and_predict_name_the_fold_runs_of_a_cv_run(cv_run, capsys):
    run_dir, _, _ = cv_run
    for argv in (["eval", str(run_dir)], ["predict", str(run_dir), "good movie"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "cross-validation run of 3 models" in err
        assert f"{run_dir / 'folds'}/fold-N (N = 1..3)" in err
    assert main(["predict", str(run_dir / "folds" / "fold-2"), "good movie"]) == 0  # a fold is a run


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["training.cv_folds=1"], "training.cv_folds = 1: Input should be greater than or equal to 2"),
        (["training.cv_folds=21"], "training.cv_folds = 21: Input should be less than or equal to 20"),
        (
            ["training.cv_folds=3", "data.validation={validation}"],
            "training.cv_folds = 3 with data.validation = '{validation}': cross-validation validates on folds",
        ),
        (
            ["training.cv_folds=3", "data.split.folds=5"],
            "training.cv_folds = 3 sets data.split.folds and data.split.fold itself",
        ),
        (["data.split.folds=3", "data.split.fold=3"], "data.split.fold = 3: no such fold; allowed: 0..2"),
        (["data.split.fold=0"], "data.split.fold = 0: no such fold; allowed: set data.split.folds"),
        (
            ["data.split.folds=3", "data.split.fold=1", "data.validation={validation}"],
            "data.split.fold = 1 with data.validation = '{validation}': the validation split is either",
        ),
    ],
)
def test_bad_cross_validation_settings_are_one_line(
    tiny_model_dir, labelled_csv, tmp_path, capsys, overrides, message
):
    validation = write_csv(tmp_path / "validation.csv", synthetic_rows(10, seed=1))
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tiny_model_dir("bert"), labelled_csv, tmp_path / "runs")))
    sets = [arg for o in overrides for arg in ("--set", o.format(validation=validation))]
    assert main(["train", str(path), *sets]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lmtune: error: ") and err.count("\n") == 1
    assert message.format(validation=validation) in err
    assert not (tmp_path / "runs").exists()


def test_resume_is_refused_for_a_cv_run(tiny_model_dir, labelled_csv, tmp_path, capsys):
    raw = tiny_config(tiny_model_dir("bert"), labelled_csv, tmp_path / "runs", training={"cv_folds": 2})
    path = tmp_path / "cv.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["train", str(path), "--resume"]) == 2
    assert "--resume: a cross-validation run (training.cv_folds) cannot be resumed" in capsys.readouterr().err


def test_a_crash_in_fold_3_leaves_the_earlier_run_untouched(cv_run, tiny_model_dir, tmp_path, monkeypatch):
    import shutil

    from lmtune.tasks import classify

    earlier, data, _ = cv_run
    runs = tmp_path / "runs"
    shutil.copytree(earlier, runs / "run")
    before = {p.relative_to(runs): p.read_bytes() for p in (runs / "run").rglob("*") if p.is_file()}
    calls = []

    def train(config, prepared, run_dir, resume=False, callbacks=()):
        calls.append(run_dir.name)
        if len(calls) == 3:
            raise RuntimeError("fold 3 crashed")
        (run_dir / "written.txt").write_text("a fold that finished")
        return {"test": {"tuned": {"accuracy": 0.5}}, "best_validation": 0.5, "rows": {}, "steps": 1}

    monkeypatch.setattr(classify, "train", train)
    raw = tiny_config(tiny_model_dir("bert"), data, runs, training={"cv_folds": 3})
    path = tmp_path / "cv.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(RuntimeError, match="fold 3 crashed"):
        main(["train", str(path), "--overwrite"])
    assert calls == ["fold-1", "fold-2", "fold-3"]
    after = {p.relative_to(runs): p.read_bytes() for p in (runs / "run").rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in runs.iterdir()) == ["run"]  # no partial, no half-swapped copy


def test_generative_recipes_cross_validate_the_same_way(tiny_generative_dir, tmp_path):
    from conftest import capital_records, tiny_sft_config

    from lmtune.config import validate
    from lmtune.cv import cross_validate

    data = tmp_path / "capitals.json"
    data.write_text(json.dumps(capital_records(60)))
    raw = tiny_sft_config(
        tiny_generative_dir("llama"),
        data,
        tmp_path / "runs",
        training={"cv_folds": 2, "max_steps": 2, "eval_every": 1},
        evaluation={"generation": {"max_new_tokens": 2, "prompts": 2}, "baselines": []},
    )
    summary = cross_validate(validate(raw, "test"))
    losses = [f["test"]["loss"] for f in summary["per_fold"]]
    assert summary["mean"]["test"]["loss"] == pytest.approx(np.mean(losses))
    assert summary["validation_metric"] == "loss" and summary["mean"]["best_validation"] is not None
    tests = [
        read_jsonl(tmp_path / "runs" / "run" / "folds" / f"fold-{i}" / "data" / "test.jsonl") for i in (1, 2)
    ]
    assert tests[0] == tests[1]
