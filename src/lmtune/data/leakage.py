"""Leakage: validation/test rows that also sit in train (exact copies, or near-duplicates at the
dedup threshold) make test scores lie. Found pairs are reported with examples; the training copies are
removed when data.leakage.remove_from_train says so, and a leak left in place is flagged loudly."""

from __future__ import annotations

import time

import numpy as np
from datasets import Dataset

from lmtune.config import RunConfig
from lmtune.data import dedup
from lmtune.data.rows import hashes, row_key


def check(splits: dict[str, Dataset], config: RunConfig, report) -> dict[str, Dataset]:
    settings, d = config.data.leakage, config.data.dedup
    if not settings.check or not len(splits["train"]):
        return splits
    start = time.perf_counter()
    train = splits["train"]
    train_hashes = hashes(train)
    train_keys = None
    involved: set[int] = set()
    findings: dict[str, dict] = {}
    for name in ("validation", "test"):
        other = splits[name]
        if not len(other):
            continue
        other_hashes = hashes(other)
        exact_rows = np.flatnonzero(np.isin(other_hashes, train_hashes))
        exact_train = np.flatnonzero(np.isin(train_hashes, other_hashes[exact_rows]))
        involved.update(int(i) for i in exact_train)
        first_train = {int(h): int(i) for i, h in reversed(list(enumerate(train_hashes)))}
        examples = [
            _example(train, other, first_train[int(other_hashes[j])], int(j), 1.0)
            for j in exact_rows[: report.EXAMPLES]
        ]
        near_rows: set[int] = set()
        if settings.near:
            if train_keys is None:
                train_keys = [row_key(row) for row in train]
            other_keys = [row_key(row) for row in other]
            exact = set(exact_rows.tolist())
            pairs = [
                p
                for p in dedup.cross_duplicates(train_keys, other_keys, threshold=d.threshold, ngram=d.ngram)
                if p[1] not in exact
            ]
            near_rows = {j for _, j, _ in pairs}
            involved.update(i for i, _, _ in pairs)
            examples += [_example(train, other, i, j, jac) for i, j, jac in pairs[: report.EXAMPLES]]
        findings[name] = {"exact": len(exact_rows), "near": len(near_rows), "examples": examples}
    overlap = (
        np.isin(hashes(splits["test"]), hashes(splits["validation"])).sum()
        if len(splits["validation"])
        else 0
    )
    removed = len(involved) if settings.remove_from_train else 0
    if removed:
        keep = np.setdiff1d(np.arange(len(train)), np.fromiter(involved, dtype=np.int64))
        splits = {**splits, "train": train.select(keep)}
    report.leakage(findings, int(overlap), removed, len(train), time.perf_counter() - start)
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
