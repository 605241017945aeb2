"""What multi-label classification measures (classify with data.multi_label), torch-free, registered with
the metrics registry by this module alone (named in the task's `TASKS` entry):

    multilabel  {"y_true": (n, k) 0/1, "y_pred": (n, k) 0/1 decisions, "probs": (n, k) or None}

Every score comes from per-example sums — each label's true positives, false positives and false
negatives, the example's own F1, whether all k decisions are right — so point values and bootstrap
resamples go through the same code. The names put the average first (micro_f1) to keep them apart from
single-label classification's f1_micro. Conventions are scikit-learn's: a label with no true and no
predicted example has F1 0 in the macro average (zero_division=0), while an example with no true and no
predicted label has F1 1 in the samples average (zero_division=1: "none of them" said right is right).
"""

from __future__ import annotations

import numpy as np

from lmtune.errors import LmtuneError
from lmtune.evaluate.metrics import Kind, Metric, register, require


def _prepare(inputs: dict, names: list[str], labels, where: str) -> dict:
    n = require(inputs, ("y_true", "y_pred"), "multilabel", where)
    y, p = (np.asarray(inputs[key]) for key in ("y_true", "y_pred"))
    if y.ndim != 2 or y.shape != p.shape or not np.isin(y, (0, 1)).all() or not np.isin(p, (0, 1)).all():
        raise LmtuneError(f"{where}: multilabel y_true and y_pred must be (examples, labels) arrays of 0/1")
    y, p = y.astype(np.float64), p.astype(np.float64)
    tp, fp, fn = y * p, (1 - y) * p, y * (1 - p)
    both = y.sum(1) + p.sum(1)
    sample_f1 = np.where(both > 0, 2 * tp.sum(1) / np.where(both > 0, both, 1), 1.0)
    exact = (y == p).all(1)
    columns = {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "sample_f1": sample_f1[:, None],
        "exact": exact[:, None].astype(np.float64),
        "errors": (fp + fn).sum(1)[:, None],
    }
    # y_true: what a paired test checks two models share (Kind.truth)
    return {"n": n, "k": y.shape[1], "columns": columns, "exact": exact, "y_true": y}


def _totals(agg: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(resamples, k) sums of true positives, false positives and false negatives."""
    s = agg["sums"]
    return s["tp"], s["fp"], s["fn"]


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.where(b > 0, a / np.where(b > 0, b, 1), 0.0)


def _micro(score: str, agg: dict) -> np.ndarray:
    tp, fp, fn = (x.sum(1) for x in _totals(agg))
    if score == "precision":
        return _ratio(tp, tp + fp)
    if score == "recall":
        return _ratio(tp, tp + fn)
    return _ratio(2 * tp, 2 * tp + fp + fn)


def _macro_f1(agg: dict) -> np.ndarray:
    tp, fp, fn = _totals(agg)
    return _ratio(2 * tp, 2 * tp + fp + fn).mean(1)


def _mean(name: str, agg: dict) -> np.ndarray:
    return agg["sums"][name][:, 0] / agg["n"]


def _hamming(agg: dict) -> np.ndarray:
    return agg["sums"]["errors"][:, 0] / (agg["n"] * agg["data"]["k"])


def per_label(y_true, y_pred, labels: list[str]) -> dict[str, dict]:
    """Each label's precision, recall, F1 and support (true examples), as the report's table shows them."""
    y, p = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    tp, fp, fn = (y * p).sum(0), ((1 - y) * p).sum(0), (y * (1 - p)).sum(0)
    precision, recall, f1 = _ratio(tp, tp + fp), _ratio(tp, tp + fn), _ratio(2 * tp, 2 * tp + fp + fn)
    return {
        label: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(y[:, i].sum()),
        }
        for i, label in enumerate(labels)
    }


METRICS = [
    Metric(
        "micro_f1", "multilabel", True, "F1 over every (example, label) decision", lambda a: _micro("f1", a)
    ),
    Metric(
        "micro_precision",
        "multilabel",
        True,
        "precision over every decision",
        lambda a: _micro("precision", a),
    ),
    Metric("micro_recall", "multilabel", True, "recall over every decision", lambda a: _micro("recall", a)),
    Metric("macro_f1", "multilabel", True, "mean of the labels' F1 (each label counts the same)", _macro_f1),
    Metric(
        "samples_f1",
        "multilabel",
        True,
        "mean of the examples' F1 (each example counts the same)",
        lambda a: _mean("sample_f1", a),
    ),
    Metric(
        "subset_accuracy",
        "multilabel",
        True,
        "share of examples with every label decided right",
        lambda a: _mean("exact", a),
        lambda data: data["exact"],
    ),
    Metric("hamming_loss", "multilabel", False, "share of (example, label) decisions wrong", _hamming),
]
register("multilabel", Kind(_prepare, ("micro_f1", "macro_f1", "subset_accuracy"), truth="y_true"), METRICS)
