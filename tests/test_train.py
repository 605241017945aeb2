"""Training options that change what the Trainer does: schedules, early stopping, accumulation, dropout."""

from __future__ import annotations

import json

import pytest
from conftest import tiny_config

from lmtune.config import validate
from lmtune.models.load import load_classifier
from lmtune.runs import open_run
from lmtune.tasks.classify import prepare, train
from lmtune.train import resolve_precision


def run(tmp_path, model_dir, data, model=None, **training):
    config = validate(
        tiny_config(model_dir, data, tmp_path / "runs", training=training, model=model or {}), "test"
    )
    with open_run(config) as run_dir:
        metrics = train(config, prepare(config), run_dir)
    history = json.loads((tmp_path / "runs" / "run" / "history.json").read_text())
    return metrics, history


def test_step_schedule_warms_up_then_halves_every_n_steps(tiny_model_dir, labelled_csv, tmp_path):
    settings = dict(
        scheduler="step",
        step_size=4,
        step_gamma=0.5,
        warmup_ratio=0.1,
        learning_rate=1e-3,
        epochs=2,
        logging_steps=1,
    )
    metrics, history = run(tmp_path, tiny_model_dir("bert"), labelled_csv, eval_every=None, **settings)
    rates = {h["step"]: h["learning_rate"] for h in history if "learning_rate" in h}
    warmup = 3  # ceil(0.1 * 22 steps)
    assert rates[1] == pytest.approx(1e-3 / warmup)  # the rate the first step used
    assert rates[warmup + 1] == pytest.approx(1e-3)
    assert rates[warmup + 5] == pytest.approx(5e-4)
    assert rates[warmup + 9] == pytest.approx(2.5e-4)


def test_early_stopping_stops_when_the_metric_stalls(tiny_model_dir, labelled_csv, tmp_path):
    # a learning rate this small cannot move the validation metric: the run stops after `patience`
    # evaluations without improvement instead of running all 5 epochs (55 steps)
    metrics, _ = run(
        tmp_path,
        tiny_model_dir("bert"),
        labelled_csv,
        learning_rate=1e-12,
        epochs=5,
        eval_every=2,
        early_stopping={"patience": 2},
    )
    assert metrics["steps"] == 6
    assert metrics["best_checkpoint"] == "checkpoint-2"


def test_gradient_accumulation_divides_optimizer_steps(tiny_model_dir, labelled_csv, tmp_path):
    metrics, _ = run(
        tmp_path, tiny_model_dir("bert"), labelled_csv, gradient_accumulation=2, epochs=1, eval_every=None
    )
    assert metrics["steps"] == 6  # 84 rows = 11 batches of 8, 2 per optimizer step


def test_dropout_override_reaches_every_dropout_rate(tiny_model_dir):
    model = load_classifier(tiny_model_dir("bert"), ["a", "b"], dropout=0.33)
    assert model.config.hidden_dropout_prob == 0.33
    assert model.config.attention_probs_dropout_prob == 0.33
    xlnet = load_classifier(tiny_model_dir("xlnet"), ["a", "b"], dropout=0.25)
    assert xlnet.config.dropout == 0.25 and xlnet.config.summary_last_dropout == 0.25


def test_torch_still_has_the_cpu_feature_probes_precision_relies_on():
    """Tripwire for models/precision.cpu_has_bf16: without these private probes `auto` would silently
    lose bf16 on AMX/AVX512-BF16 CPUs."""
    import torch

    assert callable(torch.cpu._is_amx_tile_supported) and callable(torch.cpu._is_avx512_bf16_supported)


def test_precision_choices(monkeypatch):
    import torch

    assert resolve_precision("fp32") == "fp32"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resolve_precision("auto", 22_000_000) == "fp32"  # small models are launch-bound on GPUs
    assert resolve_precision("auto", 135_000_000) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert resolve_precision("auto", 135_000_000) == "fp16"
    monkeypatch.undo()

    if not torch.cuda.is_available():
        from lmtune.errors import LmtuneError

        with pytest.raises(LmtuneError, match="training.precision = 'fp16' needs a CUDA GPU"):
            resolve_precision("fp16")


