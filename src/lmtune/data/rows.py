"""The streaming pass of the pipeline: records → validated, cleaned, scrubbed, length-checked rows, written
to an Arrow file a batch at a time (memory stays flat however large the input) and opened memory-mapped.

A row is one of the kinds in `KINDS`, made by one of the `READERS` (one per family of records: a task
names its reader): a classification text (or sentence pair) with its label, a text (or pair) with a
numeric target, a sentence of tokens with their IOB2 tags (a JSON list), a question about a context (the
context as the text, the question as text_pair, the answers as JSON), a plain-text document, a
conversation (its canonical messages as JSON), a preference pair
(a prompt's messages, a chosen and a rejected answer) or an unpaired preference (a prompt, one answer,
label "true"/"false": desirable?). `label` holds the row's target as text, in the form its reader says (a
class name, a number's decimal text, "true"/"false").
Every step that works on text (cleaning, PII scrubbing, length, dedup, leakage) works on every text
field of the row's kind. Every row keeps `where` it came from; its `hash` (of the dedup key) serves
exact deduplication and hash-stable splits, its `leak` hash (of what must not appear in two splits:
the whole row, or a shared text such as a preference row's prompt) the leakage check and the split's
grouping.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np
import pyarrow as pa
from datasets import Dataset

from lmtune import faults
from lmtune.data import answers, formats, preference, tokens
from lmtune.data.clean import normalise_label
from lmtune.data.dedup import dedup_key, exact_hashes
from lmtune.data.load import ReadOptions, Record, iter_records, source
from lmtune.errors import LmtuneError
from lmtune.progress import progress

BATCH = 4096
# what kind of problem a reason names, for counts in the report (first match wins)
REASON_KINDS = [
    ("undecodable bytes", re.compile(r"^byte 0x")),
    ("malformed JSON", re.compile(r"malformed JSON")),
    ("wrong field count", re.compile(r"fields where")),
    ("missing field", re.compile(r"^missing field|has no ")),
    ("empty label", re.compile(r"^empty label")),
    ("empty text", re.compile(r"^empty ")),
    ("unknown label", re.compile(r"^unknown label|never occurs in the training")),
    ("wrong type", re.compile(r"must be |expected a JSON object")),
    ("stray quote", re.compile(r"a quoted field opens here")),
    ("not text", re.compile(r"unpaired surrogate")),
]


def reason_kind(reason: str) -> str:
    return next((kind for kind, pattern in REASON_KINDS if pattern.search(reason)), "invalid record")


@dataclass
class Spec:
    """How records become rows: the task's kind and the data.* keys that shape a row."""

    kind: str  # which reader makes the rows (READERS): "labelled", "numeric", "generative", "preference"
    text_column: str | tuple[str, ...] = "text"  # several: joined with text_separator, or a text_pair
    label_column: str = "label"
    group_column: str | None = None
    labels: set[str] | None = None  # allowed labels (data.labels)
    label_case: str = "keep"
    label_map: dict[str, str] = field(default_factory=dict)
    format: str = "auto"
    fields: dict[str, str] = field(default_factory=dict)
    columns: dict[str, str] = field(default_factory=dict)  # per-row field → its column (data.*_column)
    text_pair: bool = False
    text_separator: str = " "
    label_separator: str = ","  # splits a multi-label string
    tag_scheme: str = "IOB2"  # the scheme of token tags as given (data.tag_scheme)
    # what a reader mended in the rows it converted, by kind (token tags: stray I- read as B-): reported
    repairs: Counter = field(default_factory=Counter)


@dataclass
class Steps:
    """Per-row steps, built once per run: cleaner, scrubber, length limits, tokenizer."""

    clean: Callable[[str], str] | None
    scrub: Callable[[str], tuple[str | None, Counter]] | None
    min_chars: int = 1
    max_chars: int | None = None
    min_tokens: int | None = None
    max_tokens: int | None = None
    tokenizer: object = None


@dataclass
class Tally:
    """What the pass saw: counts feed the report's step table, problems go to the caller's policy."""

    records: int = 0
    dropped: Counter = field(default_factory=Counter)  # step → rows dropped by filters
    reasons: Counter = field(default_factory=Counter)  # filter reason → rows
    pii: Counter = field(default_factory=Counter)
    pii_texts: int = 0
    seconds: Counter = field(default_factory=Counter)
    sources: list = field(default_factory=list)
    repairs: Counter = field(default_factory=Counter)  # Spec.repairs of the rows this pass converted


