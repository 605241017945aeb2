"""Deduplication: exact copies (hash of a normalised key) and near-duplicates (MinHash LSH, verified).

Exact: two texts are copies when their `dedup_key` (casefolded, whitespace runs collapsed to one space,
stripped) is equal; rows are compared by the xxh3-64 hash of that key (stable across processes; a chance
collision needs ~5 billion distinct texts to reach 50%). The first copy is kept.

Near: texts are sets of word n-grams of their key ("shingles"); two texts are near-duplicates when the
Jaccard similarity of those sets reaches the threshold. MinHash signatures (datasketch 2.0's "affine32"
scheme, vectorised: xxh32 of each shingle, MurmurHash3 finaliser, then a*h+b mod 2^32 for all
permutations at once) are cut into LSH bands; rows sharing a band are candidates, and every candidate
is verified by the exact Jaccard of its shingle sets, so no pair below the threshold is ever reported.
`lsh_params` picks the most rows per band (fewest false candidates) whose probability of missing a pair
exactly at the threshold is <= `MISS` (1e-4): 25 bands x 5 rows at 0.8, 64 x 2 at 0.5 (128 permutations).
A bucket of k distinct texts costs k(k-1)/2 candidate pairs; exact copies join their first copy before
LSH, so repeated texts do not swell buckets. Row indices must fit in 32 bits.

Memory: no Python object per row is kept; near-dup keeps `bands` uint64 keys per row (200 bytes/row at
0.8) plus a few int64 arrays, reads texts in batches and fetches candidate texts by index.
Texts may be a list of str or a pyarrow (Chunked)Array, e.g. a memory-mapped datasets column.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import xxhash

from lmtune.errors import LmtuneError

MISS = 1e-4  # largest allowed probability that LSH misses a pair exactly at the threshold
BATCH = 2048  # rows per signature batch: ~25 shingles x 128 permutations x 4 bytes = ~26 MB
VERIFY_CHUNK = 50_000  # candidate pairs verified per chunk (their texts are fetched together)
_U32, _U64 = np.uint32, np.uint64


def dedup_key(text: str) -> str:
    """The normalisation behind "exact": casefold, whitespace runs (str.split) collapsed to one space,
    stripped. No Unicode normalisation here: the cleaner applies NFKC before, when configured."""
    return " ".join(text.casefold().split())


def exact_hashes(texts: Iterable[str]) -> np.ndarray:
    """xxh3-64 of each text's UTF-8 `dedup_key`, as uint64 (same value in every process and run)."""
    return np.fromiter((xxhash.xxh3_64_intdigest(dedup_key(t).encode()) for t in texts), dtype=_U64)


def first_copies(hashes: np.ndarray) -> np.ndarray:
    """Keep-mask: True at the first occurrence of each hash, False at later copies."""
    keep = np.zeros(len(hashes), dtype=bool)
    keep[np.unique(hashes, return_index=True)[1]] = True
    return keep


def cross_exact(ref_hashes: np.ndarray, other_hashes: np.ndarray) -> np.ndarray:
    """For each row of `other`, the index of its first exact copy in `ref`, or -1 (mask: result >= 0)."""
    unique, first = np.unique(ref_hashes, return_index=True)
    if not len(unique):
        return np.full(len(other_hashes), -1, dtype=np.int64)
    pos = np.minimum(np.searchsorted(unique, other_hashes), len(unique) - 1)
    return np.where(unique[pos] == other_hashes, first[pos], -1).astype(np.int64)


def _key_shingles(key: str, ngram: int) -> set[str]:
    words = key.split(" ")
    if len(words) <= ngram:
        return {key}
    return {" ".join(words[i : i + ngram]) for i in range(len(words) - ngram + 1)}


def shingles(text: str, ngram: int) -> set[str]:
    """Word n-grams of the key; a text of at most `ngram` words is one shingle (its whole key)."""
    return _key_shingles(dedup_key(text), ngram)


def jaccard(a: set, b: set) -> float:
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


