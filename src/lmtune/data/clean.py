"""Text cleaning, each step switchable: Unicode normalisation, control characters, markup, whitespace,
boilerplate lines. Built once into one function per run, so millions of rows cost a few regex passes each.

Whitespace cleaning keeps line breaks and leading indentation (code and chat data need them); it strips
line ends, collapses runs of blanks inside a line and runs of blank lines.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Callable, Sequence

from lmtune.errors import LmtuneError

# C0/C1 controls except tab and newline, DEL, byte-order marks and zero-width spaces left by editors
CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\ufeff]")
MARKUP_BLOCK = re.compile(r"<(script|style)\b[^>]*>.*?</\1\s*>|<!--.*?-->", re.IGNORECASE | re.DOTALL)
TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9:-]*(?:\s[^<>]*)?/?>")
BREAK_TAG = re.compile(r"<(?:br|p|div|li|tr|h[1-6])\b[^>]*>", re.IGNORECASE)
INNER_BLANKS = re.compile(r"(?<=\S)[ \t\u00a0\u2000-\u200a\u3000]{2,}|(?<=\S)[\t\u00a0\u2000-\u200a\u3000]")
LINE_END_BLANKS = re.compile(r"[ \t\u00a0\u3000]+(?=\n)")
BLANK_LINES = re.compile(r"\n{3,}")
UNICODE_FORMS = ("NFKC", "NFC", "none")


def _boilerplate(patterns: Sequence[str]) -> re.Pattern | None:
    for number, pattern in enumerate(patterns):
        try:
            re.compile(pattern)
        except re.error as exc:
            raise LmtuneError(
                f"data.clean.boilerplate[{number}]: {pattern!r} is not a regex ({exc})"
            ) from None
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.MULTILINE) if patterns else None


def make_cleaner(
    *,
    unicode: str = "NFKC",
    control: bool = True,
    html_markup: bool = False,
    whitespace: bool = True,
    boilerplate: Sequence[str] = (),
) -> Callable[[str], str]:
    """One function applying the chosen steps in a fixed order (markup before whitespace, so removed tags
    leave no double blanks)."""
    if unicode not in UNICODE_FORMS:
        raise LmtuneError(f"data.clean.unicode: '{unicode}' is not one of {', '.join(UNICODE_FORMS)}")
    boiler = _boilerplate(boilerplate)

    def clean(text: str) -> str:
        if unicode != "none" and not text.isascii():
            text = unicodedata.normalize(unicode, text)
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        if control:
            text = CONTROL.sub("", text)
        if html_markup and ("<" in text or "&" in text):
            text = MARKUP_BLOCK.sub(" ", text)
            text = BREAK_TAG.sub("\n", text)
            text = html.unescape(TAG.sub(" ", text))
        if boiler is not None:
            text = "\n".join(line for line in text.split("\n") if not boiler.search(line))
        if whitespace:
            text = INNER_BLANKS.sub(" ", text)
            if "\n" in text:
                text = BLANK_LINES.sub("\n\n", LINE_END_BLANKS.sub("", text))
            text = text.strip()
        return text

    return clean


def normalise_label(label: str, case: str) -> str:
    """Labels compare after stripping; `case: lower` also folds case, so 'Positive ' == 'positive'."""
    label = " ".join(label.split())
    return label.casefold() if case == "lower" else label


def per_token(clean: Callable[[str], str]) -> Callable[[str], str]:
    """`clean` applied to each token of a text of tokens joined by single spaces (token-classification
    rows), so the token count — and with it each token's tag — never changes; a token that cleans to
    nothing, or to more than one token, empties the text (the row is dropped and counted)."""

    def each(text: str) -> str:
        tokens = [clean(token).strip() for token in text.split(" ")]
        return "" if any(not t or len(t.split()) > 1 for t in tokens) else " ".join(tokens)

    return each