def key_text(text: str | None, messages: list[dict] | None, extra: dict | None = None) -> str:
    """What deduplication compares: the text, or the conversation's turns, and the row's further texts
    (a pair's second text, a preference row's answers), each named; without `extra`, the shared text
    a reader's leakage check compares (Reader.shared)."""
    first = text or "" if messages is None else "\n".join(f"{m['role']}: {m['content']}" for m in messages)
    if not extra:
        return first
    return first + "".join(f"\n{name}: {value}" for name, value in extra.items())


def detect(paths: list[Path], options: ReadOptions, spec: Spec) -> str:
    """The record format of the split's files: data.format when set (one the reader accepts), else
    detected from the first readable records of the first file."""
    reader = READERS[spec.kind]
    if reader.detect is None:  # one format only: data.format is not read
        return spec.kind
    if spec.format != "auto":
        if spec.format not in reader.formats:
            raise LmtuneError(
                f"data.format: unknown format '{spec.format}' for {spec.kind} data (accepted: auto, "
                f"{', '.join(reader.formats)})"
            )
        return spec.format
    head = islice(iter_records(paths[0], options), 200)
    readable = [formats.rename(r, spec.fields) for r, _, problem in head if problem is None]
    if not readable:
        return reader.fallback  # nothing readable: every record is reported as bad anyway
    return reader.detect(readable, paths[0])


def _texts(record: dict, spec: Spec) -> tuple:
    """(text, {"text_pair": second} or None, raw label, group) of a labelled or numeric record."""
    text, second, raw, group = formats.labelled(
        record,
        spec.text_column,
        spec.label_column,
        spec.group_column,
        pair=spec.text_pair,
        joiner=spec.text_separator,
        many=spec.kind == "multilabel",
    )
    formats.text_only(text, second, group)
    return text, None if second is None else {"text_pair": second}, raw, group


def _labelled(record: dict, where: str, spec: Spec, fmt: str) -> tuple:
    text, pair, raw, group = _texts(record, spec)
    label = normalise_label(str(raw), spec.label_case)
    label = spec.label_map.get(label, label)
    formats.text_only(label)
    if spec.labels is not None and label not in spec.labels:
        allowed = ", ".join(sorted(spec.labels))
        raise formats.Bad(f"unknown label '{label}' (allowed: {allowed}; data.labels)")
    return text, None, label, group, pair


def _multilabel(record: dict, where: str, spec: Spec, fmt: str) -> tuple:
    """A set of labels, each normalised and mapped as a single label is; stored as a sorted JSON list."""
    text, pair, raw, group = _texts(record, spec)
    names = raw if isinstance(raw, list) else str(raw).split(spec.label_separator)
    labels = set()
    for name in names:
        label = normalise_label(str(name), spec.label_case)
        if not label:  # "a,,b" or a trailing separator
            continue
        label = spec.label_map.get(label, label)
        if spec.labels is not None and label not in spec.labels:
            allowed = ", ".join(sorted(spec.labels))
            raise formats.Bad(f"unknown label '{label}' (allowed: {allowed}; data.labels)")
        labels.add(label)
    formats.text_only(*labels)
    return text, None, json.dumps(sorted(labels), ensure_ascii=False), group, pair


def _numeric(record: dict, where: str, spec: Spec, fmt: str) -> tuple:
    """A regression target: a finite number (text such as " 3.8" from a delimited file counts)."""
    text, pair, raw, group = _texts(record, spec)
    try:
        value = float(raw.strip() if isinstance(raw, str) else raw)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value):
        raise formats.Bad(
            f"field '{spec.label_column}' must be a number (the regression target), got {str(raw)[:40]!r}"
        )
    return text, None, repr(value), group, pair


REPAIRED_TAGS = "stray I- tags read as B- (an I- that continues no chunk; data.tag_scheme IOB2)"


