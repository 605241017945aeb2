"""Read instruction, chat and plain-text datasets into one canonical form: chat messages, or a text.

Every record keeps where it came from ("file:line" or "file: record N"), so a bad record is reported
precisely; `on_error` decides whether the first bad record stops the run or all of them are skipped and
counted. Checks that need a tokenizer (length) are left to the recipe.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmtune.errors import LmtuneError

FORMATS: tuple[str, ...] = ("alpaca", "messages", "sharegpt", "prompt_completion", "text")
# (required, optional) fields of each format: used for detection and shown when none fits
FORMAT_FIELDS = {
    "alpaca": (("instruction", "output"), ("input", "system", "history")),
    "messages": (("messages",), ("tools",)),
    "sharegpt": (("conversations",), ("system", "tools")),
    "prompt_completion": (("prompt", "completion"), ()),
    "text": (("text",), ()),
}
# chat formats first: their records may also carry e.g. a `text` or `prompt` field
DETECT_ORDER = ("messages", "sharegpt", "alpaca", "prompt_completion", "text")
KNOWN_FIELDS = tuple(dict.fromkeys(f for req, opt in FORMAT_FIELDS.values() for f in req + opt))
MESSAGE_ROLES = {**{role: role for role in ("system", "user", "assistant", "tool")}, "function": "tool"}
SHAREGPT_ROLES = {
    **dict.fromkeys(("human", "user"), "user"),
    **dict.fromkeys(("gpt", "assistant", "model", "chatgpt", "function_call"), "assistant"),
    "system": "system",
    **dict.fromkeys(("observation", "tool", "function"), "tool"),
}
TOOLS_INTRO = "You can call these tools:\n"
BAD_BYTE = re.compile("[\udc80-\udcff]")  # what errors="surrogateescape" turns undecodable bytes into

Record = tuple[dict | None, str, str | None]


@dataclass
class Example:
    messages: list[dict] | None  # [{"role": "system"|"user"|"assistant"|"tool", "content": str}, ...]
    text: str | None  # plain-text format (continued pre-training); messages is None then
    where: str  # "path:LINE" (JSONL, CSV, TXT) or "path: record N" (JSON array, Parquet; 1-based)


@dataclass
class Examples:
    items: list[Example]
    format: str  # the detected or given format name
    path: str
    skipped: list[tuple[str, str]]  # (where, reason) of every record skipped under on_error="skip"

    def __len__(self) -> int:
        return len(self.items)


class _Bad(Exception):
    """A problem with one record: reported as (where, reason) under the on_error policy."""


def _kind(value: Any) -> str:
    """JSON's name for a value's type, which is what users see in their files."""
    names = {str: "a string", bool: "a boolean", int: "a number", float: "a number", list: "a list"}
    return "null" if value is None else names.get(type(value), "an object")


def _decode(path: Path, encoding: str) -> tuple[str, bool]:
    """The file's text, and whether some bytes were undecodable (kept as surrogates to report per record)."""
    raw = path.read_bytes()
    codec = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        text, damaged = raw.decode(codec), False
    except UnicodeDecodeError:
        text, damaged = raw.decode(codec, errors="surrogateescape"), True
    except LookupError:
        raise LmtuneError(f"data.encoding: unknown encoding '{encoding}'") from None
    if not text.strip():
        raise LmtuneError(f"{path}: the file is empty")
    return text, damaged


def _object(value: Any, where: str) -> Record:
    if isinstance(value, dict):
        return value, where, None
    return None, where, f"expected a JSON object, got {_kind(value)}"


def _jsonl_records(path: Path, text: str) -> list[Record]:
    records = []
    # split("\n"), not splitlines(): U+2028 and friends may sit unescaped inside JSON strings
    for line, raw in enumerate(text.split("\n"), 1):
        if raw.strip():
            try:
                records.append(_object(json.loads(raw), f"{path}:{line}"))
            except json.JSONDecodeError as exc:
                records.append((None, f"{path}:{line}", f"malformed JSON: {exc.msg} at column {exc.colno}"))
    return records


def _is_jsonl(text: str) -> bool:
    """A .json file holding one object per line (common, and accepted by other tools)."""
    first, _, rest = text.lstrip().partition("\n")
    try:
        return first.startswith("{") and bool(rest.strip()) and isinstance(json.loads(first), dict)
    except json.JSONDecodeError:
        return False


