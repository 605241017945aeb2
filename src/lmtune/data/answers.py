"""Extractive question-answering data: a question, the context it is asked about, and the answers as
spans of the context (SQuAD's `answers: [{text, answer_start}]`, or the `{text: [...], answer_start:
[...]}` of Hugging Face datasets); no answer at all (or `is_impossible`) is an unanswerable question,
as in SQuAD v2.

A QA row's `text` is its context — the text its questions share, so the context is what the leakage
check compares and what keeps a context's questions in one split — and its `text_pair` the question.

The answers must survive the text steps (cleaning, PII scrubbing), which change the context and with it
every offset. So each answer's two ends are marked in the context with private-use characters before
the steps run and read off after (`settle`): the offsets follow whatever the steps did (an answer that
is private data becomes its placeholder, as the context does), and an answer the steps removed entirely
(markup) is gone; a question that loses all its answers is dropped and counted. Known limit: an answer
boundary that falls inside a piece of private data (an answer that is part of an e-mail address) splits
it with a mark, which can hide it from the detectors.
"""

from __future__ import annotations

import json
import re

from lmtune.data.formats import Bad

# answer i's start and end marks: two code points of Supplementary Private Use Area-A each
MARK = 0xF0000
MARKS = re.compile("[\U000f0000-\U000fffff]")


def _answers(record: dict) -> list[tuple[str, int]]:
    """(text, answer_start) of each answer, from either layout; [] for an unanswerable question."""
    given = record.get("answers")
    if given is None or record.get("is_impossible") is True:
        return []
    if isinstance(given, dict):  # Hugging Face datasets: parallel lists
        texts, starts = given.get("text"), given.get("answer_start")
        if not isinstance(texts, list) or not isinstance(starts, list) or len(texts) != len(starts):
            raise Bad("field 'answers' must hold lists 'text' and 'answer_start' of one length")
        given = [{"text": t, "answer_start": s} for t, s in zip(texts, starts, strict=True)]
    if not isinstance(given, list):
        raise Bad("field 'answers' must be a list of {text, answer_start}")
    out = []
    for i, answer in enumerate(given):
        if not isinstance(answer, dict):
            raise Bad(f"answers[{i}] must be an object {{text, answer_start}}")
        text, start = answer.get("text"), answer.get("answer_start")
        if not isinstance(text, str) or not text.strip():
            raise Bad(f"answers[{i}]: 'text' must be a non-empty string")
        if not isinstance(start, int) or isinstance(start, bool) or start < 0:
            raise Bad(f"answers[{i}]: 'answer_start' must be an offset ≥ 0, got {start!r}")
        out.append((text, start))
    return out


def from_record(record: dict) -> tuple[str, str, str]:
    """(the context with its answers' ends marked, the question, the answers' texts as a JSON list) of a
    QA record; raises Bad for what is wrong with it (an answer_start that does not find its text)."""
    question, context = record.get("question"), record.get("context")
    for name, value in (("question", question), ("context", context)):
        if not isinstance(value, str) or not value.strip():
            raise Bad(f"field '{name}' must be a non-empty string")
    if MARKS.search(context):
        raise Bad("the context holds a character of Supplementary Private Use Area-A, which lmtune reserves")
    answers = _answers(record)
    marks: list[tuple[int, str]] = []
    for i, (text, start) in enumerate(answers):
        found = context[start : start + len(text)]
        if found != text:
            raise Bad(
                f"answers[{i}]: answer_start {start} does not find its text {text[:40]!r} in the context "
                f"(there: {found[:40]!r})"
            )
        marks += [(start, chr(MARK + 2 * i)), (start + len(text), chr(MARK + 2 * i + 1))]
    marked = context
    for position, mark in sorted(marks, key=lambda m: (m[0], m[1]), reverse=True):
        marked = marked[:position] + mark + marked[position:]
    return marked, question, json.dumps([text for text, _ in answers], ensure_ascii=False)


def settle(text: str, label: str) -> tuple[str, str] | None:
    """(the context without marks, its answers as a JSON list of {text, start}) after the text steps;
    None when the question had answers and the steps removed every one of them."""
    ends: dict[int, list[int | None]] = {}
    for removed, match in enumerate(MARKS.finditer(text)):
        index, end = divmod(ord(match.group()) - MARK, 2)
        ends.setdefault(index, [None, None])[end] = match.start() - removed
    plain = MARKS.sub("", text)
    expected = len(json.loads(label))
    answers = []
    for index in range(expected):
        start, stop = ends.get(index, [None, None])
        if start is not None and stop is not None and plain[start:stop].strip():
            answers.append({"text": plain[start:stop], "start": start})
    if expected and not answers:
        return None
    return plain, json.dumps(answers, ensure_ascii=False)
