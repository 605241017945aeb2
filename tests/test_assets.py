"""Bundled offline assets resolve to real files; anything not available offline fails in one line."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from lmtune import assets
from lmtune.config import validate
from lmtune.errors import LmtuneError
from lmtune.tasks.classify import prepare


def test_bundled_minilm_is_a_bert_directory():
    path = assets.resolve_model("bundled:minilm")
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "bert" and config["hidden_size"] == 384
    assert (path / "model.safetensors").is_file()


def test_unknown_bundled_and_hub_ids_fail_in_one_line(tmp_path):
    with pytest.raises(LmtuneError, match="unknown bundled model 'bundled:gpt5'; allowed: bundled:minilm"):
        assets.resolve_model("bundled:gpt5")
    with pytest.raises(
        LmtuneError, match="unknown bundled dataset 'bundled:imdb'; allowed: bundled:drug-reviews"
    ):
        assets.resolve_dataset("bundled:imdb")
    with pytest.raises(LmtuneError, match="lmtune never downloads at run time") as error:
        assets.resolve_model("some-org/some-model-that-is-not-cached")
    assert "\n" not in str(error.value)
    with pytest.raises(LmtuneError, match="does not exist"):
        assets.resolve_model(str(tmp_path / "missing-dir"))
    with pytest.raises(LmtuneError, match="has no config.json"):
        assets.resolve_model(str(tmp_path))


@pytest.mark.parametrize(
    ("name", "sizes", "labels"),
    [
        ("bundled:drug-reviews", (600, 379), {"negative", "neutral", "positive"}),
        ("bundled:tweets", (38158, 0), {"negative", "neutral", "positive"}),
    ],
)
def test_bundled_datasets_read_whole(name, sizes, labels):
    config = validate({"data": {"train": name, "split": {"validation": 0.0, "test": 0.1}}}, "test")
    prepared = prepare(config)
    reads = [s for s in prepared.data_report["steps"] if s["step"] == "read + validate"]
    assert [s["rows_in"] for s in reads] == [n for n in sizes if n]  # every row read, none bad
    assert [s["rows_out"] for s in reads] == [n for n in sizes if n]
    removed = sum(d["exact"]["removed"] for d in prepared.data_report["duplicates"].values())
    leaked = prepared.data_report["leakage"]["removed_from_train"]
    rows = len(prepared.train) + len(prepared.test)
    assert rows + removed + leaked == sum(sizes)  # every row is accounted for
    assert set(prepared.labels) == labels
    assert Counter(prepared.train.labels)["neutral"] > 0


def test_smollm2_gguf_converts_once_and_rebuilds_a_corrupt_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LMTUNE_CACHE", str(tmp_path))
    path = assets.resolve_model("bundled:smollm2-135m-instruct")
    assert path == tmp_path / "models" / "smollm2-135m-instruct"
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "llama" and "quantization_config" not in config
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert assets.resolve_model("bundled:smollm2-135m-instruct") == path
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp  # reused, not rebuilt

    (path / "model.safetensors").write_bytes(b"garbage")
    path = assets.resolve_model("bundled:smollm2-135m-instruct")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    answer = tokenizer.decode(
        model.generate(**prompt, max_new_tokens=10, do_sample=False)[0][prompt["input_ids"].shape[1] :]
    )
    assert "Paris" in answer
    assert not list(tmp_path.glob("models/.smollm2*"))  # no temporary leftovers


def test_bundled_reader_settings_apply_to_bundled_files_only(tmp_path):
    from lmtune.data.pipeline import plan

    user_test = tmp_path / "mine.csv"
    user_test.write_text("review,rating\nfine,positive\n")
    inputs = plan(validate({"data": {"train": "bundled:drug-reviews", "test": str(user_test)}}, "test"))
    assert inputs["train"].options.separator == "\t" and inputs["train"].options.quoting == "csv"
    test = inputs["test"]
    assert test.paths == [user_test]
    assert (
        test.options.separator is None and test.options.encoding == "auto" and test.options.quoting == "auto"
    )
    assert test.text_column == "review"  # same columns as the data it must match
    tweets = plan(validate({"data": {"train": "bundled:tweets", "validation": str(user_test)}}, "test"))
    assert tweets["train"].options.encoding == "latin-1" and tweets["validation"].options.encoding == "auto"
