"""Reading labelled files and splitting them: formats, row-level errors with file:line, seeded splits."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from conftest import SHARED, synthetic_rows, write_csv

from lmtune.data.load import read_labelled
from lmtune.data.split import split_off, subsample
from lmtune.errors import LmtuneError


def test_reads_csv_tsv_json_jsonl_alike(tmp_path):
    rows = synthetic_rows(10)
    csv_path = write_csv(tmp_path / "a.csv", rows)
    tsv_path = write_csv(tmp_path / "a.tsv", rows, delimiter="\t")
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": t, "label": y}) for t, y in rows) + "\n")
    array = tmp_path / "a.json"
    array.write_text(json.dumps([{"text": t, "label": y} for t, y in rows]))
    read = [read_labelled(p, "text", "label") for p in (csv_path, tsv_path, jsonl, array)]
    for result in read:
        assert result.texts == [t for t, _ in rows]
        assert result.labels == [y for _, y in rows]
    assert read[0].where[0] == f"{csv_path}:2"
    assert read[2].where[3] == f"{jsonl}:4"
    assert read[3].where[0] == f"{array}: record 1"


def test_quoted_multiline_csv_keeps_line_numbers(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text('text,label\n"first\nspans two lines",a\nsecond,b\n"",a\n')
    with pytest.raises(LmtuneError, match=r"m\.csv:5: empty text in column 'text'"):
        read_labelled(path, "text", "label")


def test_unicode_line_separators_inside_fields_are_not_line_breaks(tmp_path):
    path = tmp_path / "u.csv"
    path.write_bytes("text,label\nodd\x85char,a\nplain,b\n".encode("latin-1"))
    rows = read_labelled(path, "text", "label", encoding="latin-1")
    assert rows.texts == ["odd\x85char", "plain"]


def test_missing_label_column_names_columns_found(tmp_path):
    path = write_csv(tmp_path / "x.csv", [("hello", "a")], header=("text", "target"))
    with pytest.raises(
        LmtuneError,
        match=r"x\.csv:2: no column 'label' \(columns found: text, target\); set data.label_column",
    ):
        read_labelled(path, "text", "label")


def test_empty_file(tmp_path):
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(LmtuneError, match=r"e\.csv: the file is empty"):
        read_labelled(tmp_path / "e.csv", "text", "label")
    (tmp_path / "h.csv").write_text("text,label\n")
    with pytest.raises(LmtuneError, match="no data rows"):
        read_labelled(tmp_path / "h.csv", "text", "label")


def test_unreadable_encoding_names_line_and_byte(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(b"text,label\nfine,a\ncaf\xe9 \xff,b\n")
    with pytest.raises(LmtuneError, match=r"bad\.csv:3: byte 0xe9 is not valid utf-8; set data.encoding"):
        read_labelled(path, "text", "label")
    assert read_labelled(path, "text", "label", encoding="latin-1").texts[1] == "café ÿ"


def test_malformed_json_line_and_wrong_field_count(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": \n')
    with pytest.raises(LmtuneError, match=r"bad\.jsonl:2: malformed JSON line"):
        read_labelled(path, "text", "label")
    csv_path = tmp_path / "bad.csv"
    csv_path.write_text("text,label\na,b\nc,d,e\n")
    with pytest.raises(LmtuneError, match=r"bad\.csv:3: 3 fields where the header has 2"):
        read_labelled(csv_path, "text", "label")


def test_split_is_stratified_seeded_and_disjoint(tmp_path):
    rows = read_labelled(write_csv(tmp_path / "d.csv", synthetic_rows(200)), "text", "label")
    rest, test = split_off(rows, 0.2, 7, "test")
    again_rest, again_test = split_off(rows, 0.2, 7, "test")
    assert test.where == again_test.where and rest.where == again_rest.where
    assert len(test) == 40 and len(rest) == 160
    assert not set(test.where) & set(rest.where)
    assert Counter(test.labels) == {"pos": 20, "neg": 20}
    _, other = split_off(rows, 0.2, 8, "test")
    assert other.where != test.where
    small = subsample(rest, 50, 7)
    assert len(small) == 50 and Counter(small.labels) == {"pos": 25, "neg": 25}


def test_split_that_would_be_empty_is_an_error(tmp_path):
    rows = read_labelled(write_csv(tmp_path / "d.csv", synthetic_rows(3)), "text", "label")
    with pytest.raises(LmtuneError, match="data.split.test = 0.1 of 3 rows leaves an empty split"):
        split_off(rows, 0.1, 0, "test")


@pytest.mark.skipif(not (SHARED / "sst2").is_dir(), reason="../shared/data not present")
def test_reads_sst2_glue_tsv():
    rows = read_labelled(SHARED / "sst2" / "dev.tsv", "sentence", "label")
    assert len(rows) == 872
    assert Counter(rows.labels) == {"0": 428, "1": 444}


def test_byte_order_mark_is_not_part_of_the_first_column(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("text,label\nbonjour,a\n".encode("utf-8-sig"))
    assert read_labelled(path, "text", "label").texts == ["bonjour"]


def test_a_single_row_class_stays_in_train_and_the_rest_is_still_stratified(tmp_path):
    rows = synthetic_rows(100) + [("one of a kind", "rare")]
    data = read_labelled(write_csv(tmp_path / "r.csv", rows), "text", "label")
    for seed in range(20):
        rest, held = split_off(data, 0.2, seed, "test")
        assert "rare" in rest.labels and "rare" not in held.labels
        assert Counter(held.labels) == {"pos": 10, "neg": 10}
