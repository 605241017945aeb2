"""Read data files into records that remember where they came from, one at a time.

Formats: JSON (array, or one object per line), JSONL, CSV/TSV (or any separator), Parquet, plain text
(one record per line), CoNLL token columns (one sentence a record), a folder saved by `datasets`, and
globs of many files. Text files are read as a
stream, so a file larger than memory never loads whole (a JSON array does: its syntax needs the whole
file). Each record comes as (record, where, problem): `where` is "file:line" or "file: record N", and a
record that cannot be read carries its problem instead of stopping the reader, so the caller's
`on_error` policy decides. A stray quote in a delimited file (a quoted field running to the end of the
file, or swallowing the lines up to another stray quote) is one bad row at the line it opens on, and the
lines after that one are read again as rows; `Source.lines` says where every line of a line-oriented
file went (header, blank, record, or continuation of a multi-line record), so the counts reconcile.

Encodings: an explicit `encoding`, or `auto`: UTF-8 (with or without a byte-order mark); a file with
invalid UTF-8 and no valid multi-byte sequence at all is a legacy file and is read as cp1252 (or
latin-1) with a warning; a UTF-8 file with a few damaged rows keeps UTF-8 and reports those rows.
"""

from __future__ import annotations

import codecs
import csv
import glob
import gzip
import json
import re
import sys
import zlib
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmtune.errors import LmtuneError

Record = tuple[dict | None, str, str | None]  # (record, where, problem)
BAD_BYTE = re.compile("[\udc80-\udcff]")  # what errors="surrogateescape" turns undecodable bytes into
NON_ASCII = re.compile("[^\x00-\x7f\udc80-\udcff]")
JSON_SUFFIXES = (".json", ".jsonl", ".ndjson")
TABLE_SEPARATORS = {".csv": ",", ".tsv": "\t"}
TEXT_SUFFIXES = (".txt", ".raw", ".text")
# CoNLL-style token files (one token a line, a blank line between sentences); a .txt file is one with
# data.format: conll
CONLL_SUFFIXES = (".conll", ".iob", ".bio")
SUFFIXES = (*JSON_SUFFIXES, *TABLE_SEPARATORS, *TEXT_SUFFIXES, *CONLL_SUFFIXES, ".parquet")
DOCSTART = "-DOCSTART-"  # a CoNLL document boundary line, not a token
# a gzip file is read as what its name says without ".gz" (data.jsonl.gz: JSONL), decompressed as it
# streams; line numbers in messages are those of the decompressed text
GZIP = ".gz"


@contextmanager
def _gzip_errors(path: Path):
    try:
        yield
    except GZIP_ERRORS as exc:
        raise _damaged_gzip(path, exc) from None


def suffix_of(path: Path) -> str:
    """The suffix that says how to read a file: x.jsonl → .jsonl, x.jsonl.gz → .jsonl."""
    if path.suffix.lower() == GZIP:
        return Path(path.stem).suffix.lower()
    return path.suffix.lower()


def open_file(path: Path, mode: str = "r", **kwargs):
    """open(), or gzip.open() for a .gz file: the readers never see the compression."""
    if path.suffix.lower() == GZIP:
        return gzip.open(path, mode if "b" in mode else mode + "t", **kwargs)
    return open(path, mode, **kwargs)


CHUNK = 1 << 22


@dataclass
class ReadOptions:
    """How to read delimited and text files; JSON and Parquet need none of it."""

    encoding: str = "auto"
    separator: str | None = None  # default from the suffix; given for a .txt file, it makes it a table
    quoting: str = "auto"  # auto: csv quoting for .csv, none for .tsv (GLUE style)
    columns: list[str] | None = None  # names of a headerless delimited file's (or CoNLL file's) columns
    conll: bool = False  # read a text file as CoNLL columns (data.format: conll)
    tag_column: int | str = -1  # a CoNLL file's tag column: an index (negative from the end) or a name


@dataclass
class Lines:
    """Where the physical lines of a line-oriented file (table, jsonl, text) went, counted as it is read:
    physical == header + blank + records + continuation, so no line goes unaccounted for. A record is
    counted on the line it starts on; the other lines of a multi-line record (a quoted field spanning
    lines) are its continuation lines."""

    physical: int = 0
    header: int = 0
    blank: int = 0
    records: int = 0  # good and bad: each is counted on the line it starts on
    continuation: int = 0
    multiline: int = 0  # records spanning more than one line
    longest: tuple[int, int] | None = None  # (first line, lines) of the longest multi-line record

    def record(self, first: int, count: int) -> None:
        self.records += 1
        self.continuation += count - 1
        if count > 1:
            self.multiline += 1
            if self.longest is None or count > self.longest[1]:
                self.longest = (first, count)


