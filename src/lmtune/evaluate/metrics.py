"""The metrics registry: every score lmtune reports, with 95% bootstrap intervals and paired tests.

A metric belongs to a kind of model output, whose per-example inputs are a plain dict:

    classify  {"y_true": label ids, "y_pred": label ids, "probs": (n, k) probabilities or None}
    generate  {"predictions": [str], "references": [str]}
    lm        {"loss_sum": summed token NLL per example, "tokens": labelled tokens per example}

A task with scores of its own registers its kind from a torch-free module of its own (`register`,
named in its `TASKS` entry's `measures`), as the preference task does in lmtune.tasks.preference_measures.

Each kind is first reduced to per-example sufficient statistics (a confusion-cell code, ROUGE and
exact-match scores, sacrebleu's n-gram counts, token losses). A metric is a function of those
statistics summed over a set of examples, so the point value (every example once) and each bootstrap
resample (stats.py) go through the same code, vectorised over resamples.

Imports no torch; rouge-score, sacrebleu and scikit-learn are imported where they are needed.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np

from lmtune import shims
from lmtune.errors import LmtuneError
from lmtune.evaluate import stats
from lmtune.tasks import TASKS, Task, load_measures  # the torch-free task descriptions

HEADLINE = ["accuracy", "precision_macro", "recall_macro", "f1_macro"]  # one label per row: headline scores
SIGNIFICANCE = 0.05


@dataclass(frozen=True)
class Metric:
    name: str
    kind: str
    higher_is_better: bool
    description: str
    fn: Callable[[dict], np.ndarray]  # aggregate (see _aggregate) -> one value per resample row
    # a share of examples right: which ones are (from the prepared data), for McNemar's paired test
    right: Callable[[dict], np.ndarray] | None = None


@dataclass(frozen=True)
class Kind:
    """A kind of model output: how its inputs become per-example statistics, and what `lmtune compare`
    shows of it when no --metrics are given."""

    prepare: Callable[[dict, list[str], list[str] | None, str], dict]  # (inputs, names, labels, where)
    compare: tuple[str, ...]
    truth: str | None = None  # the prepared input two models' examples must share for a paired test


# ------------------------------------------------------------------------------ classification


def _div(a, b) -> np.ndarray:
    """a / b, 0 where b is 0: scikit-learn's zero_division=0."""
    a, b = np.broadcast_arrays(np.asarray(a, float), np.asarray(b, float))
    return np.divide(a, b, out=np.zeros_like(a), where=b != 0)


def _cells(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True positives, support (true counts) and predicted counts per class, from (rows, k, k) counts."""
    counts = counts.astype(float)
    return np.diagonal(counts, axis1=1, axis2=2), counts.sum(2), counts.sum(1)


def _per_class(score: str, tp, support, predicted) -> np.ndarray:
    if score == "precision":
        return _div(tp, predicted)
    if score == "recall":
        return _div(tp, support)
    return _div(2 * tp, support + predicted)  # F1 = 2PR / (P + R), 0 when there is no true positive


def _averaged(score: str, average: str, agg: dict) -> np.ndarray:
    tp, support, predicted = _cells(agg["counts"])
    if average == "micro":  # pooled over classes
        return _per_class(score, tp.sum(1), support.sum(1), predicted.sum(1))
    values = _per_class(score, tp, support, predicted)
    if average == "macro":  # over the classes a set of examples has (truth or prediction): a rare class
        present = (support + predicted) > 0  # that a resample happens to miss must not count as a 0
        return _div((values * present).sum(1), present.sum(1))
    return _div((values * support).sum(1), support.sum(1))  # weighted by support


def _accuracy(agg: dict) -> np.ndarray:
    tp, support, _ = _cells(agg["counts"])
    return _div(tp.sum(1), support.sum(1))


def _labelled_right(data: dict) -> np.ndarray:
    return data["y_pred"] == data["y_true"]


def _mcc(agg: dict) -> np.ndarray:
    """Matthews correlation, multiclass (Gorodkin's R_K); 0 when either side is constant, as sklearn."""
    tp, support, predicted = _cells(agg["counts"])
    n = support.sum(1)
    cov_tp = tp.sum(1) * n - (support * predicted).sum(1)
    cov_pp = n**2 - (predicted**2).sum(1)
    cov_tt = n**2 - (support**2).sum(1)
    return _div(cov_tp, np.sqrt(cov_pp * cov_tt))


def auc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC-AUC of one class on each row of example weights (how often a resample drew each example):
    the weighted Mann-Whitney statistic, P(score of a positive > score of a negative) with ties counting
    half, which is what scikit-learn's trapezoidal area gives. NaN where a side has no example."""
    order = np.argsort(scores, kind="stable")
    ordered = scores[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])  # runs of tied scores
    w, pos = weights[:, order], positive[order]
    pos_w = np.add.reduceat(w * pos, starts, axis=1)
    neg_w = np.add.reduceat(w * ~pos, starts, axis=1)
    below = np.cumsum(neg_w, axis=1) - neg_w
    pairs = pos_w.sum(1) * neg_w.sum(1)
    return np.where(pairs > 0, (pos_w * (below + neg_w / 2)).sum(1) / np.where(pairs > 0, pairs, 1), np.nan)


def _roc_auc(agg: dict) -> np.ndarray:
    """One-vs-rest macro ROC-AUC (binary: of the positive class); NaN when a class is absent."""
    data, idx = agg["data"], agg["idx"]
    n, k, probs = data["n"], data["k"], data["probs"]
    weights = np.ones((1, n)) if idx is None else stats.counts(np.arange(n), n, idx).astype(float)
    if probs is None or k < 2:
        return np.full(len(weights), np.nan)
    classes = [1] if k == 2 else range(k)
    return np.mean([auc(probs[:, j], data["y_true"] == j, weights) for j in classes], axis=0)


# ---------------------------------------------------------------------------------- generation

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)
_ROUGE = ("rouge1", "rouge2", "rougeL")


