"""Read instruction, chat and plain-text datasets into one canonical form: chat messages, or a text.

Every record keeps where it came from ("file:line" or "file: record N"), so a bad record is reported
precisely; `on_error` decides whether the first bad record stops the run or all of them are skipped and
counted. Checks that need a tokenizer (length) are left to the recipe.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmtune.data.load import ReadOptions, iter_records, kind_of
from lmtune.errors import LmtuneError, listing

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


@dataclass
class Example:
    messages: list[dict] | None  # [{"role": "system"|"user"|"assistant"|"tool", "content": str}, ...]
    text: str | None  # plain-text format (continued pre-training); messages is None then
    where: str  # "path:LINE" (JSONL, CSV, TXT) or "path: record N" (JSON array, Parquet; 1-based)
    weight: float | None = None  # its weight in the training loss (data.weight_column); None = 1


@dataclass
class Examples:
    items: list[Example]
    format: str  # the detected or given format name
    path: str
    skipped: list[tuple[str, str]]  # (where, reason) of every record skipped under on_error="skip"

    def __len__(self) -> int:
        return len(self.items)


class Bad(Exception):
    """A problem with one record: reported as (where, reason) under the on_error policy; `where`, when
    given, is a more exact place than the record's own (the line of a CoNLL sentence's bad token)."""

    def __init__(self, reason: str, where: str | None = None):
        super().__init__(reason)
        self.where = where


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
    found = listing(seen)
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
            raise Bad(f"field '{label}' must be a list (or a JSON string of one)") from None
    if value is None or value == [] or (isinstance(value, str) and not value.strip()):
        if not required:
            return None
        mapped = f" (data.fields maps {key} to it)" if label != key else ""
        raise Bad(f"missing field '{label}'{mapped}" if key not in record else f"empty field '{label}'")
    if not isinstance(value, want):
        raise Bad(f"field '{label}' must be {'a string' if want is str else 'a list'}, got {kind_of(value)}")
    return value


def _content(value: Any, turn: int) -> str:
    """A turn's text: a string, or OpenAI-style parts [{"type": "text", "text": ...}] joined by newlines."""
    if value is None or isinstance(value, str):
        return value or ""
    if not isinstance(value, list):
        raise Bad(f"turn {turn}: content must be a string or a list of text parts, got {kind_of(value)}")
    texts = []
    for number, part in enumerate(value, 1):
        if not isinstance(part, dict):
            raise Bad(f"turn {turn}: content part {number} must be an object, got {kind_of(part)}")
        if (part.get("type") or "text") != "text":
            raise Bad(f"turn {turn}: content part of type '{part['type']}' is not supported (text only)")
        if not isinstance(part.get("text"), str):
            raise Bad(f"turn {turn}: content part {number} has no text")
        texts.append(part["text"])
    return "\n".join(texts)


def _turns(items: list, roles: dict[str, str]) -> list[dict]:
    messages = []
    for number, turn in enumerate(items, 1):
        if not isinstance(turn, dict):
            raise Bad(f"turn {number} must be an object, got {kind_of(turn)}")
        role = next((turn[key] for key in ("role", "from") if turn.get(key) is not None), None)
        if role is None:
            raise Bad(f"turn {number} has no 'role' (or 'from')")
        if not isinstance(role, str) or role not in roles:
            raise Bad(f"unknown role '{role}' in turn {number} (allowed: {', '.join(roles)})")
        raw = next((turn[key] for key in ("content", "value") if turn.get(key) is not None), None)
        content = _content(raw, number)
        if not content.strip():
            raise Bad(f"empty {roles[role]} turn (turn {number})")
        if roles[role] == "system" and messages:
            raise Bad(f"system message at turn {number} is not first")
        messages.append({"role": roles[role], "content": content})
    return messages