def _check(threshold: float, num_perm: int, ngram: int) -> None:
    if not 0.0 < threshold <= 1.0:
        raise LmtuneError(f"data.dedup.threshold: must be in (0, 1], got {threshold}")
    if ngram < 1:
        raise LmtuneError(f"data.dedup.ngram: must be >= 1, got {ngram}")
    if num_perm < 1:
        raise LmtuneError(f"data.dedup.num_perm: must be >= 1, got {num_perm}")


def lsh_params(threshold: float, num_perm: int, miss: float = MISS) -> tuple[int, int]:
    """(bands, rows): the most rows per band such that a pair at the threshold shares no band with
    probability (1 - t^rows)^bands <= miss; more rows per band means fewer false candidates to verify."""
    for rows in range(num_perm, 0, -1):
        bands = num_perm // rows
        if (1.0 - threshold**rows) ** bands <= miss:
            return bands, rows
    raise LmtuneError(
        f"data.dedup.num_perm: {num_perm} permutations cannot find pairs at threshold {threshold} "
        f"with miss probability <= {miss}; use more"
    )


def _fmix32(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> _U32(16))
    h = h * _U32(0x85EBCA6B)
    h = h ^ (h >> _U32(13))
    h = h * _U32(0xC2B2AE35)
    return h ^ (h >> _U32(16))


def mix64(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> _U64(33))
    h = h * _U64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> _U64(33))
    h = h * _U64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> _U64(33))


def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's affine32 parameters for `seed` (odd a, any b), so signatures equal MinHash's."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=_U32) * _U32(2) + _U32(1)
    return a, gen.randint(0, 1 << 32, num_perm, dtype=_U32)