@dataclass
class Source:
    """One file as read: what it was taken for, so a report can say it."""

    path: Path
    kind: str  # json, jsonl, table, text, conll, parquet, saved
    encoding: str | None
    warning: str | None = None
    damaged: bool = False  # some bytes do not decode: rows are checked one by one
    records: int = 0  # records read (good and bad), counted as they are read
    lines: Lines | None = None  # for line-oriented files: where each physical line went


def expand(spec: str | list[str], key: str) -> list[Path]:
    """Files named by a path, a glob or a list of them, in a stable order; a path that exists is taken as
    it is (a file may be named `train[1].csv`), a glob only when no such path exists; a pattern matching
    nothing is an error naming the config key."""
    paths: list[Path] = []
    for item in [spec] if isinstance(spec, str) else spec:
        if Path(item).exists():
            paths.append(Path(item))
        elif glob.has_magic(item):
            found = sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file())
            if not found:
                raise LmtuneError(f"{key}: no file matches '{item}'")
            paths += found
        else:
            raise LmtuneError(f"{key}: file '{item}' does not exist")
    return paths


def _codec(encoding: str) -> str:
    if encoding == "auto":
        return "auto"
    info = codecs.lookup(encoding)
    if not getattr(info, "_is_text_encoding", True):  # rot13, base64, hex: bytes-to-bytes, not text
        raise LookupError(encoding)
    return "utf-8-sig" if info.name == "utf-8" else info.name  # spreadsheets save "CSV UTF-8" with a BOM


def detect_encoding(path: Path, encoding: str = "auto") -> tuple[str, str | None, bool]:
    """(codec, warning, damaged): the explicit encoding or what `auto` decides after one pass over the
    bytes; `damaged` says whether some bytes do not decode, so that only then rows are checked one by one."""
    try:
        codec = _codec(encoding)
    except LookupError:
        raise LmtuneError(f"data.encoding: unknown encoding '{encoding}'") from None
    if codec not in ("auto", "utf-8-sig"):
        return codec, None, codec not in ("latin-1", "iso8859-1")  # latin-1 decodes every byte
    decoder = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")
    invalid = multibyte = 0
    legacy_ok = True
    with open_file(path, "rb") as handle, _gzip_errors(path):
        while chunk := handle.read(CHUNK):
            text = decoder.decode(chunk)
            if not chunk.isascii():
                invalid += len(BAD_BYTE.findall(text))
                multibyte += len(NON_ASCII.findall(text))
                try:
                    chunk.decode("cp1252")
                except UnicodeDecodeError:
                    legacy_ok = False
    invalid += len(BAD_BYTE.findall(decoder.decode(b"", final=True)))
    if invalid == 0 or multibyte or codec == "utf-8-sig":
        return "utf-8-sig", None, invalid > 0  # a UTF-8 file with damaged rows: those rows are reported
    legacy = "cp1252" if legacy_ok else "latin-1"
    return legacy, f"{path}: not UTF-8; read as {legacy} (set data.encoding to choose another)", False


def _has_bad_bytes(value: Any) -> str | None:
    if isinstance(value, str):
        found = BAD_BYTE.search(value)
        return found.group() if found else None
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return next((found for item in items if (found := _has_bad_bytes(item))), None)


def _bad_bytes(record: Record, codec: str) -> Record:
    """A record holding undecodable bytes becomes a problem naming the first byte."""
    value, where, problem = record
    if problem is not None or value is None:
        return record
    found = _has_bad_bytes(value)
    if not found:
        return record
    name = "utf-8" if codec == "utf-8-sig" else codec
    hint = "set data.encoding (e.g. latin-1, cp1252, utf-16)"
    return None, where, f"byte 0x{ord(found) - 0xDC00:02x} is not valid {name}; {hint}"


def kind_of(value: Any) -> str:
    """JSON's name for a value's type, which is what users see in their files."""
    names = {str: "a string", bool: "a boolean", int: "a number", float: "a number", list: "a list"}
    return "null" if value is None else names.get(type(value), "an object")


