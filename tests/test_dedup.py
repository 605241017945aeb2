"""Deduplication: exact keys and hashes, MinHash against datasketch, LSH + verification against brute force,
and SST-2 counts against an independent count (pandas for exact, sparse shingle matrices for near)."""

from __future__ import annotations

import random
import re
from collections import Counter
from itertools import combinations
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import xxhash
from datasketch import MinHash
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from lmtune.data.dedup import (
    cross_duplicates,
    cross_exact,
    dedup_key,
    exact_hashes,
    first_copies,
    lsh_params,
    minhash_signatures,
    near_duplicates,
    shingles,
)
from lmtune.errors import LmtuneError

SST2 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sst2"
WORDS = [f"{a}{b}{c}" for a in "bcdfgklmnprst" for b in "aeiou" for c in "lmnrstxz"]  # 520 words


# ------------------------------------------------------------------ an independent reference, written apart


def ref_key(text: str) -> str:
    return re.sub(r"\s+", " ", text.casefold()).strip()


def ref_shingles(text: str, n: int = 3) -> set[str]:
    key = ref_key(text)
    words = key.split()
    if len(words) < n:
        return {key}
    return {" ".join(gram) for gram in zip(*(words[i:] for i in range(n)), strict=False)}


def ref_similar(texts: list[str], threshold: float, n: int = 3) -> set[tuple[int, int]]:
    """All pairs i < j with Jaccard >= threshold, by looking at every pair."""
    sets = [ref_shingles(t, n) for t in texts]
    return {
        (i, j)
        for i, j in combinations(range(len(texts)), 2)
        if len(sets[i] & sets[j]) / len(sets[i] | sets[j]) >= threshold
    }


def ref_clusters(n: int, pairs: set[tuple[int, int]]) -> np.ndarray:
    """Lowest index of each row's connected component under `pairs`."""
    rows, cols = zip(*pairs, strict=True) if pairs else ((), ())
    graph = sparse.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    lowest = np.full(labels.max() + 1, n)
    np.minimum.at(lowest, labels, np.arange(n))
    return lowest[labels]


def sentence(rng: random.Random, length: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(length))


def changed(rng: random.Random, text: str, positions: list[int]) -> str:
    words = text.split()
    for p in positions:
        words[p] = "zzz" + rng.choice(WORDS)  # not in WORDS: a real change
    return " ".join(words)


# ------------------------------------------------------------------------------------------- exact


def test_dedup_key_collapses_case_and_whitespace():
    variants = ["Hello  World", "hello world", " HELLO\tworld\n", "hello\u00a0World", "HELLO WORLD "]
    assert {dedup_key(v) for v in variants} == {"hello world"}
    assert dedup_key("Straße") == "strasse"  # casefold, not lower
    assert len(set(exact_hashes(variants).tolist())) == 1
    assert dedup_key("hello world!") != dedup_key("hello world")  # punctuation is content


def test_exact_hashes_are_stable_uint64():
    hashes = exact_hashes(["  Hello   World "])
    assert hashes.dtype == np.uint64
    assert int(hashes[0]) == xxhash.xxh3_64_intdigest(b"hello world") == 0xD447B1EA40E6988B
    assert exact_hashes([]).shape == (0,)


def test_first_copies_keeps_first_occurrence():
    texts = ["b", "A", "a ", "c", "B", "a", "d"]
    keep = first_copies(exact_hashes(texts))
    assert keep.tolist() == [True, True, False, True, False, False, True]
    shuffled = first_copies(exact_hashes(texts[::-1]))
    assert shuffled.tolist() == [True, True, True, True, False, False, False]  # first in the given order
    assert first_copies(np.empty(0, dtype=np.uint64)).shape == (0,)


def test_cross_exact_points_at_first_reference_copy():
    ref = exact_hashes(["x y", "p", "X  Y", "q"])
    other = exact_hashes(["Q", "z", "x y", ""])
    assert cross_exact(ref, other).tolist() == [3, -1, 0, -1]
    assert cross_exact(exact_hashes([]), other).tolist() == [-1] * 4


# ------------------------------------------------------------------------------------ near: pieces


