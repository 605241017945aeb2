"""lmtune eval with intervals and lmtune compare: saved predictions, paired tests, bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import SHARED, synthetic_rows, tiny_config, write_csv

from lmtune.cli import main


def _train(tmp_path: Path, model_dir: Path, data: Path, name: str, **training) -> Path:
    raw = tiny_config(model_dir, data, tmp_path / "runs", training=training)
    raw["output"]["name"] = name
    config = tmp_path / f"{name}.yaml"
    config.write_text(yaml.safe_dump(raw))
    assert main(["train", str(config)]) == 0
    return tmp_path / "runs" / name


@pytest.fixture(scope="module")
def two_runs(tiny_model_dir, tmp_path_factory):
    """Two runs of one config and test split: one learns, the other (learning rate 1e-12) cannot."""
    folder = tmp_path_factory.mktemp("compare")
    data = write_csv(folder / "reviews.csv", synthetic_rows(160))
    model = tiny_model_dir("bert")
    return (
        _train(folder, model, data, "seed1", seed=1),
        _train(folder, model, data, "seed2", seed=2, learning_rate=1e-12),
    )


def test_a_run_keeps_its_predictions_and_intervals(two_runs):
    run = two_runs[0]
    metrics = json.loads((run / "metrics.json").read_text())["test"]
    saved = json.loads((run / "predictions.json").read_text())
    block = saved["kinds"]["classify"]
    assert list(block["models"]) == ["base", "tuned"]
    n = len(block["where"])
    assert n == metrics["tuned"]["n"] == len(block["truth"]["y_true"])
    tuned = block["models"]["tuned"]
    # the saved predictions reproduce the headline figure
    correct = sum(p == t for p, t in zip(tuned["y_pred"], block["truth"]["y_true"], strict=True))
    assert metrics["tuned"]["accuracy"] == pytest.approx(correct / n)
    for name in ("accuracy", "f1_macro", "mcc", "roc_auc"):
        low, high = metrics["tuned"]["ci"][name]
        assert low <= metrics["tuned"][name] <= high
    assert all(abs(sum(p) - 1) < 1e-4 for p in tuned["probs"])


def test_eval_prints_intervals_and_matches_the_run(two_runs, capsys):
    run = two_runs[0]
    assert main(["eval", str(run), "--output", str(run.parent / "eval.json")]) == 0
    out = capsys.readouterr().out
    assert "95% bootstrap confidence interval" in out
    again = json.loads((run.parent / "eval.json").read_text())
    saved = json.loads((run / "metrics.json").read_text())["test"]["tuned"]
    assert again["accuracy"] == saved["accuracy"] and again["ci"] == saved["ci"]


def test_compare_two_runs_and_the_base(two_runs, capsys, tmp_path):
    first, second = two_runs
    out = tmp_path / "cmp"
    assert main(["compare", str(first), str(second), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "paired tests against 'seed1'" in text
    result = json.loads((out / "compare.json").read_text())
    assert list(result["scores"]) == ["base", "seed1", "seed2"]
    tests = {(t["model"], t["metric"]): t for t in result["tests"]}
    assert set(tests) == {(m, k) for m in ("base", "seed2") for k in ("accuracy", "f1_macro")}
    assert tests[("seed2", "accuracy")]["test"] == "mcnemar"
    assert tests[("seed2", "f1_macro")]["test"] == "paired bootstrap"
    scores = result["scores"]
    for (model, metric), test in tests.items():
        assert test["difference"] == pytest.approx(scores[model][metric] - scores["seed1"][metric])
    html = (out / "compare.html").read_text()
    assert html.count("<img") == 1 and "Paired tests against seed1" in html


def test_compare_on_a_file_scores_every_run_and_the_base_now(two_runs, tmp_path, capsys):
    other = write_csv(tmp_path / "other.csv", synthetic_rows(40, seed=9))
    out = tmp_path / "cmp-file"
    assert main(["compare", *map(str, two_runs), "--data", str(other), "--out", str(out)]) == 0
    result = json.loads((out / "compare.json").read_text())
    assert result["examples"] == {"classify": 40}
    # the base is rebuilt as training scored it: same seed, same head
    saved_base = json.loads((two_runs[0] / "metrics.json").read_text())["test"]["base"]
    assert 0 <= result["scores"]["base"]["accuracy"] <= 1 and "accuracy" in saved_base


@pytest.mark.parametrize(
    "args, message",
    [
        (["--metrics", "f2"], "unknown metric 'f2'"),
        (["--reference", "nobody"], "--reference 'nobody' is not one of the compared models"),
    ],
)
def test_compare_bad_options_are_one_line(two_runs, capsys, args, message):
    assert main(["compare", *map(str, two_runs), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_compare_refuses_a_folder_that_is_not_a_run(two_runs, tmp_path, capsys):
    (tmp_path / "notarun").mkdir()
    assert main(["compare", str(two_runs[0]), str(tmp_path / "notarun")]) == 2
    err = capsys.readouterr().err
    assert "is not a finished lmtune run directory" in err and err.count("\n") == 1


def test_compare_refuses_runs_tested_on_different_examples(tiny_model_dir, tmp_path, capsys):
    model = tiny_model_dir("bert")
    a = _train(tmp_path, model, write_csv(tmp_path / "a.csv", synthetic_rows(120)), "a")
    b = _train(tmp_path, model, write_csv(tmp_path / "b.csv", synthetic_rows(120, seed=5)), "b")
    capsys.readouterr()
    assert main(["compare", str(a), str(b)]) == 2
    err = capsys.readouterr().err
    assert "different classify examples" in err and "--data FILE" in err


@pytest.mark.slow
def test_sst2_two_seeds_do_not_differ_but_both_beat_the_base(tmp_path, capsys):
    """The judged case: two seeds of one config → overlapping intervals and no significant difference;
    a run against its untuned base → a significant one."""
    runs = []
    for seed in (1, 2):
        raw = {
            "model": {"name": "bundled:minilm", "max_length": 64},
            "data": {
                "train": str(SHARED / "sst2" / "train.tsv"),
                "test": str(SHARED / "sst2" / "dev.tsv"),
                "text_column": "sentence",
                "label_column": "label",
                "max_train_rows": 4096,
                "split": {"validation": 0.005},  # 335 rows: validation is cut before the subsample
                "pii": {
                    "action": "off"
                },  # film reviews; scanning 67k rows twice costs time, proves nothing here
            },
            "training": {"epochs": 1, "batch_size": 32, "learning_rate": 5e-5, "seed": seed},
            "evaluation": {"baselines": ["base"]},
            "output": {"dir": str(tmp_path / "runs"), "name": f"sst2-seed{seed}"},
        }
        config = tmp_path / f"sst2-seed{seed}.yaml"
        config.write_text(yaml.safe_dump(raw))
        assert main(["train", str(config)]) == 0
        runs.append(tmp_path / "runs" / f"sst2-seed{seed}")
    capsys.readouterr()
    assert main(["compare", *map(str, runs), "--out", str(tmp_path / "cmp")]) == 0
    print(capsys.readouterr().out)
    result = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert result["examples"] == {"classify": 872}
    tests = {(t["model"], t["metric"]): t for t in result["tests"]}
    for metric in ("accuracy", "f1_macro"):
        seeds = tests[("sst2-seed2", metric)]
        assert seeds["intervals_overlap"] and not seeds["significant"], seeds
        base = tests[("base", metric)]
        assert base["significant"] and base["p_value"] < 0.01 and base["difference"] < -0.2, base
    assert result["scores"]["sst2-seed1"]["accuracy"] > 0.75


def test_the_report_table_shows_the_metrics_asked_for(two_runs):
    from lmtune.evaluate.report import classification_sections

    metrics = json.loads((two_runs[0] / "metrics.json").read_text())
    table = classification_sections(metrics["test"], metrics["labels"], ["mcc", "f1_weighted"])[0][1]
    assert "<th>mcc</th><th>f1_weighted</th>" in table and "<th>accuracy</th>" not in table
