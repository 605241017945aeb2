"""task: regress — a numeric target per text or pair: its metrics against scipy / scikit-learn, the
target's checks in the data pipeline, the loss, and tiny runs of every encoder family."""

from __future__ import annotations

import json
import random
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import FILLER, tiny_config, write_csv
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from lmtune.cli import main
from lmtune.config import validate
from lmtune.data.pipeline import prepare_data
from lmtune.errors import LmtuneError
from lmtune.evaluate.metrics import resampled, score
from lmtune.models.loss import regression_loss
from lmtune.runs import open_run
from lmtune.tasks import regress
from lmtune.tasks.contract import Predictor

LEVELS = {"bad": 0.5, "okay": 2.5, "great": 4.5}


def scored_rows(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """(text, score): the score follows the text's one rating word (bad < okay < great), plus noise."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        word = list(LEVELS)[i % 3]
        words = [*rng.sample(FILLER, 4), word]
        rng.shuffle(words)
        rows.append((" ".join(words), f"{LEVELS[word] + rng.uniform(-0.4, 0.4):.3f}"))
    return rows


def regress_config(model_dir, data_path, out, **sections):
    raw = tiny_config(model_dir, data_path, out, **sections)
    raw["task"] = "regress"
    raw["data"]["label_column"] = "score"
    raw["evaluation"] = {"baselines": ["base", "probe"], **sections.get("evaluation", {})}
    return validate(raw, "test")


# ----------------------------------------------------------------------------------- metrics


def test_metrics_match_scipy_and_sklearn_with_ties_and_resamples():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 6, 200).astype(float)  # integer scores: many ties, as STS-B's
    p = y + rng.normal(0, 1.5, 200)
    p[:20] = np.round(p[:20])  # ties among predictions too
    got = score("regress", {"y_true": y, "y_pred": p}, ["mse", "rmse", "mae", "pearson", "spearman", "r2"])
    assert got["mse"] == pytest.approx(mean_squared_error(y, p))
    assert got["rmse"] == pytest.approx(np.sqrt(mean_squared_error(y, p)))
    assert got["mae"] == pytest.approx(mean_absolute_error(y, p))
    assert got["r2"] == pytest.approx(r2_score(y, p))
    assert got["pearson"] == pytest.approx(pearsonr(y, p).statistic)
    assert got["spearman"] == pytest.approx(spearmanr(y, p).statistic)
    for name in ("mse", "pearson", "spearman"):
        low, high = got["ci"][name]
        assert low < got[name] < high
    idx = rng.integers(0, 200, (3, 200))  # a resample is ranked anew (its own ties)
    values = resampled("regress", {"y_true": y, "y_pred": p}, ["spearman", "pearson"], idx)
    for row, sample in zip(values, idx, strict=True):
        assert row[0] == pytest.approx(spearmanr(y[sample], p[sample]).statistic)
        assert row[1] == pytest.approx(pearsonr(y[sample], p[sample]).statistic)
    constant = score("regress", {"y_true": y, "y_pred": np.full(200, 2.0)}, ["pearson", "mse"])
    assert constant["pearson"] is None and "pearson" not in constant["ci"]  # undefined, not 0


def test_regression_loss_is_mse_huber_and_weighted(tiny_model_dir):
    from lmtune.models.load import load_classifier

    model = load_classifier(tiny_model_dir("bert"), ["score"], problem_type="regression", new_head=True)
    for module in model.modules():  # training mode (the loss's own path) without dropout's noise
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    model.train()
    batch = {
        "input_ids": torch.tensor([[101, 2204, 102], [101, 2919, 102]]),
        "attention_mask": torch.ones(2, 3, dtype=torch.long),
    }
    targets = torch.tensor([3.0, -2.0])
    predicted = model(**batch).logits.squeeze(-1)
    huber, _, _ = regression_loss("huber", 0.5)(model, {**batch, "labels": targets}, None, None)
    assert huber.item() == pytest.approx(F.huber_loss(predicted, targets, delta=0.5).item(), rel=1e-5)
    weights = torch.tensor([3.0, 1.0])
    weighted, _, _ = regression_loss("mse")(model, {**batch, "labels": targets}, weights, None)
    expected = ((predicted - targets) ** 2 * weights).sum() / weights.sum()
    assert weighted.item() == pytest.approx(expected.item(), rel=1e-5)
    assert regression_loss("mse")(model, {**batch, "labels": targets}, None, None) is None  # the model's own


# ------------------------------------------------------------------------------------- data


def test_a_target_that_is_not_a_finite_number_is_a_bad_row_with_its_line(tmp_path):
    rows = [*scored_rows(30), ("the day was okay", "n/a"), ("the food was great", "inf"), ("fine", " 3.5 ")]
    path = write_csv(tmp_path / "s.csv", rows, header=("text", "score"))
    raw = {"task": "regress", "data": {"train": str(path), "label_column": "score", "on_error": "skip"}}
    result = prepare_data(validate(raw, "test"), "numeric", require_test=False)
    listed = {b["where"]: b["reason"] for b in result.report["bad_rows"]["listed"]}
    assert listed == {
        f"{path}:32": "field 'score' must be a number (the regression target), got 'n/a'",
        f"{path}:33": "field 'score' must be a number (the regression target), got 'inf'",
    }
    assert "3.5" in {row["label"] for split in result.splits.values() for row in split}
    raw["data"]["on_error"] = "fail"
    with pytest.raises(LmtuneError, match=rf"{path}:32: field 'score' must be a number"):
        prepare_data(validate(raw, "test"), "numeric", require_test=False)


def test_a_stratified_split_keeps_the_target_distribution(tmp_path):
    rng = random.Random(1)
    rows = [(f"row {i} about the day", f"{rng.expovariate(1.0):.4f}") for i in range(1000)]
    path = write_csv(tmp_path / "skewed.csv", rows, header=("text", "score"))
    raw = {
        "task": "regress",
        "data": {"train": str(path), "label_column": "score", "split": {"method": "stratified", "test": 0.2}},
    }
    result = prepare_data(validate(raw, "test"), "numeric")
    everything = np.array([float(v) for _, v in rows])
    edges = np.quantile(everything, [0.2, 0.4, 0.6, 0.8])
    test = np.array([float(r["label"]) for r in result.splits["test"]])
    shares = np.bincount(np.searchsorted(edges, test), minlength=5) / len(test)
    assert np.allclose(shares, 0.2, atol=0.02)  # each quintile of the target keeps its share of test
    assert "target" in result.report["splits"]["test"]


def test_a_constant_target_is_refused_before_training(tiny_model_dir, tmp_path):
    path = write_csv(
        tmp_path / "flat.csv", [(t, "2.0") for t, _ in scored_rows(30)], header=("text", "score")
    )
    with pytest.raises(
        LmtuneError, match=r"flat.csv: column 'score' has one value \(2\) in every training row"
    ):
        regress.prepare(regress_config(tiny_model_dir("bert"), path, tmp_path / "runs"))


# -------------------------------------------------------------------------------------- runs


@pytest.fixture(scope="module")
def scored_csv(tmp_path_factory):
    return write_csv(
        tmp_path_factory.mktemp("regress") / "scored.csv", scored_rows(180), header=("text", "score")
    )


@pytest.fixture(scope="module")
def regress_runs(tiny_model_dir, scored_csv, tmp_path_factory):
    """A full and a LoRA run of tiny BERT on the rated texts, trained once for the tests below."""
    out = tmp_path_factory.mktemp("regress_runs")
    runs = {}
    for method in ("full", "lora"):
        sections = {"method": {"name": method}, "output": {"dir": str(out), "name": method}}
        if method == "lora":
            sections["method"]["lora"] = {"r": 8, "alpha": 16}
            sections["training"] = {"learning_rate": 1e-2, "epochs": 5}
            # the checkpoint with the lowest error: the highest Spearman comes early, while the head's
            # outputs are still near the mean (ranked right, scaled wrong)
            sections["evaluation"] = {"metric": "mse"}
        cfg = regress_config(tiny_model_dir("bert"), scored_csv, out, **sections)
        prepared = regress.prepare(cfg)
        with open_run(cfg) as run_dir:
            runs[method] = (out / method, regress.train(cfg, prepared, run_dir))
    return runs


@pytest.mark.parametrize("method", ["full", "lora"])
def test_a_run_learns_the_target_and_beats_its_untuned_base(regress_runs, method):
    run_dir, metrics = regress_runs[method]
    tuned, base = metrics["test"]["tuned"], metrics["test"]["base"]
    assert tuned["spearman"] > 0.6 and tuned["spearman"] > base["spearman"] + 0.3, metrics["test"]
    assert tuned["mse"] < base["mse"]
    assert metrics["target"]["column"] == "score" and 2.0 < metrics["target"]["mean"] < 3.0
    assert set(metrics["test"]) == {"base", "probe", "tuned"}
    saved = json.loads((run_dir / "predictions.json").read_text())
    block = saved["kinds"]["regress"]
    assert len(block["truth"]["y_true"]) == len(block["models"]["tuned"]["y_pred"]) == metrics["rows"]["test"]
    report = (run_dir / "report.html").read_text()
    assert "Predicted vs true (test)" in report and "<th>spearman</th>" in report
    assert re.search(r"<td>[\d.]+ … [\d.]+ \(mean [\d.]+, sd [\d.]+\)</td>", report)  # the splits' targets
    assert json.loads((run_dir / "model" / "lmtune_model.json").read_text())["adapter"] is (method == "lora")


def test_a_finished_run_predicts_evaluates_and_compares(regress_runs, scored_csv, tmp_path, capsys):
    run_dir, metrics = regress_runs["full"]
    assert regress.evaluate(run_dir)["spearman"] == pytest.approx(metrics["test"]["tuned"]["spearman"])
    run = Predictor.open(run_dir)
    assert not run.generative
    low, high = (run.predict([f"the movie was {word}"])[0]["score"] for word in ("bad", "great"))
    assert low < high and -1 < low < 6 and -1 < high < 6  # in the target's units, not standardised
    other = write_csv(
        tmp_path / "other.csv", [(t, s) for t, s in scored_rows(30, seed=9)], header=("body", "y")
    )
    scored = regress.evaluate(run_dir, str(other), text_column="body", label_column="y")
    assert scored["n"] == 30 and scored["spearman"] > 0.5
    with_base = regress.predictions_on(run_dir, base=True)["kinds"]["regress"]["models"]
    assert list(with_base) == ["base", "tuned"]
    capsys.readouterr()
    assert main(["predict", str(run_dir), "the food was great"]) == 0
    value, text = capsys.readouterr().out.strip().split("\t")
    assert float(value) == pytest.approx(run.predict(["the food was great"])[0]["score"], rel=1e-3)
    assert main(["compare", str(run_dir), str(regress_runs["lora"][0]), "--out", str(tmp_path / "cmp")]) == 0
    compared = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert "spearman" in json.dumps(compared) and "mse" in json.dumps(compared)


@pytest.mark.parametrize("arch", ["roberta", "xlnet"])
def test_pairs_regress_on_roberta_and_xlnet(tiny_model_dir, tmp_path, arch):
    rng = random.Random(2)
    rows = []
    for second, value in scored_rows(90):
        rows.append((" ".join(rng.sample(FILLER, 3)), second, value))  # the score follows the second text
    path = write_csv(tmp_path / "pairs.csv", rows, header=("a", "b", "score"))
    cfg = regress_config(
        tiny_model_dir(arch),
        path,
        tmp_path / "runs",
        data={"text_column": ["a", "b"], "text_pair": True},
        method={"name": "lora", "lora": {"r": 4, "alpha": 8}},
        training={"epochs": 1},
        evaluation={"baselines": ["base"]},
    )
    prepared = regress.prepare(cfg)
    assert prepared.train.pairs is not None
    with open_run(cfg) as run_dir:
        metrics = regress.train(cfg, prepared, run_dir)
    assert metrics["rows"]["train"] > 0 and np.isfinite(metrics["test"]["tuned"]["mse"])
    (prediction,) = Predictor.open(tmp_path / "runs" / "run").predict(["the day\tthe movie was great"])
    assert prediction["text_pair"] == "the movie was great" and np.isfinite(prediction["score"])


def test_cross_validation_and_search_direction_follow_the_regression_metric(
    tiny_model_dir, scored_csv, tmp_path
):
    import yaml

    from lmtune.tune.study import direction

    raw = tiny_config(
        tiny_model_dir("bert"), scored_csv, tmp_path / "runs", training={"cv_folds": 2, "epochs": 1}
    )
    raw.update(task="regress", evaluation={"baselines": [], "metric": "mse"})
    raw["data"]["label_column"] = "score"
    config = tmp_path / "cv.yaml"
    config.write_text(yaml.safe_dump(raw))
    assert main(["train", str(config)]) == 0
    cv = json.loads((tmp_path / "runs" / "run" / "cv_metrics.json").read_text())
    assert cv["folds"] == 2 and cv["validation_metric"] == "mse"
    per_fold = [f["test"]["spearman"] for f in cv["per_fold"]]
    assert {"mse", "mae", "pearson", "spearman"} <= set(cv["mean"]["test"])
    assert cv["mean"]["test"]["spearman"] == pytest.approx(np.mean(per_fold))
    assert direction(validate(raw, "test")) == "minimize"
    assert direction(validate({**raw, "evaluation": {"metric": "spearman"}}, "test")) == "maximize"