def _object(value: Any, where: str) -> Record:
    if isinstance(value, dict):
        return value, where, None
    return None, where, f"expected a JSON object, got {kind_of(value)}"


def _jsonl(handle, path: Path, lines: Lines) -> Iterator[Record]:
    # line by line on "\n" only: U+2028 and friends may sit unescaped inside JSON strings
    for line, raw in enumerate(handle, 1):
        lines.physical = line
        if not raw.strip():
            lines.blank += 1
            continue
        lines.record(line, 1)
        try:
            value = json.loads(raw.rstrip("\r\n"))
        except json.JSONDecodeError as exc:
            yield None, f"{path}:{line}", f"malformed JSON line: {exc.msg} at column {exc.colno}"
        except (ValueError, RecursionError) as exc:  # an int of > 4,300 digits; nesting deeper than Python
            yield None, f"{path}:{line}", f"malformed JSON line: {_json_limit(exc)}"
        else:
            yield _object(value, f"{path}:{line}")


def _json_limit(exc: Exception) -> str:
    if isinstance(exc, RecursionError):
        return "nested deeper than a record can be"
    return str(exc).splitlines()[0][:120]


def _is_record_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, dict) for item in value)


def _json_array(handle, path: Path) -> Iterator[Record]:
    try:
        data = json.load(handle)
    except json.JSONDecodeError as exc:  # one broken array loses every record: a file-level error
        raise LmtuneError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg})") from None
    except (ValueError, RecursionError) as exc:
        raise LmtuneError(f"{path}: malformed JSON ({_json_limit(exc)})") from None
    if isinstance(data, dict) and not {"messages", "conversations"} & set(data):  # e.g. {"data": [...]}
        lists = [key for key, value in data.items() if _is_record_list(value)]
        if len(lists) > 1:
            raise LmtuneError(f"{path}: the object holds several lists of records ({', '.join(lists)})")
        data = data[lists[0]] if lists else data
    if _is_squad(data):
        yield from _squad_questions(data, path)
        return
    for number, item in enumerate(data if isinstance(data, list) else [data], 1):
        yield _object(item, f"{path}: record {number}")


def _is_squad(data: Any) -> bool:
    """SQuAD's layout: articles, each with paragraphs of a context and its questions (qas)."""
    return _is_record_list(data) and all(isinstance(a.get("paragraphs"), list) for a in data)


def _squad_questions(articles: list[dict], path: Path) -> Iterator[Record]:
    """One record per question of a SQuAD file: question, context, answers (and id, is_impossible,
    title), placed by its JSON path (SQuAD files are one line: a line number would say nothing)."""
    for a, article in enumerate(articles):
        for p, paragraph in enumerate(article["paragraphs"]):
            place = f"{path}: data[{a}].paragraphs[{p}]"
            if not isinstance(paragraph, dict) or not isinstance(paragraph.get("qas"), list):
                yield None, place, "a SQuAD paragraph needs 'context' and a list 'qas'"
                continue
            for q, question in enumerate(paragraph["qas"]):
                if not isinstance(question, dict):
                    yield None, f"{place}.qas[{q}]", f"expected a JSON object, got {kind_of(question)}"
                    continue
                record = {**question, "context": paragraph.get("context"), "title": article.get("title")}
                yield record, f"{place}.qas[{q}]", None


def _looks_like_jsonl(path: Path, codec: str) -> bool:
    """A .json file holding one object per line (common, and accepted by other tools)."""
    with open_file(path, encoding=codec, errors="surrogateescape", newline="") as handle:
        first = next((line for line in handle if line.strip()), "")
        second = next((line for line in handle if line.strip()), "")
    try:
        return first.lstrip().startswith("{") and bool(second) and isinstance(json.loads(first), dict)
    except json.JSONDecodeError:
        return False


MAX_RECORD_CHARS = 1 << 26  # a quoted field still open after this many characters is taken as a stray quote
STRAY = "a stray '\"'? fix it, or set data.quoting: none if the file quotes no field"


class _TooLong(Exception):
    """A record grew past MAX_RECORD_CHARS: a quote that never closes, stopped before it eats the file."""


