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
    """Split `fraction` of rows off (stratified by label, seeded) and return (rest, held_out).

    Rows of a class too rare to appear on both sides (one row) stay on the training side, so
    that one rare class does not turn stratification off for all the others.
    """
    if fraction <= 0:
        return rows, Rows([], [], [])
    n_holdout = int(round(fraction * len(rows)))
    counts = Counter(rows.labels)
    rare = [i for i, label in enumerate(rows.labels) if counts[label] < 2]
    pool = [i for i, label in enumerate(rows.labels) if counts[label] >= 2]
    if n_holdout < 1 or n_holdout >= len(pool):
        raise LmtuneError(
            f"data.split.{name} = {fraction:g} of {len(rows)} rows leaves an empty split; "
            "use more rows or another fraction"
        )
    labels = [rows.labels[i] for i in pool]
    rest, held = train_test_split(
        pool,
        test_size=n_holdout,
        random_state=seed,
        stratify=_stratify_or_none(labels, n_holdout / len(pool)),
    )
    return rows.subset(sorted(rest + rare)), rows.subset(sorted(held))


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


def random_split(items: list, fraction: float, seed: int, name: str) -> tuple[list, list]:
    """Split `fraction` of unlabelled items off (seeded shuffle) and return (rest, held_out), in file order."""
    if fraction <= 0:
        return items, []
    n_holdout = int(round(fraction * len(items)))
    if n_holdout < 1 or n_holdout >= len(items):
        raise LmtuneError(
            f"data.split.{name} = {fraction:g} of {len(items)} records leaves an empty split; "
            "use more records or another fraction"
        )
    rest, held = train_test_split(list(range(len(items))), test_size=n_holdout, random_state=seed)
    return [items[i] for i in sorted(rest)], [items[i] for i in sorted(held)]
