"""Read labelled text files (CSV, TSV, JSON, JSONL) into rows that remember where they came from.

Every row keeps its source `file:line` so that a bad row can be reported precisely.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from lmtune.errors import LmtuneError

SUFFIX_SEPARATORS = {".csv": ",", ".tsv": "\t", ".txt": "\t"}
JSON_SUFFIXES = {".json", ".jsonl", ".ndjson"}


@dataclass
class Rows:
    """Texts and string labels of one split, with the place each row came from."""

    texts: list[str]
    labels: list[str]
    where: list[str]

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices) -> Rows:
        return Rows(
            [self.texts[i] for i in indices],
            [self.labels[i] for i in indices],
            [self.where[i] for i in indices],
        )


def _read_text(path: Path, encoding: str) -> str:
    if not path.is_file():
        raise LmtuneError(f"data file '{path}' does not exist")
    raw = path.read_bytes()
    if not raw.strip():
        raise LmtuneError(f"{path}: the file is empty")
    try:
        # utf-8-sig: files saved as "CSV UTF-8" by spreadsheet programs start with a byte-order mark
        return raw.decode(
            "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
        )
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise LmtuneError(
            f"{path}:{line}: byte 0x{raw[exc.start]:02x} is not valid {encoding}; "
            "set data.encoding (e.g. latin-1, cp1252, utf-16)"
        ) from None
    except LookupError:
        raise LmtuneError(f"data.encoding: unknown encoding '{encoding}'") from None


def _table_records(path: Path, text: str, separator: str, quoting: str):
    """Yield (line number, record dict) from a delimited file with a header row."""
    csv.field_size_limit(sys.maxsize)
    quote = csv.QUOTE_NONE if quoting == "none" else csv.QUOTE_MINIMAL
    # StringIO, not str.splitlines: splitlines also breaks at U+0085 and other Unicode separators
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=separator, quoting=quote)
    try:
        header = next(reader)
    except StopIteration:
        raise LmtuneError(f"{path}: the file is empty") from None
    header = [name.strip() for name in header]
    start = reader.line_num + 1
    try:
        for values in reader:
            line = start
            start = reader.line_num + 1
            if not values or all(not v.strip() for v in values):
                continue
            if len(values) != len(header):
                raise LmtuneError(
                    f"{path}:{line}: {len(values)} fields where the header has {len(header)} "
                    f"(separator {separator!r}); check data.separator and data.quoting"
                )
            yield line, dict(zip(header, values, strict=True))
    except csv.Error as exc:
        raise LmtuneError(f"{path}:{reader.line_num}: unreadable row ({exc})") from None


def _json_records(path: Path, text: str):
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LmtuneError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg})") from None
        for number, record in enumerate(records, 1):
            if not isinstance(record, dict):
                raise LmtuneError(f"{path}: record {number} is not an object")
            yield f"record {number}", record
        return
    for line, raw in enumerate(text.split("\n"), 1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise LmtuneError(f"{path}:{line}: malformed JSON line ({exc.msg})") from None
        if not isinstance(record, dict):
            raise LmtuneError(f"{path}:{line}: expected a JSON object, got {type(record).__name__}")
        yield line, record


def read_labelled(
    path: str | Path,
    text_column: str,
    label_column: str,
    *,
    encoding: str = "utf-8",
    separator: str | None = None,
    quoting: str = "auto",
) -> Rows:
    """Read one labelled file; a missing column, empty text or empty label is an error naming file:line."""
    path = Path(path)
    text = _read_text(path, encoding)
    suffix = path.suffix.lower()
    if suffix in JSON_SUFFIXES:
        records = _json_records(path, text)
    else:
        sep = separator or SUFFIX_SEPARATORS.get(suffix)
        if sep is None:
            raise LmtuneError(
                f"{path}: cannot tell the format from '{suffix}'; use .csv/.tsv/.json/.jsonl or set data.separator"
            )
        if quoting == "auto":
            quoting = "none" if sep == "\t" else "csv"
        records = _table_records(path, text, sep, quoting)

    rows = Rows([], [], [])
    for line, record in records:
        where = f"{path}:{line}" if isinstance(line, int) else f"{path}: {line}"
        for column in (text_column, label_column):
            if column not in record:
                found = ", ".join(map(str, record)) or "none"
                raise LmtuneError(
                    f"{where}: no column '{column}' (columns found: {found}); "
                    f"set data.{'text' if column == text_column else 'label'}_column"
                )
        value, label = record[text_column], record[label_column]
        if value is None or not str(value).strip():
            raise LmtuneError(f"{where}: empty text in column '{text_column}'")
        if label is None or not str(label).strip():
            raise LmtuneError(f"{where}: empty label in column '{label_column}'")
        rows.texts.append(str(value).strip())
        rows.labels.append(str(label).strip())
        rows.where.append(where)
    if not rows.texts:
        raise LmtuneError(f"{path}: no data rows (only a header or blank lines)")
    return rows