def test_shingles():
    assert shingles("The cat  sat on the mat", 3) == {"the cat sat", "cat sat on", "sat on the", "on the mat"}
    assert shingles("Two words", 3) == {"two words"}
    assert shingles("", 3) == {""}
    assert shingles("a b c", 1) == {"a", "b", "c"}


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7, 0.8, 0.9, 1.0])
def test_lsh_params_recall_at_threshold(threshold):
    bands, rows = lsh_params(threshold, 128)
    assert bands * rows <= 128
    assert 1 - (1 - threshold**rows) ** bands >= 0.9999


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"threshold": 0.0}, "data.dedup.threshold"),
        ({"threshold": 1.5}, "data.dedup.threshold"),
        ({"ngram": 0}, "data.dedup.ngram"),
        ({"num_perm": 0}, "data.dedup.num_perm"),
        ({"threshold": 0.02, "num_perm": 16}, "data.dedup.num_perm"),
    ],
)
def test_bad_settings_name_the_config_key(kwargs, key):
    with pytest.raises(LmtuneError, match=re.escape(key)):
        near_duplicates(["a b c"], **kwargs)
    with pytest.raises(LmtuneError, match=re.escape(key)):
        cross_duplicates(["a b c"], ["a b c"], **kwargs)


def test_signatures_equal_datasketch_with_same_hash():
    rng = random.Random(1)
    texts = [sentence(rng, rng.randint(1, 30)) for _ in range(30)] + ["", "One TWO"]
    ours = minhash_signatures(texts, num_perm=64, seed=7)
    assert ours.shape == (32, 64) and ours.dtype == np.uint32
    for text, row in zip(texts, ours, strict=True):
        theirs = MinHash(num_perm=64, seed=7, hashfunc=xxhash.xxh32_intdigest)
        theirs.update_batch([g.encode() for g in shingles(text, 3)])
        assert np.array_equal(theirs.hashvalues, row)


def test_jaccard_estimates_agree_with_datasketch_default_hash():
    """datasketch's own default (SHA-1) hashing: a different random function, the same estimator."""
    rng = random.Random(2)
    base = [sentence(rng, 40) for _ in range(60)]
    texts = base + [changed(rng, t, rng.sample(range(40), 1 + k % 30)) for k, t in enumerate(base)]
    ours = minhash_signatures(texts)
    theirs = []
    for text in texts:
        m = MinHash(num_perm=128)
        m.update_batch([g.encode() for g in shingles(text, 3)])
        theirs.append(m)
    diffs, errors = [], []
    for i in range(60):
        true = len(shingles(texts[i], 3) & shingles(texts[60 + i], 3)) / len(
            shingles(texts[i], 3) | shingles(texts[60 + i], 3)
        )
        est_ours = float(np.mean(ours[i] == ours[60 + i]))
        diffs.append(est_ours - theirs[i].jaccard(theirs[60 + i]))
        errors.append(est_ours - true)
    # one estimate has sd <= 0.5/sqrt(128) = 0.044; a difference of two independent ones <= 0.0625
    assert max(abs(d) for d in diffs) < 5 * 0.0625
    assert abs(np.mean(diffs)) < 3 * 0.0625 / np.sqrt(60)
    assert abs(np.mean(errors)) < 3 * 0.044 / np.sqrt(60)


# -------------------------------------------------------------------------- near: whole, vs brute force


def planted(seed: int = 3) -> tuple[list[str], dict[int, int]]:
    """Long unrelated sentences plus copies with one or two words changed, placed later; returns the texts
    and {copy index: original index}."""
    rng = random.Random(seed)
    texts = [sentence(rng, rng.randint(30, 45)) for _ in range(200)]
    copies = {}
    for orig in range(0, 200, 10):
        words = len(texts[orig].split())
        positions = [rng.randrange(words)] if orig % 20 else rng.sample(range(words), 2)
        copies[len(texts)] = orig
        texts.append(changed(rng, texts[orig], positions))
    texts.append(texts[5].upper())  # an exact copy (under the key)
    copies[len(texts) - 1] = 5
    texts.append(changed(rng, texts[-1], [3]))  # a near copy of the exact copy: same cluster as 5
    copies[len(texts) - 1] = 5
    return texts, copies


def test_near_duplicates_find_planted_copies_and_match_brute_force():
    texts, copies = planted()
    result = near_duplicates(texts, threshold=0.8)
    assert (result.bands, result.rows) == lsh_params(0.8, 128)
    truth = ref_similar(texts, 0.8)
    single = {(o, c) for c, o in copies.items() if o % 20 and c < 220}
    assert len(single) == 10 and single <= truth  # one word changed in 30+ words: Jaccard >= 25/31
    assert all(result.cluster[c] == o for o, c in single)
    assert np.array_equal(result.cluster, ref_clusters(len(texts), truth))
    assert result.keep.tolist() == (result.cluster == np.arange(len(texts))).tolist()
    assert result.dropped == len(texts) - len(set(result.cluster.tolist()))
    dropped = {d for _, d, _ in result.pairs}
    assert dropped == set(np.flatnonzero(~result.keep).tolist())
    for kept, drop, sim in result.pairs:
        assert kept < drop and result.keep[kept] and not result.keep[drop]
        expected = len(ref_shingles(texts[kept]) & ref_shingles(texts[drop])) / len(
            ref_shingles(texts[kept]) | ref_shingles(texts[drop])
        )
        assert sim == pytest.approx(expected)
    assert not result.keep[len(texts) - 2] and result.cluster[len(texts) - 2] == 5
    assert all(result.keep[:200])  # the unrelated originals are all kept


