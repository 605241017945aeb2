"""The data pipeline: loading every format, row-level errors with file:line, cleaning, deduplication,
splits (hash-stable, group-aware, stratified, folds), leakage, the data report and `lmtune data`."""

from __future__ import annotations

import json
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import SHARED, synthetic_rows, write_csv
from datasets import Dataset

from lmtune.cli import main
from lmtune.config import validate
from lmtune.data.pipeline import prepare_data
from lmtune.data.report import data_sections
from lmtune.errors import LmtuneError

needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not present")


def config(train, **data):
    """A classify config over user files; everything else default (data.on_error, splits, …)."""
    return validate({"data": {"train": train if isinstance(train, list) else str(train), **data}}, "test")


def labelled(train, **data):
    return prepare_data(config(train, **data), "labelled", require_test=False)


def texts(result, split="train"):
    return [row["text"] for row in result.splits[split]]


def test_every_format_reads_alike(tmp_path):
    rows = synthetic_rows(40)
    records = [{"text": t, "label": y} for t, y in rows]
    paths = {
        "csv": write_csv(tmp_path / "a.csv", rows),
        "tsv": write_csv(tmp_path / "a.tsv", rows, delimiter="\t"),
        "jsonl": tmp_path / "a.jsonl",
        "json": tmp_path / "a.json",
        "parquet": tmp_path / "a.parquet",
        "saved": tmp_path / "saved",
    }
    paths["jsonl"].write_text("".join(json.dumps(r) + "\n" for r in records))
    paths["json"].write_text(json.dumps(records))
    pq.write_table(pa.Table.from_pylist(records), paths["parquet"])
    Dataset.from_list(records).save_to_disk(str(paths["saved"]))
    split = {"split": {"validation": 0.0, "test": 0.25}}
    results = {name: labelled(path, **split) for name, path in paths.items()}
    expected = sorted(texts(results["csv"]))
    for name, result in results.items():
        assert sorted(texts(result)) == expected, name
        assert len(result.splits["train"]) + len(result.splits["test"]) == len(set(t for t, _ in rows))
    where = {name: r.splits["train"][0]["where"] for name, r in results.items()}
    assert where["jsonl"].startswith(f"{paths['jsonl']}:") and where["json"].startswith(
        f"{paths['json']}: record "
    )
    assert where["saved"].startswith(f"{paths['saved']}: record ")


def test_globs_and_lists_of_files(tmp_path):
    for i in range(3):
        write_csv(tmp_path / f"part-{i}.csv", synthetic_rows(20, seed=i))
    result = labelled(str(tmp_path / "part-*.csv"))
    files = {f["path"] for f in result.report["files"]}
    assert files == {str(tmp_path / f"part-{i}.csv") for i in range(3)}
    with pytest.raises(LmtuneError, match=r"data.train: no file matches '.*nothing-\*\.csv'"):
        labelled(str(tmp_path / "nothing-*.csv"))


# ------------------------------------------------------------------------------------ bad rows

GOOD = {"text": "a perfectly fine review", "label": "pos"}
# (line content, reason, kind): every kind of bad row the issue lists, each on a known line
BAD_ROWS = [
    (
        b'{"label": "pos"}',
        "missing field 'text' (fields found: label); set data.text_column",
        "missing field",
    ),
    (b'{"text": 42, "label": "pos"}', "field 'text' must be a string, got a number", "wrong type"),
    (b'{"text": "  ", "label": "neg"}', "empty text in field 'text'", "empty text"),
    (
        b'{"text": "fine", "label": "meh"}',
        "unknown label 'meh' (allowed: neg, pos; data.labels)",
        "unknown label",
    ),
    (b'{"text": "broken", "label": ', "malformed JSON line: Expecting value at column 29", "malformed JSON"),
    (
        b'{"text": "caf\xe9 au lait", "label": "pos"}',
        "byte 0xe9 is not valid utf-8; set data.encoding (e.g. latin-1, cp1252, utf-16)",
        "undecodable bytes",
    ),
    (b'["text", "label"]', "expected a JSON object, got a list", "wrong type"),
    (
        b'{"text": "fine", "label": ["pos"]}',
        "field 'label' must be a string or a number, got a list",
        "wrong type",
    ),
]


def bad_corpus(tmp_path):
    """Good rows with every kind of bad row between them; returns the file and {line: reason}."""
    lines, expected = [], {}
    good = [
        json.dumps({"text": f"{t} number {i}", "label": y}).encode()
        for i, (t, y) in enumerate(synthetic_rows(30))
    ]
    for i, line in enumerate(good):
        lines.append(line)
        if i < len(BAD_ROWS):
            lines.append(BAD_ROWS[i][0])
            expected[len(lines)] = BAD_ROWS[i][1]
    lines.append('{"text": "un caf\u00e9 tr\u00e8s bon", "label": "pos"}'.encode())  # valid UTF-8
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path, expected, len(good) + 1