def _tokens(record: dict, where: str, spec: Spec, fmt: str) -> tuple:
    """A sentence of tokens (a CoNLL sentence, a tokens + tags record, or a text with entity spans cut
    into words): its tokens joined by single spaces as the text, its IOB2 tags as a JSON list."""
    record = formats.rename(record, spec.fields)
    if fmt == "spans":
        sentence = tokens.from_spans(record, where)
    else:
        sentence = tokens.from_tokens(record, where, spec.tag_scheme)
        if sentence.repaired:
            spec.repairs[REPAIRED_TAGS] += sentence.repaired
    group = formats.group_of(record, spec.group_column)
    formats.text_only(*sentence.tokens, *sentence.tags, group)
    return " ".join(sentence.tokens), None, json.dumps(sentence.tags), group, None


def _qa(record: dict, where: str, spec: Spec, fmt: str) -> tuple:
    """A question about a context (answers.from_record): the context as the text (its answers' ends
    marked until answers.settle), the question as the pair's second text."""
    record = formats.rename(record, spec.fields)
    context, question, label = answers.from_record(record)
    group = formats.group_of(record, spec.group_column)
    formats.text_only(context, question, label, group)
    return context, None, label, group, {"text_pair": question}


def _detect_tokens(records: list[dict], path: Path) -> str:
    """spans when the records carry entity spans over a text, else tokens (a CoNLL file's too)."""
    return "spans" if all("entities" in r and "text" in r for r in records) else "tokens"


def _generative(record: dict, where: str, spec: Spec, fmt: str) -> tuple:
    record = formats.rename(record, spec.fields)
    example = formats.to_example(fmt, record, spec.fields, where)
    group = formats.group_of(record, spec.group_column)
    formats.text_only(example.text, group, *(m["content"] for m in example.messages or ()))
    return example.text, example.messages, None, group, None


@dataclass(frozen=True)
class Reader:
    """How one family of records becomes rows; a task names its reader by Task.rows (lmtune.tasks).

    `convert(record, where, spec, fmt)` returns (text, messages, label, group, extra) — `extra` the
    row's further texts by column, or None — or raises formats.Bad; `detect(records, path)` names the
    format of the first readable records."""

    kinds: dict[str, tuple[str, ...]]  # the row kinds it makes → their text fields (every text step applies)
    formats: tuple[str, ...]  # data.format values it accepts besides auto
    detect: Callable[[list[dict], Path], str] | None  # None: one format, data.format is not read
    convert: Callable[[dict, str, Spec, str], tuple]
    texts: tuple[str, ...] = ()  # its rows' further text columns (besides text and messages)
    fallback: str = ""  # the format when no record is readable (each is reported as bad anyway)
    # rows may share their first text (a preference prompt answered twice): the leak hash is of it alone,
    # and rows sharing it stay together in splits; otherwise the whole row must not recur across splits
    shared: bool = False
    # the text is tokens joined by spaces, each with its tag: text steps keep the token count
    tokens: bool = False
    # (text, label) → (text, label) or None after the text steps: what a row's label points into its text
    # becomes right again (a QA answer's offsets), or the row is dropped
    settle: Callable[[str, str], tuple[str, str] | None] | None = None


