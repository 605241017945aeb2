"""Token-classification data (NER): sentences as tokens with one tag each, from CoNLL-style column files
(read by lmtune.data.load), from records of `tokens` + `tags`, or from span annotations (`text` +
`entities: [{start, end, label}]`); tags brought to IOB2 whatever scheme they came in; and the alignment
of word tags to a tokenizer's sub-words.

Tags: IOB1 and BIOES become IOB2 (lmtune.data.tags.to_iob2: the entities are unchanged); an IOB2
I-X that continues no X chunk (after O, at the start, after another type) is repaired to B-X and
counted — the reading seqeval and conlleval give it anyway, so no score moves — and a tag outside the
scheme is a bad row naming the tag and, in a CoNLL file, its line.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lmtune.data.formats import Bad
from lmtune.data.load import ReadOptions, iter_records, tag_index  # noqa: F401 (tag_index: the tag API)
from lmtune.data.tags import TagError, repair_iob2, to_iob2
from lmtune.errors import LmtuneError

IGNORE = -100  # the loss ignores this position (special tokens, and continuation sub-words by default)
# a word of a span-annotated text: a run of word characters, or one other non-space character
WORD = re.compile(r"\w+|[^\w\s]")
SPACE = re.compile(r"\s")
# a word of running text given to a trained tagger, cut near CoNLL's tokenisation: abbreviations (U.S.),
# words joined by hyphens or dots (1996-08-22, 3.5), a possessive 's, any other non-space character
RUNNING_WORD = re.compile(r"(?:[A-Za-z]\.){2,}|\w+(?:[-.]\w+)*|['’]s\b|[^\w\s]")


def words_of(text: str) -> list[tuple[int, int]]:
    """The [start, end) offsets of the words of running text (RUNNING_WORD), what `predict` tags."""
    return [match.span() for match in RUNNING_WORD.finditer(text)]


@dataclass
class Sentence:
    tokens: list[str]
    tags: list[str]  # IOB2
    where: str  # file:line of its first token
    repaired: int = 0  # stray I- tags made B-
    offsets: list[tuple[int, int]] | None = None  # each token's [start, end) in `text`, for span input
    text: str | None = None  # the annotated text, for span input


def read_conll(
    path: Path,
    tag: int | str = -1,
    scheme: str = "IOB2",
    *,
    columns: list[str] | None = None,
    strict: bool = True,
) -> Iterator[Sentence | Bad]:
    """The sentences of a CoNLL-style file in order, read as the pipeline reads them; with `strict`
    False, a bad sentence is yielded as the Bad that describes it (its message starts with file:line)
    and reading goes on."""
    options = ReadOptions(conll=True, tag_column=tag, columns=columns)
    for record, where, problem in iter_records(Path(path), options):
        try:
            if problem is not None:
                raise Bad(problem, where)
            item: Sentence | Bad = from_tokens(record, where, scheme)
        except Bad as exc:
            item = Bad(f"{exc.where or where}: {exc}")
            if strict:
                raise LmtuneError(str(item)) from None
        yield item


def from_tokens(record: dict, where: str, scheme: str = "IOB2") -> Sentence:
    """A record of `tokens` + `tags` (lists of one length, strings; a token holds no whitespace). A
    record from a CoNLL file carries its first `line`, so a bad tag is placed at its own line."""
    tokens, tags = record.get("tokens"), record.get("tags")
    for name, value in (("tokens", tokens), ("tags", tags)):
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            raise Bad(f"field '{name}' must be a non-empty list of strings")
    if len(tokens) != len(tags):
        raise Bad(f"{len(tokens)} tokens but {len(tags)} tags")
    spaced = next((i for i, token in enumerate(tokens) if SPACE.search(token)), None)
    if spaced is not None:
        raise Bad(f"token {spaced} ({tokens[spaced]!r}) holds whitespace; split it into tokens")
    try:
        fixed, repaired = repair_iob2(to_iob2(tags, scheme))
    except TagError as exc:
        if isinstance(record.get("line"), int):
            raise Bad(exc.reason, f"{where.rsplit(':', 1)[0]}:{record['line'] + exc.index}") from None
        raise Bad(f"token {exc.index} ({tokens[exc.index]!r}): {exc.reason}") from None
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