def _unique(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values: np.unique's hash path (numpy >= 2.3) is ~100x slower on these uint64 codes."""
    values = np.sort(values)
    return values[np.concatenate(([True], values[1:] != values[:-1]))] if len(values) else values


def _rows(texts: Any, start: int, stop: int) -> list[str]:
    part = texts[start:stop]
    return part.to_pylist() if hasattr(part, "to_pylist") else list(part)


def _take(texts: Any, indices: np.ndarray) -> list[str]:
    """texts[indices] as str. A pyarrow ChunkedArray is gathered chunk by chunk: its own `take`
    concatenates all chunks first, copying the whole column (100+ MB at 1M rows) on every call."""
    if hasattr(texts, "chunks"):
        bounds = np.cumsum([0] + [len(c) for c in texts.chunks])
        which = np.searchsorted(bounds, indices, side="right") - 1
        order = np.argsort(which, kind="stable")
        out: list[str] = [""] * len(indices)
        for chunk in np.unique(which).tolist():
            picked = order[
                np.searchsorted(which[order], chunk) : np.searchsorted(which[order], chunk, "right")
            ]
            values = texts.chunk(chunk).take(indices[picked] - bounds[chunk]).to_pylist()
            for k, value in zip(picked.tolist(), values, strict=True):
                out[k] = value
        return out
    if hasattr(texts, "take") and hasattr(texts, "to_pylist"):  # pyarrow Array: one gather
        return texts.take(indices).to_pylist()
    return [texts[i] for i in indices.tolist()]


def _signatures(
    texts: Sequence[str], ngram: int, perms: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """MinHash signatures (num_perm, n) and exact hashes (n,) of one batch, each key computed once.
    Permutations along the first axis: the min-reduction over each row's shingles is then ~6x faster."""
    counts, flat, exact = [], [], []
    for text in texts:
        key = dedup_key(text)
        exact.append(xxhash.xxh3_64_intdigest(key.encode()))
        grams = _key_shingles(key, ngram)
        counts.append(len(grams))
        flat.extend(xxhash.xxh32_intdigest(g.encode()) for g in grams)
    if not counts:
        return np.empty((len(perms[0]), 0), dtype=_U32), np.empty(0, dtype=_U64)
    hv = _fmix32(np.array(flat, dtype=_U32))
    offsets = np.concatenate(([0], np.cumsum(counts)[:-1]))
    sig = np.minimum.reduceat(perms[0][:, None] * hv + perms[1][:, None], offsets, axis=1)
    return sig, np.array(exact, dtype=_U64)


def minhash_signatures(
    texts: Sequence[str], *, num_perm: int = 128, ngram: int = 3, seed: int = 1
) -> np.ndarray:
    """(n, num_perm) uint32 MinHash signatures of the shingle sets; equal to datasketch
    `MinHash(num_perm, seed, hashfunc=xxh32 of UTF-8)` updated with the same shingles."""
    _check(0.5, num_perm, ngram)
    texts, perms = list(texts), _permutations(num_perm, seed)
    parts = [_signatures(texts[s : s + BATCH], ngram, perms)[0].T for s in range(0, len(texts), BATCH)]
    return np.concatenate(parts) if parts else np.empty((0, num_perm), dtype=_U32)


def _band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(bands, n) uint64 from (num_perm, n) signatures: one hash per band of `rows` values (a chance
    collision only costs a verification)."""
    keys = np.empty((bands, sig.shape[1]), dtype=_U64)
    for band in range(bands):
        cols = sig[band * rows : (band + 1) * rows].astype(_U64)
        h = cols[0]
        for k in range(1, rows):
            h = mix64(h) ^ cols[k]
        keys[band] = mix64(h)
    return keys


def _all_band_keys(
    texts: Any, threshold: float, num_perm: int, ngram: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Band keys (bands, n) and exact hashes (n,) of all texts, read in batches."""
    _check(threshold, num_perm, ngram)
    bands, rows = lsh_params(threshold, num_perm)
    perms = _permutations(num_perm, seed)
    keys = np.empty((bands, len(texts)), dtype=_U64)
    hashes = np.empty(len(texts), dtype=_U64)
    for start in range(0, len(texts), BATCH):
        sig, hashes[start : start + BATCH] = _signatures(_rows(texts, start, start + BATCH), ngram, perms)
        keys[:, start : start + sig.shape[1]] = _band_keys(sig, bands, rows)
    return keys, hashes


def _verify(texts: Any, left: np.ndarray, right: np.ndarray, ngram: int, other: Any = None) -> np.ndarray:
    """Exact Jaccard of each pair (left[k] of `texts`, right[k] of `other`, default `texts`)."""
    other = texts if other is None else other
    out = np.empty(len(left), dtype=np.float64)
    for s in range(0, len(left), VERIFY_CHUNK):
        (lu, li), (ru, ri) = (
            np.unique(side[s : s + VERIFY_CHUNK], return_inverse=True) for side in (left, right)
        )
        gl = [shingles(t, ngram) for t in _take(texts, lu)]
        gr = [shingles(t, ngram) for t in _take(other, ru)]
        out[s : s + len(li)] = [jaccard(gl[i], gr[j]) for i, j in zip(li.tolist(), ri.tolist(), strict=True)]
    return out


def _band_pairs(keys: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Pairs of `ids` sharing a key, encoded low << 32 | high (all pairs of each bucket)."""
    order = np.argsort(keys, kind="stable")
    sk, sid = keys[order], ids[order]
    found, active, d = [], np.flatnonzero(sk[1:] == sk[:-1]), 1
    while active.size:
        a, b = sid[active], sid[active + d]
        found.append((np.minimum(a, b).astype(_U64) << _U64(32)) | np.maximum(a, b).astype(_U64))
        d += 1
        active = active[active + d < len(sk)]
        active = active[sk[active] == sk[active + d]]
    return _unique(np.concatenate(found)) if found else np.empty(0, dtype=_U64)


@dataclass
class NearDups:
    keep: np.ndarray  # bool (n,): the lowest index of each cluster is kept
    cluster: np.ndarray  # int64 (n,): index of the kept row of each row's cluster
    pairs: list[tuple[int, int, float]]  # (kept, dropped, Jaccard of the two) for each dropped row
    candidates: int  # LSH candidate pairs verified exactly
    bands: int
    rows: int

    @property
    def dropped(self) -> int:
        return int(len(self.keep) - self.keep.sum())


def _roots(parent: np.ndarray) -> np.ndarray:
    while True:
        up = parent[parent]
        if np.array_equal(up, parent):
            return parent
        parent = up


def near_duplicates(
    texts: Any, *, threshold: float = 0.8, num_perm: int = 128, ngram: int = 3, seed: int = 1
) -> NearDups:
    """Clusters of near-duplicates within `texts` (list of str or pyarrow array): connected components
    of verified pairs (Jaccard >= threshold), exact copies joined first. Chained members of a cluster
    may be below the threshold from the kept row; `pairs` shows their own Jaccard with it."""
    keys, hashes = _all_band_keys(texts, threshold, num_perm, ngram, seed)
    bands, rows = lsh_params(threshold, num_perm)
    n = len(texts)
    # exact copies (identical key, hence identical signature) join the first copy without verification
    _, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
    parent = first[inverse].astype(np.int64)  # every row points at its first copy (a root)
    firsts = np.sort(first).astype(np.int64)
    tried = np.empty(0, dtype=_U64)
    for band in range(bands):
        codes = _band_pairs(keys[band, firsts], firsts)
        codes = codes[~np.isin(codes, tried, assume_unique=True)]
        lo, hi = (codes >> _U64(32)).astype(np.int64), (codes & _U64(0xFFFFFFFF)).astype(np.int64)
        root = _roots(parent)
        todo = root[lo] != root[hi]  # pairs already in one cluster need no check
        codes, lo, hi = codes[todo], lo[todo], hi[todo]
        tried = _unique(np.concatenate([tried, codes]))
        good = _verify(texts, lo, hi, ngram) >= threshold
        for a, b in zip(lo[good].tolist(), hi[good].tolist(), strict=True):  # union by lowest root
            ra, rb = int(root[a]), int(root[b])
            while parent[ra] != ra:
                ra = int(parent[ra])
            while parent[rb] != rb:
                rb = int(parent[rb])
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
        parent = _roots(parent)
    cluster = _roots(parent)
    keep = cluster == np.arange(n)
    dropped = np.flatnonzero(~keep)
    sims = np.ones(len(dropped))
    inexact = hashes[dropped] != hashes[cluster[dropped]]
    sims[inexact] = _verify(texts, cluster[dropped][inexact], dropped[inexact], ngram)
    pairs = list(zip(cluster[dropped].tolist(), dropped.tolist(), sims.tolist(), strict=True))
    return NearDups(keep, cluster, pairs, len(tried), bands, rows)


def cross_duplicates(
    reference: Any, other: Any, *, threshold: float = 0.8, num_perm: int = 128, ngram: int = 3, seed: int = 1
) -> list[tuple[int, int, float]]:
    """All verified pairs (reference index, other index, Jaccard >= threshold), e.g. train vs dev leakage.
    Streams `reference` in batches; keeps band keys of `other` only."""
    other_keys = _all_band_keys(other, threshold, num_perm, ngram, seed)[0]
    bands, rows = lsh_params(threshold, num_perm)
    order = np.argsort(other_keys, axis=1, kind="stable")
    sorted_keys = np.take_along_axis(other_keys, order, axis=1)
    perms, found = _permutations(num_perm, seed), []
    for start in range(0, len(reference), BATCH):
        sig = _signatures(_rows(reference, start, start + BATCH), ngram, perms)[0]
        ref_keys, codes = _band_keys(sig, bands, rows), []
        for band in range(bands):
            left = np.searchsorted(sorted_keys[band], ref_keys[band], "left")
            count = np.searchsorted(sorted_keys[band], ref_keys[band], "right") - left
            ref = np.repeat(np.arange(sig.shape[1]) + start, count)
            pos = np.repeat(left - np.cumsum(count) + count, count) + np.arange(count.sum())
            codes.append((ref.astype(_U64) << _U64(32)) | order[band, pos].astype(_U64))
        codes = _unique(np.concatenate(codes))
        ref, oth = (codes >> _U64(32)).astype(np.int64), (codes & _U64(0xFFFFFFFF)).astype(np.int64)
        sims = _verify(reference, ref, oth, ngram, other)
        good = sims >= threshold
        found += zip(ref[good].tolist(), oth[good].tolist(), sims[good].tolist(), strict=True)
    return found