def normalise(text: str) -> str:
    """SQuAD-style: lower case, no punctuation, no articles, single spaces."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION)).split())


def mean(name: str, agg: dict) -> np.ndarray:
    return agg["sums"][name][:, 0] / agg["n"]


def _corpus(name: str, agg: dict) -> np.ndarray:
    """Corpus BLEU / chrF (0..1) from summed per-sentence statistics, as sacrebleu's own bootstrap does."""
    scorer = agg["data"]["scorers"][name]
    return np.array(
        [
            shims.sacrebleu_score_from_statistics(scorer, [int(v) for v in np.rint(row)]) / 100
            for row in agg["sums"][name]
        ]
    )


# ------------------------------------------------------------------------------ language model


def _loss(agg: dict) -> np.ndarray:
    """Token-weighted mean: summed NLL over summed tokens."""
    return agg["sums"]["nll"][:, 0] / np.maximum(agg["sums"]["tokens"][:, 0], 1)


def _perplexity(agg: dict) -> np.ndarray:
    return np.exp(np.minimum(_loss(agg), 50))


# ------------------------------------------------------------------------------------ registry


def _table() -> dict[str, Metric]:
    rows = [
        Metric("accuracy", "classify", True, "share of examples labelled right", _accuracy, _labelled_right)
    ]
    describe = {
        "macro": "unweighted mean over classes",
        "micro": "pooled over classes",
        "weighted": "mean over classes weighted by support",
    }
    for average in ("macro", "micro", "weighted"):
        for score in ("precision", "recall", "f1"):
            rows.append(
                Metric(
                    f"{score}_{average}",
                    "classify",
                    True,
                    f"{score}, {describe[average]}",
                    partial(_averaged, score, average),
                )
            )
    rows += [
        Metric(
            "roc_auc",
            "classify",
            True,
            "one-vs-rest macro ROC-AUC of the probabilities; needs probs and every class present",
            _roc_auc,
        ),
        Metric("mcc", "classify", True, "Matthews correlation coefficient, -1..1", _mcc),
    ]
    rows += [
        Metric(name, "generate", True, f"mean {name} F1 (rouge-score, stemmed)", partial(mean, name))
        for name in _ROUGE
    ]
    rows += [
        Metric("bleu", "generate", True, "corpus BLEU (sacrebleu) / 100", partial(_corpus, "bleu")),
        Metric("chrf", "generate", True, "corpus chrF (sacrebleu) / 100", partial(_corpus, "chrf")),
        Metric(
            "exact_match",
            "generate",
            True,
            "share of answers equal to the reference after SQuAD normalisation",
            partial(mean, "exact_match"),
        ),
        Metric("loss", "lm", False, "token-weighted mean cross-entropy on labelled tokens", _loss),
        Metric("perplexity", "lm", False, "exp(loss), loss capped at 50", _perplexity),
    ]
    return {m.name: m for m in rows}


METRICS: dict[str, Metric] = _table()