_PAIR = ("text_pair",)  # a sentence pair's second text (data.text_pair)
READERS: dict[str, Reader] = {
    # a text (or sentence pair) and its label
    "labelled": Reader(
        {"labelled": ("text",), "labelled_pair": ("text", *_PAIR)}, (), None, _labelled, _PAIR
    ),
    # a text (or sentence pair) and a set of labels (data.multi_label), as a sorted JSON list
    "multilabel": Reader(
        {"multilabel": ("text",), "multilabel_pair": ("text", *_PAIR)}, (), None, _multilabel, _PAIR
    ),
    # a text (or sentence pair) and a number (regression)
    "numeric": Reader({"numeric": ("text",), "numeric_pair": ("text", *_PAIR)}, (), None, _numeric, _PAIR),
    # a sentence of tokens, each with a tag (token classification); a CoNLL file's records are tokens ones
    "tokens": Reader(
        {"tokens": ("text",)},
        ("conll", "tokens", "spans"),
        _detect_tokens,
        _tokens,
        fallback="tokens",
        tokens=True,
    ),
    # a question about a context (extractive QA); the context is the text its questions share
    "qa": Reader({"qa": ("text", *_PAIR)}, (), None, _qa, _PAIR, shared=True, settle=answers.settle),
    # a plain-text document (continued pre-training) or a conversation
    "generative": Reader(
        {"text": ("text",), "messages": ("messages",)},
        formats.FORMATS,
        formats.detect_format,
        _generative,
        fallback="text",
    ),
    "preference": Reader(
        preference.KINDS,
        preference.PREFERENCE_FORMATS,
        preference.detect,
        preference.convert,
        preference.ANSWERS,
        fallback="pairs",
        shared=True,
    ),
}
KINDS = {kind: fields for reader in READERS.values() for kind, fields in reader.kinds.items()}
TEXTS = tuple(dict.fromkeys(name for reader in READERS.values() for name in reader.texts))
SCHEMA = pa.schema(
    [
        ("where", pa.string()),
        ("text", pa.string()),  # classification text or plain-text document
        ("messages", pa.string()),  # a conversation's (or a prompt's) canonical messages, as JSON
        *((name, pa.string()) for name in TEXTS),  # further texts (a pair's second, a prompt's answers)
        ("label", pa.string()),  # the target as text: a class name, a number, "true"/"false"
        ("group", pa.string()),
        ("weight", pa.float64()),  # per-row fields (formats.ROW_FIELDS), null where not given:
        ("sensitive", pa.string()),  # a demographic attribute (fairness audits)
        ("domain", pa.string()),
        ("task", pa.string()),
        ("origin", pa.string()),  # "file", or how an augmented row was made
        ("hash", pa.uint64()),
        ("leak", pa.uint64()),  # = hash, but of the shared text alone (Reader.shared)
        ("chars", pa.int64()),
        ("tokens", pa.int64()),  # -1 when no tokenizer was given
    ]
)


def _transform(value: str | None, messages: list[dict] | None, extra: dict | None, fn):
    """The row's texts through `fn`: the text, each turn of the messages, each further text."""
    if extra is not None:
        extra = {name: fn(text) for name, text in extra.items()}
    if messages is None:
        return fn(value), None, extra
    return None, [{**m, "content": fn(m["content"])} for m in messages], extra


def _each(rows: list[tuple], fn, step: str, reason: str, tally: Tally) -> list[tuple]:
    """Apply a per-text step to every row (each turn of a conversation); a row whose text comes back
    empty or None is dropped and counted under `reason`."""
    start = time.perf_counter()
    kept = []
    for where, text, messages, label, group, extra, fields in rows:
        text, messages, extra = _transform(text, messages, extra, fn)
        if (
            (messages is None and not text)
            or (messages is not None and not all(m["content"] for m in messages))
            or (extra is not None and not all(extra.values()))
        ):
            tally.dropped[step] += 1
            tally.reasons[reason] += 1
            continue
        kept.append((where, text, messages, label, group, extra, fields))
    tally.seconds[step] += time.perf_counter() - start
    return kept


def _settled(rows: list[tuple], settle, tally: Tally) -> list[tuple]:
    """Each row's text and label settled after the text steps (Reader.settle); a row it refuses is
    dropped and counted."""
    kept = []
    for where, text, messages, label, group, extra, fields in rows:
        settled = settle(text, label)
        if settled is None:
            tally.dropped["clean"] += 1
            tally.reasons["every answer removed by cleaning or private-data scrubbing"] += 1
            continue
        kept.append((where, settled[0], messages, settled[1], group, extra, fields))
    return kept


