"""Resampling statistics behind the metrics' 95% intervals and the paired tests between two models.

A bootstrap resample is a row of n example indices drawn with replacement. Metrics are computed
from per-example sufficient statistics (confusion codes, per-sentence BLEU counts, token losses), so a
block of resamples reduces to one `np.bincount` or one matrix product: 1,000 resamples of 10,000
examples take a fraction of a second, not 1,000 calls to scikit-learn.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

LEVEL = 0.95
# Resampled indices drawn per block (rows x n): bounds the working memory to some tens of MB
# whatever n and n_boot are.
BLOCK = 2_000_000
# McNemar's chi-square approximation is poor with few discordant pairs: below this, the exact test.
EXACT_BELOW = 25


def resamples(n: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Blocks of bootstrap resamples, (rows, n) indices each, n_boot rows in all, from a seeded rng."""
    rng = np.random.default_rng(seed)
    rows = max(1, BLOCK // max(n, 1))
    for start in range(0, n_boot, rows):
        yield rng.integers(0, n, size=(min(rows, n_boot - start), n))


def bootstrap(n: int, n_boot: int, seed: int, statistic: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """`statistic(indices)` (one value, or one row of values, per resample) over n_boot resamples."""
    return np.concatenate([np.asarray(statistic(idx), dtype=float) for idx in resamples(n, n_boot, seed)])


def counts(codes: np.ndarray, bins: int, idx: np.ndarray) -> np.ndarray:
    """(rows, bins): how often each code occurs in each resample, e.g. the cells of a confusion matrix."""
    rows = idx.shape[0]
    flat = (np.arange(rows)[:, None] * bins + codes[idx]).ravel()
    return np.bincount(flat, minlength=rows * bins).reshape(rows, bins)


def sums(values: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """(rows, d): per-example statistics (n, d) summed over each resample, as weights @ values, where a
    weight is how many times the resample drew that example."""
    weights = counts(np.arange(values.shape[0]), values.shape[0], idx)
    return weights.astype(float) @ values


def percentile_ci(samples: np.ndarray) -> list[float] | None:
    """The percentile interval: the middle 95% of the resampled values (NaNs, where a resample left the
    metric undefined, are dropped; None when nothing is left)."""
    samples = np.asarray(samples, dtype=float)
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return None
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return [float(low), float(high)]


def bootstrap_p(differences: np.ndarray, observed: float) -> float:
    """Two-sided paired-bootstrap p-value of `observed` = b - a.

    The share of resampled differences on the other side of 0 from the observed one (ties at 0
    count against it), doubled and clipped to 1: it is below 0.05 when 0 lies outside the percentile
    interval, except at the edge (the interval interpolates between resamples, the count does not, and
    the +1 below): there the p-value decides the verdict. One is added to the count and to
    the number of resamples, so that a finite bootstrap never claims p = 0 (its resolution is
    2 / (n_boot + 1)). A difference of exactly 0 gives p = 1.
    """
    differences = np.asarray(differences, dtype=float)
    differences = differences[np.isfinite(differences)]
    if observed == 0 or differences.size == 0:
        return 1.0
    across = np.count_nonzero(differences <= 0 if observed > 0 else differences >= 0)
    return float(min(1.0, 2 * (across + 1) / (differences.size + 1)))


def mcnemar(a_correct: np.ndarray, b_correct: np.ndarray) -> dict:
    """McNemar's test on paired right/wrong outcomes: b = only model a right, c = only model b right.

    Exact (two-sided binomial on the discordant pairs) when b + c < 25, else chi-square with
    continuity correction, (|b - c| - 1)^2 / (b + c) on one degree of freedom.
    """
    from scipy.stats import binomtest, chi2

    a_correct, b_correct = np.asarray(a_correct, bool), np.asarray(b_correct, bool)
    b = int(np.count_nonzero(a_correct & ~b_correct))
    c = int(np.count_nonzero(~a_correct & b_correct))
    if b + c == 0:
        return {"b": b, "c": c, "p_value": 1.0, "method": "exact"}
    if b + c < EXACT_BELOW:
        return {"b": b, "c": c, "p_value": float(binomtest(b, b + c, 0.5).pvalue), "method": "exact"}
    statistic = (abs(b - c) - 1) ** 2 / (b + c)
    return {"b": b, "c": c, "p_value": float(chi2.sf(statistic, 1)), "method": "chi-square"}
