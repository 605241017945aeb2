"""Scoring language models: held-out loss and perplexity, and generated answers against references
(ROUGE, BLEU, chrF, normalised exact match: the metrics registry), with 95% intervals; stop rate."""

from __future__ import annotations

import torch

from lmtune.data.batches import collate
from lmtune.evaluate import metrics
from lmtune.evaluate.metrics import normalise  # noqa: F401 - its home was here
from lmtune.models.chat_template import Stop
from lmtune.models.generate import generate_answers
from lmtune.models.load import device
from lmtune.models.loss import row_losses
from lmtune.models.precision import bf16_autocast, inference_precision
from lmtune.progress import progress


def generation_metrics(
    predictions: list[str], references: list[str], ci: bool = True, *, where: str = "generation"
) -> dict:
    """ROUGE-1/2/L, corpus BLEU and chrF (0..1) and normalised exact match over paired answers, each
    with its 95% bootstrap interval under "ci"; "n" answers."""
    return metrics.score(
        "generate", {"predictions": predictions, "references": references}, ci=ci, where=where
    )


def heldout_loss(config, model, pad_id: int, encoded: list, desc: str) -> dict:
    """Token-weighted mean loss and perplexity over the labelled tokens of `encoded`, with 95% bootstrap
    intervals over the examples; each example's loss sum and token count are kept ("per_example", in
    the order of `encoded`) for paired tests between runs."""
    model.eval()
    model.to(device())
    make_batch = collate(pad_id)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))
    size = config.training.eval_batch_size
    loss_sum, tokens = [0.0] * len(encoded), [0] * len(encoded)
    precision = inference_precision(config, model)
    autocast = bf16_autocast(precision)
    with progress(len(order), desc=f"{desc}: loss", unit="ex") as bar:
        for rows in _budgeted(order, encoded, size):
            batch = make_batch(
                [{"input_ids": encoded[i].input_ids, "labels": encoded[i].labels} for i in rows]
            )
            with autocast, torch.inference_mode():
                sums, counts = row_losses(model, {k: v.to(device()) for k, v in batch.items()})
            for i, s, n in zip(rows, sums.tolist(), counts.tolist(), strict=True):
                loss_sum[i], tokens[i] = s, int(n)
            bar.update(len(rows))
    per_example = {"loss_sum": loss_sum, "tokens": tokens}
    result = metrics.score("lm", per_example, where=f"{desc}: held-out loss")
    return {**result, "tokens": sum(tokens), "per_example": per_example}


# Padded tokens per evaluation batch: at most eval_batch_size examples, fewer when they are long, so
# that 64 conversations of 1,024 tokens do not go through the model at once.
EVAL_TOKENS = 16_384


def _budgeted(order: list[int], encoded: list, size: int):
    """Batches (example indices) of the length-sorted examples: up to `size` rows and EVAL_TOKENS padded
    tokens."""
    batch: list = []
    for i in order:
        width = len(encoded[i].input_ids)  # sorted ascending: the newest row is the widest
        if batch and (len(batch) == size or (len(batch) + 1) * width > EVAL_TOKENS):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


def score(config, model, tokenizer, stop: Stop, test: list, desc: str) -> dict:
    """Loss/perplexity on the test split; for chats also answers to its first prompts, scored."""
    result = heldout_loss(config, model, tokenizer.pad_token_id, test, desc)
    answered = answer_prompts(config, model, tokenizer, stop, test, desc)
    result["ci"].update(answered.pop("ci", {}))
    result.update(answered)
    return result


def answer_prompts(config, model, tokenizer, stop: Stop, test: list, desc: str, ids: bool = False) -> dict:
    """Answers generated to the first evaluation.generation.prompts chats of `test`, scored against
    their references ("ci" holds the intervals), with the stop rate; empty when `test` has no chats.
    `ids`: each answer keeps its token ids (models.generate.generate_answers)."""
    settings = config.evaluation.generation
    chats = [e for e in test if e.prompt_ids is not None][: settings.prompts]
    if not chats:
        return {}
    answers = generate_answers(
        model,
        tokenizer,
        [e.prompt_ids for e in chats],
        stop,
        settings,
        precision=inference_precision(config, model),
        attention=config.model.attn_implementation,
        desc=f"{desc}: generate",
        ids=ids,
    )
    scores = generation_metrics([a["answer"] for a in answers], [e.reference for e in chats], where=desc)
    scores.pop("n")  # answers scored: "prompts"; a caller's "n" stays the examples its loss is over
    scores["stop_rate"] = sum(a["stopped"] for a in answers) / len(answers)
    scores["prompts"] = len(answers)
    scores["answers"] = answers
    return scores