def _is_record_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, dict) for item in value)


def _json_records(path: Path, text: str) -> list[Record]:
    if path.suffix.lower() in (".jsonl", ".ndjson") or _is_jsonl(text):
        return _jsonl_records(path, text)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:  # one broken array loses every record: a file-level error
        raise LmtuneError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg})") from None
    if isinstance(data, dict) and not {"messages", "conversations"} & set(data):  # e.g. {"data": [...]}
        lists = [key for key, value in data.items() if _is_record_list(value)]
        if len(lists) > 1:
            raise LmtuneError(f"{path}: the object holds several lists of records ({', '.join(lists)})")
        data = data[lists[0]] if lists else data
    if not isinstance(data, list):
        data = [data]
    return [_object(item, f"{path}: record {number}") for number, item in enumerate(data, 1)]


def _table_records(path: Path, text: str) -> list[Record]:
    """CSV/TSV rows by the line they start on; quoting is honoured in both, since outputs span lines."""
    csv.field_size_limit(sys.maxsize)
    separator = "\t" if path.suffix.lower() == ".tsv" else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=separator)
    header = [name.strip() for name in next(reader, [])]
    records, start = [], reader.line_num + 1
    try:
        for values in reader:
            where, start = f"{path}:{start}", reader.line_num + 1
            if not any(value.strip() for value in values):
                continue
            if len(values) != len(header):
                records.append((None, where, f"{len(values)} fields where the header has {len(header)}"))
            else:
                records.append((dict(zip(header, values, strict=True)), where, None))
    except csv.Error as exc:
        raise LmtuneError(f"{path}:{reader.line_num}: unreadable row ({exc})") from None
    return records


def _text_records(path: Path, text: str) -> list[Record]:
    lines = enumerate(text.split("\n"), 1)
    return [({"text": raw.removesuffix("\r")}, f"{path}:{line}", None) for line, raw in lines if raw.strip()]


def _parquet_records(path: Path) -> list[Record]:
    import pyarrow.parquet as pq  # imported here: only Parquet users pay for it

    try:
        rows = pq.read_table(path).to_pylist()
    except (OSError, ValueError) as exc:  # pyarrow.ArrowInvalid is a ValueError
        raise LmtuneError(f"{path}: not a readable Parquet file ({exc})") from None
    return [(row, f"{path}: record {number}", None) for number, row in enumerate(rows, 1)]


READERS = {
    **dict.fromkeys((".json", ".jsonl", ".ndjson"), _json_records),
    **dict.fromkeys((".csv", ".tsv"), _table_records),
    **dict.fromkeys((".txt", ".raw"), _text_records),
}


def _flag_bad_bytes(record: Record, encoding: str) -> Record:
    value, where, problem = record
    found = BAD_BYTE.search(json.dumps(value, ensure_ascii=False, default=str)) if problem is None else None
    if not found:
        return record
    hint = "set data.encoding (e.g. latin-1, cp1252, utf-16)"
    return None, where, f"byte 0x{ord(found.group()) - 0xDC00:02x} is not valid {encoding}; {hint}"


def read_records(path: str | Path, encoding: str = "utf-8") -> list[Record]:
    """(record, where, problem) for each record; a record that cannot be read has a problem instead."""
    path = Path(path)
    if not path.is_file():
        raise LmtuneError(f"data file '{path}' does not exist")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _parquet_records(path)
    if suffix not in READERS:
        raise LmtuneError(
            f"{path}: cannot tell the file type from '{suffix}'; use {', '.join([*READERS, '.parquet'])}"
        )
    text, damaged = _decode(path, encoding)
    records = READERS[suffix](path, text)
    return [_flag_bad_bytes(record, encoding) for record in records] if damaged else records


def _describe(fmt: str) -> str:
    required, optional = FORMAT_FIELDS[fmt]
    return f"{fmt} ({', '.join(required)}{'[, ' + ', '.join(optional) + ']' if optional else ''})"