def _process(batch: list[tuple], steps: Steps, tally: Tally, reader: Reader) -> dict[str, list]:
    """Clean, scrub, settle and length-check converted rows; returns the surviving rows as columns."""
    shared = reader.shared  # rows may share their first text
    rows = batch
    if steps.clean is not None:
        rows = _each(rows, steps.clean, "clean", "empty after cleaning", tally)
    if steps.scrub is not None:

        def scrub(value: str) -> str | None:
            out, counts = steps.scrub(value)
            if counts:
                tally.pii.update(counts)
                found.append(True)
            return out

        found: list[bool] = []
        rows = _each(rows, scrub, "pii", "private data (data.pii.action = drop)", tally)
        tally.pii_texts += len(found)
    if reader.settle is not None:
        rows = _settled(rows, reader.settle, tally)
    start = time.perf_counter()
    keys = [key_text(text, messages, extra) for _, text, messages, _, _, extra, _ in rows]
    chars = [len(k) for k in keys]
    tokens = [-1] * len(rows)
    if steps.tokenizer is not None and rows:
        tokens = [len(ids) for ids in steps.tokenizer(keys, add_special_tokens=False)["input_ids"]]
    keep = []
    for i, (n_chars, n_tokens) in enumerate(zip(chars, tokens, strict=True)):
        reason = None
        if n_chars < steps.min_chars:
            reason = f"shorter than data.clean.min_chars = {steps.min_chars}"
        elif steps.max_chars is not None and n_chars > steps.max_chars:
            reason = f"longer than data.clean.max_chars = {steps.max_chars}"
        elif steps.min_tokens is not None and n_tokens < steps.min_tokens:
            reason = f"fewer tokens than data.clean.min_tokens = {steps.min_tokens}"
        elif steps.max_tokens is not None and n_tokens > steps.max_tokens:
            reason = f"more tokens than data.clean.max_tokens = {steps.max_tokens}"
        if reason:
            tally.dropped["length"] += 1
            tally.reasons[reason] += 1
        else:
            keep.append(i)
    tally.seconds["length"] += time.perf_counter() - start
    start = time.perf_counter()
    hashes = exact_hashes([keys[i] for i in keep])
    kept = [rows[i] for i in keep]
    leak = hashes
    if shared and kept:  # what may not recur is the shared text (a prompt), and rows sharing it are
        leak = exact_hashes([key_text(row[1], row[2]) for row in kept])
        kept = [  # kept together in splits (a group of their own unless data.group_column gives one)
            (*row[:4], row[4] if row[4] is not None else f"prompt:{int(h):016x}", *row[5:])
            for row, h in zip(kept, leak, strict=True)
        ]
    tally.seconds["hash"] += time.perf_counter() - start
    return {
        "where": [r[0] for r in kept],
        "text": [r[1] for r in kept],
        "messages": [None if r[2] is None else json.dumps(r[2], ensure_ascii=False) for r in kept],
        **{name: [(r[5] or {}).get(name) for r in kept] for name in TEXTS},
        "label": [r[3] for r in kept],
        "group": [r[4] for r in kept],
        **{name: [r[6].get(name) for r in kept] for name in formats.ROW_FIELDS},
        "origin": ["file"] * len(kept),
        "hash": hashes,
        "leak": leak,
        "chars": [chars[i] for i in keep],
        "tokens": [tokens[i] for i in keep],
    }


def read_split(
    paths: list[Path],
    options: ReadOptions,
    spec: Spec,
    steps: Steps,
    bad: Callable[[str, str], None],
    out: Path,
) -> tuple[Dataset, str, Tally]:
    """Stream every record of the split's files through the per-row steps into `out` (an Arrow file);
    `bad(where, reason)` applies data.on_error. Returns the memory-mapped rows, the format and the tally."""
    tally = Tally()
    fmt = detect(paths, options, spec)
    records: Iterator[Record] = (record for path in paths for record in _tracked(path, options, tally))
    bar = progress(desc=f"data: {out.stem}", unit="rows", unit_scale=True)
    with bar, pa.OSFile(str(out), "wb") as sink, pa.ipc.new_stream(sink, SCHEMA) as writer:
        while True:
            start = time.perf_counter()
            chunk = list(islice(records, BATCH))
            if not chunk:
                break
            converted = []
            for record, where, problem in chunk:
                tally.records += 1
                if problem is None:
                    try:
                        row = READERS[spec.kind].convert(record, where, spec, fmt)
                        converted.append((where, *row, formats.row_fields(record, spec.columns)))
                        continue
                    except formats.Bad as exc:
                        problem, where = str(exc), exc.where or where
                bad(where, problem)
            tally.seconds["read"] += time.perf_counter() - start
            columns = _process(converted, steps, tally, READERS[spec.kind])
            writer.write_batch(pa.RecordBatch.from_pydict(columns, schema=SCHEMA))
            bar.update(len(chunk))
            faults.point("data.batch")
    tally.repairs = spec.repairs
    return Dataset.from_file(str(out), in_memory=False), fmt, tally


def _tracked(path: Path, options: ReadOptions, tally: Tally) -> Iterator[Record]:
    src = source(path, options)
    tally.sources.append(src)
    if src.warning:
        print(f"lmtune: warning: {src.warning}", file=sys.stderr)
    yield from iter_records(path, options, src)


EXTRA = {"fold": pa.int64()}


