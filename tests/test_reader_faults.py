"""Faults of the readers that used to lose rows or mislead: a stray quote swallowing the rest of a CSV,
a file whose name looks like a glob, and empty splits whose message did not say what emptied them. Every
line of a line-oriented file is accounted for in the data report."""

from __future__ import annotations

import pytest
from conftest import synthetic_rows, write_csv

from lmtune.cli import main
from lmtune.config import validate
from lmtune.data import load
from lmtune.data.load import ReadOptions, expand, iter_records, source
from lmtune.data.pipeline import prepare_data
from lmtune.errors import LmtuneError

NO_SPLIT = {"split": {"test": 0.0, "validation": 0.0}}
STRAY = "(a stray '\"'? fix it, or set data.quoting: none if the file quotes no field)"


def labelled(train, **data):
    raw = {"data": {"train": str(train), **data}}
    return prepare_data(validate(raw, "test"), "labelled", require_test=False)


def csv_lines(path, lines: list[str], end: str = "\n") -> str:
    path.write_text(end.join(lines) + end, newline="")
    return path


def numbered(n: int = 80) -> list[str]:
    """A header and n distinct rows: line k + 1 of the file holds row k."""
    return ["text,label", *(f"row {k},pos" for k in range(1, n + 1))]


def read(path, **options):
    """(good rows, {where: problem}, Source) of one file, read as lmtune reads it."""
    opts = ReadOptions(**options)
    src = source(path, opts)
    records = list(iter_records(path, opts, src))
    good = [record for record, _, problem in records if problem is None]
    return good, {where: problem for _, where, problem in records if problem}, src


# ------------------------------------------------------------------------------- stray quotes


def test_stray_quote_running_to_the_end_is_one_bad_row_and_the_rest_is_kept(tmp_path):
    lines = numbered()
    lines[21] = '"bad row,neg'  # line 22: a quote that never closes
    path = csv_lines(tmp_path / "stray.csv", lines)
    reason = (
        f"a quoted field opens here and runs 60 lines to the end of the file {STRAY}; "
        "the 59 lines after it are read as rows again"
    )
    result = labelled(path, on_error="skip", dedup={"exact": False}, **NO_SPLIT)
    assert len(result.splits["train"]) == 79
    assert result.report["bad_rows"]["listed"] == [
        {"where": f"{path}:22", "reason": reason, "split": "train"}
    ]
    kept = {row["text"] for row in result.splits["train"]}
    assert kept == {f"row {k}" for k in range(1, 81)} - {"row 21"}
    with pytest.raises(LmtuneError) as error:
        labelled(path, **NO_SPLIT)
    assert str(error.value) == f"{path}:22: {reason} (data.on_error = skip drops such rows)"
    assert "\n" not in str(error.value)


def test_lines_between_two_stray_quotes_are_read_again(tmp_path):
    lines = numbered()
    lines[21] = '"bad row,neg'  # csv reads lines 22-41 as one field: the quote on 41 closes it
    lines[40] = '"other,neg'
    good, problems, _ = read(csv_lines(tmp_path / "two.csv", lines))
    assert len(good) == 78
    assert problems == {
        f"{tmp_path / 'two.csv'}:22": "a quoted field opens here and runs 20 lines to line 41, where text "
        f"follows its closing quote {STRAY}; the 19 lines after it are read as rows again",
        f"{tmp_path / 'two.csv'}:41": f"a quoted field opens here and runs 41 lines to the end of the file "
        f"{STRAY}; the 40 lines after it are read as rows again",
    }


def test_multiline_record_with_a_wrong_field_count_gives_its_lines_back(tmp_path):
    lines = numbered(10)
    lines[3] = '"bad row,neg'  # line 4; line 7 closes the quote and ends the record: one field
    lines[6] = 'oops"'
    path = csv_lines(tmp_path / "count.csv", lines)
    good, problems, src = read(path)
    assert [row["text"] for row in good] == [
        "row 1",
        "row 2",
        "row 4",
        "row 5",
        "row 7",
        "row 8",
        "row 9",
        "row 10",
    ]
    assert problems == {
        f"{path}:4": "1 fields where 2 are expected (separator ',') in a record whose quoted field opens here "
        "and runs 4 lines to line 7; the 3 lines after it are read as rows again (check data.separator, "
        "data.quoting and data.columns)",
        f"{path}:7": "1 fields where 2 are expected (separator ','); check data.separator, data.quoting and "
        "data.columns",
    }
    assert src.lines.continuation == 0 and src.lines.records == 10


