"""The catastrophic-forgetting check on tiny random-init models: perplexity references on SFT runs, probe
references on classify runs, and bad references failing before any run directory exists."""

from __future__ import annotations

import json
import random

import pytest
import yaml
from conftest import SHARED, capital_records, tiny_config, tiny_sft_config, write_csv

from lmtune.cli import main
from lmtune.config import validate
from lmtune.data.formats import Example
from lmtune.errors import LmtuneError
from lmtune.evaluate import forgetting
from lmtune.evaluate.generation import heldout_loss
from lmtune.models.load import load_classifier, load_generative, load_tokenizer
from lmtune.runs import open_run
from lmtune.tasks import classify, generative, sft

PROSE = [
    "The river runs past the old mill and under the stone bridge before it reaches the sea.",
    "Scientists measured the temperature of the lake every morning for three years.",
    "A small bakery on the corner sells bread, cakes and coffee to the people of the town.",
    "The orchestra played a symphony that the composer had written during a long winter.",
]


@pytest.fixture
def capitals_json(tmp_path):
    path = tmp_path / "capitals.json"
    path.write_text(json.dumps(capital_records(120)))
    return path


@pytest.fixture
def prose_txt(tmp_path):
    """Plain text unlike the training data; one document far longer than model.max_length = 64."""
    path = tmp_path / "prose.txt"
    path.write_text("\n".join([*PROSE, " ".join(PROSE * 4)]) + "\n")
    return path


def run(recipe, raw: dict) -> tuple[dict, str]:
    config = validate(raw, "test")
    prepared = recipe.prepare(config)
    with open_run(config) as run_dir:
        metrics = recipe.train(config, prepared, run_dir)
    return metrics, (run_dir.parent / "run" / "report.html").read_text()


def sft_raw(model_dir, data, out, references: list[dict], **training) -> dict:
    return tiny_sft_config(
        model_dir,
        data,
        out,
        training={"epochs": 1, "eval_every": None, **training},
        evaluation={"generation": {"max_new_tokens": 4, "prompts": 2}, "forgetting": references},
    )


def test_change_is_relative_and_the_flag_follows_the_threshold():
    ppl = forgetting.Reference("wiki", "perplexity", 0.10, encoded=[object()] * 3)
    acc = forgetting.Reference("topics", "probe", 0.10, texts=["a"] * 4, labels=["x", "y"] * 2)
    up = forgetting.change(ppl, 20.0, 23.0)
    assert up["change"] == pytest.approx(0.15) and up["catastrophic"] and up["n"] == 3
    assert not forgetting.change(ppl, 20.0, 21.0)["catastrophic"]  # +5%
    assert not forgetting.change(ppl, 20.0, 10.0)["catastrophic"]  # better
    down = forgetting.change(acc, 0.8, 0.7)
    assert (
        down["change"] == pytest.approx(-0.125)
        and down["catastrophic"]
        and down["metric"] == "probe_accuracy"
    )
    assert not forgetting.change(acc, 0.8, 0.75)["catastrophic"]  # -6.25%
    assert not forgetting.change(acc, 0.6, 0.9)["catastrophic"]


def test_perplexity_reference_flags_a_wrecked_model(tiny_generative_dir, capitals_json, prose_txt, tmp_path):
    """A large learning rate on capitals wrecks prose (flagged); held-out capital questions, scored on
    their answers through the chat template, get better (not flagged)."""
    model_dir = tiny_generative_dir("llama")
    quiz = tmp_path / "quiz.json"
    quiz.write_text(json.dumps(capital_records(20, seed=9)))
    references = [{"data": str(prose_txt)}, {"data": str(quiz), "name": "capital quiz"}]  # auto: perplexity
    raw = sft_raw(model_dir, capitals_json, tmp_path / "runs", references, learning_rate=0.05, max_steps=30)
    metrics, report = run(sft, raw)
    strict, quiz_result = metrics["forgetting"]
    assert strict["name"] == "prose" and strict["kind"] == "perplexity" and strict["metric"] == "perplexity"
    assert strict["change"] == pytest.approx((strict["after"] - strict["before"]) / strict["before"])
    assert strict["change"] > strict["threshold"] == 0.10 and strict["catastrophic"]
    assert quiz_result["change"] < -0.5 and not quiz_result["catastrophic"] and quiz_result["n"] == 20

    # before = the untuned model, after = the saved tuned one, on the same max_length windows
    config = validate(raw, "test")
    tokenizer = load_tokenizer(model_dir)
    examples = [
        Example(None, line, f"prose.txt:{i}") for i, line in enumerate(prose_txt.read_text().splitlines())
    ]
    windows = sft.encode_split(config, tokenizer, examples, {})
    assert strict["n"] == len(windows) > len(examples)  # the long document became several windows
    pad = tokenizer.pad_token_id
    assert heldout_loss(config, load_generative(model_dir), pad, windows, "x")["perplexity"] == pytest.approx(
        strict["before"], rel=1e-4
    )
    tuned = generative.load(tmp_path / "runs" / "run").model
    assert heldout_loss(config, tuned, pad, windows, "x")["perplexity"] == pytest.approx(
        strict["after"], rel=1e-4
    )

    assert "<h2>Forgetting</h2>" in report and "Catastrophic forgetting on prose" in report
    assert "CATASTROPHIC" in report and "Catastrophic forgetting on capital quiz" not in report


