"""Preference records in the formats people have them in, read into one canonical form.

A paired record is a prompt (chat messages ending with the user's turn, a system turn allowed first) and
two answers to it, the chosen one and the rejected one; an unpaired record (KTO) is a prompt, one
answer and whether it is desirable. Accepted, detected from the fields of the first readable records:

- pairs:            prompt + chosen + rejected, each a string or chat messages (TRL's explicit prompt)
- implicit:         chosen + rejected as whole conversations sharing every turn but the last (TRL)
- hh:               chosen + rejected as Anthropic HH transcripts ("\\n\\nHuman: … \\n\\nAssistant: …")
- sharegpt_ranking: conversations + chosen + rejected ({from, value} turns; LLaMA-Factory)
- openai:           input.messages + preferred_output + non_preferred_output (OpenAI preference JSONL)
- unpaired:         prompt + completion + label, or messages + label (KTO; label a boolean)

Every problem is a formats.Bad naming the record's problem; the pipeline adds file:line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lmtune.data.formats import MESSAGE_ROLES, SHAREGPT_ROLES, Bad, _turns, group_of, rename, text_only
from lmtune.data.load import kind_of
from lmtune.errors import LmtuneError, listing

PREFERENCE_FORMATS = ("pairs", "implicit", "hh", "sharegpt_ranking", "openai", "unpaired")
# the row kinds preference data makes (lmtune.data.rows) and their text fields: "messages" is the prompt
KINDS = {
    "preference": ("messages", "chosen", "rejected"),  # a prompt and two answers to it
    "unpaired_preference": ("messages", "completion"),  # a prompt, one answer, label: desirable?
}
ANSWERS = (
    "chosen",
    "rejected",
    "completion",
)  # the rows' answer columns (unpaired label: "true" = desirable)
FIELDS = {
    "sharegpt_ranking": ("conversations", "chosen", "rejected"),
    "openai": ("input", "preferred_output", "non_preferred_output"),
    "pairs": ("prompt", "chosen", "rejected"),
    "unpaired": ("label",),  # with prompt + completion, or messages
    "implicit": ("chosen", "rejected"),  # hh when the answers are transcripts
}
HH_TURN = re.compile(r"\n\n(Human|Assistant): ")
HH_ROLES = {"Human": "user", "Assistant": "assistant"}


@dataclass
class Preference:
    prompt: list[dict]  # messages; the last is the user's
    chosen: str | None = None  # paired: the preferred answer
    rejected: str | None = None
    completion: str | None = None  # unpaired: the answer, and whether it is desirable
    desirable: bool | None = None

    @property
    def answers(self) -> list[str]:
        return [a for a in (self.chosen, self.rejected, self.completion) if a is not None]


def detect(records: list[dict], path) -> str:
    """The preference format of the first record whose fields fit one."""
    seen: dict[str, None] = {}
    for record in records:
        if not isinstance(record, dict):
            continue
        for fmt, fields in FIELDS.items():
            if all(name in record for name in fields):
                if fmt == "implicit" and isinstance(record["chosen"], str):
                    return "hh"
                return fmt
        seen.update(dict.fromkeys(map(str, record)))
    raise LmtuneError(
        f"{path}: no preference format fits the fields found ({listing(seen)}); accepted: "
        "pairs (prompt, chosen, rejected), implicit (chosen, rejected as conversations), "
        "hh (chosen, rejected as '\\n\\nHuman: … \\n\\nAssistant: …' transcripts), "
        "sharegpt_ranking (conversations, chosen, rejected), "
        "openai (input.messages, preferred_output, non_preferred_output), "
        "unpaired (prompt, completion, label or messages, label); set data.format"
    )


def read(fmt: str, record: dict) -> Preference:
    """One record as a Preference (formats.Bad when it is not a usable one)."""
    if fmt == "unpaired":
        return _unpaired(record)
    prompt, chosen, rejected = _PAIRED[fmt](record)
    _check_prompt(prompt)
    if chosen == rejected:
        raise Bad("chosen and rejected answers are identical: the pair says nothing")
    return Preference(prompt, chosen=chosen, rejected=rejected)


def _check_prompt(prompt: list[dict]) -> None:
    body = prompt[1:] if prompt and prompt[0]["role"] == "system" else prompt
    if not body:
        raise Bad("empty prompt: no user turn")
    if body[-1]["role"] != "user":
        raise Bad(f"the prompt ends with a {body[-1]['role']} turn; it must end with the user's")


def _messages(value, what: str, roles=MESSAGE_ROLES) -> list[dict]:
    """A string (one user turn) or a list of turns."""
    if isinstance(value, str):
        if not value.strip():
            raise Bad(f"empty {what}")
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise Bad(f"field '{what}' must be a string or a list of turns, got {kind_of(value)}")
    return _turns(value, roles)


def _answer(value, what: str, roles=MESSAGE_ROLES) -> str:
    """An answer: a string, one assistant turn ({role, content} / {from, value}), or a list of one."""
    if isinstance(value, dict):
        value = [value]
    if isinstance(value, list):
        turns = _turns(value, roles) if value else []
        if len(turns) != 1 or turns[0]["role"] != "assistant":
            raise Bad(f"field '{what}' must be one assistant turn, got {len(turns)} turn(s)")
        value = turns[0]["content"]
    if not isinstance(value, str):
        raise Bad(f"field '{what}' must be a string or an assistant turn, got {kind_of(value)}")
    if not value.strip():
        raise Bad(f"empty {what} answer")
    return value


def _pairs(record: dict):
    return (
        _messages(record["prompt"], "prompt"),
        _answer(record["chosen"], "chosen"),
        _answer(record["rejected"], "rejected"),
    )


def _split_conversations(chosen: list[dict], rejected: list[dict]):
    """Two conversations that share every turn but the last: (the shared prompt, each last answer)."""
    if len(chosen) < 2 or len(rejected) < 2:
        raise Bad("chosen and rejected must each hold the prompt's turns and an answer")
    if chosen[:-1] != rejected[:-1]:
        raise Bad(
            "chosen and rejected do not share their turns before the last: not two answers to one prompt"
        )
    last = (chosen[-1], rejected[-1])
    if any(turn["role"] != "assistant" for turn in last):
        raise Bad("the last turn of chosen and of rejected must be the assistant's")
    return chosen[:-1], last[0]["content"], last[1]["content"]


def _implicit(record: dict):
    chosen, rejected = (_messages(record[k], k) for k in ("chosen", "rejected"))
    return _split_conversations(chosen, rejected)


def hh_turns(transcript, what: str) -> list[dict]:
    """An Anthropic HH transcript ("\\n\\nHuman: …\\n\\nAssistant: …") as chat messages."""
    if not isinstance(transcript, str):
        raise Bad(f"field '{what}' must be a transcript string, got {kind_of(transcript)}")
    parts = HH_TURN.split(transcript)
    if parts[0].strip() or len(parts) < 3:
        raise Bad(f"field '{what}' is not a '\\n\\nHuman: … \\n\\nAssistant: …' transcript")
    turns = [
        {"role": HH_ROLES[role], "content": text.strip()}
        for role, text in zip(parts[1::2], parts[2::2], strict=True)
    ]
    for number, turn in enumerate(turns, 1):
        if not turn["content"]:
            raise Bad(f"empty {turn['role']} turn (turn {number}) in {what}")
    return turns


def _hh(record: dict):
    return _split_conversations(
        hh_turns(record["chosen"], "chosen"), hh_turns(record["rejected"], "rejected")
    )


def _sharegpt_ranking(record: dict):
    return (
        _messages(record["conversations"], "conversations", SHAREGPT_ROLES),
        _answer(record["chosen"], "chosen", SHAREGPT_ROLES),
        _answer(record["rejected"], "rejected", SHAREGPT_ROLES),
    )


def _openai(record: dict):
    given = record["input"]
    if not isinstance(given, dict) or "messages" not in given:
        raise Bad("field 'input' must be an object with 'messages'")
    return (
        _messages(given["messages"], "input.messages"),
        _answer(record["preferred_output"], "preferred_output"),
        _answer(record["non_preferred_output"], "non_preferred_output"),
    )


_PAIRED = {
    "pairs": _pairs,
    "implicit": _implicit,
    "hh": _hh,
    "sharegpt_ranking": _sharegpt_ranking,
    "openai": _openai,
}


def _unpaired(record: dict) -> Preference:
    label = record["label"]
    if isinstance(label, str) and label.strip().lower() in ("true", "false"):
        label = label.strip().lower() == "true"
    if not isinstance(label, bool):
        raise Bad(f"field 'label' must be true or false (is the answer desirable?), got {kind_of(label)}")
    if "messages" in record:
        turns = _messages(record["messages"], "messages")
        if len(turns) < 2 or turns[-1]["role"] != "assistant":
            raise Bad("messages must end with the assistant's answer")
        prompt, completion = turns[:-1], turns[-1]["content"]
    elif "prompt" in record and "completion" in record:
        prompt, completion = (
            _messages(record["prompt"], "prompt"),
            _answer(record["completion"], "completion"),
        )
    else:
        raise Bad(
            f"an unpaired record needs prompt + completion or messages (fields found: {listing(record)})"
        )
    _check_prompt(prompt)
    return Preference(prompt, completion=completion, desirable=label)


def convert(record: dict, where: str, spec, fmt: str) -> tuple:
    """(text, messages, label, group, answers) of one record for the row pipeline (lmtune.data.rows):
    the prompt as messages, the answers by column, an unpaired label as "true"/"false"."""
    record = rename(record, spec.fields)
    pair = read(fmt, record)
    text_only(*pair.answers, *(m["content"] for m in pair.prompt))
    answers = {name: getattr(pair, name) for name in ANSWERS if getattr(pair, name) is not None}
    label = None if pair.desirable is None else str(pair.desirable).lower()
    return None, pair.prompt, label, group_of(record, spec.group_column), answers