def _tools(record: dict, names: dict[str, str]) -> str | None:
    """The tool schemas as text; glaive-style files hold them as a JSON string, often '[]'."""
    value = record.get("tools")
    if isinstance(value, str):
        return value if value.strip() not in ("", "[]", "{}") else None
    if value is not None and not isinstance(value, list | dict):
        raise Bad(f"field '{names.get('tools', 'tools')}' must be a string or a list, got {kind_of(value)}")
    return json.dumps(value, ensure_ascii=False) if value else None


def _check_order(messages: list[dict]) -> list[dict]:
    """Only assistant turns are learned: a conversation must start with the user and end with the assistant."""
    body = messages[1:] if messages[0]["role"] == "system" else messages
    if not any(message["role"] == "assistant" for message in body):
        raise Bad("no assistant turn")
    if body[0]["role"] != "user":
        raise Bad(f"the first turn after any system message is from the {body[0]['role']}, not the user")
    if body[-1]["role"] != "assistant":
        raise Bad(f"ends with a {body[-1]['role']} turn; the last turn must be the assistant's")
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
            raise Bad(f"history item {number} must be a [user, assistant] pair of non-empty strings")
        messages += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    user = f"{instruction}\n\n{extra}" if extra else instruction
    return [*messages, {"role": "user", "content": user}, {"role": "assistant", "content": output}]


def to_example(fmt: str, record: dict, names: dict[str, str], where: str) -> Example:
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


def _required(record: dict, column: str, key: str, what: str):
    if column not in record:
        found = listing(record)
        raise Bad(f"missing field '{column}' (fields found: {found}); set data.{key}")
    value = record[column]
    if value is None or (isinstance(value, str) and not value.strip()):
        raise Bad(f"empty {what} in field '{column}'")
    return value


def labelled(
    record: dict,
    text: str | tuple[str, ...],
    label: str,
    group: str | None,
    *,
    pair: bool = False,
    joiner: str = " ",
    many: bool = False,
) -> tuple[str, str | None, str | int | float | list, str | None]:
    """(text, second text of a pair or None, raw label, group) of a labelled record; the label is
    normalised by the pipeline. `text` names one column, or several: joined with `joiner`, or with
    `pair` the two texts of a sentence pair. With `many` the label is a set of labels: a list, or a
    string the pipeline splits (empty or null: none)."""
    if isinstance(text, str):
        first, second = _text(record, text), None
    elif pair:
        first, second = (_text(record, column) for column in text)
    else:
        first, second = (
            joiner.join(t for t in (_text(record, c, empty=True) for c in text) if t.strip()),
            None,
        )
        if not first.strip():
            raise Bad(f"empty text in every field of {', '.join(map(repr, text))}")
    tag = record.get(label)
    if many:
        tag = _label_set(record, label)
    elif type(tag) is not str or not tag.strip():
        tag = _required(record, label, "label_column", "label")
        if not isinstance(tag, str | int | float) or isinstance(tag, bool):
            raise Bad(f"field '{label}' must be a string or a number, got {kind_of(tag)}")
    if group is None:
        return first, second, tag, None
    key = _required(record, group, "group_column", "group")
    if not isinstance(key, str | int):
        raise Bad(f"field '{group}' must be a string or a number, got {kind_of(key)}")
    return first, second, tag, str(key)


def _label_set(record: dict, column: str) -> str | int | list:
    """A multi-label record's labels as given: a list of names (or ids), or one string; null is none."""
    if column not in record:
        _required(record, column, "label_column", "label")  # raises, naming the fields found
    value = record[column]
    if value is None:
        return []
    if isinstance(value, list):
        for item in value:
            if not isinstance(item, str | int) or isinstance(item, bool) or not str(item).strip():
                raise Bad(
                    f"field '{column}' must list labels (strings or integers), got {kind_of(item)} in it"
                )
        return value
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise Bad(f"field '{column}' must be a list of labels or a delimited string, got {kind_of(value)}")
    return value


