"""What token classification measures (task token_classify), torch-free, registered with the metrics
registry by this module alone (named in the task's `TASKS` entry):

    entities  {"gold": one string of IOB2 tags per sentence (space-separated), "pred": the same, predicted}

Entities are chunked as seqeval's default mode does (lmtune.data.tags.entities): an entity is right
when its type, first and last word all match. Every score comes from per-sentence sums — each type's
correct, predicted and gold entities, the words tagged right — so point values and bootstrap resamples
(over sentences: entities within one are not independent) go through the same code, and the values
equal seqeval's micro precision/recall/F1 and its macro-averaged F1 (zero_division 0).
"""

from __future__ import annotations

import numpy as np

from lmtune.data.tags import entities
from lmtune.errors import LmtuneError
from lmtune.evaluate.metrics import Kind, Metric, register, require


def _prepare(inputs: dict, names: list[str], labels, where: str) -> dict:
    n = require(inputs, ("gold", "pred"), "entities", where)
    gold = [str(tags).split() for tags in inputs["gold"]]
    pred = [str(tags).split() for tags in inputs["pred"]]
    found = []
    for i, (g, p) in enumerate(zip(gold, pred, strict=True)):
        if len(g) != len(p):
            raise LmtuneError(f"{where}: sentence {i} has {len(p)} predicted tags for {len(g)} gold ones")
        g_set, p_set = set(entities(g)), set(entities(p))
        found.append((g_set, p_set))
    types = sorted({t for g_set, p_set in found for t, _, _ in g_set | p_set})
    index = {t: j for j, t in enumerate(types)}
    counts = {key: np.zeros((n, len(types))) for key in ("correct", "pred", "gold")}
    for i, (g_set, p_set) in enumerate(found):
        for key, chunks in (("correct", g_set & p_set), ("pred", p_set), ("gold", g_set)):
            for t, _, _ in chunks:
                counts[key][i, index[t]] += 1
    same = np.array(
        [[sum(a == b for a, b in zip(g, p, strict=True))] for g, p in zip(gold, pred, strict=True)]
    )
    words = np.array([[len(g)] for g in gold], dtype=np.float64)
    columns = {**counts, "same": same.astype(np.float64), "words": words}
    # gold: what a paired test checks two models share (Kind.truth)
    return {"n": n, "columns": columns, "types": types, "gold": np.asarray([" ".join(g) for g in gold])}


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.where(b > 0, a / np.where(b > 0, b, 1), 0.0)


def _micro(score: str, agg: dict) -> np.ndarray:
    s = agg["sums"]
    correct, pred, gold = (s[key].sum(1) for key in ("correct", "pred", "gold"))
    if score == "precision":
        return _ratio(correct, pred)
    if score == "recall":
        return _ratio(correct, gold)
    return _ratio(2 * correct, pred + gold)


def _macro_f1(agg: dict) -> np.ndarray:
    s = agg["sums"]
    if not agg["data"]["types"]:  # no entity in gold or predictions
        return np.zeros(len(s["words"]))
    return _ratio(2 * s["correct"], s["pred"] + s["gold"]).mean(1)


def _accuracy(agg: dict) -> np.ndarray:
    s = agg["sums"]
    return s["same"][:, 0] / s["words"][:, 0]


METRICS = [
    Metric(
        "entity_f1",
        "entities",
        True,
        "F1 of whole entities (type and both ends right)",
        lambda a: _micro("f1", a),
    ),
    Metric(
        "entity_precision",
        "entities",
        True,
        "share of predicted entities that are right",
        lambda a: _micro("precision", a),
    ),
    Metric("entity_recall", "entities", True, "share of gold entities found", lambda a: _micro("recall", a)),
    Metric(
        "entity_macro_f1",
        "entities",
        True,
        "mean of the entity types' F1 (each type counts the same)",
        _macro_f1,
    ),
    Metric("token_accuracy", "entities", True, "share of words tagged right (O included)", _accuracy),
]
register("entities", Kind(_prepare, ("entity_f1", "entity_macro_f1"), truth="gold"), METRICS)