def to_dataset(rows: list[dict]) -> Dataset:
    """Rows made in Python (augmentation) back into Arrow; explicit types, since a 64-bit hash above
    2**63 does not fit the int64 that type inference would pick."""
    fields = [*SCHEMA, *(pa.field(name, kind) for name, kind in EXTRA.items() if rows and name in rows[0])]
    return Dataset(pa.table({f.name: pa.array([row[f.name] for row in rows], type=f.type) for f in fields}))


class Scratch:
    """The pipeline's scratch folder. Selections are written out as new Arrow files a batch at a time:
    a `datasets` selection (an indices mapping) would gather row by row on every later column read."""

    def __init__(self, folder: Path):
        self.folder, self.files = folder, 0

    def take(self, rows: Dataset, indices) -> Dataset:
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) == len(rows) and np.array_equal(indices, np.arange(len(rows))):
            return rows
        table = rows.data.table
        self.files += 1
        out = self.folder / f"take-{self.files}.arrow"
        with pa.OSFile(str(out), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            for start in range(0, len(indices), 1 << 16):
                writer.write_table(table.take(pa.array(indices[start : start + (1 << 16)])))
        return Dataset.from_file(str(out), in_memory=False)


OUTPUT_KEYS = ("text", *TEXTS, "label", "group", *formats.ROW_FIELDS, "where", "origin", "fold")


def write_jsonl(rows: Dataset, path: Path) -> None:
    """Prepared rows as JSONL a batch at a time (bounded memory): a conversation as its messages (a
    preference row's prompt as `prompt`, its unpaired label as a boolean), and the row's other set fields;
    such a file reads back as training data."""
    with open(path, "w", encoding="utf-8") as handle:
        for batch in rows.iter(batch_size=10_000):
            for values in zip(*batch.values(), strict=True):
                row = dict(zip(batch, values, strict=True))
                out = {k: row[k] for k in OUTPUT_KEYS if row.get(k) is not None}
                if row.get("messages"):
                    preference = any(row.get(name) is not None for name in TEXTS)
                    out = {("prompt" if preference else "messages"): json.loads(row["messages"]), **out}
                    if row.get("completion") is not None:
                        out["label"] = row["label"] == "true"
                handle.write(json.dumps(out, ensure_ascii=False) + "\n")


def to_example(row: dict) -> formats.Example:
    """A stored row as the recipes' canonical example."""
    messages = json.loads(row["messages"]) if row["messages"] else None
    return formats.Example(messages, row["text"], row["where"], row.get("weight"))


def hashes(rows: Dataset, name: str = "hash") -> np.ndarray:
    """The rows' dedup hashes, or with name="leak" their leakage hashes (respecting a selection:
    `rows.data` would be the whole table)."""
    if not len(rows):
        return np.zeros(0, dtype=np.uint64)
    return column(rows, name).astype(np.uint64, copy=False)


def values(rows: Dataset, name: str) -> list:
    """One column as a list, through Arrow."""
    return rows.with_format("arrow")[name].to_pylist() if len(rows) else []


def column(rows: Dataset, name: str) -> np.ndarray:
    """One column as numpy through Arrow (a numpy-formatted column would be built row by row)."""
    return rows.with_format("arrow")[name].to_numpy()


def keys(rows: Dataset, shared: bool = False):
    """What near-duplicate detection (and with `shared`, a shared-text reader's leakage check) compares,
    per row: the text column as Arrow (no Python object per row; dedup normalises it) when rows are single
    texts, else each row's key text (with `shared`, its first text alone)."""
    arrow = rows.with_format("arrow")
    single = all(arrow[name].null_count == len(rows) for name in ("messages", *TEXTS))
    if single or (shared and arrow["messages"].null_count == len(rows)):
        return arrow["text"].combine_chunks()  # a selection comes back in many small chunks
    return [row_key(row, shared) for row in rows]


def row_key(row: dict, shared: bool = False) -> str:
    """The dedup key text of a stored row (messages are JSON in the Arrow file); with `shared`, its
    first text alone (Reader.shared)."""
    messages = json.loads(row["messages"]) if row.get("messages") else None
    extra = None if shared else {name: row[name] for name in TEXTS if row.get(name) is not None}
    return dedup_key(key_text(row.get("text"), messages, extra))
