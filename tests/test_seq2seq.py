"""Encoder-decoder instruction tuning (T5, BART) on tiny random-init models."""

from __future__ import annotations

import json

import pytest
from conftest import capital_records, tiny_sft_config

from lmtune.config import validate
from lmtune.errors import LmtuneError
from lmtune.runs import open_run
from lmtune.tasks import seq2seq


@pytest.mark.parametrize(("arch", "learning_rate"), [("t5", 0.01), ("bart", 0.003)])
def test_seq2seq_learns_answers_and_ends_them_with_eos(tiny_generative_dir, tmp_path, arch, learning_rate):
    data = tmp_path / "capitals.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in capital_records(200)))
    raw = tiny_sft_config(
        tiny_generative_dir(arch), data, tmp_path / "runs", training={"learning_rate": learning_rate}
    )
    raw["task"] = "seq2seq"
    config = validate(raw, "test")
    prepared = seq2seq.prepare(config)
    first = prepared.splits["train"][0]
    assert prepared.tokenizer.decode(first.input_ids, skip_special_tokens=True).startswith(
        "What is the capital of"
    )
    assert first.labels[-1] == prepared.tokenizer.eos_token_id
    with open_run(config) as run_dir:
        metrics = seq2seq.train(config, prepared, run_dir)
    base, tuned = metrics["test"]["base"], metrics["test"]["tuned"]
    assert tuned["loss"] < base["loss"] / 5
    assert tuned["exact_match"] >= 0.6 and tuned["stop_rate"] == 1.0
    answers = seq2seq.predict(tmp_path / "runs" / "run", ["What is the capital of Egypt?"])
    assert answers[0]["answer"] == "Cairo" and answers[0]["stopped"]


def test_seq2seq_refuses_decoder_only_models_and_plain_text(tiny_generative_dir, tmp_path):
    data = tmp_path / "capitals.json"
    data.write_text(json.dumps(capital_records(40)))
    raw = tiny_sft_config(tiny_generative_dir("llama"), data, tmp_path / "runs")
    raw["task"] = "seq2seq"
    with pytest.raises(LmtuneError, match="is decoder-only; use task: sft"):
        seq2seq.prepare(validate(raw, "test"))
    text = tmp_path / "corpus.txt"
    text.write_text("one line\nanother line\n" * 20)
    raw = tiny_sft_config(tiny_generative_dir("t5"), text, tmp_path / "runs")
    raw["task"] = "seq2seq"
    with pytest.raises(LmtuneError, match="plain text .* is for decoder-only models"):
        seq2seq.prepare(validate(raw, "test"))
