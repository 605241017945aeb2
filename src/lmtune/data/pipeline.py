"""The data pipeline every recipe runs before anything is trained, and `lmtune data prepare` runs alone:

    read + validate → clean → scrub private data → length filters      (one streaming pass per split, rows.py)
    → exact and near-duplicate removal → split → leakage check → augment → balance → data report

Rows live in memory-mapped Arrow files in a scratch folder that is removed at the end, so a failed run
leaves nothing behind. Every step's rows in/out, reasons and seconds go into the data report.
"""

from __future__ import annotations

import glob
import json
import os
import random
import shutil
import socket
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
from datasets import Dataset

from lmtune import assets
from lmtune.config import RunConfig, with_reader
from lmtune.data import dedup, leakage, split
from lmtune.data.clean import make_cleaner, per_token
from lmtune.data.formats import ROW_FIELDS
from lmtune.data.load import ReadOptions, expand
from lmtune.data.report import DataReport, split_stats
from lmtune.data.rows import (
    READERS,
    Scratch,
    Spec,
    Steps,
    column,
    hashes,
    keys,
    read_split,
    to_dataset,
    values,
)
from lmtune.data.tags import entities
from lmtune.errors import LmtuneError, listing, shorten
from lmtune.runs import alive

SPLITS = ("train", "validation", "test")


@dataclass
class Input:
    paths: list[Path]
    options: ReadOptions
    text_column: str | list[str]
    label_column: str


@dataclass
class PreparedData:
    """The splits as memory-mapped rows (where, text, messages, label, group, origin, hash, chars, tokens;
    fold and weight when asked for) and the report. The Arrow files are already unlinked: the maps stay
    valid (POSIX) and the space is freed when the last reference goes."""

    splits: dict[str, Dataset]
    report: dict
    format: str


def plan(config: RunConfig) -> dict[str, Input]:
    """Split name → files and how to read them. A bundled dataset's own reader settings apply to its own
    files only; files the user names are read by their suffix and the explicit data.* keys."""
    d = config.data
    user = reader_options(config)
    text, label = _columns(config)
    inputs: dict[str, Input] = {}
    if _bundled(d.train):
        files = assets.resolve_dataset(d.train)
        options = ReadOptions(
            d.encoding if d.encoding != "auto" else files.encoding,
            d.separator or files.options.get("separator"),
            d.quoting if d.quoting != "auto" else files.options.get("quoting", "auto"),
        )
        inputs["train"] = Input([files.train], options, text, label)
        if files.test:
            inputs["test"] = Input([files.test], options, text, label)
    for name in SPLITS:
        spec = getattr(d, name)
        if spec is None or _bundled(spec):
            if name != "train" and spec is not None:
                raise LmtuneError(f"data.{name} = {spec!r}: bundled datasets name data.train only")
            continue
        inputs[name] = Input(expand(spec, f"data.{name}"), user, text, label)
    return inputs


def _bundled(spec) -> bool:
    return isinstance(spec, str) and spec.startswith(assets.PREFIX)


def _columns(config: RunConfig) -> tuple[str, str]:
    """Text and label column names: data.* keys, else the bundled dataset's, else text/label."""
    d = config.data
    files = assets.resolve_dataset(d.train) if _bundled(d.train) else None
    return (
        d.text_column or (files.text_column if files else "text"),
        d.label_column or (files.label_column if files else "label"),
    )


def reader_options(config: RunConfig) -> ReadOptions:
    """How the user's files are read: the data.* reader keys (a CoNLL file's tag column among them)."""
    d = config.data
    return ReadOptions(
        d.encoding, d.separator, d.quoting, d.columns, conll=d.format == "conll", tag_column=d.tag_column
    )


def file_input(config: RunConfig, path: str) -> Input:
    """A file read like a user file of this run: same columns and reader keys."""
    return Input(expand(path, "--data"), reader_options(config), *_columns(config))