def test_near_duplicates_never_report_pairs_below_threshold():
    rng = random.Random(4)
    base = sentence(rng, 40)
    # Jaccard between base and each copy falls as more words change, across the 0.8 line
    texts = [base] + [changed(rng, base, rng.sample(range(40), k)) for k in range(1, 12)]
    texts += [sentence(rng, 40) for _ in range(20)]
    for threshold in (0.9, 0.8, 0.6, 0.4):
        result = near_duplicates(texts, threshold=threshold)
        truth = ref_similar(texts, threshold)
        assert np.array_equal(result.cluster, ref_clusters(len(texts), truth)), threshold
        alone = set(range(len(texts))) - {i for pair in truth for i in pair}  # no partner >= threshold
        assert alone and all(result.keep[i] and (result.cluster == i).sum() == 1 for i in alone)
        assert not alone & {i for pair in result.pairs for i in pair[:2]}


def test_near_duplicates_accept_arrow_arrays_and_are_deterministic():
    texts, _ = planted(seed=5)
    first = near_duplicates(texts)
    chunked = pa.chunked_array([texts[i : i + 7] for i in range(0, len(texts), 7)])  # many small chunks
    for again in (near_duplicates(chunked), near_duplicates(pa.array(texts)), near_duplicates(texts)):
        assert np.array_equal(first.cluster, again.cluster) and first.pairs == again.pairs
    assert cross_duplicates(chunked[:150], chunked[150:], threshold=0.5) == cross_duplicates(
        texts[:150], texts[150:], threshold=0.5
    )
    assert near_duplicates([]).keep.shape == (0,)


def test_cross_duplicates_match_brute_force():
    texts, copies = planted(seed=6)
    reference, other = texts[:200], texts[200:] + [sentence(random.Random(9), 35) for _ in range(5)]
    for threshold in (0.8, 0.5):
        pairs = cross_duplicates(reference, other, threshold=threshold)
        expected = {
            (i, j)
            for i, a in enumerate(reference)
            for j, b in enumerate(other)
            if len(ref_shingles(a) & ref_shingles(b)) / len(ref_shingles(a) | ref_shingles(b)) >= threshold
        }
        assert {(i, j) for i, j, _ in pairs} == expected
        assert all(sim >= threshold for _, _, sim in pairs)
    assert {(copies[200 + j], j) for j in range(len(copies))} >= {(i, j) for i, j, _ in pairs}


# ------------------------------------------------------------------------------- SST-2, independently


def read_glue(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0].split("\t") == ["sentence", "label"]
    return [line.split("\t")[0] for line in lines[1:]]


def shingle_matrices(*groups: list[set[str]]) -> list[sparse.csr_matrix]:
    """One binary row per shingle set, columns shared across groups."""
    vocab: dict[str, int] = {}
    parts = [([vocab.setdefault(g, len(vocab)) for s in sets for g in s], sets) for sets in groups]
    return [
        sparse.csr_matrix(
            (np.ones(len(cols), np.int32), cols, np.concatenate(([0], np.cumsum([len(s) for s in sets])))),
            shape=(len(sets), len(vocab)),
        )
        for cols, sets in parts
    ]


@pytest.fixture(scope="module")
def sst2():
    if not (SST2 / "train.tsv").exists() or not (SST2 / "dev.tsv").exists():
        pytest.skip(f"SST-2 not found at {SST2}")
    return read_glue(SST2 / "train.tsv"), read_glue(SST2 / "dev.tsv")


def test_sst2_exact_counts_match_independent_count(sst2):
    import pandas as pd

    train, dev = sst2
    keys = pd.Series(train).map(ref_key)
    independent_inside = int(keys.duplicated().sum())
    train_keys = set(keys)
    independent_leaks = sum(ref_key(d) in train_keys for d in dev)
    train_hashes, dev_hashes = exact_hashes(train), exact_hashes(dev)
    ours_inside = int((~first_copies(train_hashes)).sum())
    ours_leaks = int((cross_exact(train_hashes, dev_hashes) >= 0).sum())
    print(
        f"\nSST-2 exact: inside train ours={ours_inside} independent={independent_inside}; "
        f"dev rows with a copy in train ours={ours_leaks} independent={independent_leaks}"
    )
    assert ours_inside == independent_inside
    assert ours_leaks == independent_leaks
    assert independent_inside == sum(c - 1 for c in Counter(keys).values())  # the two reference ways agree


