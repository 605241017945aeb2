"""Batched inference for any model: length-sorted batches, autocast, the fastest attention per batch.

Inputs are texts, or sentence pairs as (first, second) tuples: `encode` gives either to the tokenizer, a
pair as the tokenizer's pair encoding (its separator and segment ids; truncation longest_first)."""

from __future__ import annotations

import numpy as np
import torch

from lmtune.models.load import device, inference_attention, set_attention
from lmtune.models.precision import bf16_autocast, inference_precision
from lmtune.progress import progress

Inputs = list[str] | list[tuple[str, str]]


def encode(tokenizer, texts: Inputs, **options):
    """The tokenizer's encoding of texts or of (first, second) sentence pairs."""
    if texts and isinstance(texts[0], tuple):
        return tokenizer([a for a, _ in texts], [b for _, b in texts], **options)
    return tokenizer(list(texts), **options)


def infer_texts(config, model, tokenizer, texts: Inputs, step, desc: str):
    """forward_batches with a run config's max_length, evaluation batch size, precision and attention."""
    return forward_batches(
        model,
        tokenizer,
        texts,
        max_length=config.model.max_length,
        batch_size=config.training.eval_batch_size,
        precision=inference_precision(config, model),
        attention=config.model.attn_implementation,
        step=step,
        desc=desc,
    )


def forward_batches(
    model,
    tokenizer,
    texts: Inputs,
    *,
    max_length: int,
    batch_size: int,
    precision: str,
    attention: str,
    step,
    desc: str,
):
    """Run `step(model, batch)` over texts in length-sorted batches; outputs come back in input order."""
    model.eval()
    model.to(device())  # outside inference mode: weights moved inside it could never train again
    order = np.argsort(
        [len(t) if isinstance(t, str) else len(t[0]) + len(t[1]) for t in texts], kind="stable"
    )
    outputs: list[np.ndarray] = [None] * len(texts)  # type: ignore[list-item]
    autocast = bf16_autocast(precision)
    trained_with = model.config._attn_implementation
    with progress(len(texts), desc=desc, unit="ex") as bar, autocast, torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            index = order[start : start + batch_size]
            batch = encode(
                tokenizer,
                [texts[i] for i in index],
                truncation=True,
                max_length=max_length,
                padding=True,
                return_tensors="pt",
            ).to(device())
            set_attention(model, inference_attention(attention, batch["input_ids"].shape[1]) or trained_with)
            result = step(model, batch).float().cpu().numpy()
            for i, row in zip(index, result, strict=True):
                outputs[i] = row
            bar.update(len(index))
    set_attention(model, trained_with)
    return np.stack(outputs)


def logits_step(model, batch):
    return model(**batch).logits


def mean_pooled_step(model, batch):
    body = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = getattr(body, body.base_model_prefix)(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
