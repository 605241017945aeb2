"""Batched generation that stops where the model was taught to stop, and says whether it did."""

from __future__ import annotations

import numpy as np
import torch

from lmtune.data.batches import pad
from lmtune.models.chat_template import Stop
from lmtune.models.load import device, inference_attention, set_attention
from lmtune.models.precision import bf16_autocast
from lmtune.progress import progress


def _cut(new_ids: list[int], tokenizer, stop: Stop) -> dict:
    """The answer up to its first stop token or stop string, and whether one was reached; "ids" are the
    tokens the model chose, its stop token included (what a score of the answer itself reads)."""
    stopped, chosen = False, new_ids
    for i, token in enumerate(new_ids):
        if token in stop.token_ids:
            new_ids, chosen, stopped = new_ids[:i], new_ids[: i + 1], True
            break
    text = tokenizer.decode(new_ids, skip_special_tokens=True)
    for marker in stop.strings:
        if marker in text:
            text, stopped = text.split(marker, 1)[0], True
    return {"answer": text.strip(), "stopped": stopped, "new_tokens": len(new_ids), "ids": chosen}


def generate_answers(
    model,
    tokenizer,
    prompts: list[list[int]],
    stop: Stop,
    settings,
    *,
    precision: str,
    attention: str = "auto",
    desc: str = "generate",
    streamer=None,
    ids: bool = False,
) -> list[dict]:
    """Answer each tokenized prompt; `settings` is the evaluation.generation config section. `ids`: keep
    each answer's token ids as the model chose them ("ids"), for a score of the answers themselves."""
    model.eval()
    model.to(device())
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop.token_ids[0]
    options = {
        "max_new_tokens": settings.max_new_tokens,
        "do_sample": settings.do_sample,
        "eos_token_id": stop.token_ids or None,
        "pad_token_id": pad_id,
        "repetition_penalty": settings.repetition_penalty,
    }
    if settings.do_sample:
        options.update(temperature=settings.temperature, top_p=settings.top_p)
    if stop.strings:
        options.update(stop_strings=stop.strings, tokenizer=tokenizer)
    encoder_decoder = model.config.is_encoder_decoder
    order = np.argsort([len(p) for p in prompts], kind="stable")
    results: list[dict] = [None] * len(prompts)  # type: ignore[list-item]
    trained_with = model.config._attn_implementation
    autocast = bf16_autocast(precision)
    with progress(len(prompts), desc=desc, unit="prompt", enabled=streamer is None) as bar:
        for start in range(0, len(prompts), settings.batch_size):
            index = order[start : start + settings.batch_size]
            input_ids, mask = pad([prompts[i] for i in index], pad_id, left=not encoder_decoder)
            set_attention(model, inference_attention(attention, input_ids.shape[1]) or trained_with)
            with autocast, torch.inference_mode():
                output = model.generate(
                    input_ids=input_ids.to(device()),
                    attention_mask=mask.to(device()),
                    streamer=streamer,
                    **options,
                )
            new = output if encoder_decoder else output[:, input_ids.shape[1] :]
            for i, row in zip(index, new.tolist(), strict=True):
                if encoder_decoder and row and row[0] == model.config.decoder_start_token_id:
                    row = row[1:]
                results[i] = _cut(row, tokenizer, stop)
                if not ids:
                    del results[i]["ids"]
            bar.update(len(index))
    set_attention(model, trained_with)
    return results