@pytest.fixture(scope="module")
def sst2_sparse(sst2):
    """Binary shingle matrices of train and dev, and the shingle-set sizes."""
    train, dev = sst2
    t_sets, d_sets = [ref_shingles(t) for t in train], [ref_shingles(d) for d in dev]
    tm, dm = shingle_matrices(t_sets, d_sets)
    return tm, dm, np.array([len(s) for s in t_sets]), np.array([len(s) for s in d_sets])


def similar_pairs(left, right, left_sizes, right_sizes, threshold) -> set[tuple[int, int]]:
    """(left row, right row) pairs with Jaccard >= threshold, from exact intersections (a sparse product)."""
    inter = (left @ right.T).tocoo()
    sims = inter.data / (left_sizes[inter.row] + right_sizes[inter.col] - inter.data)
    hit = sims >= threshold
    return set(zip(inter.row[hit].tolist(), inter.col[hit].tolist(), strict=True))


@pytest.mark.parametrize("threshold", [0.8, 0.5, 0.3])
def test_sst2_dev_train_near_counts_match_independent_count(sst2, sst2_sparse, threshold):
    train, dev = sst2
    tm, dm, t_sizes, d_sizes = sst2_sparse
    expected = similar_pairs(tm, dm, t_sizes, d_sizes, threshold)
    ours = {(i, j) for i, j, _ in cross_duplicates(train, dev, threshold=threshold)}
    print(
        f"\nSST-2 dev rows with a near-duplicate (Jaccard >= {threshold}) in train: "
        f"ours={len({j for _, j in ours})} independent={len({j for _, j in expected})}; "
        f"pairs ours={len(ours)} independent={len(expected)}"
    )
    assert ours == expected


@pytest.mark.parametrize("threshold", [0.8, 0.5])
def test_sst2_train_near_duplicates_match_independent_clusters(sst2, sst2_sparse, threshold):
    """SST-2 train holds many overlapping phrases: thousands of near pairs, a real test of LSH recall."""
    train, _ = sst2
    tm, _, t_sizes, _ = sst2_sparse
    expected = {(i, j) for i, j in similar_pairs(tm, tm, t_sizes, t_sizes, threshold) if i < j}
    clusters = ref_clusters(len(train), expected)
    result = near_duplicates(train, threshold=threshold)
    independent = int((clusters != np.arange(len(train))).sum())
    print(
        f"\nSST-2 train rows dropped as near-duplicates (Jaccard >= {threshold}, exact copies included): "
        f"ours={result.dropped} independent={independent} (pairs >= threshold: {len(expected)}, "
        f"LSH {result.bands}x{result.rows}, candidates verified {result.candidates})"
    )
    assert np.array_equal(result.cluster, clusters)
    assert result.dropped == independent


@pytest.mark.parametrize("threshold", [0.5, 0.3])
def test_sst2_data_report_counts_match_independent_count(sst2, sst2_sparse, threshold):
    """The pipeline's own report (read, clean, scrub, dedup, leakage) on train.tsv + dev.tsv, against the
    independent counts above: exact copies inside train, dev rows with an exact or a near copy in train."""
    import pandas as pd

    from lmtune.config import validate
    from lmtune.data.pipeline import prepare_data

    train, dev = sst2
    tm, dm, t_sizes, d_sizes = sst2_sparse
    data = {
        "train": str(SST2 / "train.tsv"),
        "test": str(SST2 / "dev.tsv"),
        "text_column": "sentence",
        "split": {"validation": 0.0},
        "dedup": {"threshold": threshold},
    }
    report = prepare_data(validate({"data": data}, "test"), "labelled").report
    keys = pd.Series(train).map(ref_key)
    train_keys = set(keys)
    exact_dev = {j for j, d in enumerate(dev) if ref_key(d) in train_keys}
    near_dev = {j for _, j in similar_pairs(tm, dm, t_sizes, d_sizes, threshold)} - exact_dev
    found = report["leakage"]["found"]["test"]
    print(
        f"\nSST-2 data report (threshold {threshold}): duplicates in train {report['duplicates']['train']['exact']['removed']}"
        f" (independent {int(keys.duplicated().sum())}); dev rows with an exact copy in train {found['exact']}"
        f" ({len(exact_dev)}), with a near copy {found['near']} ({len(near_dev)})"
    )
    assert report["bad_rows"]["count"] == 0 and report["steps"][0]["rows_out"] == len(train)
    assert report["duplicates"]["train"]["exact"]["removed"] == int(keys.duplicated().sum())
    assert (found["exact"], found["near"]) == (len(exact_dev), len(near_dev))
    assert report["leakage"]["removed_from_train"] >= len(near_dev) > 0
