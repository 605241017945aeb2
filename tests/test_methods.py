"""Every method on tiny random-init BERT, RoBERTa and XLNet: what trains, what is frozen, what is saved."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_config
from safetensors.torch import load_file

from lmtune.config import validate
from lmtune.runs import open_run
from lmtune.tasks.classify import evaluate, load, predict, prepare, train

ARCHS = ["bert", "roberta", "xlnet"]
METHODS = {
    "full": {"name": "full"},
    "freeze": {"name": "freeze", "freeze": {"trainable_layers": 1}},
    "lora": {"name": "lora", "lora": {"r": 4, "alpha": 8}},
}


def run(model_dir, data, out, method: dict, **sections):
    config = validate(tiny_config(model_dir, data, out, method=method, **sections), "test")
    prepared = prepare(config)
    with open_run(config) as run_dir:
        metrics = train(config, prepared, run_dir)
    return out / "run", metrics


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method", list(METHODS))
def test_method_trains_saves_and_predicts(tiny_model_dir, labelled_csv, tmp_path, arch, method):
    model_dir = tiny_model_dir(arch)
    run_dir, metrics = run(model_dir, labelled_csv, tmp_path / "runs", METHODS[method])
    trainable, total = metrics["parameters"]["trainable"], metrics["parameters"]["total"]

    original = load_file(model_dir / "model.safetensors")
    embedding_key = next(k for k in original if "word_embedding" in k)
    if method == "full":
        assert trainable == total
    elif method == "freeze":
        assert 0 < trainable < total / 2
        saved = load_file(run_dir / "model" / "model.safetensors")
        assert torch.equal(saved[embedding_key], original[embedding_key]), "frozen embeddings changed"
        top_layer = [k for k in saved if ".1." in k and "weight" in k]
        assert any(not torch.equal(saved[k], original[k]) for k in top_layer if k in original), (
            "top layer did not train"
        )
    else:  # lora: only adapters and the head train, and only they are saved
        assert 0 < trainable < total / 10
        adapter = load_file(run_dir / "model" / "adapter_model.safetensors")
        assert any("lora_A" in k for k in adapter)
        assert not any("word_embedding" in k for k in adapter)
        assert json.loads((run_dir / "model" / "lmtune_model.json").read_text())["adapter"] is True

    for name in (
        "config.yaml",
        "metrics.json",
        "report.html",
        "history.json",
        "data/test.jsonl",
        "model/labels.json",
    ):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    assert not (run_dir / "checkpoints").exists()  # model/ is the one copy of the trained weights
    assert set(metrics["test"]) == {"base", "tuned"}
    assert 0.0 <= metrics["test"]["tuned"]["f1_macro"] <= 1.0

    # the saved run alone reproduces the test metrics and labels new texts; nothing in it is
    # re-initialised on load (a fresh head would make the logits depend on the torch seed)
    assert evaluate(run_dir) == metrics["test"]["tuned"]
    logits = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        loaded = load(run_dir)
        model, tokenizer, labels = loaded.model, loaded.tokenizer, loaded.labels
        with torch.inference_mode():
            logits.append(model.eval()(**tokenizer(["the movie was great"], return_tensors="pt")).logits)
    assert torch.allclose(logits[0], logits[1])
    assert labels == ["neg", "pos"]
    results = predict(run_dir, ["the movie was great", "the food was awful"])
    assert [set(r["scores"]) for r in results] == [{"neg", "pos"}] * 2
    assert all(abs(sum(r["scores"].values()) - 1) < 1e-4 for r in results)


def test_full_finetune_learns_the_synthetic_task(tiny_model_dir, labelled_csv, tmp_path):
    training = {"epochs": 12, "eval_every": None, "learning_rate": 2e-3, "early_stopping": {"patience": None}}
    _, metrics = run(
        tiny_model_dir("bert"), labelled_csv, tmp_path / "runs", {"name": "full"}, training=training
    )
    assert metrics["test"]["tuned"]["accuracy"] >= 0.9
    assert metrics["test"]["tuned"]["accuracy"] > metrics["test"]["base"]["accuracy"] + 0.2


def test_lora_target_modules_must_exist(tiny_model_dir, labelled_csv, tmp_path):
    from lmtune.errors import LmtuneError

    with pytest.raises(
        LmtuneError, match=r"method.lora.target_modules: \['qkv'\] not in the model; linear layers: .*query"
    ):
        run(
            tiny_model_dir("bert"),
            labelled_csv,
            tmp_path / "runs",
            {"name": "lora", "lora": {"target_modules": ["qkv"]}},
        )
    assert not (tmp_path / "runs" / "run").exists()
    assert not (tmp_path / "runs" / "run.partial").exists()


def test_freeze_more_layers_than_exist_is_an_error(tiny_model_dir, labelled_csv, tmp_path):
    from lmtune.errors import LmtuneError

    with pytest.raises(LmtuneError, match=r"trainable_layers = 5, but the model has 2 layers; allowed: 0..2"):
        run(
            tiny_model_dir("bert"),
            labelled_csv,
            tmp_path / "runs",
            {"name": "freeze", "freeze": {"trainable_layers": 5}},
        )