def _spec(config: RunConfig, kind: str, source: Input, groups: bool = True, fields: bool = True) -> Spec:
    """How records become rows. `groups`: read data.group_column (where splits are cut); `fields`: read
    the per-row fields (data.weight_column, …; not for a file scored by `lmtune eval --data`)."""
    d = config.data
    columns = {name: getattr(d, f"{name}_column") for name in ROW_FIELDS} if fields else {}
    text = source.text_column
    return Spec(
        kind,
        text if isinstance(text, str) else tuple(text),
        source.label_column,
        d.group_column if groups else None,
        set(d.labels) if d.labels else None,
        d.clean.label_case,
        d.clean.label_map,
        d.format,
        d.fields,
        {name: column for name, column in columns.items() if column is not None},
        text_pair=d.text_pair,
        text_separator=d.text_separator,
        label_separator=d.label_separator,
        tag_scheme=d.tag_scheme,
    )


def _steps(config: RunConfig, tokenizer, kind: str) -> Steps:
    """The per-row text steps. Rows of tokens (READERS[kind].tokens) keep their token count, so that
    every tag keeps its token: cleaning works token by token, and private data found in the sentence
    replaces each token it touches with its placeholder."""
    c, p = config.data.clean, config.data.pii
    tokens = READERS[kind].tokens
    scrub = None
    if p.action != "off":
        from lmtune.data.pii import make_scrubber

        scrub = make_scrubber(p.types, p.action, p.phone_regions, tokens=tokens)
    cleaner = make_cleaner(
        unicode=c.unicode,
        control=c.control,
        html_markup=c.html,
        whitespace=c.whitespace,
        boilerplate=c.boilerplate,
    )
    if (c.min_tokens is not None or c.max_tokens is not None) and tokenizer is None:
        raise LmtuneError("data.clean.min_tokens/max_tokens need a tokenizer: give a model (--model)")
    if tokens and cleaner is not None:
        cleaner = per_token(cleaner)
    return Steps(cleaner, scrub, c.min_chars, c.max_chars, c.min_tokens, c.max_tokens, tokenizer)


def prepare_data(
    config: RunConfig,
    kind: str,
    tokenizer=None,
    inputs: dict[str, Input] | None = None,
    *,
    require_test: bool = True,
    allow_empty: bool = False,
) -> PreparedData:
    """Run the whole pipeline on the run's data; `kind` names the reader (rows.READERS) of the task's
    rows (Task.rows): "labelled" (classify), "generative" (sft, seq2seq), "preference"."""
    d = config.data
    inputs = inputs or plan(config)
    report = DataReport(config)
    steps = _steps(config, tokenizer, kind)
    with scratch_folder() as scratch:
        loaded, fmt = {}, "labelled"
        for name, source in inputs.items():
            rows, fmt_, tally = read_split(
                source.paths,
                source.options,
                _spec(config, kind, source, groups=name == "train"),  # groups matter where splits are cut
                steps,
                report.bad_row_policy(name),
                scratch.folder / f"{name}.arrow",
            )
            if name == "train":
                fmt = fmt_
            elif {fmt, fmt_} & {"text"} and fmt != fmt_:
                raise LmtuneError(f"data: the splits mix plain text and conversations ({fmt}, {fmt_})")
            report.read(name, tally, len(rows))
            loaded[name] = rows
        loaded = {name: _deduplicate(name, rows, config, report, scratch) for name, rows in loaded.items()}
        splits = _split(loaded, config, report, scratch, kind)
        shared = READERS[kind].shared
        splits = leakage.check(splits, config, report, scratch.take, set(SPLITS) - set(loaded), shared)
        if not len(splits["train"]) and not allow_empty:  # before unknown labels: no label is known
            raise _empty("train", report)
        if kind in ("labelled", "multilabel") and len(splits["train"]):
            splits = _unknown_labels(splits, report, scratch, many=kind == "multilabel")
        if d.max_train_rows and d.max_train_rows < len(splits["train"]):
            splits["train"] = _subsample(splits["train"], d.max_train_rows, d.split.seed, report, scratch)
        if require_test and not len(splits["test"]):
            raise _empty("test", report)
        if _augments(config):  # small data by nature (models write the new rows): plain lists
            splits["train"] = to_dataset(_augment(splits["train"].to_list(), config, report, kind, fmt))
        if d.split.folds:
            splits["train"] = _with_folds(splits["train"], d.split.folds, d.split.seed, report)
        if d.weight_column and len(splits["train"]) and not np.nansum(column(splits["train"], "weight")):
            raise LmtuneError(
                f"data.weight_column = {d.weight_column!r}: every training row has weight 0; nothing would "
                "be learned"
            )
        for name, rows in splits.items():
            report.split_stats(name, split_stats(rows, kind))
        return PreparedData(splits, report.finish(), fmt)


