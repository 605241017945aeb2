"""Token-classification data (NER): sentences as tokens with one tag each, from CoNLL-style column files,
from records of `tokens` + `tags`, or from span annotations (`text` + `entities: [{start, end, label}]`);
tags brought to IOB2 whatever scheme they came in; and the alignment of word tags to a tokenizer's
sub-words.

CoNLL files: one token a line, whitespace-separated columns (the token first), a blank line between
sentences, `-DOCSTART-` lines skipped; the tag column is chosen by index (default: the last) or by name
from `columns`. A line with another number of columns than the file's first is a bad row at its line.

Tags: IOB1 and BIOES become IOB2 (lmtune.evaluate.spans.to_iob2: the entities are unchanged); an IOB2
I-X that continues no X chunk (after O, at the start, after another type) is repaired to B-X and
counted — the reading seqeval and conlleval give it anyway, so no score moves — and a tag outside the
scheme is a bad row naming the tag. The pipeline integration (the token task's reader) is the next step.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lmtune.data.formats import Bad
from lmtune.errors import LmtuneError
from lmtune.evaluate import spans

DOCSTART = "-DOCSTART-"
IGNORE = -100  # the loss ignores this position (special tokens, and continuation sub-words by default)
# a word of a span-annotated text: a run of word characters, or one other non-space character
WORD = re.compile(r"\w+|[^\w\s]")


@dataclass
class Sentence:
    tokens: list[str]
    tags: list[str]  # IOB2
    where: str  # file:line of its first token
    repaired: int = 0  # stray I- tags made B-
    offsets: list[tuple[int, int]] | None = None  # each token's [start, end) in `text`, for span input
    text: str | None = None  # the annotated text, for span input


def tag_index(columns: list[str] | None, tag_column: int | str) -> int:
    """The tag column's index: an int as given (negative counts from the end), a name looked up in
    `columns` (the names of a file's columns, which CoNLL files do not carry)."""
    if isinstance(tag_column, int):
        return tag_column
    if not columns or tag_column not in columns:
        named = f"columns {columns}" if columns else "no data.columns"
        raise LmtuneError(
            f"data.tag_column = {tag_column!r}: not among {named}; name it there or give an index"
        )
    return columns.index(tag_column)


def iob2(tags: list[str], scheme: str) -> tuple[list[str], int]:
    """(the tags in IOB2, how many stray I- tags were repaired); a tag outside the scheme raises Bad."""
    try:
        converted = spans.to_iob2(tags, scheme)
        return spans.repair_iob2(converted)
    except LmtuneError as exc:
        raise Bad(str(exc)) from None


def read_conll(
    path: Path, tag: int = -1, scheme: str = "IOB2", *, strict: bool = True
) -> Iterator[Sentence | Bad]:
    """The sentences of a CoNLL-style file in order; with `strict` False, a bad sentence is yielded as the
    Bad that describes it (its message starts with file:line) and reading goes on."""
    width = None
    tokens: list[str] = []
    tags: list[str] = []
    start = 0
    problem: str | None = None

    def finish() -> Sentence | Bad:
        if problem:
            return Bad(problem)
        try:
            fixed, repaired = iob2(tags, scheme)
        except Bad as exc:
            token = str(exc).split(":", 1)  # "token i: why" from the tag checks
            index = int(token[0].split()[1]) if token[0].startswith("token ") else 0
            return Bad(f"{path}:{start + index}: {token[-1].strip()}")
        return Sentence(list(tokens), fixed, f"{path}:{start}", repaired)

    with open(path, encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, 1):
            parts = line.split()
            if parts and parts[0] == DOCSTART:
                continue
            if not parts:
                if tokens:
                    yield _checked(finish(), strict)
                tokens, tags, problem = [], [], None
                continue
            width = width or len(parts)
            if not tokens:
                start = number
            if len(parts) != width and problem is None:
                problem = (
                    f"{path}:{number}: {len(parts)} columns, the file's lines have {width} (token ... tag)"
                )
            elif problem is None:
                try:
                    tags.append(parts[tag])
                except IndexError:
                    problem = f"{path}:{number}: no column {tag} in {len(parts)} columns"
            tokens.append(parts[0])
    if tokens:
        yield _checked(finish(), strict)


def _checked(item: Sentence | Bad, strict: bool) -> Sentence | Bad:
    if strict and isinstance(item, Bad):
        raise LmtuneError(str(item))
    return item


def from_tokens(record: dict, where: str, scheme: str = "IOB2") -> Sentence:
    """A record of `tokens` + `tags` (lists of one length, strings)."""
    tokens, tags = record.get("tokens"), record.get("tags")
    for name, value in (("tokens", tokens), ("tags", tags)):
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            raise Bad(f"field '{name}' must be a non-empty list of strings")
    if len(tokens) != len(tags):
        raise Bad(f"{len(tokens)} tokens but {len(tags)} tags")
    fixed, repaired = iob2(tags, scheme)
    return Sentence(list(tokens), fixed, where, repaired)


def from_spans(record: dict, where: str) -> Sentence:
    """A record of `text` + `entities: [{start, end, label}]` (character offsets, end exclusive): words
    split so that every entity boundary is a word boundary, tagged IOB2."""
    text, entities = record.get("text"), record.get("entities")
    if not isinstance(text, str) or not text.strip():
        raise Bad("field 'text' must be a non-empty string")
    if not isinstance(entities, list):
        raise Bad("field 'entities' must be a list of {start, end, label}")
    marks = []
    for i, entity in enumerate(entities):
        if not isinstance(entity, dict) or not {"start", "end", "label"} <= set(entity):
            raise Bad(f"entities[{i}]: needs start, end and label")
        s, e, label = entity["start"], entity["end"], entity["label"]
        if not (isinstance(s, int) and isinstance(e, int) and 0 <= s < e <= len(text)):
            raise Bad(
                f"entities[{i}]: start {s!r} and end {e!r} must be offsets with 0 ≤ start < end ≤ {len(text)}"
            )
        if not isinstance(label, str) or not label.strip() or "-" in label[:2]:
            raise Bad(f"entities[{i}]: label must be an entity type such as PER, got {label!r}")
        if not text[s:e].strip():
            raise Bad(f"entities[{i}]: [{s}, {e}) covers only whitespace")
        marks.append((s, e, label))
    marks.sort()
    for (_, e1, _), (s2, _, _) in zip(marks, marks[1:], strict=False):
        if s2 < e1:
            raise Bad(f"entities overlap at characters {s2}..{e1} (nested entities are not supported)")
    cuts = sorted({p for s, e, _ in marks for p in (s, e)})
    words: list[tuple[int, int]] = []
    for match in WORD.finditer(text):
        a, b = match.span()
        inner = [c for c in cuts if a < c < b]  # an entity boundary inside a word splits it
        for x, y in zip([a, *inner], [*inner, b], strict=True):
            words.append((x, y))
    tags, previous = [], None
    for a, b in words:
        inside = next((m for m in marks if m[0] <= a and b <= m[1]), None)
        # B- on an entity's first word; adjacent entities of one type stay two chunks
        tags.append("O" if inside is None else f"{'I' if inside is previous else 'B'}-{inside[2]}")
        previous = inside
    return Sentence([text[a:b] for a, b in words], tags, where, 0, words, text)


def align(
    word_ids: list[int | None], tags: list[str], label2id: dict[str, int], every: bool = False
) -> list[int]:
    """Sub-word labels from word tags: the first sub-word of a word carries its tag, the rest IGNORE (or,
    with `every`, its tag with B- turned to I- so that a word never starts two chunks); special tokens
    (word id None) IGNORE."""
    labels, previous = [], None
    for word in word_ids:
        if word is None:
            labels.append(IGNORE)
        elif word != previous:
            labels.append(label2id[tags[word]])
        elif every:
            tag = tags[word]
            labels.append(label2id["I" + tag[1:] if tag.startswith("B-") else tag])
        else:
            labels.append(IGNORE)
        previous = word
    return labels