def test_quoted_fields_that_really_span_lines_stay_one_row(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_bytes(
        b'text,label\r\n"First paragraph.\r\n\r\nSecond one, with a comma.",pos\r\nplain,neg\r\n'
        b'"He said ""wow""\nand left" ,pos\r\n"three\nshort\nlines",neg\r\nlast,pos'  # no final newline
    )
    good, problems, src = read(path)
    assert problems == {}
    assert [row["text"] for row in good] == [
        "First paragraph.\r\n\r\nSecond one, with a comma.",
        "plain",
        'He said "wow"\nand left ',
        "three\nshort\nlines",
        "last",
    ]
    lines = src.lines
    assert (lines.physical, lines.header, lines.records, lines.continuation) == (11, 1, 5, 5)
    assert (lines.multiline, lines.longest) == (3, (2, 3))


def test_unclosed_quote_on_the_last_line_and_in_the_header(tmp_path):
    path = csv_lines(tmp_path / "last.csv", ["text,label", "fine,pos", '"open,neg'])
    good, problems, _ = read(path)
    assert [row["text"] for row in good] == ["fine"]
    assert problems == {
        f"{path}:3": f"a quoted field opens here and does not close by the end of the file {STRAY}"
    }
    header = csv_lines(tmp_path / "header.csv", ['text,"label', "a,pos", "b,neg"])
    with pytest.raises(LmtuneError) as error:
        read(header)
    assert str(error.value) == (
        f"{header}:1: the header row is broken: a quoted field opens here and runs 3 lines to the end of the "
        f"file {STRAY}"
    )


def test_quotes_are_plain_characters_with_quoting_none_and_headerless_files_reread(tmp_path):
    tsv = csv_lines(tmp_path / "glue.tsv", ["sentence\tlabel", '"quoted start\t1', "", "next\t0"])
    good, problems, src = read(tsv)
    assert problems == {} and [row["sentence"] for row in good] == ['"quoted start', "next"]
    assert (src.lines.physical, src.lines.blank, src.lines.records) == (4, 1, 2)
    bare = csv_lines(tmp_path / "bare.csv", ["a,pos", '"b,neg', "c,pos"])
    good, problems, src = read(bare, columns=["text", "label"])
    assert [row["text"] for row in good] == ["a", "c"] and list(problems) == [f"{bare}:2"]
    assert (src.lines.header, src.lines.records, src.lines.physical) == (0, 3, 3)


def test_a_quote_open_past_the_size_limit_stops_there(tmp_path, monkeypatch):
    monkeypatch.setattr(load, "MAX_RECORD_CHARS", 100)
    lines = numbered(40)
    lines[5] = '"runaway,neg'
    path = csv_lines(tmp_path / "big.csv", lines)
    good, problems, src = read(path)
    assert len(good) == 39
    assert problems[f"{path}:6"].startswith(
        "a quoted field opens here and is still open after 10 lines (100 characters) (a stray"
    )
    assert src.lines.records == 40 and src.lines.physical == 41


# ---------------------------------------------------------------------------------- line counts


def test_every_line_is_accounted_for_in_the_report(tmp_path):
    plain = write_csv(tmp_path / "plain.csv", synthetic_rows(30))
    multi = tmp_path / "multi.csv"
    multi.write_bytes(b'text,label\n"one\n\ntwo",pos\n\nthree,neg\n"four\r\nfive",pos\n')
    stray = numbered(40)
    stray[9] = '"stray,neg'
    stray = csv_lines(tmp_path / "stray.csv", stray)
    jsonl = tmp_path / "blank.jsonl"
    jsonl.write_text('{"text": "a", "label": "pos"}\n\n   \n{"text": "b", "label": "neg"}\n\n')
    txt = tmp_path / "notes.txt"
    txt.write_text("first,pos\n\nsecond,neg\r\nthird,pos")  # no final newline
    files = [plain, multi, stray, jsonl, txt]
    result = labelled(
        str(tmp_path / "*.*"),  # one glob: every file is read under the same keys
        on_error="skip",
        separator=",",
        dedup={"exact": False},
        **NO_SPLIT,
    )
    entries = {entry["path"]: entry for entry in result.report["files"]}
    assert set(entries) == {str(f) for f in files}
    for path in files:
        lines = entries[str(path)]["lines"]
        with open(path, encoding="utf-8", newline="") as handle:
            physical = len(handle.readlines())
        assert lines["physical"] == physical, path
        assert lines["header"] + lines["blank"] + lines["records"] + lines["continuation"] == physical, path
        assert lines["records"] == entries[str(path)]["records"], path
    assert entries[str(multi)]["lines"] == {
        "physical": 8,
        "header": 1,
        "blank": 1,
        "records": 3,
        "continuation": 3,
        "multiline_records": 2,
        "longest_record": {"where": f"{multi}:2", "lines": 3},
    }
    assert entries[str(stray)]["lines"]["continuation"] == 0
    assert sum(entry["records"] for entry in entries.values()) == result.report["steps"][0]["rows_in"]


def test_inspect_says_where_continuation_lines_went(tmp_path, capsys):
    path = tmp_path / "multi.csv"
    path.write_text('text,label\n"one\n\ntwo",pos\nthree,neg\n')
    assert main(["data", "inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert (
        f"{path}: 5 lines = 1 header + 0 blank + 2 records + 2 continuation lines of 1 multi-line quoted "
        f"fields (longest: 3 lines at {path}:2)"
    ) in out
    plain = write_csv(tmp_path / "plain.csv", synthetic_rows(5))
    assert main(["data", "inspect", str(plain)]) == 0
    assert "continuation" not in capsys.readouterr().out


# ------------------------------------------------------------------------------ file names


def test_a_file_named_like_a_glob_is_read_as_named(tmp_path):
    named = write_csv(tmp_path / "train[1].csv", synthetic_rows(10))
    write_csv(tmp_path / "train1.csv", synthetic_rows(20, seed=3))  # what the glob train[1].csv matches
    assert expand(str(named), "data.train") == [named]
    assert expand(str(tmp_path / "train[0-9].csv"), "data.train") == [tmp_path / "train1.csv"]
    with pytest.raises(LmtuneError, match=r"data.train: no file matches '.*train\[2\]\.csv'"):
        expand(str(tmp_path / "train[2].csv"), "data.train")
    result = labelled(named, **NO_SPLIT)
    assert {entry["path"] for entry in result.report["files"]} == {str(named)}


# ------------------------------------------------------------------------------ empty splits


def test_header_only_file_says_it_has_no_data_rows(tmp_path):
    path = csv_lines(tmp_path / "header.csv", ["text,label"])
    message = f"data: no usable train rows left: {path} has a header but no data rows"
    for split in ({}, NO_SPLIT):
        with pytest.raises(LmtuneError) as error:
            labelled(path, **split)
        assert str(error.value) == message
    blank = tmp_path / "blank.jsonl"
    blank.write_text("\n  \n")
    with pytest.raises(LmtuneError, match=f"no usable train rows left: {blank} holds only blank lines$"):
        labelled(blank)


def test_all_duplicates_say_that_dedup_left_one_row(tmp_path):
    path = write_csv(tmp_path / "same.csv", [("the very same text", "pos")] * 80)
    with pytest.raises(LmtuneError) as error:
        labelled(path)
    assert str(error.value) == (
        "data.split.test = 0.2 of 1 rows leaves an empty split (exact dedup left 1 of 80 rows); "
        "use more rows or another fraction"
    )


def test_every_row_bad_or_filtered_says_so(tmp_path):
    bad = csv_lines(tmp_path / "bad.csv", ["text,label", *(f"no label {k}" for k in range(5))])
    with pytest.raises(LmtuneError) as error:
        labelled(bad, on_error="skip")
    assert str(error.value) == (
        f"data: no usable train rows left: all 5 rows are bad (first: {bad}:2: 1 fields where 2 are expected "
        "(separator ','); check data.separator, data.quoting and data.columns)"
    )
    short = write_csv(tmp_path / "short.csv", [(f"x{k}", "pos") for k in range(20)])
    with pytest.raises(LmtuneError) as error:
        labelled(short, clean={"min_chars": 10})
    assert (
        str(error.value)
        == "data: no usable train rows left: the length filters (data.clean) removed all 20 rows"
    )
    mixed = write_csv(
        tmp_path / "mixed.csv", [("same words here", "pos")] * 6 + [(f"x{k}", "neg") for k in range(3)]
    )
    with pytest.raises(LmtuneError) as error:
        labelled(mixed, clean={"min_chars": 5})
    assert str(error.value) == (
        "data.split.test = 0.2 of 1 rows leaves an empty split (the length filters (data.clean) left 6 of 9 "
        "rows, then exact dedup left 1 of 6 rows); use more rows or another fraction"
    )


def test_an_empty_test_file_says_why(tmp_path):
    train = write_csv(tmp_path / "train.csv", synthetic_rows(40))
    test = write_csv(tmp_path / "test.csv", [("never seen", "other")])
    config = validate({"data": {"train": str(train), "test": str(test), "on_error": "skip"}}, "test")
    with pytest.raises(LmtuneError) as error:
        prepare_data(config, "labelled")
    assert str(error.value) == "data: no usable test rows left: unknown-label removal removed the only row"


def test_a_split_that_takes_every_training_row_says_so(tmp_path):
    path = write_csv(tmp_path / "two.csv", [("alpha beta", "pos"), ("gamma delta", "neg")])
    with pytest.raises(LmtuneError) as error:  # seed 0 places both rows in held-out splits
        labelled(path, split={"test": 0.5, "validation": 0.45, "seed": 0})
    assert (
        str(error.value)
        == "data: no usable train rows left: the split moved 2 of 2 rows to test and validation"
    )
