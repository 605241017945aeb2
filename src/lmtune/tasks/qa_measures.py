"""What extractive question answering measures (task qa), torch-free, registered with the metrics
registry by this module alone (named in the task's `TASKS` entry):

    qa  {"answers": each question's gold answers as a JSON list of texts ([] unanswerable), "answer": str}

Exact match and F1 after the official SQuAD normalisation, each question scored against the best of its
gold answers; an unanswerable question is right only when the answer is "" (the SQuAD v2 script's
rule). Both are means of per-question scores, so the intervals resample questions.
"""

from __future__ import annotations

import json

import numpy as np

from lmtune.evaluate.metrics import Kind, Metric, mean, register, require
from lmtune.evaluate.spans import exact_match, f1


def _prepare(inputs: dict, names: list[str], labels, where: str) -> dict:
    n = require(inputs, ("answers", "answer"), "qa", where)
    golds = [json.loads(g) if isinstance(g, str) else list(g) for g in inputs["answers"]]
    answers = [str(a) for a in inputs["answer"]]
    em = np.array([[exact_match(a, g)] for a, g in zip(answers, golds, strict=True)], dtype=np.float64)
    f = np.array([[f1(a, g)] for a, g in zip(answers, golds, strict=True)], dtype=np.float64)
    # gold: what a paired test checks two models share (Kind.truth)
    gold = np.asarray([json.dumps(g, ensure_ascii=False) for g in golds])
    return {"n": n, "columns": {"em": em, "f1": f}, "gold": gold, "em": em[:, 0] == 1}


METRICS = [
    Metric(
        "em",
        "qa",
        True,
        "share of questions answered exactly as a gold answer (SQuAD-normalised)",
        lambda a: mean("em", a),
        lambda data: data["em"],
    ),
    Metric(
        "f1", "qa", True, "mean word-overlap F1 with the best gold answer (SQuAD)", lambda a: mean("f1", a)
    ),
]
register("qa", Kind(_prepare, ("f1", "em"), truth="gold"), METRICS)