def test_a_gentle_run_passes_perplexity_and_probe(
    tiny_generative_dir, capitals_json, prose_txt, tmp_path, capsys
):
    """A near-zero learning rate changes nothing: no flag. A decoder's body can be probed too."""
    topics = write_csv(tmp_path / "topics.csv", topic_rows(40))
    references = [{"data": str(prose_txt)}, {"data": str(topics), "kind": "probe"}]
    raw = sft_raw(
        tiny_generative_dir("gpt2"),
        capitals_json,
        tmp_path / "runs",
        references,
        learning_rate=1e-7,
        max_steps=3,
    )
    metrics, report = run(sft, raw)
    prose, probe = metrics["forgetting"]
    assert abs(prose["change"]) < 0.01 and not prose["catastrophic"]
    assert probe["metric"] == "probe_accuracy" and probe["n"] == 40 and 0.0 <= probe["before"] <= 1.0
    assert abs(probe["change"]) < 0.10 and not probe["catastrophic"]
    out = capsys.readouterr()
    assert "forgetting: prose: perplexity" in out.out and "forgetting: topics: probe_accuracy" in out.out
    assert "WARNING" not in out.err
    assert "<h2>Forgetting</h2>" in report and "Catastrophic forgetting" not in report


def topic_rows(n: int, seed: int = 1) -> list[tuple[str, str]]:
    """A second labelled task (sport or food) for the probe: words unlike the sentiment training data."""
    words = {
        "sport": ["football", "goal", "match", "team", "race"],
        "food": ["soup", "bread", "cheese", "apple", "rice"],
    }
    rng = random.Random(seed)
    return [
        (" ".join(rng.sample(words[topic], 3) + rng.sample(["the", "a", "today", "we", "saw"], 2)), topic)
        for topic in ["sport", "food"] * (n // 2)
    ]


def test_probe_reference_on_a_classify_run(tiny_model_dir, labelled_csv, tmp_path):
    model_dir = tiny_model_dir("bert")
    topics = write_csv(tmp_path / "topics.csv", topic_rows(60), header=("body", "topic"))
    reference = {"data": str(topics), "text_column": "body", "label_column": "topic", "max_rows": 50}
    raw = tiny_config(
        model_dir,
        labelled_csv,
        tmp_path / "runs",
        training={"epochs": 1},
        evaluation={"baselines": ["base"], "forgetting": [reference]},
    )
    metrics, report = run(classify, raw)
    [result] = metrics["forgetting"]
    assert result["name"] == "topics" and result["kind"] == "probe" and result["metric"] == "probe_accuracy"
    assert result["n"] == 50 and 0.0 <= result["before"] <= 1.0 and 0.0 <= result["after"] <= 1.0
    assert result["change"] == pytest.approx((result["after"] - result["before"]) / result["before"])
    assert result["catastrophic"] == (-result["change"] > 0.10)
    assert "<h2>Forgetting</h2>" in report and "topics" in report

    # before: the untuned body (the head is not used); the same folds give the same score
    config = validate(raw, "test")
    [again] = forgetting.read(config, load_tokenizer(model_dir))
    untuned = load_classifier(model_dir, ["neg", "pos"])
    assert forgetting.measure(config, untuned, load_tokenizer(model_dir), [again]) == [
        pytest.approx(result["before"])
    ]


@pytest.mark.parametrize(
    "reference, message",
    [
        ({"data": "missing.txt"}, "evaluation.forgetting.0.data: file 'missing.txt' does not exist"),
        (
            {"data": "{text}", "kind": "bleu"},
            "evaluation.forgetting.0.kind = 'bleu': Input should be 'auto', 'perplexity' or 'probe'",
        ),
        (
            {"data": "{text}"},
            "evaluation.forgetting.0: kind probe needs labelled rows, but {text} has no field 'label'",
        ),
        (
            {"data": "{text}", "kind": "perplexity"},
            "evaluation.forgetting.0.kind = 'perplexity': not available for task classify; allowed: auto, probe",
        ),
        (
            {"data": "bundled:nope"},
            "evaluation.forgetting.0.data: unknown bundled dataset 'bundled:nope'; allowed: bundled:drug-reviews",
        ),
        ({"data": "{one_class}"}, "evaluation.forgetting.0: a probe needs ≥ 2 classes with ≥ 2 rows each"),
    ],
)
def test_bad_references_fail_before_a_run_directory_exists(
    tiny_model_dir, labelled_csv, tmp_path, capsys, reference, message
):
    text = tmp_path / "plain.txt"
    text.write_text("\n".join(PROSE) + "\n")
    one_class = write_csv(tmp_path / "one.csv", [(p, "x") for p in PROSE])
    fill = {"text": str(text), "one_class": str(one_class)}
    reference = {
        key: value.format(**fill) if isinstance(value, str) else value for key, value in reference.items()
    }
    raw = tiny_config(
        tiny_model_dir("bert"), labelled_csv, tmp_path / "runs", evaluation={"forgetting": [reference]}
    )
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lmtune: error: ") and err.count("\n") == 1
    assert message.format(**fill) in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "arch, task, kind, message",
    [
        ("llama", "sft", "probe", "kind probe needs labelled rows, but {prose} has no field 'label'"),
        (
            "t5",
            "seq2seq",
            "auto",
            "evaluation.forgetting.0.data: plain text has no perplexity under an encoder-decoder",
        ),
        ("t5", "seq2seq", "probe", "evaluation.forgetting.0.kind = 'probe': not available for task seq2seq"),
    ],
)
def test_bad_references_fail_generative_runs_before_a_run_directory_exists(
    tiny_generative_dir, capitals_json, prose_txt, tmp_path, capsys, arch, task, kind, message
):
    raw = sft_raw(
        tiny_generative_dir(arch), capitals_json, tmp_path / "runs", [{"data": str(prose_txt), "kind": kind}]
    )
    raw["task"] = task
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message.format(prose=prose_txt) in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "wikitext2").is_dir(), reason="needs the shared WikiText-2 data")
def test_smollm2_on_wikitext2_keeps_its_perplexity_under_a_gentle_lora(tmp_path, capsys):
    """A real check: a short LoRA SFT of SmolLM2 on Alpaca, WikiText-2 as the reference."""
    reference = {
        "data": str(SHARED / "wikitext2" / "raw" / "wiki.test.raw"),
        "max_rows": 24,
        "name": "wikitext2",
    }
    raw = {
        "task": "sft",
        "model": {"name": "bundled:smollm2-135m-instruct", "max_length": 256},
        "data": {
            "train": str(SHARED / "alpaca_1k" / "alpaca_data_1k.json"),
            "max_train_rows": 64,
            "on_error": "skip",
            "split": {"validation": 0.0, "test": 0.01},
        },
        "method": {"name": "lora"},
        "training": {
            "max_steps": 3,
            "batch_size": 2,
            "learning_rate": 2e-4,
            "eval_every": None,
            "logging_steps": 1,
        },
        "evaluation": {"baselines": [], "generation": {"prompts": 0}, "forgetting": [reference]},
        "output": {"dir": str(tmp_path / "runs"), "name": "run"},
    }
    metrics, report = run(sft, raw)
    [result] = metrics["forgetting"]
    with capsys.disabled():
        print(f"\nSmolLM2 on WikiText-2: {json.dumps(result)}")
    assert 5 < result["before"] < 100 and abs(result["change"]) < 0.10 and not result["catastrophic"]