class _Lines:
    """The physical lines of a file for csv.reader; the lines of a record that turns out to be a stray
    quote's doing can be pushed back and read again as rows. A record's lines are consecutive, so a
    record is numbered by its first line alone."""

    def __init__(self, handle, counts: Lines):
        self.handle, self.counts = iter(handle), counts
        self.again: deque[str] = deque()  # pushed-back lines, read before the file's next ones
        self.taken: list[str] = []  # the lines of the record being read
        self.first = 1  # the line number of taken[0]
        self.chars = 0
        self.ended = False  # the file ended while the record was being read: a quote never closed

    def __iter__(self):
        return self

    def __next__(self) -> str:
        if self.again:
            text = self.again.popleft()
        else:
            try:
                text = next(self.handle)
            except StopIteration:
                self.ended = bool(self.taken)
                raise
            self.counts.physical += 1
        self.taken.append(text)
        self.chars += len(text)
        if self.chars > MAX_RECORD_CHARS and len(self.taken) > 1:
            raise _TooLong
        return text

    def take(self) -> tuple[int, list[str], bool]:
        """The first line number and the lines of the record just read, and whether it ran to the end
        of the file."""
        first, taken, ended = self.first, self.taken, self.ended
        self.first += len(taken)
        self.taken, self.chars, self.ended = [], 0, False
        return first, taken, ended

    def read_again(self, taken: list[str]) -> None:
        """Serve these lines (the ones just before the next line to read) once more."""
        self.again.extendleft(reversed(taken))
        self.first -= len(taken)


def _again(count: int) -> str:
    return (
        "the line after it is read as a row again"
        if count == 1
        else f"the {count} lines after it are read as rows again"
    )


def _closes_mid_field(text: str, separator: str) -> bool:
    """Whether a quoted field of this record closes on a quote that more text follows before the next
    separator or line end (`"a … b"c,`): how csv reads the lines between two stray quotes as one field.
    Spaces after a closing quote are the usual sloppiness, not a sign of it."""
    i, n, at_start = 0, len(text), True
    while i < n:
        c = text[i]
        if at_start and c == '"':
            i += 1
            while i < n and (text[i] != '"' or text[i + 1 : i + 2] == '"'):
                i += 2 if text[i] == '"' else 1
            j = i + 1
            while j < n and text[j] not in (separator, "\r", "\n"):
                j += 1
            if text[i + 1 : j].strip():
                return True
            i, at_start = j, False
            continue
        at_start = c in (separator, "\r", "\n")
        i += 1
    return False


def _stray_quote(first: int, taken: list[str], ended: bool, too_long: bool, separator: str) -> str | None:
    """Why a record looks like a quote's doing rather than a quoted field spanning lines: it ran to the
    end of the file (or past MAX_RECORD_CHARS) inside quotes, or a multi-line record whose quote closes
    in mid-field. None for a record read as it should be."""
    count, last = len(taken), first + len(taken) - 1
    if too_long:
        return f"a quoted field opens here and is still open after {count} lines ({MAX_RECORD_CHARS:,} characters)"
    if ended:
        return "a quoted field opens here and " + (
            f"runs {count} lines to the end of the file"
            if count > 1
            else "does not close by the end of the file"
        )
    if count > 1 and _closes_mid_field("".join(taken), separator):
        return f"a quoted field opens here and runs {count} lines to line {last}, where text follows its closing quote"
    return None


def _table(handle, path: Path, options: ReadOptions, separator: str, lines: Lines) -> Iterator[Record]:
    """Rows by the line they start on; quoted fields may span lines. A record that a stray quote made
    (one running to the end of the file, or swallowing lines up to another stray quote) is a bad row at
    the line it opens on, and the lines after that one are read again as rows, so none is lost unseen."""
    csv.field_size_limit(sys.maxsize)
    quoting = options.quoting
    if quoting == "auto":
        quoting = "none" if separator == "\t" else "csv"
    source = _Lines(handle, lines)

    def reader():
        mode = csv.QUOTE_NONE if quoting == "none" else csv.QUOTE_MINIMAL
        return csv.reader(source, delimiter=separator, quoting=mode)

    rows, header = reader(), options.columns
    while True:
        too_long = False
        try:
            values = next(rows)
        except StopIteration:
            return
        except _TooLong:
            values, too_long = None, True
        except csv.Error as exc:
            line = source.first if source.taken else lines.physical
            raise LmtuneError(f"{path}:{line}: unreadable row ({exc})") from None
        first, taken, ended = source.take()
        count = len(taken)
        where = f"{path}:{first}"
        stray = wrong = None
        if count > 1 or ended or too_long:  # a plain one-line record skips these checks
            stray = _stray_quote(first, taken, ended, too_long, separator)
            wrong = values is not None and header is not None and count > 1 and len(values) != len(header)
        if stray or wrong:
            if header is None:  # the header is the file's first record: without it nothing can be read
                raise LmtuneError(f"{where}: the header row is broken: {stray} ({STRAY})")
            source.read_again(taken[1:])
            rows = reader()  # a fresh reader: the one that raised may be mid-record
            lines.record(first, 1)
            if stray:
                yield None, where, f"{stray} ({STRAY})" + (f"; {_again(count - 1)}" if count > 1 else "")
            else:
                yield (
                    None,
                    where,
                    f"{len(values)} fields where {len(header)} are expected (separator {separator!r}) in a "
                    f"record whose quoted field opens here and runs {count} lines to line {first + count - 1}; "
                    f"{_again(count - 1)} (check data.separator, data.quoting and data.columns)",
                )
            continue
        if not any(value.strip() for value in values):
            lines.blank += count
            continue
        if header is None:
            header = [name.strip().lstrip("\ufeff") for name in values]
            lines.header += count
            continue
        lines.record(first, count)
        if len(values) != len(header):
            yield (
                None,
                where,
                f"{len(values)} fields where {len(header)} are expected (separator {separator!r}); "
                "check data.separator, data.quoting and data.columns",
            )
        else:
            yield dict(zip(header, values, strict=True)), where, None


