"""classify with data.multi_label: label sets through the data pipeline, the scores against
scikit-learn, per-label thresholds, and tiny runs that learn, save, predict and evaluate."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from conftest import FILLER, tiny_config, write_csv
from sklearn.metrics import accuracy_score, f1_score, hamming_loss, precision_score, recall_score

from lmtune.cli import main
from lmtune.config import validate
from lmtune.data.pipeline import prepare_data
from lmtune.errors import LmtuneError
from lmtune.evaluate.metrics import resampled, score
from lmtune.runs import open_run
from lmtune.tasks import classify
from lmtune.tasks.contract import Predictor
from lmtune.tasks.multilabel import GRID, tune_thresholds

ML = {"multi_label": True, "label_column": "tags"}


def tagged_rows(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """(text, tags): 'pos' when the word great is there, 'neg' for awful, 'food' for food; any subset of
    the three, the empty one included."""
    rng = random.Random(seed)
    fillers = [w for w in FILLER if w != "food"]
    rows = []
    for i in range(n):
        words, tags = rng.sample(fillers, 3), []
        for word, tag, every in (("great", "pos", 2), ("awful", "neg", 3), ("food", "food", 5)):
            if i % every == (i // 7) % every:
                words.append(word)
                tags.append(tag)
        rng.shuffle(words)
        rows.append((" ".join(words) + f" n{i}", "|".join(tags)))
    return rows


def ml_config(train, **data):
    return validate({"data": {"train": str(train), **ML, "label_separator": "|", **data}}, "test")


# ----------------------------------------------------------------------------------- metrics


def test_scores_match_sklearn_and_resamples():
    rng = np.random.default_rng(0)
    y = (rng.random((300, 4)) < [0.5, 0.2, 0.05, 0.0]).astype(int)  # the last label never occurs
    p = np.where(rng.random((300, 4)) < 0.8, y, 1 - y)
    p[:30] = 0
    y[:10] = 0  # empty truth, empty prediction: right
    got = score("multilabel", {"y_true": y, "y_pred": p})
    assert got["micro_f1"] == pytest.approx(f1_score(y, p, average="micro"))
    assert got["macro_f1"] == pytest.approx(f1_score(y, p, average="macro", zero_division=0))
    assert got["samples_f1"] == pytest.approx(f1_score(y, p, average="samples", zero_division=1))
    assert got["micro_precision"] == pytest.approx(precision_score(y, p, average="micro"))
    assert got["micro_recall"] == pytest.approx(recall_score(y, p, average="micro"))
    assert got["subset_accuracy"] == pytest.approx(accuracy_score(y, p))
    assert got["hamming_loss"] == pytest.approx(hamming_loss(y, p))
    low, high = got["ci"]["micro_f1"]
    assert low < got["micro_f1"] < high
    idx = rng.integers(0, 300, (2, 300))
    values = resampled("multilabel", {"y_true": y, "y_pred": p}, ["macro_f1", "samples_f1"], idx)
    for row, sample in zip(values, idx, strict=True):
        assert row[0] == pytest.approx(f1_score(y[sample], p[sample], average="macro", zero_division=0))
        assert row[1] == pytest.approx(f1_score(y[sample], p[sample], average="samples", zero_division=1))
    with pytest.raises(LmtuneError, match="must be \\(examples, labels\\) arrays of 0/1"):
        score("multilabel", {"y_true": y, "y_pred": p * 2})


def test_thresholds_are_tuned_per_label_on_validation():
    truth = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 0]])
    probs = np.array([[0.30, 0.9, 0.2], [0.25, 0.8, 0.1], [0.05, 0.7, 0.3], [0.10, 0.2, 0.4]])
    chosen = tune_thresholds(truth, probs)
    # label 0: every threshold in (0.10, 0.25] keeps both positives and no negative (F1 1); nearest 0.5: 0.25
    # label 1: its positive (0.7) needs t ≤ 0.7, which lets two negatives in: F1 2/(2+2) = 0.5 for any t in
    #          (0.2, 0.7], less below (0.4), 0 above; nearest 0.5: 0.5
    # label 2: no positive on validation: 0.5
    assert chosen.tolist() == [0.25, 0.5, 0.5]
    assert set(chosen) <= set(GRID)


# -------------------------------------------------------------------------------------- data


def test_label_sets_from_lists_and_strings_with_line_errors(tmp_path):
    path = tmp_path / "tags.jsonl"
    records = [
        {"text": "the food was good", "tags": ["food", "pos"]},
        {"text": "the day was sad", "tags": "neg"},
        {"text": "nothing to see", "tags": []},
        {"text": "an odd one", "tags": "pos|weird"},  # line 4: not in data.labels
        {"text": "bad number", "tags": [1.5]},  # line 5: not a label
        {"text": "blank string", "tags": ""},  # no labels
        {"text": " Food  and  Pos ", "tags": " food | | pos "},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    result = prepare_data(
        ml_config(
            path, labels=["pos", "neg", "food"], on_error="skip", split={"test": 0.0, "validation": 0.0}
        ),
        "multilabel",
        require_test=False,
    )
    labels = {row["text"].strip(): json.loads(row["label"]) for row in result.splits["train"]}
    assert labels["the food was good"] == ["food", "pos"] and labels["nothing to see"] == []
    assert labels["blank string"] == [] and labels["Food and Pos"] == ["food", "pos"]
    listed = {b["where"]: b["reason"] for b in result.report["bad_rows"]["listed"]}
    assert listed == {
        f"{path}:4": "unknown label 'weird' (allowed: food, neg, pos; data.labels)",
        f"{path}:5": "field 'tags' must list labels (strings or integers), got a number in it",
    }
    assert result.report["splits"]["train"]["labels"] == {"(none)": 2, "food": 2, "neg": 1, "pos": 2}


def test_a_held_out_label_that_training_never_shows_is_a_bad_row(tmp_path):
    train = write_csv(tmp_path / "train.csv", tagged_rows(40), header=("text", "tags"))
    test = write_csv(
        tmp_path / "test.csv", [("a new kind of row", "pos|alien"), ("fine", "pos")], header=("text", "tags")
    )
    result = prepare_data(
        ml_config(train, test=str(test), on_error="skip", split={"validation": 0.0}), "multilabel"
    )
    (bad,) = result.report["bad_rows"]["listed"]
    assert bad["where"] == f"{test}:2" and bad["reason"].startswith(
        "label 'alien' never occurs in the training split"
    )
    assert len(result.splits["test"]) == 1


def test_multi_label_config_is_checked():
    assert ml_config("t.csv").evaluation.metric == "micro_f1"
    with pytest.raises(
        LmtuneError, match=r"evaluation.metric = 'f1_macro' is not a classify multi-label metric"
    ):
        validate({"data": ML, "evaluation": {"metric": "f1_macro"}}, "test")
    with pytest.raises(LmtuneError, match=r"data.multi_label: only for task classify, not 'regress'"):
        validate({"task": "regress", "data": ML}, "test")
    with pytest.raises(LmtuneError, match=r"data.augment.balance: not with data.multi_label"):
        validate({"data": {**ML, "augment": {"balance": "weights"}}}, "test")
    with pytest.raises(LmtuneError, match=r"evaluation.metrics: unknown metric 'accuracy'"):
        validate({"data": ML, "evaluation": {"metrics": ["accuracy"]}}, "test")


# -------------------------------------------------------------------------------------- runs


@pytest.fixture(scope="module")
def ml_run(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multilabel")
    path = write_csv(tmp / "tags.csv", tagged_rows(240), header=("text", "tags"))
    raw = tiny_config(
        tiny_model_dir("bert"),
        path,
        tmp / "runs",
        data={**ML, "label_separator": "|"},
        training={"epochs": 8, "eval_every": 20, "early_stopping": {"patience": None}},
    )
    raw["data"]["split"] = {"method": "hash", "validation": 0.15, "test": 0.2}
    raw["evaluation"] = {"baselines": ["base", "probe"]}
    cfg = validate(raw, "test")
    prepared = classify.prepare(cfg)
    with open_run(cfg) as run_dir:
        metrics = classify.train(cfg, prepared, run_dir)
    return tmp / "runs" / "run", metrics


def test_a_multi_label_run_learns_tunes_thresholds_and_reports(ml_run):
    run_dir, metrics = ml_run
    tuned, base = metrics["test"]["tuned"], metrics["test"]["base"]
    assert tuned["micro_f1"] > 0.75 and tuned["micro_f1"] > base["micro_f1"] + 0.2, metrics["test"]
    assert metrics["labels"] == ["food", "neg", "pos"]
    assert set(metrics["thresholds"]) == {"food", "neg", "pos"} and set(
        metrics["thresholds"].values()
    ) <= set(GRID)
    assert tuned["per_label"]["food"]["threshold"] == metrics["thresholds"]["food"]
    assert {"probe", "base", "tuned"} == set(metrics["test"])
    report = (run_dir / "report.html").read_text()
    assert (
        "Per-label scores (tuned)" in report
        and "<th>threshold</th>" in report
        and "<th>micro_f1</th>" in report
    )
    saved = json.loads((run_dir / "predictions.json").read_text())
    assert np.asarray(saved["kinds"]["multilabel"]["truth"]["y_true"]).shape == (metrics["rows"]["test"], 3)
    assert json.loads((run_dir / "model" / "lmtune_model.json").read_text())["multi_label"] is True


def test_a_multi_label_run_predicts_every_label_above_its_threshold(ml_run, tmp_path, capsys):
    run_dir, metrics = ml_run
    assert classify.evaluate(run_dir)["micro_f1"] == pytest.approx(metrics["test"]["tuned"]["micro_f1"])
    run = Predictor.open(run_dir)
    (both, neither) = run.predict(["the movie was great and the food", "the day was quite this"])
    for prediction in (both, neither):
        above = {label for label, p in prediction["scores"].items() if p >= metrics["thresholds"][label]}
        assert set(prediction["labels"]) == above
    other = write_csv(tmp_path / "other.csv", tagged_rows(30, seed=5), header=("body", "y"))
    scored = classify.evaluate(run_dir, str(other), text_column="body", label_column="y")
    assert scored["n"] == 30 and scored["micro_f1"] > 0.6
    unknown = write_csv(tmp_path / "unknown.csv", [("x y z", "pos|alien")], header=("text", "tags"))
    with pytest.raises(LmtuneError, match=r"unknown.csv:2: label 'alien' is unknown to this model"):
        classify.evaluate(run_dir, str(unknown))
    assert main(["compare", str(run_dir), "--out", str(tmp_path / "cmp")]) == 0  # tuned vs its untuned base
    compared = json.dumps(json.loads((tmp_path / "cmp" / "compare.json").read_text()))
    assert "micro_f1" in compared and "subset_accuracy" in compared
    capsys.readouterr()
    assert main(["predict", str(run_dir), "the food was lovely"]) == 0
    labels, text = capsys.readouterr().out.strip().split("\t")
    assert set(labels.split(",")) <= {"food", "neg", "pos", "(none)"} and text == "the food was lovely"


def test_multi_label_lora_on_roberta(tiny_model_dir, tmp_path):
    path = write_csv(tmp_path / "tags.csv", tagged_rows(90), header=("text", "tags"))
    raw = tiny_config(
        tiny_model_dir("roberta"),
        path,
        tmp_path / "runs",
        data={**ML, "label_separator": "|"},
        method={"name": "lora", "lora": {"r": 4, "alpha": 8}},
        training={"epochs": 1},
    )
    cfg = validate(raw, "test")
    prepared = classify.prepare(cfg)
    with open_run(cfg) as run_dir:
        metrics = classify.train(cfg, prepared, run_dir)
    assert 0 < metrics["parameters"]["trainable"] < metrics["parameters"]["total"] / 5
    (prediction,) = Predictor.open(tmp_path / "runs" / "run").predict(["the food"])
    assert set(prediction["scores"]) == {"food", "neg", "pos"}
