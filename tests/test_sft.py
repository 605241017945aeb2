"""Instruction tuning end to end on tiny random-init decoders: learning, stopping, packing, bad records."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import capital_records, smollm2_tokenizer, tiny_sft_config

from lmtune.config import validate
from lmtune.data.batches import collate, pack
from lmtune.errors import LmtuneError
from lmtune.models.load import load_generative
from lmtune.models.loss import labelled_loss
from lmtune.runs import open_run
from lmtune.tasks import sft


def run_sft(raw: dict):
    config = validate(raw, "test")
    prepared = sft.prepare(config)
    with open_run(config) as run_dir:
        metrics = sft.train(config, prepared, run_dir)
    return config, metrics


@pytest.fixture
def capitals_json(tmp_path):
    path = tmp_path / "capitals.json"
    path.write_text(json.dumps(capital_records(200)))
    return path


def test_sft_learns_answers_and_stops_at_end_of_turn(tiny_generative_dir, capitals_json, tmp_path):
    model_dir = tiny_generative_dir("llama")
    config, metrics = run_sft(tiny_sft_config(model_dir, capitals_json, tmp_path / "runs"))
    base, tuned = metrics["test"]["base"], metrics["test"]["tuned"]
    assert tuned["loss"] < base["loss"] / 5
    assert tuned["perplexity"] < 2.0
    assert tuned["exact_match"] >= 0.6 and tuned["rougeL"] > base["rougeL"]
    assert tuned["stop_rate"] == 1.0 and base["stop_rate"] < 0.5
    run_dir = tmp_path / "runs" / "run"
    saved = json.loads((run_dir / "model" / "lmtune_model.json").read_text())
    assert saved["template"] == "tokenizer" and saved["stop"]["token_ids"] == [2]
    generation = json.loads((run_dir / "model" / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [2]
    rows = [json.loads(line) for line in (run_dir / "generations.jsonl").read_text().splitlines()]
    assert len(rows) == 16 and {"prompt", "reference", "base", "tuned"} <= rows[0].keys()
    report = (run_dir / "report.html").read_text()
    assert "Sample answers" in report and "What is the capital of" in report and "data:image/png" in report

    answers = sft.predict(run_dir, ["What is the capital of Japan?", "What is the capital of Peru?"])
    assert [a["answer"] for a in answers] == ["Tokyo", "Lima"]
    assert all(a["stopped"] for a in answers)
    again = sft.evaluate(run_dir)  # the same test split, re-cut from the same file and seed
    assert again["loss"] == pytest.approx(tuned["loss"], rel=1e-4)

    # eval --data honours the reader flags on a generative run too (they were dropped once)
    records = capital_records(12, seed=3)
    semicolons = tmp_path / "capitals.csv"
    semicolons.write_text(
        "instruction;output\n" + "".join(f"{r['instruction']};{r['output']}\n" for r in records)
    )
    plain = tmp_path / "capitals_again.json"
    plain.write_text(json.dumps(records))
    read = sft.evaluate(run_dir, str(semicolons), separator=";", columns=None, text_column=None)
    assert read["loss"] == pytest.approx(sft.evaluate(run_dir, str(plain))["loss"], rel=1e-6)


def test_packed_rows_give_the_same_loss_as_separate_examples(tiny_generative_dir):
    """Positions restart per example and attention stays inside it: packing changes nothing but speed."""
    tokenizer = smollm2_tokenizer()
    for arch in ("llama", "gpt2"):
        model = load_generative(tiny_generative_dir(arch), attn_implementation="eager").eval()
        examples = []
        for text in ["Paris is in France.", "Rome is the capital of Italy, a country in Europe.", "Hi"]:
            ids = tokenizer.encode(text)
            examples.append(sft.Encoded(ids, ids, "x"))
        rows = pack(examples, limit=64)
        assert len(rows) == 1 and rows[0]["position_ids"][:3] == [0, 1, 2]
        packed_sum, packed_n = labelled_loss(model, collate(tokenizer.pad_token_id)(rows))
        separate = [
            labelled_loss(
                model, collate(tokenizer.pad_token_id)([{"input_ids": e.input_ids, "labels": e.labels}])
            )
            for e in examples
        ]
        assert int(packed_n) == sum(int(n) for _, n in separate)
        assert float(packed_sum) == pytest.approx(sum(float(s) for s, _ in separate), rel=1e-5), arch


def test_labelled_loss_equals_the_model_loss(tiny_generative_dir):
    tokenizer = smollm2_tokenizer()
    model = load_generative(tiny_generative_dir("qwen2")).eval()
    ids = tokenizer.encode("The capital of France is Paris, and of Italy Rome.")
    labels = [-100] * 5 + ids[5:]
    batch = collate(tokenizer.pad_token_id)(
        [{"input_ids": ids, "labels": labels}, {"input_ids": ids[:7], "labels": labels[:7]}]
    )
    total, count = labelled_loss(model, batch)
    with torch.no_grad():
        reference = model(**batch).loss
    assert float(total / count) == pytest.approx(float(reference), rel=1e-5)


def test_chunked_output_layer_gives_the_same_loss_and_gradients(tiny_generative_dir, monkeypatch):
    from lmtune.models import loss

    tokenizer = smollm2_tokenizer()
    model = load_generative(tiny_generative_dir("llama"))
    ids = tokenizer.encode("The capital of France is Paris, and the capital of Italy is Rome.")
    batch = collate(tokenizer.pad_token_id)([{"input_ids": ids, "labels": ids}] * 3)

    def loss_and_grad():
        model.zero_grad()
        total, count = labelled_loss(model, batch)
        total.backward()
        return float(total), model.get_output_embeddings().weight.grad.clone()

    whole, whole_grad = loss_and_grad()
    monkeypatch.setattr(loss, "CHUNK", 5)  # 3 x 16 labelled tokens in chunks of 5, recomputed in backward
    chunked, chunked_grad = loss_and_grad()
    assert chunked == pytest.approx(whole, rel=1e-5)
    # float32 sums in another order (chunk by chunk): equal to ~1e-6 of the gradient's scale, not bit
    # for bit (measured 1.5e-6 relative on an AVX-512 CPU); a dropped or doubled chunk is off by ~1.
    scale = whole_grad.abs().max()
    assert (chunked_grad - whole_grad).abs().max() <= 1e-5 * scale


def test_over_long_conversations_fail_or_are_skipped_and_counted(tiny_generative_dir, tmp_path):
    records = capital_records(60)
    records[7]["output"] = "word " * 200  # far beyond model.max_length = 64
    path = tmp_path / "long.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    raw = tiny_sft_config(tiny_generative_dir("llama"), path, tmp_path / "runs", training={"max_steps": 2})
    with pytest.raises(
        LmtuneError, match=r"long.jsonl:8: conversation is \d+ tokens, longer than model.max_length = 64"
    ):
        sft.prepare(validate(raw, "test"))
    assert not (tmp_path / "runs").exists()
    raw["data"]["on_error"] = "skip"
    _, metrics = run_sft(raw)
    assert metrics["skipped_records"] == 1
    assert sum(metrics["rows"].values()) == 59
    assert "long.jsonl:8" in (tmp_path / "runs" / "run" / "report.html").read_text()


def test_continued_pretraining_on_plain_text(tiny_generative_dir, tmp_path):
    lines = [
        f"The {w} cat sat on the {v} mat near the door."
        for w in ("black", "white", "grey")
        for v in ("red", "blue")
    ]
    train = tmp_path / "corpus.txt"
    train.write_text("\n".join(lines * 12) + "\n" + "long " * 300 + "\n")
    test = tmp_path / "heldout.txt"
    test.write_text("\n".join(lines) + "\n")
    raw = tiny_sft_config(
        tiny_generative_dir("gpt2"),
        train,
        tmp_path / "runs",
        data={"validation": str(test), "test": str(test)},  # the long line stays in train
        training={"epochs": 30},
    )
    _, metrics = run_sft(raw)
    base, tuned = metrics["test"]["base"], metrics["test"]["tuned"]
    assert tuned["perplexity"] < 2.0 < 1000 < base["perplexity"]
    assert "rougeL" not in tuned  # plain text: nothing to answer
    assert metrics["documents_split"] == 1  # the 300-word line is cut into max_length chunks, and counted
    assert "rows of ≤ 64 tokens" in metrics["packing"]


def test_alpaca_template_on_gpt2_and_wrong_model_kind(tiny_generative_dir, capitals_json, tmp_path):
    raw = tiny_sft_config(
        tiny_generative_dir("gpt2"),
        capitals_json,
        tmp_path / "runs",
        chat={"template": "alpaca"},
        training={"max_steps": 3},
    )
    config = validate(raw, "test")
    prepared = sft.prepare(config)
    assert prepared.template == "alpaca" and prepared.stop.token_ids == [prepared.tokenizer.eos_token_id]
    first = prepared.splits["train"][0]
    trained = prepared.tokenizer.decode(
        [t for t, label in zip(first.input_ids, first.labels, strict=True) if label != -100]
    )
    assert trained.endswith(prepared.tokenizer.eos_token + "\n\n")
    raw["model"]["name"] = str(tiny_generative_dir("t5"))
    with pytest.raises(LmtuneError, match="encoder-decoder model; use task: seq2seq"):
        sft.prepare(validate(raw, "test"))
