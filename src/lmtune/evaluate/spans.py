"""Span-level scores: extractive QA (SQuAD v1.1 / v2) and entity-level token classification (seqeval).

QA answers are compared after the official SQuAD normalisation; a prediction scores the best of its
gold answers, and an unanswerable question (no gold answer) is right only when the prediction is ""
(or normalises to it), as in the official SQuAD v2 script.

Entities are chunked with the rules of seqeval's default mode (the conlleval-compatible one, not
`mode="strict"`), so the scores equal `seqeval.metrics` on the same tags; the tests prove it against
seqeval itself. Counts are kept per sentence so a caller can bootstrap the micro F1 over sentences.

Imports no torch; numpy only (and lmtune.evaluate.metrics lazily, for its SQuAD normaliser).
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from lmtune.data.tags import check_tag, entities, repair_iob2, to_iob2  # noqa: F401 (the tag API)
from lmtune.errors import LmtuneError
from lmtune.evaluate import stats

# ---------------------------------------------------------------------------------- extractive QA


def normalize_answer(s: str) -> str:
    """The official SQuAD v1.1 normalisation: lower case, no punctuation, no articles, single spaces.

    It is metrics.normalise, which generation's exact match already uses, so both agree. Imported
    here, not at the top: metrics imports the task measure modules as it loads, and those may import
    this module.
    """
    from lmtune.evaluate.metrics import normalise

    return normalise(s)


def _golds(gold: list[str]) -> list[str]:
    """The gold answers as SQuAD v2 scores them: those that normalise to "" dropped, [""] when none is
    left (unanswerable), so "" is matched by a prediction that normalises to "" and by nothing else."""
    if isinstance(gold, str):  # a bare string would be read as a list of characters
        raise LmtuneError(f"gold answers must be a list of strings, got the string {gold[:80]!r}")
    return [answer for answer in gold if normalize_answer(answer)] or [""]


def _token_f1(prediction: str, answer: str) -> float:
    """SQuAD's token F1: overlap of normalised whitespace tokens, counted with multiplicity; when either
    side has no token, 1.0 if both have none (SQuAD v2; v1.1 gave 0, below the exact match of 1)."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(answer).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, gold: list[str]) -> float:
    """1.0 when the normalised prediction equals some normalised gold answer; SQuAD v2: with no gold
    answer (unanswerable) only a prediction that normalises to "" is right."""
    pred = normalize_answer(prediction)
    return max(float(pred == normalize_answer(answer)) for answer in _golds(gold))


def f1(prediction: str, gold: list[str]) -> float:
    """The best token F1 over the gold answers; with no gold answer, 1.0 for "" and 0.0 otherwise."""
    return max(_token_f1(prediction, answer) for answer in _golds(gold))


def qa_scores(predictions: list[str], golds: list[list[str]]) -> dict:
    """Mean exact match and F1 (0..1) with the per-row scores behind them (for bootstrap intervals).

    When some questions are unanswerable and some are not, also SQuAD v2's split: has_answer_f1 and
    no_answer_f1, the mean F1 over each subset.
    """
    if len(predictions) != len(golds):
        raise LmtuneError(f"{len(predictions)} predictions for {len(golds)} gold answer lists")
    em_rows = [exact_match(p, g) for p, g in zip(predictions, golds, strict=True)]
    f1_rows = [f1(p, g) for p, g in zip(predictions, golds, strict=True)]
    n = len(predictions)
    out: dict = {
        "exact_match": sum(em_rows) / n if n else 0.0,
        "f1": sum(f1_rows) / n if n else 0.0,
        "n": n,
        "em_per_row": em_rows,
        "f1_per_row": f1_rows,
    }
    has = [score for score, gold in zip(f1_rows, golds, strict=True) if len(gold)]
    no = [score for score, gold in zip(f1_rows, golds, strict=True) if not len(gold)]
    if has and no:
        out["has_answer_f1"] = sum(has) / len(has)
        out["no_answer_f1"] = sum(no) / len(no)
    return out


