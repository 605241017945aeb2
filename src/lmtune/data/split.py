"""Seeded, stratified train/validation/test splits for files that come without them."""

from __future__ import annotations

from collections import Counter

from sklearn.model_selection import train_test_split

from lmtune.data.load import Rows
from lmtune.errors import LmtuneError


def _stratify_or_none(labels: list[str], holdout: float) -> list[str] | None:
    """Stratify when every class can appear on both sides; otherwise a plain seeded shuffle."""
    counts = Counter(labels)
    n_holdout = int(round(holdout * len(labels)))
    if min(counts.values()) >= 2 and n_holdout >= len(counts) and len(labels) - n_holdout >= len(counts):
        return labels
    return None


def split_off(rows: Rows, fraction: float, seed: int, name: str) -> tuple[Rows, Rows]:
    """Split `fraction` of rows off (stratified by label, seeded) and return (rest, held_out)."""
    if fraction <= 0:
        return rows, Rows([], [], [])
    n_holdout = int(round(fraction * len(rows)))
    if n_holdout < 1 or n_holdout >= len(rows):
        raise LmtuneError(
            f"data.split.{name} = {fraction:g} of {len(rows)} rows leaves an empty split; "
            "use more rows or another fraction"
        )
    indices = list(range(len(rows)))
    rest, held = train_test_split(
        indices, test_size=n_holdout, random_state=seed, stratify=_stratify_or_none(rows.labels, fraction)
    )
    return rows.subset(sorted(rest)), rows.subset(sorted(held))


def subsample(rows: Rows, n: int, seed: int) -> Rows:
    """A stratified, seeded subsample of n rows (or all rows when there are fewer)."""
    if n >= len(rows):
        return rows
    keep, _ = train_test_split(
        list(range(len(rows))),
        train_size=n,
        random_state=seed,
        stratify=_stratify_or_none(rows.labels, 1 - n / len(rows)),
    )
    return rows.subset(sorted(keep))