def read_file(
    config: RunConfig, path: str, kind: str, tokenizer=None, reader: dict | None = None
) -> list[dict]:
    """One file read, cleaned and scrubbed like the run's own data (no dedup, split or augmentation):
    what `lmtune eval --data` scores on. `reader`: data.* keys (separator, columns, …) to read it with."""
    config = with_reader(config, reader)
    source = file_input(config, path)
    spec = _spec(config, kind, source, groups=False, fields=False)
    report = DataReport(config)
    with scratch_folder() as scratch:
        rows, _, _ = read_split(
            source.paths,
            source.options,
            spec,
            _steps(config, tokenizer, kind),
            report.bad_row_policy("test"),
            scratch.folder / "file.arrow",
        )
        if not len(rows):
            raise LmtuneError(f"{path}: no usable rows")
        return rows.to_list()


@contextmanager
def scratch_folder():
    """A Scratch in a temporary folder, removed however the block ends: a failed run leaves nothing.
    A process killed outright (SIGKILL, the OOM killer) cannot clean up, so each new scratch folder first
    removes those whose process is gone: the folder name carries the host and pid that made it."""
    _remove_stale_scratch()
    folder = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{socket.gethostname()}-{os.getpid()}-"))
    try:
        yield Scratch(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


SCRATCH_PREFIX = "lmtune-data-"


def _remove_stale_scratch() -> None:
    host = socket.gethostname()
    for folder in Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}{glob.escape(host)}-*-*"):
        pid = folder.name.removeprefix(f"{SCRATCH_PREFIX}{host}-").split("-", 1)[0]
        if pid.isdigit() and not alive(int(pid)) and folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)


def _deduplicate(
    name: str, rows: Dataset, config: RunConfig, report: DataReport, scratch: Scratch
) -> Dataset:
    """Later exact copies, then near-duplicates, dropped within one split; the first copy is kept."""
    c = config.data.dedup
    if not len(rows) or not (c.exact or c.near):
        return rows
    if c.exact:
        start = time.perf_counter()
        found = hashes(rows)
        keep = dedup.first_copies(found)
        dropped = np.flatnonzero(~keep)
        shown = dropped[: report.EXAMPLES]
        pairs = [
            (int(k), int(i), 1.0) for k, i in zip(dedup.cross_exact(found, found[shown]), shown, strict=True)
        ]
        report.duplicates(name, "exact", rows, pairs, len(dropped), time.perf_counter() - start)
        rows = scratch.take(rows, np.flatnonzero(keep))
    if c.near and len(rows) > 1:
        start = time.perf_counter()
        found = dedup.near_duplicates(keys(rows), threshold=c.threshold, ngram=c.ngram)
        dropped = np.flatnonzero(~found.keep)
        report.duplicates(name, "near", rows, found.pairs, len(dropped), time.perf_counter() - start)
        rows = scratch.take(rows, np.flatnonzero(found.keep))
    return rows