def test_audit_section_is_the_checks_registry_home_of_forgetting(
    tiny_model_dir, labelled_csv, tmp_path, capsys
):
    """audit.forgetting works as evaluation.forgetting does and its errors name audit.forgetting.N; the
    references live in one place; a listed check needs its settings; audit.checks: [] turns checks off."""
    from lmtune.evaluate import checks

    model_dir = tiny_model_dir("bert")
    raw = tiny_config(model_dir, labelled_csv, tmp_path / "runs")
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({**raw, "audit": {"forgetting": [{"data": "missing.txt"}]}}))
    assert main(["train", str(path)]) == 2
    assert "audit.forgetting.0.data: file 'missing.txt' does not exist" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()

    reference = {"data": str(labelled_csv), "name": "again", "max_rows": 40}
    both = {**raw, "audit": {"forgetting": [reference]}, "evaluation": {"forgetting": [reference]}}
    with pytest.raises(LmtuneError, match="audit.forgetting and evaluation.forgetting both set"):
        validate(both, "test")
    with pytest.raises(
        LmtuneError, match="audit.checks: 'forgetting' is listed but audit.forgetting is empty"
    ):
        validate({**raw, "audit": {"checks": ["forgetting"]}}, "test")
    with pytest.raises(LmtuneError, match="unknown check 'bias'; allowed: forgetting"):
        validate({**raw, "audit": {"checks": ["bias"]}}, "test")
    on = validate({**raw, "audit": {"forgetting": [reference]}}, "test")
    old = validate({**raw, "evaluation": {"forgetting": [reference]}}, "test")
    off = validate({**raw, "audit": {"forgetting": [reference], "checks": []}}, "test")
    assert checks.active(on) == checks.active(old) == ["forgetting"] and checks.active(off) == []
    tokenizer = load_tokenizer(model_dir)
    [new_place] = checks.read(on, tokenizer)["forgetting"]
    [old_place] = checks.read(old, tokenizer)["forgetting"]
    assert (new_place.name, new_place.texts, new_place.labels) == (
        old_place.name,
        old_place.texts,
        old_place.labels,
    )
    assert checks.read(off, tokenizer) == {}