def detect_format(records, path) -> str:
    """The format of the first record whose fields fit one (records: dicts, or read_records triples)."""
    seen: dict[str, None] = {}
    for item in records:
        record = item[0] if isinstance(item, tuple) else item
        if not isinstance(record, dict):
            continue
        for fmt in DETECT_ORDER:
            if all(name in record for name in FORMAT_FIELDS[fmt][0]):
                return fmt
        seen.update(dict.fromkeys(map(str, record)))
    found = ", ".join(list(seen)[:12]) + (", ..." if len(seen) > 12 else "") or "none"
    raise LmtuneError(
        f"{path}: no record format fits the fields found ({found}); "
        f"accepted: {', '.join(_describe(fmt) for fmt in FORMATS)}; set data.format / data.fields"
    )


def _field(record: dict, key: str, names: dict[str, str], want: type = str, required: bool = True) -> Any:
    """The field's value, or None when optional and absent or empty; errors use the file's own name."""
    label, value = names.get(key, key), record.get(key)
    if want is list and isinstance(value, str) and value.strip():  # CSV cells can only hold lists as JSON
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise _Bad(f"field '{label}' must be a list (or a JSON string of one)") from None
    if value is None or value == [] or (isinstance(value, str) and not value.strip()):
        if not required:
            return None
        mapped = f" (data.fields maps {key} to it)" if label != key else ""
        raise _Bad(f"missing field '{label}'{mapped}" if key not in record else f"empty field '{label}'")
    if not isinstance(value, want):
        raise _Bad(f"field '{label}' must be {'a string' if want is str else 'a list'}, got {_kind(value)}")
    return value


def _content(value: Any, turn: int) -> str:
    """A turn's text: a string, or OpenAI-style parts [{"type": "text", "text": ...}] joined by newlines."""
    if value is None or isinstance(value, str):
        return value or ""
    if not isinstance(value, list):
        raise _Bad(f"turn {turn}: content must be a string or a list of text parts, got {_kind(value)}")
    texts = []
    for number, part in enumerate(value, 1):
        if not isinstance(part, dict):
            raise _Bad(f"turn {turn}: content part {number} must be an object, got {_kind(part)}")
        if (part.get("type") or "text") != "text":
            raise _Bad(f"turn {turn}: content part of type '{part['type']}' is not supported (text only)")
        if not isinstance(part.get("text"), str):
            raise _Bad(f"turn {turn}: content part {number} has no text")
        texts.append(part["text"])
    return "\n".join(texts)


def _turns(items: list, roles: dict[str, str]) -> list[dict]:
    messages = []
    for number, turn in enumerate(items, 1):
        if not isinstance(turn, dict):
            raise _Bad(f"turn {number} must be an object, got {_kind(turn)}")
        role = next((turn[key] for key in ("role", "from") if turn.get(key) is not None), None)
        if role is None:
            raise _Bad(f"turn {number} has no 'role' (or 'from')")
        if not isinstance(role, str) or role not in roles:
            raise _Bad(f"unknown role '{role}' in turn {number} (allowed: {', '.join(roles)})")
        raw = next((turn[key] for key in ("content", "value") if turn.get(key) is not None), None)
        content = _content(raw, number)
        if not content.strip():
            raise _Bad(f"empty {roles[role]} turn (turn {number})")
        if roles[role] == "system" and messages:
            raise _Bad(f"system message at turn {number} is not first")
        messages.append({"role": roles[role], "content": content})
    return messages


def _tools(record: dict, names: dict[str, str]) -> str | None:
    """The tool schemas as text; glaive-style files hold them as a JSON string, often '[]'."""
    value = record.get("tools")
    if isinstance(value, str):
        return value if value.strip() not in ("", "[]", "{}") else None
    if value is not None and not isinstance(value, list | dict):
        raise _Bad(f"field '{names.get('tools', 'tools')}' must be a string or a list, got {_kind(value)}")
    return json.dumps(value, ensure_ascii=False) if value else None


def _check_order(messages: list[dict]) -> list[dict]:
    """Only assistant turns are learned: a conversation must start with the user and end with the assistant."""
    body = messages[1:] if messages[0]["role"] == "system" else messages
    if not any(message["role"] == "assistant" for message in body):
        raise _Bad("no assistant turn")
    if body[0]["role"] != "user":
        raise _Bad(f"the first turn after any system message is from the {body[0]['role']}, not the user")
    if body[-1]["role"] != "assistant":
        raise _Bad(f"ends with a {body[-1]['role']} turn; the last turn must be the assistant's")
    return messages


