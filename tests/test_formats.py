"""Instruction/chat/text datasets: every file type and record format to one canonical form, bad records by place."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from lmtune.data.formats import FORMATS, detect_format, load_examples
from lmtune.data.load import ReadOptions, iter_records
from lmtune.errors import LmtuneError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def bot(text: str) -> dict:
    return {"role": "assistant", "content": text}


def system(text: str) -> dict:
    return {"role": "system", "content": text}


TOOLS = '[{"name": "lookup", "parameters": {}}]'
# format -> (records, canonical messages or texts): two records each, the second using optional fields
CASES = {
    "alpaca": (
        [
            {"instruction": "Add 2 and 3.", "input": "", "output": "5"},
            {"instruction": "Translate:", "input": "chat", "output": " cat\n", "system": "Be brief."},
        ],
        [[user("Add 2 and 3."), bot("5")], [system("Be brief."), user("Translate:\n\nchat"), bot(" cat\n")]],
    ),
    "messages": (
        [
            {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]},
            {
                "messages": [
                    {"role": "system", "content": "S"},
                    {"role": "user", "content": "Q"},
                    {"role": "assistant", "content": "A"},
                ]
            },
        ],
        [[user("Hi"), bot("Hello!")], [system("S"), user("Q"), bot("A")]],
    ),
    "sharegpt": (
        [
            {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]},
            {
                "conversations": [
                    {"from": "human", "value": "Look it up"},
                    {"from": "function_call", "value": '{"name": "lookup"}'},
                    {"from": "observation", "value": "42"},
                    {"from": "gpt", "value": "It is 42."},
                ],
                "system": "S",
                "tools": TOOLS,
            },
        ],
        [
            [user("Hi"), bot("Hello!")],
            [
                system(f"S\n\nYou can call these tools:\n{TOOLS}"),
                user("Look it up"),
                bot('{"name": "lookup"}'),
                {"role": "tool", "content": "42"},
                bot("It is 42."),
            ],
        ],
    ),
    "prompt_completion": (
        [{"prompt": "2+2=", "completion": "4"}, {"prompt": "Capital of France?", "completion": "Paris"}],
        [[user("2+2="), bot("4")], [user("Capital of France?"), bot("Paris")]],
    ),
    "text": ([{"text": "One  line."}, {"text": " Two\nlines "}], ["One  line.", " Two\nlines "]),
}


def write(path: Path, records: list) -> Path:
    """Write records as the suffix says; CSV cells hold lists as JSON strings, Parquet keeps them nested."""
    if path.suffix == ".json":
        path.write_text(json.dumps(records))
    elif path.suffix == ".jsonl":
        path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    elif path.suffix == ".csv":
        cells = [{k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()} for r in records]
        pd.DataFrame(cells).to_csv(path, index=False)
    else:
        pd.DataFrame(records).to_parquet(path)
    return path


def canonical(examples) -> list:
    return [e.text if e.messages is None else e.messages for e in examples.items]


WHERE_FIRST = {".json": ": record 1", ".jsonl": ":1", ".csv": ":2", ".parquet": ": record 1"}


@pytest.mark.parametrize("suffix", list(WHERE_FIRST))
@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_from_each_file_type(tmp_path, fmt, suffix):
    records, expected = CASES[fmt]
    path = write(tmp_path / f"d{suffix}", records)
    for given in ("auto", fmt):
        examples = load_examples(path, format=given)
        assert (examples.format, examples.path, examples.skipped) == (fmt, str(path), [])
        assert canonical(examples) == expected
        assert examples.items[0].where == f"{path}{WHERE_FIRST[suffix]}"


def test_detection_prefers_chat_fields_and_skips_unfit_records(tmp_path):
    both = {"messages": [], "text": "x", "instruction": "i", "output": "o"}
    assert detect_format([both], "x.json") == "messages"
    assert detect_format([{"conversations": [], "prompt": "p", "completion": "c"}], "x.json") == "sharegpt"
    assert (
        detect_format(
            [(None, "x:1", "malformed"), ({"foo": 1}, "x:2", None), ({"text": "t"}, "x:3", None)], "x"
        )
        == "text"
    )
    path = write(tmp_path / "a.jsonl", [{"instruction": "only"}, *CASES["alpaca"][0]])
    with pytest.raises(LmtuneError, match=r"a\.jsonl:1: missing field 'output'$"):
        load_examples(path)


def test_no_format_fits_names_fields_found_and_formats_accepted(tmp_path):
    path = write(tmp_path / "x.json", [{"foo": 1, "bar": 2}, {"foo": 3}])
    with pytest.raises(LmtuneError) as caught:
        load_examples(path)
    assert str(caught.value) == (
        f"{path}: no record format fits the fields found (foo, bar); accepted: "
        "alpaca (instruction, output[, input, system, history]), messages (messages[, tools]), "
        "sharegpt (conversations[, system, tools]), prompt_completion (prompt, completion), text (text); "
        "set data.format / data.fields"
    )


def test_fields_rename_before_detection(tmp_path):
    path = write(tmp_path / "q.jsonl", [{"question": "Why?", "answer": "Because.", "output": "ignored"}])
    examples = load_examples(path, fields={"instruction": "question", "output": "answer"})
    assert examples.format == "alpaca"
    assert examples.items[0].messages == [user("Why?"), bot("Because.")]
    write(path, [{"question": "Why?", "output": "Because."}])
    with pytest.raises(
        LmtuneError, match=r"q\.jsonl:1: missing field 'answer' \(data.fields maps output to it\)"
    ):
        load_examples(path, format="alpaca", fields={"instruction": "question", "output": "answer"})
    with pytest.raises(LmtuneError, match=r"data.fields: unknown field 'answer'"):
        load_examples(path, fields={"answer": "output"})


def test_alpaca_history_goes_before_the_instruction(tmp_path):
    record = {"instruction": "And 3+3?", "output": "6", "history": [["1+1?", "2"], ["2+2?", "4"]]}
    for suffix in (".json", ".csv"):
        examples = load_examples(write(tmp_path / f"h{suffix}", [record]))
        assert examples.items[0].messages == [
            user("1+1?"),
            bot("2"),
            user("2+2?"),
            bot("4"),
            user("And 3+3?"),
            bot("6"),
        ]


def test_sharegpt_tools_and_system(tmp_path):
    turns = [{"from": "user", "value": "Hi"}, {"from": "assistant", "value": "Hello"}]
    records = [
        {"conversations": turns, "tools": [{"name": "f"}]},  # tools as a list, no system: one is created
        {"conversations": turns, "tools": "[]", "system": ""},  # glaive's "no tools"; empty system ignored
        {"conversations": [{"from": "system", "value": "Turn"}, *turns], "system": "Record", "tools": "f()"},
    ]
    got = canonical(load_examples(write(tmp_path / "s.json", records)))
    assert got[0][0] == system('You can call these tools:\n[{"name": "f"}]')
    assert got[1] == [user("Hi"), bot("Hello")]
    assert got[2][0] == system("Turn\n\nYou can call these tools:\nf()")  # a leading system turn wins


def test_messages_content_parts_and_function_role(tmp_path):
    parts = [{"type": "text", "text": "Line one"}, {"type": "text", "text": "line two"}]
    record = {
        "messages": [
            {"role": "user", "content": parts},
            {"role": "assistant", "content": "call"},
            {"role": "function", "content": "result"},
            {"role": "assistant", "content": [{"type": "text", "text": "Done"}]},
        ]
    }
    got = load_examples(write(tmp_path / "p.jsonl", [record])).items[0].messages
    assert got == [
        user("Line one\nline two"),
        bot("call"),
        {"role": "tool", "content": "result"},
        bot("Done"),
    ]
    record["messages"][0]["content"] = [{"type": "image_url", "image_url": {"url": "x"}}]
    with pytest.raises(
        LmtuneError, match=r"p\.jsonl:1: turn 1: content part of type 'image_url' is not supported"
    ):
        load_examples(write(tmp_path / "p.jsonl", [record]))


def test_text_file_one_record_per_non_blank_line_with_crlf(tmp_path):
    path = tmp_path / "w.raw"
    path.write_bytes(b" = Title = \r\n\r\n  keep  inner  spaces \r\n   \r\nlast")
    examples = load_examples(path)
    assert examples.format == "text"
    assert [(e.text, e.where) for e in examples.items] == [
        (" = Title = ", f"{path}:1"),
        ("  keep  inner  spaces ", f"{path}:3"),
        ("last", f"{path}:5"),
    ]


def conversation(*turns: tuple[str, str]) -> dict:
    return {"messages": [{"role": role, "content": content} for role, content in turns]}


GOOD = conversation(("user", "Q"), ("assistant", "A"))
# (bad record or raw line, reason); each sits on line 3 of a JSONL file between good records
BAD = [
    ({"messages": [{"role": "user", "content": "Q"}]}, "no assistant turn"),
    ({"text": "hi"}, "missing field 'messages'"),
    ({"messages": "not json"}, "field 'messages' must be a list (or a JSON string of one)"),
    ({"messages": 7}, "field 'messages' must be a list, got a number"),
    ({"messages": []}, "empty field 'messages'"),
    (
        conversation(("user", "Q"), ("assistant", 5)),
        "turn 2: content must be a string or a list of text parts, got a number",
    ),
    (
        conversation(("user", "Q"), ("bot", "A")),
        "unknown role 'bot' in turn 2 (allowed: system, user, assistant, tool, function)",
    ),
    (conversation(("user", "Q"), ("assistant", " \n ")), "empty assistant turn (turn 2)"),
    (conversation(("user", "  "), ("assistant", "A")), "empty user turn (turn 1)"),
    (
        conversation(("assistant", "A"), ("user", "Q"), ("assistant", "A")),
        "the first turn after any system message is from the assistant, not the user",
    ),
    (
        conversation(("user", "Q"), ("system", "S"), ("assistant", "A")),
        "system message at turn 2 is not first",
    ),
    (
        conversation(("user", "Q"), ("assistant", "A"), ("user", "More?")),
        "ends with a user turn; the last turn must be the assistant's",
    ),
    (
        conversation(("user", "Q"), ("assistant", "A"), ("tool", "r")),
        "ends with a tool turn; the last turn must be the assistant's",
    ),
    ('{"messages": [}', "malformed JSON line: Expecting value at column 15"),
    ("[1, 2]", "expected a JSON object, got a list"),
    (
        {"messages": [{"content": "Q"}, {"role": "assistant", "content": "A"}]},
        "turn 1 has no 'role' (or 'from')",
    ),
]


@pytest.mark.parametrize(("bad", "reason"), BAD, ids=[reason.split(";")[0][:40] for _, reason in BAD])
def test_bad_record_fails_or_is_skipped_by_line(tmp_path, bad, reason):
    path = write(tmp_path / "c.jsonl", [GOOD, GOOD, bad, GOOD])
    with pytest.raises(LmtuneError) as caught:
        load_examples(path)
    assert str(caught.value) == f"{path}:3: {reason}"
    examples = load_examples(path, on_error="skip")
    assert examples.skipped == [(f"{path}:3", reason)]
    assert [e.where for e in examples.items] == [f"{path}:1", f"{path}:2", f"{path}:4"]


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"instruction": "I"}, "missing field 'output'"),
        ({"instruction": "I", "output": 5}, "field 'output' must be a string, got a number"),
        ({"instruction": "I", "output": ["a", "b"]}, "field 'output' must be a string, got a list"),
        ({"instruction": "I", "output": "  "}, "empty field 'output'"),
        ({"instruction": None, "output": "O"}, "empty field 'instruction'"),
        (
            {"instruction": "I", "output": "O", "history": [["only one"]]},
            "history item 1 must be a [user, assistant] pair of non-empty strings",
        ),
    ],
)
def test_bad_alpaca_records_by_record_number(tmp_path, record, reason):
    path = write(tmp_path / "a.json", [CASES["alpaca"][0][0], record])
    with pytest.raises(
        LmtuneError, match=f"^{path}: record 2: {reason}$".replace("[", r"\[").replace("]", r"\]")
    ):
        load_examples(path)
    assert load_examples(path, on_error="skip").skipped == [(f"{path}: record 2", reason)]


def test_bad_text_and_prompt_completion_records(tmp_path):
    path = write(tmp_path / "t.parquet", [{"text": "fine"}, {"text": " \t"}, {"text": None}])
    examples = load_examples(path, on_error="skip")
    assert [e.text for e in examples.items] == ["fine"]
    assert examples.skipped == [
        (f"{path}: record 2", "empty field 'text'"),
        (f"{path}: record 3", "empty field 'text'"),
    ]
    path = write(
        tmp_path / "p.jsonl", [{"prompt": "P", "completion": "C"}, {"prompt": "P", "completion": ""}]
    )
    with pytest.raises(LmtuneError, match=r"p\.jsonl:2: empty field 'completion'"):
        load_examples(path)


WRONG_COUNT = (
    "3 fields where 2 are expected (separator ','); check data.separator, data.quoting and data.columns"
)


def test_csv_line_numbers_follow_multiline_cells_and_count_mismatches(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text('instruction,output\n"spans\ntwo lines",a\nI,\n\nI,b,extra\nI,"ok"\n')
    examples = load_examples(path, on_error="skip")
    assert [e.where for e in examples.items] == [f"{path}:2", f"{path}:7"]
    assert examples.skipped == [
        (f"{path}:4", "empty field 'output'"),
        (f"{path}:6", WRONG_COUNT),
    ]
    assert len(examples.items) + len(examples.skipped) == 4


@pytest.mark.parametrize("suffix", [".csv", ".txt", ".jsonl"])
def test_undecodable_bytes_point_to_the_line(tmp_path, suffix):
    lines = {
        ".csv": ["text", "caf\u00e9 ok", "na\u00efve", "plain"],
        ".txt": ["first", "caf\u00e9", "plain"],
        ".jsonl": ['{"text": "first"}', '{"text": "caf\u00e9"}', '{"text": "plain"}'],
    }[suffix]
    path = tmp_path / f"enc{suffix}"
    path.write_bytes("\n".join(lines).encode("latin-1"))
    line = 2
    with pytest.raises(
        LmtuneError, match=rf"enc\{suffix}:{line}: byte 0x(e9|ef) is not valid utf-8; set data.encoding"
    ):
        load_examples(path)
    skipped = load_examples(path, on_error="skip")
    assert len(skipped.items) + len(skipped.skipped) == len(lines) - (suffix == ".csv")
    assert "caf\u00e9" in "".join(e.text for e in load_examples(path, encoding="latin-1").items)


def test_nothing_usable_and_file_level_problems(tmp_path):
    path = write(tmp_path / "bad.jsonl", ["{", {"messages": [{"role": "user", "content": "Q"}]}])
    with pytest.raises(LmtuneError, match=r"bad\.jsonl:1: malformed JSON"):
        load_examples(path)
    with pytest.raises(
        LmtuneError, match=r"bad\.jsonl: no usable record: all 2 are bad \(first: .*bad\.jsonl:1: malformed"
    ):
        load_examples(path, on_error="skip")
    with pytest.raises(LmtuneError, match=r"data file '.*nope\.json' does not exist"):
        load_examples(tmp_path / "nope.json")
    (tmp_path / "e.jsonl").write_text("\n \n")
    with pytest.raises(LmtuneError, match=r"e\.jsonl: no records found"):
        load_examples(tmp_path / "e.jsonl")
    (tmp_path / "broken.json").write_text('[\n{"text": "a"},\n{"text": }\n]')
    with pytest.raises(LmtuneError, match=r"broken\.json:3: malformed JSON"):
        load_examples(tmp_path / "broken.json")
    (tmp_path / "x.xlsx").write_text("x")
    with pytest.raises(LmtuneError, match=r"cannot tell the file type from '\.xlsx'"):
        load_examples(tmp_path / "x.xlsx")
    with pytest.raises(LmtuneError, match=r"data.format: unknown format 'chatml'"):
        load_examples(path, format="chatml")


def test_json_object_holding_a_list_and_jsonl_named_json(tmp_path):
    (tmp_path / "o.json").write_text(json.dumps({"version": 1, "data": [{"text": "a"}, {"text": "b"}]}))
    assert [e.where for e in load_examples(tmp_path / "o.json").items][
        -1
    ] == f"{tmp_path / 'o.json'}: record 2"
    (tmp_path / "one.json").write_text(
        json.dumps({"instruction": "I", "output": "O", "history": [["a", "b"]]})
    )
    assert len(load_examples(tmp_path / "one.json").items) == 1  # a lone record, not a holder of `history`
    (tmp_path / "two.json").write_text(json.dumps({"train": [{"text": "a"}], "test": [{"text": "b"}]}))
    with pytest.raises(
        LmtuneError, match=r"two\.json: the object holds several lists of records \(train, test\)$"
    ):
        load_examples(tmp_path / "two.json")
    path = tmp_path / "lines.json"  # what datasets' to_json writes
    path.write_text('{"text": "a"}\n{"text": "b"}\n')
    assert [(r, w) for r, w, _ in iter_records(path, ReadOptions())] == [
        ({"text": "a"}, f"{path}:1"),
        ({"text": "b"}, f"{path}:2"),
    ]


needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="shared data not present")


@needs_shared
def test_real_alpaca_1k():
    examples = load_examples(SHARED / "alpaca_1k" / "alpaca_data_1k.json")
    assert (len(examples.items), examples.format, examples.skipped) == (1000, "alpaca", [])
    assert all([m["role"] for m in e.messages] == ["user", "assistant"] for e in examples.items)


@needs_shared
def test_real_code_alpaca_has_two_empty_outputs():
    path = SHARED / "code_alpaca_2k" / "code_alpaca_2k.json"
    with pytest.raises(LmtuneError, match=r"code_alpaca_2k\.json: record 238: empty field 'output'$"):
        load_examples(path)
    examples = load_examples(path, on_error="skip")
    assert len(examples.items) == 2015
    assert [where for where, _ in examples.skipped] == [f"{path}: record 238", f"{path}: record 1860"]


@needs_shared
def test_real_glaive_toolcall_sharegpt():
    examples = load_examples(SHARED / "glaive_toolcall_sharegpt" / "glaive_toolcall_en_demo.json")
    assert (len(examples.items), examples.format) == (300, "sharegpt")
    with_tools = [e for e in examples.items if e.messages[0]["role"] == "system"]
    with_tool_turns = [e for e in examples.items if any(m["role"] == "tool" for m in e.messages)]
    assert (len(with_tools), len(with_tool_turns)) == (191, 153)  # 109 records have tools "[]"
    assert all("You can call these tools:\n[{" in e.messages[0]["content"] for e in with_tools)
    assert sum(len(e.messages) for e in examples.items) == 1914 + 191


@needs_shared
def test_real_wikitext_raw_lines():
    examples = load_examples(SHARED / "wikitext2" / "raw" / "wiki.test.raw")
    assert (len(examples.items), examples.format) == (2891, "text")
    assert not any("\r" in e.text for e in examples.items)