def register(kind: str, spec: Kind, metrics: list[Metric]) -> None:
    """Add a kind of score and its metrics to the registry: one call from the module that owns them."""
    if kind in KINDS or any(m.name in METRICS for m in metrics):
        raise LmtuneError(f"metrics: kind {kind!r} or one of its metric names is registered already")
    KINDS[kind] = spec
    METRICS.update({m.name: m for m in metrics})


def higher_is_better(name: str) -> bool:
    """Whether a validation metric improves upwards (a loss, an error falls): the Trainer's best-checkpoint
    rule, the search's direction and the diagnosis follow it."""
    load_measures()
    return METRICS[name].higher_is_better if name in METRICS else name != "loss"


def names_for(kind: str) -> list[str]:
    if kind not in KINDS:
        raise LmtuneError(f"unknown metric kind {kind!r}; allowed: {', '.join(KINDS)}")
    return [name for name, m in METRICS.items() if m.kind == kind]


def names_for_task(task: str | Task) -> list[str]:
    """Every metric a task's evaluation can report (the union over the kinds it scores); `task` is a name
    or a description (lmtune.tasks.describe)."""
    task = TASKS[task] if isinstance(task, str) else task
    return [name for kind in task.scores for name in names_for(kind)]


def check_names(names: list[str], kind: str, where: str) -> list[str]:
    allowed = names_for(kind)
    for name in names:
        if name not in allowed:
            raise LmtuneError(f"{where}: unknown metric {name!r}; allowed for {kind}: {', '.join(allowed)}")
    return list(names)


# ------------------------------------------------------------------------- per-example statistics


def require(inputs: dict, keys: tuple[str, ...], kind: str, where: str) -> int:
    """The number of examples, after checking that every input is there and all have the same length."""
    missing = [key for key in keys if key not in inputs]
    if missing:
        raise LmtuneError(f"{where}: {kind} inputs lack {', '.join(missing)}; need {', '.join(keys)}")
    lengths = {key: len(inputs[key]) for key in keys}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{key} {n}" for key, n in lengths.items())
        raise LmtuneError(f"{where}: {kind} inputs differ in length ({shown}); need one entry per example")
    n = next(iter(lengths.values()))
    if n == 0:
        raise LmtuneError(f"{where}: no examples to compute {kind} metrics on; need at least one")
    return n


def _optional(value) -> np.ndarray | None:
    """probs may be None, or None that went through np.asarray (a saved predictions file)."""
    if value is None:
        return None
    array = np.asarray(value)
    return None if array.dtype == object and array.size == 1 and array.item() is None else array


def _prepare_classify(inputs: dict, names: list[str], labels: list[str] | None, where: str) -> dict:
    n = require(inputs, ("y_true", "y_pred"), "classify", where)
    y_true, y_pred = np.asarray(inputs["y_true"]), np.asarray(inputs["y_pred"])
    probs = _optional(inputs.get("probs"))
    for key, ids in (("y_true", y_true), ("y_pred", y_pred)):
        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
            raise LmtuneError(f"{where}: {key} must be one integer label id per example, got {ids.dtype}")
    if labels is not None:
        k = len(labels)
    else:
        k = int(max(y_true.max(), y_pred.max())) + 1 if probs is None else probs.shape[-1]
    for key, ids in (("y_true", y_true), ("y_pred", y_pred)):
        if (bad := ids[(ids < 0) | (ids >= k)]).size:
            raise LmtuneError(f"{where}: {key} has label id {int(bad[0])}; allowed: 0..{k - 1} ({k} labels)")
    if probs is not None:
        probs = probs.astype(float)
        if probs.shape != (n, k):
            raise LmtuneError(f"{where}: probs has shape {probs.shape}; need (examples, labels) = ({n}, {k})")
    return {
        "n": n,
        "k": k,
        "codes": y_true * k + y_pred,
        "y_true": y_true,
        "y_pred": y_pred,
        "probs": probs,
        "columns": {},
    }