def _split(
    loaded: dict[str, Dataset], config: RunConfig, report: DataReport, scratch: Scratch, kind: str
) -> dict[str, Dataset]:
    """Cut the splits that have no file of their own out of train (hash-stable or stratified: by label,
    or by a regression target's quintile)."""
    s = config.data.split
    train = loaded["train"]
    fractions = {"test": s.test, "validation": s.validation}  # test first: the order earlier runs cut in
    if s.fold is not None:  # the validation split is a fold of the training rows, cut below
        del fractions["validation"]
    wanted = {name: fraction for name, fraction in fractions.items() if name not in loaded}
    cut = {name: fraction for name, fraction in wanted.items() if fraction > 0}
    start = time.perf_counter()
    result = dict(loaded)
    why = report.emptied("train")
    for name, fraction in cut.items():  # split.assign's own check, with what shrank the rows
        if len(train) and round(fraction * len(train)) < 1:
            raise LmtuneError(
                f"data.split.{name} = {fraction:g} of {len(train)} rows leaves an empty split"
                + (f" ({why})" if why else "")
                + "; use more rows or another fraction"
            )
    if cut and len(train):  # no rows at all: nothing to cut, and prepare_data says why
        labels = values(train, "label") if s.method == "stratified" else None
        if labels is not None and kind == "numeric":
            target = np.asarray(labels, dtype=np.float64)
            labels = np.searchsorted(np.quantile(target, [0.2, 0.4, 0.6, 0.8]), target).tolist()
        elif labels is not None and kind == "tokens":  # a sentence's class: the entity types it holds
            labels = [",".join(sorted({t for t, _, _ in entities(json.loads(tags))})) for tags in labels]
        groups = values(train, "group")  # data.group_column, or a preference row's prompt
        groups = groups if any(g is not None for g in groups) else None
        assignment = split.assign(hashes(train), groups, labels, cut, s.seed, s.method)
        for name, code in [("train", 0), *[(n, i + 1) for i, n in enumerate(cut)]]:
            result[name] = scratch.take(train, np.flatnonzero(assignment == code))
    if s.fold is not None:
        result["train"], result["validation"] = _fold_out(result["train"], s.folds, s.fold, s.seed, scratch)
    for name in wanted:
        result.setdefault(name, scratch.take(train, []))
    for name, fraction in cut.items():
        if len(train) and not len(result[name]):
            raise LmtuneError(
                f"data.split.{name} = {fraction:g} of {len(train)} rows gave an empty split (the hash split "
                f"places rows by chance{f'; {why}' if why else ''}); use more rows, a larger fraction or "
                "data.split.method: stratified"
            )
    report.step(
        "split",
        len(train),
        sum(len(result[n]) for n in ["train", *cut, *(["validation"] if s.fold is not None else [])]),
        time.perf_counter() - start,
        method=s.method if cut else "files",
        **({"validation_fold": f"{s.fold} of {s.folds}"} if s.fold is not None else {}),
        rows={n: len(result[n]) for n in SPLITS},
        cut=cut,
    )
    return {name: result[name] for name in SPLITS}


def _empty(name: str, report: DataReport) -> LmtuneError:
    """The error for a split left without rows, saying what emptied it."""
    why = report.emptied(name) or f"see the data steps: {report.summary()}"
    return LmtuneError(f"data: no usable {name} rows left: {why}")


def _unknown_labels(
    splits: dict[str, Dataset], report: DataReport, scratch: Scratch, many: bool = False
) -> dict[str, Dataset]:
    """A validation/test label the training split never shows cannot be learned: a bad row. `many`:
    rows hold sets of labels (JSON lists), and a row with any such label is bad."""
    known = pc.unique(splits["train"].with_format("arrow")["label"])
    names = sorted({x for text in known.to_pylist() for x in json.loads(text)} if many else known.to_pylist())
    known_names = listing(names)
    for name in ("validation", "test"):
        rows = splits[name]
        if not len(rows):
            continue
        labels = rows.with_format("arrow")["label"]
        if many:
            allowed = set(names)
            strange = [[x for x in json.loads(t) if x not in allowed] for t in labels.to_pylist()]
            unknown = [i for i, found in enumerate(strange) if found]
        else:
            inside = pc.is_in(labels, value_set=known).to_numpy(zero_copy_only=False)
            unknown = np.flatnonzero(~inside).tolist()
        for i in unknown:
            row = rows[i]
            label = strange[i][0] if many else row["label"]
            report.bad_row_policy(name)(
                row["where"],
                f"label {shorten(label)} never occurs in the training split; training labels: {known_names}",
            )
        if unknown:
            splits[name] = scratch.take(rows, np.setdiff1d(np.arange(len(rows)), unknown))
            report.step("unknown labels", len(rows), len(splits[name]), 0.0, name)
    return splits


