"""Several text columns: joined with a separator, or a sentence pair encoded as the tokenizer's pair
(segment ids, longest_first truncation counted), through the data pipeline, training and predict."""

from __future__ import annotations

import json
import random

import pytest
from conftest import FILLER, NEGATIVE, POSITIVE, SHARED, tiny_config, write_csv
from transformers import AutoTokenizer

from lmtune.assets import resolve_model
from lmtune.cli import main
from lmtune.config import validate
from lmtune.data.pipeline import prepare_data
from lmtune.errors import LmtuneError
from lmtune.models.infer import encode
from lmtune.runs import open_run
from lmtune.tasks import classify
from lmtune.tasks.contract import Predictor
from lmtune.tasks.encoder import Rows, count_truncated, tokenized

needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not present")
PAIR = {"text_column": ["premise", "hypothesis"], "text_pair": True}


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(str(resolve_model("bundled:minilm")))


def config(train, task="classify", **data):
    return validate({"task": task, "data": {"train": str(train), **data}}, "test")


def pair_rows(n: int, seed: int = 0) -> list[tuple[str, str, str]]:
    """(premise, hypothesis, label): the label is the hypothesis's sentiment; the premise's is random."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "pos" if i % 2 == 0 else "neg"
        first = " ".join([*rng.sample(FILLER, 3), rng.choice(POSITIVE + NEGATIVE), f"case {i}"])
        second = " ".join([*rng.sample(FILLER, 3), rng.choice(POSITIVE if label == "pos" else NEGATIVE)])
        rows.append((first, second, label))
    return rows


# ------------------------------------------------------------------------------------ config


def test_text_columns_config_is_checked():
    assert config("t.csv", text_column=["body"]).data.text_column == "body"  # one column is a column
    assert config("t.csv", **PAIR).data.text_column == ["premise", "hypothesis"]
    with pytest.raises(LmtuneError, match=r"data.text_column.*names a column twice"):
        config("t.csv", text_column=["a", "a"])
    with pytest.raises(LmtuneError, match=r"data.text_column.*none empty"):
        config("t.csv", text_column=[])
    with pytest.raises(LmtuneError, match=r"text_pair needs data.text_column to name two columns"):
        config("t.csv", text_column=["a", "b", "c"], text_pair=True)
    with pytest.raises(LmtuneError, match=r"text_pair needs"):
        config("t.csv", text_pair=True)


# ---------------------------------------------------------------------------------- the data


def test_joined_columns_leave_out_an_empty_one_and_all_empty_is_a_bad_row(tmp_path):
    rows = [(f"title {i}", f"body {i} was good", "pos" if i % 2 else "neg") for i in range(20)]
    rows[3] = ("title 3", "", "pos")
    rows[7] = ("", "", "neg")  # line 9 of the file (header is line 1)
    path = write_csv(tmp_path / "t.csv", rows, header=("title", "body", "label"))
    result = prepare_data(
        config(
            path, text_column=["title", "body"], text_separator=" | ", on_error="skip", split={"test": 0.0}
        ),
        "labelled",
        require_test=False,
    )
    texts = {row["text"] for split in result.splits.values() for row in split}
    assert "title 0 | body 0 was good" in texts and "title 3" in texts
    assert len(texts) == 19 and not any(t.endswith("| ") for t in texts)
    (bad,) = result.report["bad_rows"]["listed"]
    assert bad["where"] == f"{path}:9" and "empty text in every field of 'title', 'body'" in bad["reason"]


def test_pairs_keep_both_texts_and_dedup_and_leakage_compare_the_whole_pair(tmp_path):
    rows = pair_rows(40)
    same_first = (rows[0][0], "an unrelated second sentence about weather", "neg")
    train = write_csv(
        tmp_path / "train.csv", [*rows, rows[5], same_first], header=("premise", "hypothesis", "label")
    )
    # test: one pair of train (leak), one with a train premise but another hypothesis (no leak)
    other = (rows[1][0], "a different hypothesis entirely, nothing like the others", "pos")
    test = write_csv(tmp_path / "test.csv", [rows[2], other], header=("premise", "hypothesis", "label"))
    result = prepare_data(
        config(train, **PAIR, test=str(test), split={"validation": 0.0}), "labelled", require_test=False
    )
    train_rows = result.splits["train"].to_list()
    assert all(isinstance(r["text_pair"], str) and r["text_pair"] for r in train_rows)
    pairs = {(r["text"], r["text_pair"]) for r in train_rows}
    assert (rows[0][0], rows[0][1]) in pairs and same_first[:2] in pairs  # one premise, two pairs: both kept
    dedup = next(s for s in result.report["steps"] if s["step"] == "dedup exact" and s["split"] == "train")
    assert dedup["rows_in"] - dedup["rows_out"] == 1  # the repeated pair
    assert result.report["leakage"]["found"]["test"]["exact"] == 1  # the whole pair, not its premise
    assert rows[2][:2] not in pairs and (rows[1][0], rows[1][1]) in pairs
    assert result.report["splits"]["train"]["rows"] == 40  # 40 + repeat + same_first − dup − leak


def test_pair_encoding_segments_and_truncation_counts(tokenizer):
    rows = Rows(
        texts=["a short premise", "a much longer premise " * 8],
        labels=["pos", "neg"],
        where=["r1", "r2"],
        pairs=["its hypothesis", "short"],
    )
    direct = tokenizer(rows.texts, rows.pairs, truncation=True, max_length=16)
    assert encode(tokenizer, rows.inputs, truncation=True, max_length=16)["input_ids"] == direct["input_ids"]
    data = tokenized(rows, tokenizer, 16, [1, 0])
    first = data[0]
    sep = tokenizer.sep_token_id
    # [CLS] a short premise [SEP] its hypothesis [SEP]: segment 0 up to the first [SEP], then 1
    boundary = first["input_ids"].index(sep) + 1
    assert set(first["token_type_ids"][:boundary]) == {0} and set(first["token_type_ids"][boundary:]) == {1}
    second = data[1]
    assert len(second["input_ids"]) == 16 and second["input_ids"].count(sep) == 2  # both texts kept
    assert tokenizer.decode(second["input_ids"]).endswith(
        "[SEP] short [SEP]"
    )  # longest_first cut the premise
    assert count_truncated(rows, data["length"], tokenizer, 16) == 1
    assert count_truncated(rows, data["length"], tokenizer, 64) == 0


# ------------------------------------------------------------------------------------ a run


@pytest.fixture(scope="module")
def pair_run(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pairs")
    path = write_csv(tmp / "pairs.csv", pair_rows(160), header=("premise", "hypothesis", "label"))
    raw = tiny_config(tiny_model_dir("bert"), path, tmp / "runs", data=PAIR, method={"name": "lora"})
    raw["evaluation"]["baselines"] = ["base", "probe"]
    cfg = validate(raw, "test")
    prepared = classify.prepare(cfg)
    with open_run(cfg) as run_dir:
        metrics = classify.train(cfg, prepared, run_dir)
    return tmp / "runs" / "run", metrics


def test_a_pair_run_saves_scores_and_predicts_pairs(pair_run, capsys):
    run_dir, metrics = pair_run
    test_rows = [json.loads(line) for line in (run_dir / "data" / "test.jsonl").read_text().splitlines()]
    assert test_rows and all(r["text_pair"] for r in test_rows)
    assert set(metrics["test"]) == {"base", "probe", "tuned"}
    assert classify.evaluate(run_dir)["accuracy"] == pytest.approx(metrics["test"]["tuned"]["accuracy"])
    run = Predictor.open(run_dir)
    by_tab, by_tuple = (
        run.predict(["the movie was fine\tthe day was great"]),
        run.predict([("the movie was fine", "the day was great")]),
    )
    assert by_tab[0]["text_pair"] == "the day was great" and by_tab[0]["scores"] == by_tuple[0]["scores"]
    with pytest.raises(LmtuneError, match=r"text 1: this run reads sentence pairs \(premise \+ hypothesis\)"):
        run.predict(["no tab here"])
    capsys.readouterr()
    assert main(["predict", str(run_dir), "a premise\ta hypothesis"]) == 0
    label, score, first, second = capsys.readouterr().out.strip().split("\t")
    assert (
        label in ("pos", "neg")
        and 0.5 <= float(score) <= 1
        and (first, second) == ("a premise", "a hypothesis")
    )


@needs_shared
def test_glue_pair_files_read_as_pairs():
    glue = SHARED / "glue_pairs"
    mrpc = prepare_data(
        config(
            glue / "MRPC" / "train.tsv",
            text_column=["#1 String", "#2 String"],
            text_pair=True,
            label_column="Quality",
            test=str(glue / "MRPC" / "dev.tsv"),
        ),
        "labelled",
    )
    read = {s["split"]: s["rows_in"] for s in mrpc.report["steps"] if s["step"] == "read + validate"}
    assert read == {"train": 3667, "test": 408}  # the BOM'd header and bare quotes read as they are
    assert set(mrpc.report["splits"]["train"]["labels"]) == {"0", "1"}
    row = mrpc.splits["test"][0]
    assert row["text"] and row["text_pair"] and '"' not in row["label"]
    stsb = prepare_data(
        config(
            glue / "STS-B" / "train.tsv",
            task="regress",
            text_column=["sentence1", "sentence2"],
            text_pair=True,
            label_column="score",
        ),
        "numeric",
        require_test=False,
    )
    target = stsb.report["splits"]["train"]["target"]
    assert (
        0 <= target["min"] < 0.5
        and 4.5 < target["max"] <= 5
        and sum(target["counts"]) == stsb.report["splits"]["train"]["rows"]
    )