def _prepare_generate(inputs: dict, names: list[str], labels, where: str) -> dict:
    n = require(inputs, ("predictions", "references"), "generate", where)
    predictions, references = [str(p) for p in inputs["predictions"]], [str(r) for r in inputs["references"]]
    columns: dict[str, np.ndarray] = {}
    scorers: dict = {}
    if rouge := [name for name in _ROUGE if name in names]:
        from rouge_score import rouge_scorer

        scorer = rouge_scorer.RougeScorer(rouge, use_stemmer=True)
        scored = [scorer.score(ref, pred) for pred, ref in zip(predictions, references, strict=True)]
        columns.update({name: np.array([[s[name].fmeasure] for s in scored]) for name in rouge})
    if "exact_match" in names:
        same = [normalise(p) == normalise(r) for p, r in zip(predictions, references, strict=True)]
        columns["exact_match"] = np.array(same, float)[:, None]
    for name in ("bleu", "chrf"):
        if name in names:
            import sacrebleu

            # sentence-level sufficient statistics (n-gram matches and totals, lengths): what
            # sacrebleu.corpus_bleu / corpus_chrf sum before scoring, and what its bootstrap resamples
            scorers[name] = sacrebleu.BLEU() if name == "bleu" else sacrebleu.CHRF()
            sentences = shims.sacrebleu_sentence_statistics(scorers[name], predictions, references)
            columns[name] = np.array(sentences, float)
    return {"n": n, "columns": columns, "scorers": scorers, "references": references}


def _prepare_lm(inputs: dict, names: list[str], labels, where: str) -> dict:
    n = require(inputs, ("loss_sum", "tokens"), "lm", where)
    loss_sum, tokens = np.asarray(inputs["loss_sum"], float), np.asarray(inputs["tokens"], float)
    return {"n": n, "columns": {"nll": loss_sum[:, None], "tokens": tokens[:, None]}}


KINDS: dict[str, Kind] = {
    "classify": Kind(_prepare_classify, ("accuracy", "f1_macro"), truth="y_true"),
    "generate": Kind(_prepare_generate, ("rougeL",), truth="references"),
    "lm": Kind(_prepare_lm, ("perplexity",)),
}


def _aggregate(data: dict, idx: np.ndarray | None) -> dict:
    """Statistics summed over every example once (idx None) or over each resample row of idx."""
    agg = {"data": data, "idx": idx, "n": data["n"]}
    if "codes" in data:
        k = data["k"]
        if idx is None:
            counts = np.bincount(data["codes"], minlength=k * k)[None]
        else:
            counts = stats.counts(data["codes"], k * k, idx)
        agg["counts"] = counts.reshape(-1, k, k)
    if columns := data["columns"]:
        matrix = np.hstack(list(columns.values()))
        total = matrix.sum(0)[None] if idx is None else stats.sums(matrix, idx)
        edges = np.cumsum([0] + [c.shape[1] for c in columns.values()])
        agg["sums"] = {name: total[:, a:b] for name, a, b in zip(columns, edges[:-1], edges[1:], strict=True)}
    return agg


def _values(data: dict, names: list[str], idx: np.ndarray | None) -> np.ndarray:
    """(rows, len(names)): the metrics on every example (one row) or on each resample of idx."""
    agg = _aggregate(data, idx)
    return np.column_stack([METRICS[name].fn(agg) for name in names])


def resampled(kind: str, inputs: dict, names: list[str], idx: np.ndarray, *, labels=None) -> np.ndarray:
    """The metrics on given resamples (rows of example indices): what the intervals are made of."""
    names = check_names(names, kind, "resampled")
    return _values(KINDS[kind].prepare(inputs, names, labels, "resampled"), names, np.atleast_2d(idx))


# ------------------------------------------------------------------------------------- scoring


def score(
    kind: str,
    inputs: dict,
    names: list[str] | None = None,
    *,
    labels: list[str] | None = None,
    ci: bool = True,
    n_boot: int = 1000,
    seed: int = 0,
    where: str = "evaluation",
) -> dict:
    """{name: value, ..., "ci": {name: [low, high]}, "n": examples}: the 95% percentile-bootstrap
    interval of each metric. A metric undefined on these
    examples (ROC-AUC without probabilities or with a class absent) is None and has no interval."""
    names = names_for(kind) if names is None else check_names(names, kind, where)
    data = KINDS[kind].prepare(inputs, names, labels, where)
    point = _values(data, names, None)[0]
    result: dict = {
        name: (float(v) if np.isfinite(v) else None) for name, v in zip(names, point, strict=True)
    }
    result["ci"] = _intervals(data, names, result, n_boot, seed) if ci else {}
    result["n"] = data["n"]
    return result


def _intervals(data: dict, names: list[str], point: dict, n_boot: int, seed: int) -> dict:
    defined = [name for name in names if point[name] is not None]
    if data["n"] == 1 or n_boot < 1:  # nothing to resample: the interval is the value
        return {name: [point[name], point[name]] for name in defined}
    samples = stats.bootstrap(data["n"], n_boot, seed, partial(_values, data, defined))
    intervals = {}
    for j, name in enumerate(defined):
        if (interval := stats.percentile_ci(samples[:, j])) is not None:
            intervals[name] = interval
    return {name: intervals[name] for name in defined if name in intervals}


