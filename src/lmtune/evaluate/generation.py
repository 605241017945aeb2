"""Scoring language models: held-out loss and perplexity, and generated answers against references
(ROUGE-L through rouge-score, BLEU through sacrebleu, normalised exact match, stop rate)."""

from __future__ import annotations

import math
import re
import string

import sacrebleu
import torch
from rouge_score import rouge_scorer
from tqdm.auto import tqdm

from lmtune.data.batches import collate
from lmtune.models.chat_template import Stop
from lmtune.models.generate import generate_answers
from lmtune.models.load import device
from lmtune.models.loss import labelled_loss
from lmtune.train import inference_precision

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalise(text: str) -> str:
    """SQuAD-style: lower case, no punctuation, no articles, single spaces."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION)).split())


def generation_metrics(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean ROUGE-L F1, corpus BLEU (0..1) and normalised exact match over paired answers."""
    if not predictions:
        return {"rougeL": 0.0, "bleu": 0.0, "exact_match": 0.0}
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    rouge = [
        scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references, strict=True)
    ]
    bleu = sacrebleu.corpus_bleu(predictions, [references]).score / 100
    exact = [normalise(p) == normalise(r) for p, r in zip(predictions, references, strict=True)]
    return {
        "rougeL": float(sum(rouge) / len(rouge)),
        "bleu": float(bleu),
        "exact_match": float(sum(exact) / len(exact)),
    }


def heldout_loss(config, model, pad_id: int, encoded: list, desc: str) -> dict:
    """Token-weighted mean loss and perplexity over the labelled tokens of `encoded`."""
    model.eval()
    model.to(device())
    make_batch = collate(pad_id)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))
    size = config.training.eval_batch_size
    total, count = 0.0, 0
    precision = inference_precision(config, model)
    autocast = torch.autocast(device().type, dtype=torch.bfloat16, enabled=precision == "bf16")
    with tqdm(total=len(order), desc=f"{desc}: loss", unit="ex", leave=False) as bar:
        for rows in _budgeted(order, encoded, size):
            batch = make_batch([{"input_ids": e.input_ids, "labels": e.labels} for e in rows])
            with autocast, torch.inference_mode():
                loss_sum, n = labelled_loss(model, {k: v.to(device()) for k, v in batch.items()})
            total, count = total + float(loss_sum), count + int(n)
            bar.update(len(rows))
    loss = total / max(count, 1)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50)), "tokens": count}


# Padded tokens per evaluation batch: at most eval_batch_size examples, fewer when they are long, so
# that 64 conversations of 1,024 tokens do not go through the model at once.
EVAL_TOKENS = 16_384


def _budgeted(order: list[int], encoded: list, size: int):
    """Batches of the length-sorted examples: up to `size` rows and EVAL_TOKENS padded tokens."""
    batch: list = []
    for i in order:
        width = len(encoded[i].input_ids)  # sorted ascending: the newest row is the widest
        if batch and (len(batch) == size or (len(batch) + 1) * width > EVAL_TOKENS):
            yield batch
            batch = []
        batch.append(encoded[i])
    if batch:
        yield batch


def score(config, model, tokenizer, stop: Stop, test: list, desc: str) -> dict:
    """Loss/perplexity on the test split; for chats also answers to its first prompts, scored."""
    result = heldout_loss(config, model, tokenizer.pad_token_id, test, desc)
    settings = config.evaluation.generation
    chats = [e for e in test if e.prompt_ids is not None][: settings.prompts]
    if chats:
        answers = generate_answers(
            model,
            tokenizer,
            [e.prompt_ids for e in chats],
            stop,
            settings,
            precision=inference_precision(config, model),
            attention=config.model.attn_implementation,
            desc=f"{desc}: generate",
        )
        result.update(generation_metrics([a["answer"] for a in answers], [e.reference for e in chats]))
        result["stop_rate"] = sum(a["stopped"] for a in answers) / len(answers)
        result["prompts"] = len(answers)
        result["answers"] = answers
    return result
