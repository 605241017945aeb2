"""Batched inference for any model: length-sorted batches, autocast, the fastest attention per batch.

Inputs are texts, or sentence pairs as (first, second) tuples: `encode` gives either to the tokenizer, a
pair as the tokenizer's pair encoding (its separator and segment ids; truncation longest_first)."""

from __future__ import annotations

import numpy as np
import torch

from lmtune.models.load import device, inference_attention, set_attention
from lmtune.models.precision import bf16_autocast, inference_precision
from lmtune.progress import progress

# texts, (first, second) sentence pairs, or sentences already split into words (token classification)
Inputs = list[str] | list[tuple[str, str]] | list[list[str]]


def encode(tokenizer, texts: Inputs, **options):
    """The tokenizer's encoding of texts, of (first, second) sentence pairs, or of word lists (with the
    word id of each sub-word: BatchEncoding.word_ids)."""
    if texts and isinstance(texts[0], tuple):
        return tokenizer([a for a, _ in texts], [b for _, b in texts], **options)
    if texts and isinstance(texts[0], list):
        return tokenizer(list(texts), is_split_into_words=True, **options)
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
    """Run `step(model, batch)` over texts in length-sorted batches; outputs come back in input order, as
    one array, or as a list of arrays when the step gives one of its own length per row (a list)."""
    model.eval()
    model.to(device())  # outside inference mode: weights moved inside it could never train again
    order = np.argsort(
        [len(t[0]) + len(t[1]) if isinstance(t, tuple) else len(t) for t in texts], kind="stable"
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
            result = step(model, batch)
            ragged = isinstance(result, list)
            result = [r.float().cpu().numpy() for r in result] if ragged else result.float().cpu().numpy()
            for i, row in zip(index, result, strict=True):
                outputs[i] = row
            bar.update(len(index))
    set_attention(model, trained_with)
    return outputs if texts and ragged else np.stack(outputs)


def logits_step(model, batch):
    return model(**batch).logits


def last_hidden(model, batch):
    """The body's last hidden state (the head, and a peft wrapper, skipped): what the probes read."""
    body = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(body, body.base_model_prefix)(**batch).last_hidden_state


def mean_pooled_step(model, batch):
    hidden = last_hidden(model, batch)
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)


def first_subwords(word_ids: list[int | None]) -> list[int]:
    """The position of each word's first sub-word (words cut off by truncation have none)."""
    return [p for p, w in enumerate(word_ids) if w is not None and (p == 0 or word_ids[p - 1] != w)]


def word_logits_step(model, batch):
    """Each row's logits at its words' first sub-words: (words kept, labels) per row."""
    logits = model(**batch).logits
    return [logits[i, first_subwords(batch.word_ids(i))] for i in range(len(logits))]


def word_hidden_step(model, batch):
    """Each row's last hidden state at its words' first sub-words: (words kept, hidden) per row."""
    hidden = last_hidden(model, batch)
    return [hidden[i, first_subwords(batch.word_ids(i))] for i in range(len(hidden))]


def forward_encoded(config, model, tokenizer, features: list[dict], step, desc: str) -> list[np.ndarray]:
    """Run `step(model, batch)` over rows already tokenized (each a dict of input_ids, attention_mask,
    token_type_ids: a QA window), padded per batch of the run's evaluation size; one array per row."""
    model.eval()
    model.to(device())
    batch_size = config.training.eval_batch_size
    autocast = bf16_autocast(inference_precision(config, model))
    outputs: list[np.ndarray] = []
    with progress(len(features), desc=desc, unit="ex") as bar, autocast, torch.inference_mode():
        for start in range(0, len(features), batch_size):
            chunk = features[start : start + batch_size]
            batch = tokenizer.pad(chunk, return_tensors="pt").to(device())
            outputs += [row.float().cpu().numpy() for row in step(model, batch)]
            bar.update(len(chunk))
    return outputs


def span_logits_step(model, batch):
    """Each row's (tokens, 2) start and end logits over its real tokens (padding dropped, either side)."""
    out = model(**batch)
    both = torch.stack([out.start_logits, out.end_logits], -1)
    mask = batch["attention_mask"].bool()
    return [both[i][mask[i]] for i in range(len(both))]


def hidden_step(model, batch):
    """Each row's last hidden state over its real tokens."""
    hidden = last_hidden(model, batch)
    mask = batch["attention_mask"].bool()
    return [hidden[i][mask[i]] for i in range(len(hidden))]