def classification_metrics(
    y_true, y_pred, labels: list[str], probs=None, *, ci: bool = True, n_boot: int = 1000, seed: int = 0
) -> dict:
    """Every classification scalar (with "ci"), per-class precision/recall/F1/support and the confusion
    matrix (rows = truth)."""
    result = score(
        "classify",
        {"y_true": np.asarray(y_true), "y_pred": np.asarray(y_pred), "probs": probs},
        labels=labels,
        ci=ci,
        n_boot=n_boot,
        seed=seed,
    )
    k = len(labels)
    counts = np.bincount(np.asarray(y_true) * k + np.asarray(y_pred), minlength=k * k).reshape(k, k)
    tp, support, predicted = (c[0] for c in _cells(counts[None]))
    per_class = {s: _per_class(s, tp, support, predicted) for s in ("precision", "recall", "f1")}
    interval = result.pop("ci")
    n = result.pop("n")
    result["per_class"] = {
        label: {
            "precision": float(per_class["precision"][i]),
            "recall": float(per_class["recall"][i]),
            "f1": float(per_class["f1"][i]),
            "support": int(support[i]),
        }
        for i, label in enumerate(labels)
    }
    result["confusion_matrix"] = counts.tolist()
    result["n"] = n
    result["ci"] = interval
    return result


def headline(metrics: dict) -> dict:
    return {key: metrics[key] for key in HEADLINE}


# -------------------------------------------------------------------------------- paired tests


def paired(
    kind: str,
    name: str,
    a: dict,
    b: dict,
    *,
    labels: list[str] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    where: str = "paired",
) -> dict:
    """Is model b better than model a on the same examples? The difference b - a with its 95% interval
    from a paired bootstrap (the same resampled examples for both), and a two-sided p-value: McNemar's
    test for accuracy, the paired bootstrap's (stats.bootstrap_p) for every other metric."""
    check_names([name], kind, where)
    data_a = KINDS[kind].prepare(a, [name], labels, f"{where} (model a)")
    data_b = KINDS[kind].prepare(b, [name], labels, f"{where} (model b)")
    _same_examples(kind, data_a, data_b, where)
    va, vb = float(_values(data_a, [name], None)[0, 0]), float(_values(data_b, [name], None)[0, 0])
    if not (np.isfinite(va) and np.isfinite(vb)):
        raise LmtuneError(
            f"{where}: {name} is undefined on these examples ({METRICS[name].description}); "
            f"compare another metric: {', '.join(n for n in names_for(kind) if n != name)}"
        )
    n = data_a["n"]
    if n == 1 or n_boot < 1:
        differences = np.array([vb - va])
    else:
        differences = stats.bootstrap(n, n_boot, seed, partial(_difference, data_a, data_b, name))
    result = {
        "metric": name,
        "a": va,
        "b": vb,
        "difference": vb - va,
        "ci": stats.percentile_ci(differences) or [vb - va, vb - va],
        "n": n,
    }
    if (right := METRICS[name].right) is not None:  # right or wrong per example: McNemar
        test = stats.mcnemar(right(data_a), right(data_b))
        result.update(p_value=test["p_value"], test="mcnemar", mcnemar=test)
    else:
        result.update(p_value=stats.bootstrap_p(differences, vb - va), test="paired bootstrap")
    result["significant"] = bool(result["p_value"] < SIGNIFICANCE)
    return result


def _difference(data_a: dict, data_b: dict, name: str, idx: np.ndarray) -> np.ndarray:
    return _values(data_b, [name], idx)[:, 0] - _values(data_a, [name], idx)[:, 0]


def _same_examples(kind: str, a: dict, b: dict, where: str) -> None:
    if a["n"] != b["n"]:
        raise LmtuneError(
            f"{where}: model a has {a['n']} examples, model b {b['n']}; a paired test needs the same examples"
        )
    truth = KINDS[kind].truth
    if truth and not np.array_equal(np.asarray(a[truth]), np.asarray(b[truth])):
        raise LmtuneError(
            f"{where}: the two models' {truth} differ; a paired test needs the same examples in the same order"
        )
    if kind == "classify" and a["k"] != b["k"]:  # without `labels`, k comes from the ids each model saw
        raise LmtuneError(
            f"{where}: the models know {a['k']} and {b['k']} classes; pass labels= to pair them"
        )


load_measures()  # the kinds of score tasks register themselves (the last statement: they import this)