def _chat(record: dict, names: dict[str, str], key: str, roles: dict[str, str]) -> list[dict]:
    """messages/sharegpt: a leading system turn wins over a record-level `system`; tools extend it."""
    messages = _turns(_field(record, key, names, list), roles)
    system = _field(record, "system", names, required=False)
    if system and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system})
    tools = _tools(record, names)
    if tools and messages[0]["role"] == "system":
        messages[0]["content"] += "\n\n" + TOOLS_INTRO + tools
    elif tools:
        messages.insert(0, {"role": "system", "content": TOOLS_INTRO + tools})
    return _check_order(messages)


def _alpaca(record: dict, names: dict[str, str]) -> list[dict]:
    instruction, output = _field(record, "instruction", names), _field(record, "output", names)
    extra = _field(record, "input", names, required=False)
    system = _field(record, "system", names, required=False)
    messages = [{"role": "system", "content": system}] if system else []
    for number, pair in enumerate(_field(record, "history", names, list, required=False) or [], 1):
        if (
            not isinstance(pair, list)
            or len(pair) != 2
            or not all(isinstance(t, str) and t.strip() for t in pair)
        ):
            raise _Bad(f"history item {number} must be a [user, assistant] pair of non-empty strings")
        messages += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    user = f"{instruction}\n\n{extra}" if extra else instruction
    return [*messages, {"role": "user", "content": user}, {"role": "assistant", "content": output}]


def _example(fmt: str, record: dict, names: dict[str, str], where: str) -> Example:
    if fmt == "text":
        return Example(None, _field(record, "text", names), where)
    if fmt == "alpaca":
        return Example(_alpaca(record, names), None, where)
    if fmt == "prompt_completion":
        prompt, completion = _field(record, "prompt", names), _field(record, "completion", names)
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
        return Example(messages, None, where)
    key, roles = ("messages", MESSAGE_ROLES) if fmt == "messages" else ("conversations", SHAREGPT_ROLES)
    return Example(_chat(record, names, key, roles), None, where)


def _rename(record: dict | None, names: dict[str, str]) -> dict | None:
    """Give mapped fields their canonical names; a mapped name absent from the record leaves the field absent."""
    if record is None or not names:
        return record
    renamed = {key: value for key, value in record.items() if key not in names.values()}
    for canonical, in_file in names.items():
        renamed.pop(canonical, None)
        if in_file in record:
            renamed[canonical] = record[in_file]
    return renamed


def _check_options(format: str, fields: dict[str, str], on_error: str) -> None:
    if format != "auto" and format not in FORMATS:
        raise LmtuneError(f"data.format: unknown format '{format}' (accepted: auto, {', '.join(FORMATS)})")
    unknown = [key for key in fields if key not in KNOWN_FIELDS]
    if unknown:
        raise LmtuneError(
            f"data.fields: unknown field '{unknown[0]}' (known: {', '.join(KNOWN_FIELDS)}); "
            "keys are the format's names, values the names in your file"
        )
    if on_error not in ("fail", "skip"):
        raise LmtuneError(f"data.on_error: '{on_error}' is not one of fail, skip")


def load_examples(
    path: str | Path,
    *,
    format: str = "auto",
    fields: dict[str, str] | None = None,
    on_error: str = "fail",
    encoding: str = "utf-8",
) -> Examples:
    """Read one file into canonical examples; on_error="fail" raises at the first bad record."""
    path, names = Path(path), dict(fields or {})
    _check_options(format, names, on_error)
    records = [
        (_rename(record, names), where, problem) for record, where, problem in read_records(path, encoding)
    ]
    if not records:
        raise LmtuneError(f"{path}: no records found")
    readable = [record for record, _, problem in records if problem is None]
    fmt = format if format != "auto" or not readable else detect_format(readable, path)
    result = Examples([], fmt, str(path), [])
    for record, where, problem in records:
        if problem is None:
            try:
                result.items.append(_example(fmt, record, names, where))
                continue
            except _Bad as bad:
                problem = str(bad)
        if on_error == "fail":
            raise LmtuneError(f"{where}: {problem}")
        result.skipped.append((where, problem))
    if not result.items:
        where, reason = result.skipped[0]
        raise LmtuneError(f"{path}: no usable record: all {len(records)} are bad (first: {where}: {reason})")
    return result
