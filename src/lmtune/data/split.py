"""Train/validation/test assignment and k folds.

`hash` (the default) gives each row a number in [0, 1) from a hash of its group key (or, without groups,
of its text) and the seed, and cuts the splits at fixed points: adding rows never moves an existing row,
copies of a text land together, and rows of one group never straddle splits. Per-label proportions are
right in expectation, within sampling noise. `stratified` gives exact per-label proportions (scikit-learn,
seeded) at the price of stability.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import xxhash
from sklearn.model_selection import train_test_split

from lmtune.data.dedup import mix64
from lmtune.errors import LmtuneError


def unit(hashes: np.ndarray, groups: list | None, seed: int) -> np.ndarray:
    """A stable number in [0, 1) per row: from its group's name when there are groups, else its hash."""
    if groups is not None:
        cache: dict = {}
        hashes = np.array(
            [cache.setdefault(g, xxhash.xxh3_64_intdigest(str(g).encode())) for g in groups], dtype=np.uint64
        )
    salt = np.uint64(xxhash.xxh3_64_intdigest(f"split seed {seed}".encode()))
    with np.errstate(over="ignore"):
        return (mix64(np.asarray(hashes, dtype=np.uint64) ^ salt) >> np.uint64(11)).astype(
            np.float64
        ) / 2.0**53


def assign(
    hashes: np.ndarray,
    groups: list | None,
    labels: list | None,
    cut: dict[str, float],
    seed: int,
    method: str = "hash",
) -> np.ndarray:
    """Split code per row: 0 = train, i = the i-th split named in `cut` (name → fraction of all rows)."""
    n = len(hashes)
    for name, fraction in cut.items():
        if n and round(fraction * n) < 1:
            raise LmtuneError(
                f"data.split.{name} = {fraction:g} of {n} rows leaves an empty split; use more rows or another fraction"
            )
    if method == "hash":
        u = unit(hashes, groups, seed)
        codes = np.zeros(n, dtype=np.int8)
        edge = 0.0
        for code, fraction in enumerate(cut.values(), 1):
            codes[(u >= edge) & (u < edge + fraction)] = code
            edge += fraction
        return codes
    if groups is not None:
        raise LmtuneError(
            "data.split.method = stratified cannot keep groups together; use hash with data.group_column"
        )
    return _stratified(labels, cut, seed)


def _stratify_or_none(labels: list, holdout: int) -> list | None:
    """Stratify when every class can appear on both sides; otherwise a plain seeded shuffle."""
    if labels is None or any(label is None for label in labels):
        return None
    counts = Counter(labels)
    if min(counts.values()) >= 2 and holdout >= len(counts) and len(labels) - holdout >= len(counts):
        return labels
    return None


def _stratified(labels: list | None, cut: dict[str, float], seed: int) -> np.ndarray:
    """Exact per-label proportions; a class with one row stays in train so it does not turn
    stratification off for all the others."""
    n = len(labels) if labels is not None else 0
    codes = np.zeros(n, dtype=np.int8)
    counts = Counter(labels or [])
    pool = [i for i in range(n) if labels is None or counts[labels[i]] >= 2]
    for code, (name, fraction) in enumerate(cut.items(), 1):
        holdout = int(round(fraction * n))
        if holdout >= len(pool):
            raise LmtuneError(f"data.split.{name} = {fraction:g} of {n} rows leaves no training rows")
        pool_labels = [labels[i] for i in pool] if labels is not None else None
        rest, held = train_test_split(
            pool, test_size=holdout, random_state=seed, stratify=_stratify_or_none(pool_labels, holdout)
        )
        codes[held] = code
        pool = sorted(rest)
    return codes


def folds(hashes: np.ndarray, groups: list | None, k: int, seed: int) -> np.ndarray:
    """Fold 0..k-1 per row, hash-stable and group-aware like `assign`."""
    return np.minimum((unit(hashes, groups, seed + 1) * k).astype(np.int64), k - 1)


def subsample_indices(labels: list, n: int, seed: int) -> list[int]:
    """A stratified, seeded subsample of n rows (all rows when there are fewer)."""
    if n >= len(labels):
        return list(range(len(labels)))
    keep, _ = train_test_split(
        list(range(len(labels))),
        train_size=n,
        random_state=seed,
        stratify=_stratify_or_none(labels, len(labels) - n),
    )
    return sorted(keep)