def test_every_bad_row_is_reported_with_its_line_and_reason(tmp_path):
    path, expected, n_good = bad_corpus(tmp_path)
    result = labelled(path, on_error="skip", labels=["pos", "neg"], split={"validation": 0.0, "test": 0.2})
    bad = result.report["bad_rows"]
    assert {b["where"]: b["reason"] for b in bad["listed"]} == {
        f"{path}:{line}": r for line, r in expected.items()
    }
    assert bad["count"] == len(BAD_ROWS)
    assert bad["by_kind"] == dict(Counter(kind for _, _, kind in BAD_ROWS))
    read = result.report["steps"][0]
    assert (read["rows_in"], read["rows_out"]) == (n_good + len(BAD_ROWS), n_good)  # the counts add up
    assert sum(len(rows) for rows in result.splits.values()) == n_good
    assert "un café très bon" in texts(result) + texts(result, "test")


def test_fail_stops_at_the_first_bad_row_and_prepare_writes_nothing(tmp_path, capsys):
    path, expected, _ = bad_corpus(tmp_path)
    first_line, reason = next(iter(expected.items()))
    with pytest.raises(LmtuneError) as caught:
        labelled(path, labels=["pos", "neg"])
    assert str(caught.value) == f"{path}:{first_line}: {reason} (data.on_error = skip drops such rows)"
    good = write_csv(tmp_path / "good.csv", synthetic_rows(60))
    out = tmp_path / "prepared"
    for name, train in (("good", good), ("bad", path)):
        (tmp_path / f"{name}.yaml").write_text(
            json.dumps({"data": {"train": str(train), "labels": ["pos", "neg"]}})
        )
    assert main(["data", "prepare", str(tmp_path / "good.yaml"), "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert main(["data", "prepare", str(tmp_path / "bad.yaml"), "--out", str(out), "--overwrite"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"lmtune: error: {path}:{first_line}: missing field")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the earlier output, untouched
    assert not (tmp_path / "prepared.partial").exists()


def test_prepare_never_replaces_what_it_did_not_write(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(json.dumps({"data": {"train": str(write_csv(tmp_path / "d.csv", synthetic_rows(60)))}}))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("important")
    assert main(["data", "prepare", str(cfg), "--out", str(mine), "--overwrite"]) == 2
    assert "is not an lmtune data folder" in capsys.readouterr().err
    assert (mine / "notes.txt").read_text() == "important"
    (tmp_path / "afile").write_text("hi")
    assert main(["data", "prepare", str(cfg), "--out", str(tmp_path / "afile"), "--overwrite"]) == 2
    assert "is a file" in capsys.readouterr().err and not (tmp_path / "afile.partial").exists()


def test_step_counts_add_up_with_files_for_every_split(tmp_path):
    train = write_csv(tmp_path / "train.csv", synthetic_rows(60))
    validation = write_csv(
        tmp_path / "val.csv", [*synthetic_rows(10, seed=4), ("never seen in training", "odd")]
    )
    result = labelled(train, validation=str(validation), on_error="skip")
    report = result.report
    cut = next(s for s in report["steps"] if s["step"] == "split")
    for split in ("train", "validation"):  # validation comes from its own file: the cut does not touch it
        steps = [s for s in report["steps"] if s["split"] == split or (s is cut and split == "train")]
        count = steps[0]["rows_in"]
        for step in steps:
            assert step["rows_in"] == count, (split, step)
            count = step["rows"][split] if step is cut else step["rows_out"]
        assert count == len(result.splits[split])
    last = [s for s in report["steps"] if s["split"] == "validation"][-1]
    assert last["step"] == "unknown labels" and last["rows_out"] == len(result.splits["validation"])
    assert cut["rows_out"] == cut["rows"]["train"] + cut["rows"]["test"]
    assert report["bad_rows"]["by_kind"] == {"unknown label": 1}


def test_csv_bad_rows_and_headerless_files(tmp_path):
    path = tmp_path / "e.txt"
    path.write_bytes(b"i feel great;joy\ni am so sad;sadness\nno label here\n;anger\ni am fine;joy;extra\n")
    result = labelled(
        path,
        separator=";",
        columns=["text", "label"],
        on_error="skip",
        split={"test": 0.0, "validation": 0.0},
    )
    reasons = {b["where"]: b["reason"] for b in result.report["bad_rows"]["listed"]}
    wrong = "fields where 2 are expected (separator ';'); check data.separator, data.quoting and data.columns"
    assert reasons == {
        f"{path}:3": f"1 {wrong}",
        f"{path}:4": "empty text in field 'text'",
        f"{path}:5": f"3 {wrong}",
    }
    assert sorted(texts(result)) == ["i am so sad", "i feel great"]


def test_encodings_auto_legacy_file_and_damaged_utf8_rows(tmp_path):
    legacy = tmp_path / "legacy.csv"
    legacy.write_bytes(
        "text,label\ncaf\u00e9 cr\u00e8me \u2013 d\u00e9j\u00e0 vu,a\nplain,b\nother,a\n".encode("cp1252")
    )
    result = labelled(legacy, split={"test": 0.0, "validation": 0.0})
    assert "café crème – déjà vu" in texts(result)
    assert result.report["files"][0]["encoding"] == "cp1252"
    assert "not UTF-8; read as cp1252" in result.report["files"][0]["warning"]
    damaged = tmp_path / "damaged.csv"
    damaged.write_bytes(b"text,label\nna\xc3\xafve,a\nbad \xff byte,b\nfine,b\n")
    result = labelled(damaged, on_error="skip", split={"test": 0.0, "validation": 0.0})
    assert texts(result) == ["naïve", "fine"]
    assert result.report["bad_rows"]["listed"][0]["where"] == f"{damaged}:3"
    bom = tmp_path / "bom.csv"
    bom.write_bytes("text,label\nbonjour,a\nsalut,b\n".encode("utf-8-sig"))
    assert sorted(texts(labelled(bom, split={"test": 0.0, "validation": 0.0}))) == ["bonjour", "salut"]
    with pytest.raises(LmtuneError, match="data.encoding: unknown encoding 'klingon'"):
        labelled(bom, encoding="klingon")


# ------------------------------------------------------------------------------------ cleaning


def test_cleaning_steps_and_label_normalisation(tmp_path):
    rows = [
        ("<p>Great&amp;cheap</p>   product\u00a0\u00a0here", " Positive "),
        ("\ufb01ne \uff21 \u200bzero\x07bell", "positive"),
        ("Subscribe to our newsletter\nreal content", "NEG"),
        ("<b> </b>", "neg"),  # empty after markup is stripped
        ("tiny", "neg"),  # shorter than min_chars
    ]
    path = write_csv(tmp_path / "c.csv", rows)
    clean = {
        "html": True,
        "boilerplate": ["^Subscribe"],
        "min_chars": 5,
        "label_case": "lower",
        "label_map": {"neg": "negative"},
    }
    result = labelled(path, clean=clean, split={"test": 0.0, "validation": 0.0})
    got = {row["text"]: row["label"] for row in result.splits["train"]}
    assert got == {
        "Great&cheap product here": "positive",
        "fine A zerobell": "positive",
        "real content": "negative",
    }
    assert result.report["filtered"] == {
        "empty after cleaning": 1,
        "shorter than data.clean.min_chars = 5": 1,
    }
    plain = labelled(path, split={"test": 0.0, "validation": 0.0}, on_error="skip")
    assert "<p>Great&amp;cheap</p> product here" in texts(plain)  # html stripping is off by default


def test_private_data_is_scrubbed_before_training(tmp_path):
    rows = [
        (f"mail me at jane.doe{i}@example.com or call +44 20 7946 0958", "a" if i % 2 else "b")
        for i in range(10)
    ]
    path = write_csv(tmp_path / "p.csv", rows)
    result = labelled(path, split={"test": 0.0, "validation": 0.0})
    assert all(t == "mail me at <EMAIL> or call <PHONE>" for t in texts(result))
    assert len(texts(result)) == 1  # scrubbed rows became exact duplicates
    assert result.report["pii"]["hits"] == {"email": 10, "phone": 10}
    dropped = labelled(
        write_csv(tmp_path / "q.csv", [*rows, ("clean text", "a"), ("more clean", "b")]),
        pii={"action": "drop"},
        split={"test": 0.0, "validation": 0.0},
    )
    assert sorted(texts(dropped)) == ["clean text", "more clean"]


# ----------------------------------------------------------------------------------- dedup, splits


def test_exact_duplicates_keep_the_first_copy(tmp_path):
    rows = [("Same  text here", "a"), ("other", "b"), ("same text HERE", "a"), ("third", "a")]
    result = labelled(write_csv(tmp_path / "d.csv", rows), split={"test": 0.0, "validation": 0.0})
    assert texts(result) == ["Same text here", "other", "third"]
    dup = result.report["duplicates"]["train"]["exact"]
    assert dup["removed"] == 1 and dup["examples"][0]["kept"].endswith("d.csv:2")
    assert dup["examples"][0]["dropped"].endswith("d.csv:4")


def test_hash_split_is_stable_when_rows_are_added(tmp_path):
    small = labelled(write_csv(tmp_path / "s.csv", synthetic_rows(300)))
    big = labelled(write_csv(tmp_path / "b.csv", synthetic_rows(300) + synthetic_rows(300, seed=9)))
    for name in ("train", "validation", "test"):
        before = set(texts(small, name))
        assert before <= set(texts(big, name)), name  # nobody moved
    total = sum(len(small.splits[n]) for n in small.splits)
    assert abs(len(small.splits["test"]) / total - 0.2) < 0.07
    assert abs(len(small.splits["validation"]) / total - 0.1) < 0.06
    reseeded = labelled(tmp_path / "s.csv", split={"seed": 7})
    assert set(texts(reseeded, "test")) != set(texts(small, "test"))


def test_groups_never_straddle_splits_and_folds_are_group_aware(tmp_path):
    rows = [
        {"text": f"review {i} " + t, "label": y, "user": f"u{i % 37}"}
        for i, (t, y) in enumerate(synthetic_rows(400))
    ]
    path = tmp_path / "g.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = labelled(path, group_column="user", split={"folds": 5})
    users = {name: {row["group"] for row in result.splits[name]} for name in result.splits}
    assert not users["train"] & users["test"] and not users["train"] & users["validation"]
    assert not users["validation"] & users["test"]
    by_fold: dict = {}
    for row in result.splits["train"]:
        by_fold.setdefault(row["group"], set()).add(row["fold"])
    assert all(len(folds) == 1 for folds in by_fold.values())
    assert set(result.report["folds"]) == {"0", "1", "2", "3", "4"}
    with pytest.raises(LmtuneError, match="stratified cannot keep groups together"):
        labelled(path, group_column="user", split={"method": "stratified"})


def test_stratified_split_has_exact_label_proportions(tmp_path):
    result = labelled(
        write_csv(tmp_path / "d.csv", synthetic_rows(200)), split={"method": "stratified", "test": 0.2}
    )
    labels = Counter(row["label"] for row in result.splits["test"])
    assert labels["pos"] == labels["neg"] and sum(labels.values()) == round(
        0.2 * sum(len(s) for s in result.splits.values())
    )


def test_a_split_that_would_be_empty_is_an_error(tmp_path):
    with pytest.raises(LmtuneError, match="data.split.test = 0.1 of 3 rows leaves an empty split"):
        labelled(write_csv(tmp_path / "d.csv", synthetic_rows(3)), split={"test": 0.1})


# ------------------------------------------------------------------------------------- leakage


def test_leakage_is_found_removed_or_flagged(tmp_path):
    train_rows = synthetic_rows(60)
    dev_rows = [
        train_rows[0],  # exact copy
        (train_rows[1][0].upper() + "  ", train_rows[1][1]),  # same after case/whitespace normalisation
        ("a long sentence about the food and the service that was really quite good today", "pos"),
        ("something else entirely about a movie that was very bad", "neg"),
    ]
    near_train = ("a long sentence about the food and the service that was really quite good today!", "pos")
    train = write_csv(tmp_path / "train.csv", [*train_rows, near_train])
    dev = write_csv(tmp_path / "dev.csv", dev_rows)
    kept = {"test": str(dev), "split": {"validation": 0.0}, "dedup": {"threshold": 0.7}}
    result = labelled(train, **kept)
    found = result.report["leakage"]["found"]["test"]
    assert (found["exact"], found["near"]) == (2, 1)
    assert result.report["leakage"]["removed_from_train"] == 3 and not result.report["leakage"]["leaks"]
    assert not set(map(str.lower, texts(result))) & {t.lower().strip() for t, _ in dev_rows}
    flagged = labelled(train, **kept, leakage={"remove_from_train": False})
    assert flagged.report["leakage"]["leaks"]
    html = "".join(body for _, body in data_sections(flagged.report))
    assert "LEAKAGE: held-out rows also appear in train" in html


# ------------------------------------------------------------------------------ report and CLI


def test_report_counts_labels_and_lengths(tmp_path):
    result = labelled(write_csv(tmp_path / "d.csv", synthetic_rows(100)))
    report = result.report
    assert json.loads(json.dumps(report)) == report  # plain JSON
    for name in ("train", "validation", "test"):
        stats = report["splits"][name]
        assert stats["rows"] == len(result.splits[name])
        assert sum(stats["labels"].values()) == stats["rows"]
        assert sum(stats["chars"]["counts"]) == stats["rows"]
    headings = [heading for heading, _ in data_sections(report)]
    assert headings[:1] == ["Data: steps"] and "Data: splits" in headings and "Data: leakage" in headings


def test_data_prepare_writes_splits_and_report(tmp_path, capsys):
    data = write_csv(tmp_path / "d.csv", synthetic_rows(100))
    cfg = tmp_path / "run.yaml"
    cfg.write_text(json.dumps({"data": {"train": str(data)}, "output": {"dir": str(tmp_path / "runs")}}))
    assert main(["data", "prepare", str(cfg)]) == 0
    out = tmp_path / "runs" / "run-data"
    assert sorted(p.name for p in out.iterdir()) == [
        "data_report.html",
        "data_report.json",
        "lmtune_data.json",
        "test.jsonl",
        "train.jsonl",
        "validation.jsonl",
    ]
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert rows and {"text", "label", "where", "origin"} <= set(rows[0])
    report = json.loads((out / "data_report.json").read_text())
    assert report["splits"]["train"]["rows"] == len(rows)
    assert "<img" in (out / "data_report.html").read_text()
    assert main(["data", "prepare", str(cfg)]) == 2  # no silent overwrite
    assert "exists; pass --overwrite" in capsys.readouterr().err


@needs_shared
def test_inspect_emotion_semicolon_file_without_header(capsys):
    path = SHARED / "emotion" / "train.txt"
    assert main(["data", "inspect", str(path), "--separator", ";", "--columns", "text,label", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    read = report["steps"][0]
    assert (read["rows_in"], read["rows_out"], report["bad_rows"]["count"]) == (16000, 16000, 0)
    with open(path, encoding="utf-8") as handle:
        lines = [line.rstrip("\n") for line in handle if line.strip()]
    distinct = {" ".join(line.rsplit(";", 1)[0].casefold().split()) for line in lines}
    assert report["splits"]["train"]["rows"] == len(distinct)
    labels = Counter(line.rsplit(";", 1)[1] for line in lines)
    assert set(report["splits"]["train"]["labels"]) == set(labels)


# -------------------------------------------------------------------------------- augmentation


def test_augmentation_touches_train_only_and_marks_origins(tmp_path):
    rows = [(f"sample {i} " + t, y) for i, (t, y) in enumerate(synthetic_rows(60))] + [
        (f"rare case number {i} was good", "rare") for i in range(6)
    ]
    path = write_csv(tmp_path / "a.csv", rows)
    plain = labelled(path)
    result = labelled(path, augment={"ops": ["swap", "deletion"], "balance": "oversample"})
    for name in ("validation", "test"):
        assert texts(result, name) == texts(plain, name)  # held-out splits untouched
    train = result.splits["train"].to_list()
    origins = Counter(row["origin"].split(":")[0] for row in train)
    assert origins["file"] == len(plain.splits["train"])
    assert origins["swap"] > 0 and origins["deletion"] > 0 and origins["oversample"] > 0
    by_where = {row["where"]: row for row in train if row["origin"] == "file"}
    for row in train:
        if row["origin"] != "file":
            source = row["origin"].split(":", 1)[1]
            assert source in by_where and by_where[source]["label"] == row["label"]
    labels = Counter(row["label"] for row in train)
    assert len(set(labels.values())) == 1  # oversampled to the largest class
    assert result.report["augmentation"]["added"]["swap"] == origins["swap"]


def test_balance_by_weights(tmp_path):
    rows = [(f"row {i} " + t, y) for i, (t, y) in enumerate(synthetic_rows(40))] + [
        (f"rare {i}", "rare") for i in range(10)
    ]
    result = labelled(write_csv(tmp_path / "w.csv", rows), augment={"balance": "weights"})
    train = result.splits["train"].to_list()
    counts = Counter(row["label"] for row in train)
    for row in train:
        assert row["weight"] == pytest.approx(len(train) / (len(counts) * counts[row["label"]]))
    with pytest.raises(LmtuneError, match="'synonym' needs a lexicon"):
        labelled(write_csv(tmp_path / "s.csv", rows), augment={"ops": ["synonym"]})


def test_inspect_a_bundled_dataset(capsys):
    assert main(["data", "inspect", "bundled:drug-reviews", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [s["rows_in"] for s in report["steps"] if s["step"] == "read + validate"] == [600, 379]
    assert report["bad_rows"]["count"] == 0 and set(report["splits"]["train"]["labels"]) == {
        "negative",
        "neutral",
        "positive",
    }