# ---------------------------------------------------------------------------------- entity scores


def _prf(correct: int, n_pred: int, n_gold: int) -> tuple[float, float, float]:
    """Precision, recall, F1; each 0.0 where its denominator is 0 (seqeval's zero_division=0)."""
    precision = correct / n_pred if n_pred else 0.0
    recall = correct / n_gold if n_gold else 0.0
    f = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f


def entity_scores(gold: list[list[str]], pred: list[list[str]]) -> dict:
    """Entity-level scores of predicted tags against gold ones, sentence by sentence.

    An entity is right when its type, start and end all match. Returns micro precision/recall/f1,
    per_type {precision, recall, f1, support} over every type in gold or predictions, macro_f1 (their
    unweighted mean, as seqeval's), token accuracy, the counts true_entities/pred_entities/correct, and
    per_sentence (correct, n_pred, n_gold) for bootstrap_f1.

    seqeval flattens the sentences with an O between them; chunking each sentence on its own gives the
    same entities except for malformed tags whose type reads empty (a bare "X"; check_tag rejects
    them), with which a seqeval chunk can cross a sentence boundary.
    """
    if len(gold) != len(pred):
        raise LmtuneError(f"{len(pred)} predicted sentences for {len(gold)} gold ones")
    found: dict[str, Counter] = defaultdict(Counter)  # type -> counts of correct, pred, gold
    per_sentence: list[tuple[int, int, int]] = []
    same_tags = n_tokens = 0
    for i, (g_tags, p_tags) in enumerate(zip(gold, pred, strict=True)):
        if len(g_tags) != len(p_tags):
            raise LmtuneError(f"sentence {i}: {len(p_tags)} predicted tags for {len(g_tags)} gold tags")
        same_tags += sum(g == p for g, p in zip(g_tags, p_tags, strict=True))
        n_tokens += len(g_tags)
        g_set, p_set = set(entities(g_tags)), set(entities(p_tags))
        hits = g_set & p_set
        for key, chunks in (("correct", hits), ("pred", p_set), ("gold", g_set)):
            for type_, _, _ in chunks:
                found[type_][key] += 1
        per_sentence.append((len(hits), len(p_set), len(g_set)))

    per_type = {}
    for type_ in sorted(found):
        c = found[type_]
        precision, recall, f = _prf(c["correct"], c["pred"], c["gold"])
        per_type[type_] = {"precision": precision, "recall": recall, "f1": f, "support": c["gold"]}
    correct, n_pred, n_gold = (sum(row[j] for row in per_sentence) for j in range(3))
    precision, recall, f = _prf(correct, n_pred, n_gold)
    return {
        "precision": precision,
        "recall": recall,
        "f1": f,
        "macro_f1": float(np.mean([s["f1"] for s in per_type.values()])) if per_type else 0.0,
        "accuracy": same_tags / n_tokens if n_tokens else 0.0,
        "per_type": per_type,
        "true_entities": n_gold,
        "pred_entities": n_pred,
        "correct": correct,
        "per_sentence": per_sentence,
    }


def bootstrap_f1(
    per_sentence: list[tuple[int, int, int]], n: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """95% percentile interval of the micro F1, resampling sentences (not entities, which are not
    independent within a sentence) with replacement; seeded, so the same call gives the same interval."""
    if not per_sentence:
        raise LmtuneError("no sentences to bootstrap")
    if n < 1:
        raise LmtuneError(f"bootstrap_f1 needs n >= 1 resamples, got {n}")
    counts = np.asarray(per_sentence, dtype=float).reshape(-1, 3)

    def micro_f1(idx: np.ndarray) -> np.ndarray:
        correct, n_pred, n_gold = stats.sums(counts, idx).T
        denominator = n_pred + n_gold  # 2PR / (P + R) = 2 correct / (pred + gold), 0 where empty
        return np.divide(2 * correct, denominator, out=np.zeros_like(correct), where=denominator > 0)

    low, high = stats.percentile_ci(stats.bootstrap(len(counts), n, seed, micro_f1))
    return low, high