def _text(handle, path: Path, lines: Lines) -> Iterator[Record]:
    for line, raw in enumerate(handle, 1):
        lines.physical = line
        raw = raw.rstrip("\r\n")
        if not raw.strip():
            lines.blank += 1
            continue
        lines.record(line, 1)
        yield {"text": raw}, f"{path}:{line}", None


def tag_index(columns: list[str] | None, tag_column: int | str) -> int:
    """A CoNLL file's tag column as an index: an int as given (negative counts from the end), a name
    looked up in `columns` (data.columns: CoNLL files carry no header)."""
    if isinstance(tag_column, int):
        return tag_column
    if not columns or tag_column not in columns:
        named = f"columns {columns}" if columns else "no data.columns"
        raise LmtuneError(
            f"data.tag_column = {tag_column!r}: not among {named}; name it there or give an index"
        )
    return columns.index(tag_column)


def _conll(handle, path: Path, tag: int, lines: Lines) -> Iterator[Record]:
    """One record {"tokens", "tags", "line"} per sentence (`line`: its first token's line, where it is);
    `-DOCSTART-` lines are skipped (counted as header lines) and end a sentence as a blank line does. A
    line with another number of columns than the file's first makes its sentence a problem at that line."""
    width = None
    tokens: list[str] = []
    tags: list[str] = []
    start = 0
    problem: tuple[int, str] | None = None

    def sentence(end: int) -> Record:
        lines.record(start, end - start)
        if problem:
            return None, f"{path}:{problem[0]}", problem[1]
        return {"tokens": tokens, "tags": tags, "line": start}, f"{path}:{start}", None

    number = 0
    for number, raw in enumerate(handle, 1):
        lines.physical = number
        parts = raw.split()
        if not parts or parts[0] == DOCSTART:
            if tokens:
                yield sentence(number)
                tokens, tags, problem = [], [], None
            if parts:
                lines.header += 1
            else:
                lines.blank += 1
            continue
        width = width or len(parts)
        if not tokens:
            start = number
        if problem is None and len(parts) != width:
            problem = (number, f"{len(parts)} columns, the file's lines have {width} (token ... tag)")
        elif problem is None and not -len(parts) <= tag < len(parts):
            problem = (number, f"no column {tag} in {len(parts)} columns (data.tag_column)")
        elif problem is None:
            tags.append(parts[tag])
        tokens.append(parts[0])
    if tokens:
        yield sentence(number + 1)


def _parquet(path: Path) -> Iterator[Record]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (OSError, ValueError) as exc:  # pyarrow.ArrowInvalid is a ValueError
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise LmtuneError(f"{path}: not a readable Parquet file ({first})") from None
    number = 0
    batches = parquet.iter_batches(batch_size=4096)  # bounded memory, whatever the file size
    while True:
        try:
            batch = next(batches, None)
        except (OSError, ValueError) as exc:  # a damaged data page: the rows after it cannot be read
            first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise LmtuneError(f"{path}: damaged Parquet data after record {number} ({first})") from None
        if batch is None:
            return
        for row in batch.to_pylist():
            number += 1
            yield row, f"{path}: record {number}", None


