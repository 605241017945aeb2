"""Leakage: validation/test rows that also sit in train (exact copies, or near-duplicates at the
dedup threshold) make test scores lie. Found pairs are reported with examples; the training copies are
removed when data.leakage.remove_from_train says so, and a leak left in place is flagged loudly."""

from __future__ import annotations

import time

import numpy as np
from datasets import Dataset

from lmtune.config import RunConfig
from lmtune.data import dedup
from lmtune.data.rows import hashes, keys


def check(
    splits: dict[str, Dataset],
    config: RunConfig,
    report,
    take,
    cut: set[str] = frozenset(),
    shared: bool = False,
) -> dict[str, Dataset]:
    """Held-out rows with a copy in train. Splits in `cut` were cut from the training file after its
    deduplication, so exact (and, with near dedup on, near) copies across them cannot exist: not searched.
    `take(rows, indices)` selects rows; `shared`: a copy is of the rows' shared text (Reader.shared)."""
    settings, d = config.data.leakage, config.data.dedup
    if not settings.check or not len(splits["train"]):
        return splits
    start = time.perf_counter()
    train = splits["train"]
    train_hashes = hashes(train, "leak")
    train_keys = None
    involved: list[np.ndarray] = []
    findings: dict[str, dict] = {}
    for name in ("validation", "test"):
        other = splits[name]
        if not len(other):
            continue
        exact_rows, examples = np.zeros(0, dtype=np.int64), []
        if not (name in cut and d.exact):
            other_hashes = hashes(other, "leak")
            first = dedup.cross_exact(train_hashes, other_hashes)
            exact_rows = np.flatnonzero(first >= 0)
            involved.append(np.flatnonzero(np.isin(train_hashes, other_hashes[exact_rows])))
            examples = [
                _example(train, other, int(first[j]), int(j), 1.0) for j in exact_rows[: report.EXAMPLES]
            ]
        near_rows: set[int] = set()
        if settings.near and not (name in cut and d.near):
            if train_keys is None:
                train_keys = keys(train, shared)
            exact = set(exact_rows.tolist())
            pairs = [
                p
                for p in dedup.cross_duplicates(
                    train_keys, keys(other, shared), threshold=d.threshold, ngram=d.ngram
                )
                if p[1] not in exact
            ]
            near_rows = {j for _, j, _ in pairs}
            involved.append(np.array([i for i, _, _ in pairs], dtype=np.int64))
            examples += [_example(train, other, i, j, jac) for i, j, jac in pairs[: report.EXAMPLES]]
        findings[name] = {"exact": len(exact_rows), "near": len(near_rows), "examples": examples}
    both = (
        len(splits["validation"]) and len(splits["test"]) and not ({"validation", "test"} <= cut and d.exact)
    )
    overlap = (
        int(np.isin(hashes(splits["test"], "leak"), hashes(splits["validation"], "leak")).sum())
        if both
        else 0
    )
    leaking = np.unique(np.concatenate(involved)) if involved else np.zeros(0, dtype=np.int64)
    removed = len(leaking) if settings.remove_from_train else 0
    if removed:
        splits = {**splits, "train": take(train, np.setdiff1d(np.arange(len(train)), leaking))}
    report.leakage(findings, overlap, removed, len(train), time.perf_counter() - start)
    return splits


def _example(train: Dataset, other: Dataset, i: int, j: int, jaccard: float) -> dict:
    a, b = train[i], other[j]
    return {
        "train": a["where"],
        "other": b["where"],
        "jaccard": round(float(jaccard), 4),
        "text": (a["text"] or a["messages"] or "")[:300],
        "other_text": (b["text"] or b["messages"] or "")[:300],
    }
