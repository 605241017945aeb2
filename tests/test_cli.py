"""The CLI end to end on a tiny model: train, eval, predict; bad data; prior runs kept; resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from conftest import synthetic_rows, tiny_config, write_csv

from lmtune.cli import main


def config_file(tmp_path, raw, name="run.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return str(path)


@pytest.fixture(scope="module")
def finished_run(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    data = write_csv(tmp / "reviews.csv", synthetic_rows(120))
    assert main(["train", config_file(tmp, tiny_config(tiny_model_dir("bert"), data, tmp / "runs"))]) == 0
    return tmp / "runs" / "run", data


def test_train_writes_a_complete_run(finished_run):
    run_dir, _ = finished_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["rows"] == {"train": 84, "validation": 12, "test": 24}  # 70 / 10 / 20 % of 120
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert resolved["training"]["batch_size"] == 8 and resolved["output"]["name"] == "run"
    page = (run_dir / "report.html").read_text()
    for section in (
        "Test metrics: before and after",
        "Training curves",
        "Confusion matrices",
        "Resolved config",
    ):
        assert section in page
    assert page.count("data:image/png;base64,") >= 4  # comparison, curves, two confusion matrices
    assert "http://" not in page and "https://" not in page


def test_eval_reproduces_test_metrics_and_scores_other_files(finished_run, tmp_path, capsys):
    run_dir, _ = finished_run
    out = tmp_path / "eval.json"
    assert main(["eval", str(run_dir), "--output", str(out)]) == 0
    stored = json.loads((run_dir / "metrics.json").read_text())["test"]["tuned"]
    assert json.loads(out.read_text())["accuracy"] == pytest.approx(stored["accuracy"])
    other = write_csv(tmp_path / "other.csv", synthetic_rows(30, seed=5), header=("body", "y"))
    assert (
        main(["eval", str(run_dir), "--data", str(other), "--text-column", "body", "--label-column", "y"])
        == 0
    )
    assert "tuned" in capsys.readouterr().out
    unknown = write_csv(tmp_path / "unknown.csv", [("fine text", "maybe")])
    assert main(["eval", str(run_dir), "--data", str(unknown)]) == 2
    assert (
        "unknown.csv:2: label 'maybe' is unknown to this model; its labels: neg, pos"
        in capsys.readouterr().err
    )
    semicolons = write_csv(
        tmp_path / "semi.txt", synthetic_rows(20, seed=6), header=("t", "l"), delimiter=";"
    )
    reader = ["--text-column", "t", "--label-column", "l"]
    assert main(["eval", str(run_dir), "--data", str(semicolons), *reader, "--separator", ";"]) == 0
    capsys.readouterr()
    assert main(["eval", str(run_dir), "--data", str(semicolons), *reader, "--separator", "||"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "lmtune: error: --separator '||': must be one character (e.g. ',', ';', '|') or 'tab'"


def test_predict_texts_and_file(finished_run, tmp_path, capsys):
    run_dir, _ = finished_run
    assert main(["predict", str(run_dir), "a great movie", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip())
    assert result["label"] in {"neg", "pos"} and set(result["scores"]) == {"neg", "pos"}
    texts = tmp_path / "texts.txt"
    texts.write_text("one\n\ntwo\nthree\n")
    assert main(["predict", str(run_dir), "--file", str(texts)]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 3


def test_not_a_run_dir(tmp_path, capsys):
    assert main(["predict", str(tmp_path), "x"]) == 2
    assert "is not a finished lmtune run directory" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"text,target\nhello,a\n", "missing field 'label' (fields found: text, target)"),
        (b"", "the file is empty"),
        # UTF-8 (the é) with one damaged row; a file with no valid UTF-8 at all would be read as cp1252
        (b"text,label\ncaf\xc3\xa9,a\n\xff\xfebad,b\n", "train.csv:3: byte 0xff is not valid utf-8"),
    ],
)
def test_bad_training_data_leaves_nothing_behind(tiny_model_dir, tmp_path, capsys, content, message):
    data = tmp_path / "train.csv"
    data.write_bytes(content)
    path = config_file(tmp_path, tiny_config(tiny_model_dir("bert"), data, tmp_path / "runs"))
    assert main(["train", path]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_label_only_in_test_split(tiny_model_dir, tmp_path, capsys):
    train = write_csv(tmp_path / "train.csv", synthetic_rows(40))
    test = write_csv(tmp_path / "test.csv", [*synthetic_rows(5, seed=3), ("a surprising text", "neutral")])
    raw = tiny_config(tiny_model_dir("bert"), train, tmp_path / "runs", data={"test": str(test)})
    assert main(["train", config_file(tmp_path, raw)]) == 2
    err = capsys.readouterr().err
    assert "test.csv:7: label 'neutral' never occurs in the training split; training labels: neg, pos" in err
    assert not (tmp_path / "runs").exists()


def test_existing_run_is_never_clobbered(finished_run, tiny_model_dir, tmp_path, capsys):
    run_dir, data = finished_run
    before = (run_dir / "metrics.json").read_text()
    raw = tiny_config(tiny_model_dir("bert"), data, run_dir.parent)
    path = config_file(tmp_path, raw)
    assert main(["train", path]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    # a failing --overwrite run (bad data) leaves the old run as it was
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\n")
    raw["data"]["train"] = str(bad)
    assert main(["train", config_file(tmp_path, raw, "bad.yaml"), "--overwrite"]) == 2
    assert (run_dir / "metrics.json").read_text() == before
    assert not run_dir.with_name("run.partial").exists()


def _train_process(config_path, *extra):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "lmtune.cli", "train", config_path, *extra],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        # a shell that runs jobs in the background starts them with SIGINT ignored, and Python then
        # never turns Ctrl-C into KeyboardInterrupt: give the child the default disposition back
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def test_resume_after_kill_matches_uninterrupted_run(tiny_model_dir, tmp_path):
    data = write_csv(tmp_path / "train.csv", synthetic_rows(160))
    training = {"epochs": 3, "eval_every": 4, "early_stopping": {"patience": None}, "save_total_limit": 3}
    raw = tiny_config(tiny_model_dir("bert"), data, tmp_path / "runs", training=training)
    raw["output"]["name"] = "straight"
    assert main(["train", config_file(tmp_path, raw, "straight.yaml")]) == 0

    raw["output"]["name"] = "killed"
    path = config_file(tmp_path, raw, "killed.yaml")
    process = _train_process(path)
    partial = tmp_path / "runs" / "killed.partial" / "checkpoints"
    deadline = time.time() + 300
    while not (partial / "checkpoint-8" / "trainer_state.json").exists():
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "runs" / "killed").exists()

    assert main(["train", path]) == 2  # a plain re-run refuses to discard the interrupted one
    assert main(["train", path, "--resume", "--set", "training.learning_rate=0.001"]) == 2  # not the same run
    assert main(["train", path, "--resume"]) == 0
    straight = json.loads((tmp_path / "runs" / "straight" / "metrics.json").read_text())
    resumed = json.loads((tmp_path / "runs" / "killed" / "metrics.json").read_text())
    assert resumed["steps"] == straight["steps"]
    assert resumed["test"]["tuned"] == straight["test"]["tuned"]
    assert resumed["best_validation"] == pytest.approx(straight["best_validation"])
    assert not (tmp_path / "runs" / "killed.partial").exists()


def test_same_config_and_seed_give_same_metrics(tiny_model_dir, labelled_csv, tmp_path):
    training = {"epochs": 6, "learning_rate": 2e-3, "early_stopping": {"patience": None}}
    raw = tiny_config(tiny_model_dir("roberta"), labelled_csv, tmp_path / "runs", training=training)
    results, losses = [], []
    for name in ("a", "b", "c"):
        raw["output"]["name"] = name
        raw["training"]["seed"] = 7 if name == "c" else 42
        assert main(["train", config_file(tmp_path, raw, f"{name}.yaml")]) == 0
        results.append(json.loads((tmp_path / "runs" / name / "metrics.json").read_text())["test"])
        history = json.loads((tmp_path / "runs" / name / "history.json").read_text())
        losses.append([h["loss"] for h in history if "loss" in h])
    assert results[0] == results[1] and losses[0] == losses[1]
    assert losses[0] != losses[2]  # the seed matters: the equality above is not vacuous


def test_ctrl_c_keeps_checkpoints_and_says_how_to_resume(tiny_model_dir, tmp_path):
    data = write_csv(tmp_path / "train.csv", synthetic_rows(160))
    training = {"epochs": 20, "eval_every": 4, "early_stopping": {"patience": None}}
    path = config_file(
        tmp_path, tiny_config(tiny_model_dir("bert"), data, tmp_path / "runs", training=training)
    )
    process = _train_process(path)
    partial = tmp_path / "runs" / "run.partial" / "checkpoints"
    deadline = time.time() + 300
    while not (partial / "checkpoint-4" / "trainer_state.json").exists():
        assert process.poll() is None and time.time() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130  # as any command stopped by Ctrl-C
    assert "interrupted; checkpoints kept in" in err.decode() and "--resume" in err.decode()
    assert (partial / "checkpoint-4").is_dir()
    assert not (tmp_path / "runs" / "run").exists()


def test_missing_data_file_names_the_config_key(tiny_model_dir, tmp_path, capsys):
    raw = tiny_config(tiny_model_dir("bert"), tmp_path / "train.csv", tmp_path / "runs")
    write_csv(tmp_path / "train.csv", synthetic_rows(20))
    raw["data"]["test"] = str(tmp_path / "missing-test.csv")
    assert main(["train", config_file(tmp_path, raw)]) == 2
    assert f"data.test: file '{tmp_path / 'missing-test.csv'}' does not exist" in capsys.readouterr().err


def test_failure_during_training_keeps_the_old_run_and_its_neighbours(
    finished_run, tiny_model_dir, tmp_path, capsys
):
    run_dir, data = finished_run
    before = (run_dir / "metrics.json").read_text()
    neighbour = run_dir.with_name("run.old")
    neighbour.mkdir(exist_ok=True)
    (neighbour / "keep.txt").write_text("mine")
    raw = tiny_config(
        tiny_model_dir("bert"),
        data,
        run_dir.parent,
        method={"name": "lora", "lora": {"target_modules": ["qkv"]}},
    )
    assert (
        main(["train", config_file(tmp_path, raw), "--overwrite"]) == 2
    )  # fails inside the run, after open_run
    assert "target_modules" in capsys.readouterr().err
    assert (run_dir / "metrics.json").read_text() == before
    assert not run_dir.with_name("run.partial").exists()
    raw["method"] = {"name": "full"}
    assert main(["train", config_file(tmp_path, raw), "--overwrite"]) == 0
    assert (neighbour / "keep.txt").read_text() == "mine"  # replacing a run never touches other folders
    assert not [p for p in run_dir.parent.iterdir() if p.name.startswith(".run.replaced")]


def test_a_folder_that_is_not_a_run_is_never_replaced(tiny_model_dir, labelled_csv, tmp_path, capsys):
    precious = tmp_path / "runs" / "run"
    precious.mkdir(parents=True)
    (precious / "thesis.tex").write_text("years of work")
    raw = tiny_config(tiny_model_dir("bert"), labelled_csv, tmp_path / "runs")
    assert main(["train", config_file(tmp_path, raw), "--overwrite"]) == 2
    assert "is not an lmtune run directory; lmtune will not replace it" in capsys.readouterr().err
    assert (precious / "thesis.tex").read_text() == "years of work"


def test_model_input_errors_are_one_line(tiny_model_dir, labelled_csv, tmp_path, capsys):
    raw = tiny_config(tiny_model_dir("bert"), labelled_csv, tmp_path / "runs", model={"max_length": 1024})
    assert main(["train", config_file(tmp_path, raw)]) == 2
    assert (
        "model.max_length = 1024: the model reads at most 128 tokens; allowed: 4..128"
        in capsys.readouterr().err
    )
    weightless = tmp_path / "weightless"
    weightless.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (weightless / name).write_bytes((tiny_model_dir("bert") / name).read_bytes())
    raw = tiny_config(weightless, labelled_csv, tmp_path / "runs")
    assert main(["train", config_file(tmp_path, raw, "w.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"lmtune: error: model.name: cannot load '{weightless}'") and "\n" not in err
    assert not (tmp_path / "runs").exists()  # it failed before any run directory was made


def test_damaged_run_directories_and_files(finished_run, tmp_path, capsys):
    run_dir, _ = finished_run
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"caf\xe9\n")
    assert main(["predict", str(run_dir), "--file", str(latin)]) == 2
    assert "not UTF-8 text (byte 0xe9)" in capsys.readouterr().err
    copy = tmp_path / "copy"
    (copy / "model").mkdir(parents=True)
    (copy / "model" / "lmtune_model.json").write_text("{}")
    (copy / "lmtune_run.json").write_text("{not json")
    assert main(["predict", str(copy), "x"]) == 2
    assert "unreadable run marker" in capsys.readouterr().err
    (copy / "lmtune_run.json").write_text('{"task": "ranking"}')
    assert main(["eval", str(copy)]) == 2
    assert "made by task 'ranking', which this lmtune does not have" in capsys.readouterr().err