def _subsample(rows: Dataset, n: int, seed: int, report: DataReport, scratch: Scratch) -> Dataset:
    start = time.perf_counter()
    labels = values(rows, "label")
    if all(label is not None for label in labels):
        keep = split.subsample_indices(labels, n, seed)
    else:
        keep = sorted(random.Random(seed).sample(range(len(rows)), n))
    report.step("max_train_rows", len(rows), n, time.perf_counter() - start, "train")
    return scratch.take(rows, keep)


def _fold_of(rows: Dataset, k: int, seed: int) -> np.ndarray:
    groups = values(rows, "group")
    return split.folds(hashes(rows), groups if any(g is not None for g in groups) else None, k, seed)


def _fold_out(train: Dataset, k: int, fold: int, seed: int, scratch: Scratch) -> tuple[Dataset, Dataset]:
    """data.split.fold: the rows of that fold validate, the other folds train (one fold of a
    cross-validation); the folds are those `data.split.folds` marks, so copies and groups stay together."""
    of = _fold_of(train, k, seed)
    validation = scratch.take(train, np.flatnonzero(of == fold))
    if not len(validation):
        raise LmtuneError(
            f"data.split.fold = {fold}: fold {fold} of {k} holds none of the {len(train)} training rows; "
            "use fewer folds (data.split.folds, training.cv_folds) or more rows"
        )
    return scratch.take(train, np.flatnonzero(of != fold)), validation


def _with_folds(rows: Dataset, k: int, seed: int, report: DataReport) -> Dataset:
    folds = _fold_of(rows, k, seed)
    report.data["folds"] = dict(sorted(Counter(int(f) for f in folds).items()))
    return rows.add_column("fold", folds.tolist())


def _augments(config: RunConfig) -> bool:
    a = config.data.augment
    return bool(a.ops or a.back_translation or a.paraphrase or a.balance != "none")


def _augment(rows: list[dict], config: RunConfig, report: DataReport, kind: str, fmt: str) -> list[dict]:
    """Augmented copies of training rows (never validation/test), each marked with its origin; then
    class balancing. Rows made here are not deduplicated against each other: they are meant as variants."""
    a = config.data.augment
    if kind != "labelled" and fmt != "text":
        raise LmtuneError(
            "data.augment: augmentation applies to classification and plain-text data, not conversations"
        )
    from lmtune.data import augment

    start = time.perf_counter()
    sources = rows[: a.max_rows] if a.max_rows else rows
    texts = [row["text"] for row in sources]
    made: list[tuple[int, str, str]] = []
    if a.ops:
        lexicon = augment.load_lexicon(a.lexicon) if a.lexicon else None
        made += augment.text_ops(texts, ops=a.ops, copies=a.copies, p=a.p, lexicon=lexicon, seed=a.seed)
    if a.back_translation:
        back = augment.back_translate(texts, a.back_translation.forward, a.back_translation.backward)
        made += [(i, t, "back_translation") for i, t in enumerate(back) if t.strip() and t != texts[i]]
    if a.paraphrase:
        model = assets.resolve_model(a.paraphrase.model)
        made += [
            (i, t, "paraphrase")
            for i, t in augment.paraphrase(texts, model, copies=a.paraphrase.copies, seed=a.seed)
        ]
    added = [
        {
            **sources[i],
            "text": text,
            "origin": f"{origin}:{sources[i]['where']}",
            "chars": len(text),
            "tokens": -1,
        }
        for i, text, origin in made
    ]
    result = rows + added
    if a.balance != "none":
        if kind != "labelled":
            raise LmtuneError("data.augment.balance: needs labels (task classify)")
        labels = [row["label"] for row in result]
        if a.balance == "oversample":
            extra = augment.balance(labels, "oversample", seed=a.seed)
            result += [{**result[i], "origin": f"oversample:{result[i]['where']}"} for i in extra]
        else:
            for row, weight in zip(result, augment.balance(labels, "weights", seed=a.seed), strict=True):
                row["weight"] = float(weight) * (1.0 if row["weight"] is None else row["weight"])
    by_origin = Counter(row["origin"].split(":")[0] for row in result[len(rows) :])
    report.data["augmentation"] = {"added": dict(by_origin), "balance": a.balance}
    report.step("augment", len(rows), len(result), time.perf_counter() - start, "train")
    return result