def test_inference_picks_attention_by_batch_length_and_restores_it(tiny_model_dir, monkeypatch):
    import numpy as np
    import torch

    from lmtune.models.infer import forward_batches, logits_step
    from lmtune.models.load import load_tokenizer

    if torch.cuda.is_available():
        pytest.skip("the length rule applies on CPU")
    model = load_classifier(tiny_model_dir("bert"), ["a", "b"])
    assert model.config._attn_implementation == "eager"  # auto on CPU trains with eager
    switches = []
    original = model.set_attn_implementation
    monkeypatch.setattr(
        model, "set_attn_implementation", lambda name: (switches.append(name), original(name))
    )
    tokenizer = load_tokenizer(tiny_model_dir("bert"))
    texts = ["short text", " ".join(["word"] * 100)]
    kwargs = dict(max_length=128, batch_size=1, precision="fp32", step=logits_step, desc="test")
    auto = forward_batches(model, tokenizer, texts, attention="auto", **kwargs)
    assert switches == ["sdpa", "eager"]  # the 102-token batch ran on sdpa, then training's kernel is back
    eager = forward_batches(model, tokenizer, texts, attention="eager", **kwargs)
    np.testing.assert_allclose(auto, eager, atol=1e-5)


def test_loss_seam_carries_per_row_weights_and_penalties(tiny_model_dir, tmp_path):
    """A `weight` column reaches the recipe's loss as per-row weights (a zero-weight row changes
    nothing), penalties are added while training only, and a weighted run trains end to end."""
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, DataCollatorWithPadding

    from lmtune.models.loss import classification_loss
    from lmtune.train import build_trainer

    folder = tiny_model_dir("bert")
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = load_classifier(folder, ["neg", "pos"])
    texts, labels = ["good movie", "awful food", "lovely day", "sad service"] * 4, [1, 0, 1, 0] * 4
    encoded = tokenizer(texts)
    rows = Dataset.from_dict(
        {
            **encoded,
            "labels": labels,
            "length": [len(i) for i in encoded["input_ids"]],
            "weight": [1.0, 0.0] * 8,
        }
    )
    config = validate(tiny_config(folder, "unused.csv", tmp_path / "runs"), "test")
    calls = []

    def penalty(model, inputs, outputs):
        calls.append(model.training)
        return torch.tensor(0.25)

    trainer = build_trainer(
        config,
        tmp_path / "run",
        model=model,
        tokenizer=tokenizer,
        train_dataset=rows,
        eval_dataset=None,
        collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=None,
        loss=classification_loss(),
        penalties=[penalty],
    )
    collate = DataCollatorWithPadding(tokenizer)
    batch = collate(
        [
            {k: rows[i][k] for k in ("input_ids", "attention_mask", "token_type_ids", "labels")}
            for i in range(4)
        ]
    )
    for module in model.modules():  # no dropout: the same forward in training and evaluation mode
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    kept = {k: v[[0, 2]] for k, v in batch.items()}
    with torch.no_grad():
        logits = model.eval()(**{k: v for k, v in kept.items() if k != "labels"}).logits
        plain = torch.nn.functional.cross_entropy(logits, kept["labels"])
        model.train()
        weighted = trainer.compute_loss(model, {**batch, "weight": torch.tensor([1.0, 0.0, 1.0, 0.0])})
    assert float(weighted) == pytest.approx(float(plain) + 0.25, rel=1e-5)
    assert calls == [True]
    model.eval()
    with torch.no_grad():
        trainer.compute_loss(model, dict(batch))  # evaluation: the plain loss, no penalty
    assert calls == [True]
    model.train()
    trainer.train()  # the weight column survives the Trainer's column filter; `length` never reaches the model
    assert trainer.state.global_step == 4 and len(calls) == 1 + 4  # 16 rows, batch 8, 2 epochs