def _saved(path: Path) -> Iterator[Record]:
    from datasets import Dataset, DatasetDict, load_from_disk

    try:
        data = load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as exc:
        raise LmtuneError(f"{path}: a folder that `datasets` did not save ({exc})") from None
    if isinstance(data, DatasetDict):
        raise LmtuneError(
            f"{path}: holds several splits ({', '.join(data)}); name one folder, e.g. {path / next(iter(data))}"
        )
    assert isinstance(data, Dataset)
    number = 0
    for batch in data.iter(batch_size=4096):  # memory-mapped Arrow: read a batch at a time
        for row in (dict(zip(batch, values, strict=True)) for values in zip(*batch.values(), strict=True)):
            number += 1
            yield row, f"{path}: record {number}", None


def source(path: Path, options: ReadOptions) -> Source:
    """What a file will be read as; errors for what cannot be read at all come here, before any row."""
    if path.is_dir():
        return Source(path, "saved", None)
    if not path.is_file():
        raise LmtuneError(f"data file '{path}' does not exist")
    suffix = suffix_of(path)
    if suffix not in SUFFIXES or (suffix == ".parquet" and path.suffix.lower() == GZIP):
        raise LmtuneError(
            f"{path}: cannot tell the file type from '{suffix or 'no suffix'}'; use one of {', '.join(SUFFIXES)} "
            "(each but .parquet may be gzipped: .jsonl.gz), or a folder saved by datasets"
        )
    if path.stat().st_size == 0:
        raise LmtuneError(f"{path}: the file is empty")
    if suffix == ".parquet":
        return Source(path, "parquet", None)
    codec, warning, damaged = detect_encoding(path, options.encoding)
    if suffix in JSON_SUFFIXES:
        try:
            kind = "jsonl" if suffix != ".json" or _looks_like_jsonl(path, codec) else "json"
        except UnicodeError as exc:
            raise LmtuneError(f"{path}: cannot be read as {codec} ({exc}); set data.encoding") from None
    elif suffix in CONLL_SUFFIXES or options.conll:
        kind = "conll"
    elif suffix in TABLE_SEPARATORS or options.separator is not None or options.columns is not None:
        kind = "table"
    else:
        kind = "text"
    return Source(path, kind, codec, warning, damaged)


def iter_records(path: Path, options: ReadOptions, src: Source | None = None) -> Iterator[Record]:
    """Every record of one file, in order, with where it is and any problem reading it; `src` counts
    the records read and, for a line-oriented file, where each line went (Source.lines)."""
    src = src or source(path, options)
    src.records = 0
    src.lines = None if src.kind in ("json", "parquet", "saved") else Lines()
    for record in _records(path, options, src):
        src.records += 1
        yield record


def _records(path: Path, options: ReadOptions, src: Source) -> Iterator[Record]:
    if src.kind == "parquet":
        yield from _parquet(path)
        return
    if src.kind == "saved":
        yield from _saved(path)
        return
    try:
        yield from _text_records(path, options, src)
    except UnicodeError as exc:  # e.g. utf-16 without a byte-order mark
        raise LmtuneError(f"{path}: cannot be read as {src.encoding} ({exc}); set data.encoding") from None
    except GZIP_ERRORS as exc:
        raise _damaged_gzip(path, exc) from None


GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)


def _damaged_gzip(path: Path, exc: BaseException) -> LmtuneError:
    return LmtuneError(f"{path}: a damaged gzip file ({exc or type(exc).__name__}); nothing of it was used")


def _text_records(path: Path, options: ReadOptions, src: Source) -> Iterator[Record]:
    # newline="" keeps "\r" inside quoted CSV fields and lets csv count physical lines
    with open_file(path, encoding=src.encoding, errors="surrogateescape", newline="") as handle:
        if src.kind == "json":
            records = _json_array(handle, path)
        elif src.kind == "jsonl":
            records = _jsonl(handle, path, src.lines)
        elif src.kind == "table":
            separator = options.separator or TABLE_SEPARATORS.get(suffix_of(path), "\t")
            records = _table(handle, path, options, separator, src.lines)
        elif src.kind == "conll":
            records = _conll(handle, path, tag_index(options.columns, options.tag_column), src.lines)
        else:
            records = _text(handle, path, src.lines)
        if not src.damaged:
            yield from records
            return
        for record in records:
            yield _bad_bytes(record, src.encoding)