def _text(record: dict, column: str, empty: bool = False) -> str:
    """The record's text in `column` (with `empty`, blank text is allowed: one of several joined)."""
    value = record.get(column)
    if type(value) is str and value.strip():  # the common case costs one lookup and two checks
        return value
    if empty and column in record and (value is None or (isinstance(value, str) and not value.strip())):
        return ""
    value = _required(record, column, "text_column", "text")
    if not isinstance(value, str):
        raise Bad(f"field '{column}' must be a string, got {kind_of(value)}")
    return value


SURROGATE = re.compile("[\ud800-\udfff]")


def text_only(*values: str | None) -> None:
    """A JSON escape can write half a character (\\ud800): not text, and no encoder takes it."""
    for value in values:
        if value and (found := SURROGATE.search(value)):
            raise Bad(f"holds an unpaired surrogate ({found.group()!r}), which is not text")


def group_of(record: dict, group_column: str | None) -> str | None:
    """The record's data.group_column value (rows sharing it never straddle splits); None without one."""
    if group_column is None:
        return None
    if record.get(group_column) in (None, ""):
        raise Bad(f"missing field '{group_column}' (data.group_column)")
    return str(record[group_column])


# the per-row fields a record may carry besides its text (data.<name>_column); group is data.group_column
ROW_FIELDS = ("weight", "sensitive", "domain", "task")


def row_fields(record: dict, columns: dict[str, str]) -> dict:
    """The record's per-row fields, read from their columns ({field: column}, from data.*_column): a
    weight is a finite number ≥ 0 (text such as "0.5" from a CSV file counts), the others text."""
    out: dict = {}
    for name, column in columns.items():
        value, key = record.get(column), f"data.{name}_column"
        if value is None or value == "":
            raise Bad(f"missing field '{column}' ({key})")
        if name != "weight":
            if isinstance(value, dict | list):
                raise Bad(f"field '{column}' ({key}) must be text or a number, got {kind_of(value)}")
            out[name] = str(value)
            continue
        number = value
        if isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                number = None
        if isinstance(number, bool) or not isinstance(number, int | float) or not math.isfinite(number):
            raise Bad(f"field '{column}' ({key}) must be a number ≥ 0, got {str(value)[:40]!r}")
        if number < 0:
            raise Bad(f"field '{column}' ({key}) must be ≥ 0, got {number:g}")
        out[name] = float(number)
    return out


def rename(record: dict | None, names: dict[str, str]) -> dict | None:
    """Give mapped fields their canonical names; a mapped name absent from the record leaves the field absent."""
    if record is None or not names:
        return record
    renamed = {key: value for key, value in record.items() if key not in names.values()}
    for canonical, in_file in names.items():
        renamed.pop(canonical, None)
        if in_file in record:
            renamed[canonical] = record[in_file]
    return renamed


def on_bad(on_error: str, where: str, reason: str, *, hint: bool = True) -> None:
    """data.on_error, decided here only: `fail` stops at the first bad row, naming it (file:line); `skip`
    returns, and the caller counts and lists the row. `hint`: say how to skip such rows instead."""
    if on_error == "fail":
        raise LmtuneError(f"{where}: {reason}" + (" (data.on_error = skip drops such rows)" if hint else ""))


def check_options(format: str, fields: dict[str, str], on_error: str) -> None:
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
    check_options(format, names, on_error)
    records = [
        (rename(record, names), where, problem)
        for record, where, problem in iter_records(path, ReadOptions(encoding=encoding))
    ]
    if not records:
        raise LmtuneError(f"{path}: no records found")
    readable = [record for record, _, problem in records if problem is None]
    fmt = format if format != "auto" or not readable else detect_format(readable, path)
    result = Examples([], fmt, str(path), [])
    for record, where, problem in records:
        if problem is None:
            try:
                result.items.append(to_example(fmt, record, names, where))
                continue
            except Bad as bad:
                problem = str(bad)
        on_bad(on_error, where, problem, hint=False)  # a library call: on_error is its argument here
        result.skipped.append((where, problem))
    if not result.items:
        where, reason = result.skipped[0]
        raise LmtuneError(f"{path}: no usable record: all {len(records)} are bad (first: {where}: {reason})")
    return result
