"""The exception types users see: a single line naming what is wrong and where."""

from __future__ import annotations

import errno
import re
from contextlib import contextmanager
from typing import Any

MAX_MESSAGE = 1000  # characters: a message names what is wrong, it never echoes a whole input
# characters that would break the one line: control characters, line and paragraph separators
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200b-\u200f\u202a-\u202e\ufeff]")


def printable(text: str) -> str:
    """`text` with every character that could break a line or a terminal written as an escape (\\n,
    \\x1b): an input's file names, keys and values end up inside messages."""
    return _UNPRINTABLE.sub(lambda m: repr(m.group())[1:-1], text)


class LmtuneError(Exception):
    """A problem with the user's input (config, data, run directory): printed as one line, exit 2.

    Whatever the message holds (a file name with a newline, a 3,000-character label), it stays one
    line of at most MAX_MESSAGE characters."""

    exit_code = 2

    def __str__(self) -> str:
        text = printable(super().__str__())
        if len(text) > MAX_MESSAGE:
            text = f"{text[: MAX_MESSAGE - 30]}… [{len(text) - MAX_MESSAGE + 30:,} characters more]"
        return text


class Interrupted(LmtuneError):
    """Ctrl-C: what was kept and how to go on, as one line; exit 130 like any interrupted command."""

    exit_code = 130


@contextmanager
def as_flags(flags: dict[str, str], source: str):
    """Errors about data.* keys, for a command that took them as flags: name the flag the user typed
    (`--separator`), not the config key (`data.separator`) they stand for."""
    try:
        yield
    except LmtuneError as error:
        message = str(error).removeprefix(f"{source}: ")
        for key, flag in flags.items():
            message = re.sub(rf"\b{re.escape(key)} = ", f"{flag} ", message)
            message = re.sub(rf"\b{re.escape(key)}\b", flag, message)
        raise type(error)(message) from None


# a full disk as the libraries that write files report it
_NO_SPACE = re.compile(r"No space left on device|os error 28|file write failed|ENOSPC", re.IGNORECASE)


def machine_failure(error: BaseException) -> str | None:
    """One line for what failed in the machine rather than in the input (a full disk, a permission, a
    vanished folder), or None for anything else, which is a bug and keeps its traceback."""
    full = "; free some space and run the command again"
    if isinstance(error, OSError) and error.errno is not None:
        where = f": {error.filename}" if error.filename else ""
        line = f"{error.strerror or errno.errorcode.get(error.errno, error.errno)}{where}"
        return line + (full if error.errno == errno.ENOSPC else "")
    text = str(error)
    # safetensors' SafetensorError and torch.save's RuntimeError wrap the OS error in their own type
    if (type(error).__name__ == "SafetensorError" or isinstance(error, RuntimeError)) and _NO_SPACE.search(
        text
    ):
        return f"No space left on device while saving ({text.splitlines()[0][:200]}){full}"
    return None


def listing(names, limit: int = 12, width: int = 40) -> str:
    """Names for a message: the first `limit`, each cut to `width` characters, and how many in all."""
    names = [str(n) for n in names]
    shown = [n if len(n) <= width else n[: width - 1] + "…" for n in names[:limit]]
    more = f", … ({len(names)} in all)" if len(names) > limit else ""
    return (", ".join(shown) + more) or "none"


SHOWN = 80  # characters of a value echoed in an error; a value may be megabytes long


def shorten(value: Any, limit: int = SHOWN) -> str:
    """repr(value), cut to `limit` characters: errors stay one short line whatever the input."""
    if isinstance(value, dict | list) and len(value) >= 50:
        return f"a {type(value).__name__} of {len(value)} items"
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # an int of more digits than Python prints, a list in itself
        return f"a {type(value).__name__}"
    return text if len(text) <= limit else text[: limit - 1] + "…"
