"""Preference records: every accepted format read into one form, every bad-record kind named by file:line,
.gz files, and the data pipeline applied to every text field of a pair (PII in an answer, dedup, leakage
on the prompt, pairs of one prompt kept in one split)."""

from __future__ import annotations

import gzip
import json

import pytest

from lmtune.config import validate
from lmtune.data import preference
from lmtune.data.formats import Bad
from lmtune.data.pipeline import prepare_data
from lmtune.errors import LmtuneError

USER = {"role": "user", "content": "What is the capital of France?"}
GOOD, BAD = "Paris.", "Lyon, I think."
RECORDS = {
    "pairs": {"prompt": "What is the capital of France?", "chosen": GOOD, "rejected": BAD},
    "pairs-chat": {
        "prompt": [USER],
        "chosen": [{"role": "assistant", "content": GOOD}],
        "rejected": [{"role": "assistant", "content": BAD}],
    },
    "implicit": {
        "chosen": [USER, {"role": "assistant", "content": GOOD}],
        "rejected": [USER, {"role": "assistant", "content": BAD}],
    },
    "hh": {
        "chosen": f"\n\nHuman: {USER['content']}\n\nAssistant: {GOOD}",
        "rejected": f"\n\nHuman: {USER['content']}\n\nAssistant: {BAD}",
    },
    "sharegpt_ranking": {
        "conversations": [{"from": "human", "value": USER["content"]}],
        "chosen": {"from": "gpt", "value": GOOD},
        "rejected": {"from": "gpt", "value": BAD},
    },
    "openai": {
        "input": {"messages": [USER]},
        "preferred_output": [{"role": "assistant", "content": GOOD}],
        "non_preferred_output": [{"role": "assistant", "content": BAD}],
    },
}


@pytest.mark.parametrize("name", list(RECORDS))
def test_every_paired_format_reads_to_the_same_pair(name):
    record = RECORDS[name]
    fmt = preference.detect([record], "x.jsonl")
    assert fmt == name.split("-")[0]
    pair = preference.read(fmt, record)
    assert (pair.prompt, pair.chosen, pair.rejected) == ([USER], GOOD, BAD)


def test_unpaired_records_in_both_layouts():
    kto = {"messages": [USER, {"role": "assistant", "content": GOOD}], "label": True}
    trl = {"prompt": USER["content"], "completion": BAD, "label": False}
    assert preference.detect([kto], "k.json") == preference.detect([trl], "k.json") == "unpaired"
    a, b = preference.read("unpaired", kto), preference.read("unpaired", trl)
    assert (a.prompt, a.completion, a.desirable) == ([USER], GOOD, True)
    assert (b.prompt, b.completion, b.desirable) == ([USER], BAD, False)


def test_no_format_names_the_fields_found_and_the_formats_accepted():
    with pytest.raises(LmtuneError) as caught:
        preference.detect([{"question": "q", "answer": "a"}], "p.jsonl")
    message = str(caught.value)
    assert message.startswith(
        "p.jsonl: no preference format fits the fields found (question, answer); accepted: pairs"
    )
    assert "hh (chosen, rejected as" in message and "openai (input.messages" in message


@pytest.mark.parametrize(
    "record, reason",
    [
        ({**RECORDS["pairs"], "rejected": GOOD}, "chosen and rejected answers are identical"),
        ({**RECORDS["pairs"], "chosen": "  "}, "empty chosen answer"),
        (
            {**RECORDS["pairs-chat"], "prompt": [USER, {"role": "assistant", "content": "Hm?"}]},
            "the prompt ends with a assistant turn; it must end with the user's",
        ),
        (
            {"chosen": "\n\nHuman: hi\n\nAssistant: yes", "rejected": "\n\nHuman: bye\n\nAssistant: no"},
            "chosen and rejected do not share their turns before the last",
        ),
        (
            {"chosen": "hello", "rejected": "world"},
            "field 'chosen' is not a '\\n\\nHuman: … \\n\\nAssistant: …' transcript",
        ),
    ],
)
def test_bad_records_say_what_is_wrong(record, reason):
    fmt = preference.detect([record], "x")
    with pytest.raises(Bad) as caught:
        preference.read(fmt, record)
    assert str(caught.value).startswith(reason)


def write_jsonl(path, records, compress=False):
    text = "".join(json.dumps(r) + "\n" for r in records)
    if compress:
        with gzip.open(path, "wt", encoding="utf-8") as out:
            out.write(text)
    else:
        path.write_text(text)
    return path


def pairs(n: int, start: int = 0) -> list[dict]:
    return [
        {
            "prompt": f"Question number {i}: what is {i} plus {i}?",
            "chosen": f"It is {2 * i}.",
            "rejected": f"Maybe {i}.",
        }
        for i in range(start, start + n)
    ]


def config_for(train, **data):
    return validate(
        {"task": "preference", "data": {"train": str(train), **data}, "model": {"name": "unused"}}, "test"
    )


def test_bad_pairs_in_a_gzipped_file_are_named_by_file_and_line(tmp_path):
    records = pairs(40)
    records[6] = {**records[6], "rejected": records[6]["chosen"]}
    path = write_jsonl(tmp_path / "prefs.jsonl.gz", records, compress=True)
    with pytest.raises(LmtuneError) as caught:
        prepare_data(config_for(path), "preference")
    assert str(caught.value) == (
        f"{path}:7: chosen and rejected answers are identical: the pair says nothing "
        "(data.on_error = skip drops such rows)"
    )
    data = prepare_data(config_for(path, on_error="skip"), "preference")
    assert data.report["bad_rows"]["count"] == 1 and sum(len(s) for s in data.splits.values()) == 39
    damaged = tmp_path / "cut.jsonl.gz"
    damaged.write_bytes(gzip.compress(b"".join(json.dumps(r).encode() + b"\n" for r in pairs(200)))[:300])
    with pytest.raises(LmtuneError, match=r"cut\.jsonl\.gz: a damaged gzip file"):
        prepare_data(config_for(damaged), "preference")


def test_every_text_field_is_scrubbed_and_pairs_of_one_prompt_share_a_split(tmp_path):
    records = pairs(60)
    records[3]["chosen"] = "Write to jane.doe@example.com for it."
    # four answer pairs to one prompt: one unit for the split, and not duplicates of each other
    records += [
        {"prompt": "Name a colour.", "chosen": c, "rejected": "No."}
        for c in ("Red.", "Blue.", "Green.", "Grey.")
    ]
    path = write_jsonl(tmp_path / "prefs.jsonl", records)
    data = prepare_data(config_for(path, split={"test": 0.3, "validation": 0.1}), "preference")
    rows = [row for split in data.splits.values() for row in split]
    assert len(rows) == 64  # nothing deduplicated away: the answers differ
    scrubbed = next(r for r in rows if r["where"].endswith(":4"))
    assert "jane.doe" not in scrubbed["chosen"] and "<EMAIL>" in scrubbed["chosen"]
    colour = {name for name, split in data.splits.items() for r in split if "colour" in r["messages"]}
    assert len(colour) == 1  # all four in one split
    assert data.report["pii"]["hits"]["email"] == 1


def test_a_test_pair_whose_prompt_is_in_train_is_leakage(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", pairs(30))
    test = pairs(10, start=100)
    test[0] = {**pairs(1, start=5)[0], "chosen": "Ten, surely.", "rejected": "Five."}  # train's prompt 5
    path = write_jsonl(tmp_path / "test.jsonl", test)
    data = prepare_data(config_for(train, test=str(path)), "preference")
    found = data.report["leakage"]["found"]["test"]
    assert found["exact"] == 1 and found["examples"][0]["other"].endswith("test.jsonl:1")


def test_data_format_is_checked_against_the_tasks_reader(tmp_path):
    """data.format names one of the reader's formats (lmtune.data.rows.READERS), for that task's data."""
    path = write_jsonl(tmp_path / "prefs.jsonl", pairs(20))
    with pytest.raises(LmtuneError) as caught:
        prepare_data(config_for(path, format="alpaca"), "preference")
    assert str(caught.value) == (
        "data.format: unknown format 'alpaca' for preference data (accepted: auto, pairs, implicit, hh, "
        "sharegpt_ranking, openai, unpaired)"
    )
    sft = validate({"task": "sft", "data": {"train": str(path), "format": "hh"}}, "test")
    with pytest.raises(
        LmtuneError, match=r"unknown format 'hh' for generative data \(accepted: auto, alpaca"
    ):
        prepare_data(sft, "generative")
    assert prepare_data(config_for(path, format="pairs"), "preference").format == "pairs"
