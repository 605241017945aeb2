"""Per-row fields (data.weight_column, sensitive_column, domain_column, task_column): read and checked
per record (file:line), stored with every row, counted in the data report, written with the prepared
splits, and the weight carried to the training loss of classify, sft and seq2seq."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import synthetic_rows, tiny_config, write_csv

from lmtune.cli import main
from lmtune.config import validate
from lmtune.data.batches import as_dataset, collate
from lmtune.data.formats import Bad, row_fields
from lmtune.data.pipeline import prepare_data, read_file
from lmtune.errors import LmtuneError

HEADER = ("text", "label", "w", "who", "where_from", "job")
COLUMNS = {
    "weight_column": "w",
    "sensitive_column": "who",
    "domain_column": "where_from",
    "task_column": "job",
}


def rows_with_fields(n: int) -> list[tuple]:
    return [
        (text, label, "0.5" if label == "neg" else "2", "f" if i % 3 else "m", "books", "sentiment")
        for i, (text, label) in enumerate(synthetic_rows(n))
    ]


def config_for(path, **data):
    split = {"method": "stratified"}
    raw = {
        "data": {"train": str(path), "dedup": {"exact": False}, "split": split, **data},
        "model": {"name": "unused"},
    }
    return validate(raw, "test")


def test_fields_are_read_stored_counted_and_written(tmp_path):
    path = write_csv(tmp_path / "d.csv", rows_with_fields(60), header=HEADER)
    data = prepare_data(config_for(path, **COLUMNS), "labelled")
    train = data.splits["train"].to_list()
    assert {(r["label"], r["weight"]) for r in train} == {("neg", 0.5), ("pos", 2.0)}
    assert {r["domain"] for r in train} == {"books"} and {r["task"] for r in train} == {"sentiment"}
    stats = data.report["splits"]["train"]
    assert stats["sensitive"] == {
        "f": sum(r["sensitive"] == "f" for r in train),
        "m": sum(r["sensitive"] == "m" for r in train),
    }
    assert stats["weight"]["min"] == 0.5 and stats["weight"]["max"] == 2.0
    assert stats["domain"] == {"books": len(train)}
    # the test split carries them too (the coming audits read `sensitive` on it); a scored file does not
    assert {r["sensitive"] for r in data.splits["test"].to_list()} <= {"f", "m"}
    plain = read_file(config_for(path, **COLUMNS), str(path), "labelled")
    assert all(r["weight"] is None and r["sensitive"] is None for r in plain)
    without = prepare_data(config_for(path), "labelled").splits["train"].to_list()
    assert (
        all(r["weight"] is None for r in without)
        and "weight" not in prepare_data(config_for(path), "labelled").report["splits"]["train"]
    )


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("-1", "field 'w' (data.weight_column) must be ≥ 0, got -1"),
        ("lots", "field 'w' (data.weight_column) must be a number ≥ 0, got 'lots'"),
        ("nan", "field 'w' (data.weight_column) must be a number ≥ 0, got 'nan'"),
        ("", "missing field 'w' (data.weight_column)"),
    ],
)
def test_a_bad_weight_is_a_bad_row_named_by_file_and_line(tmp_path, value, reason):
    rows = rows_with_fields(40)
    rows[4] = (*rows[4][:2], value, *rows[4][3:])
    path = write_csv(tmp_path / "d.csv", rows, header=HEADER)
    with pytest.raises(LmtuneError) as caught:
        prepare_data(config_for(path, **COLUMNS), "labelled")
    assert str(caught.value) == f"{path}:6: {reason} (data.on_error = skip drops such rows)"
    data = prepare_data(config_for(path, on_error="skip", **COLUMNS), "labelled")
    assert data.report["bad_rows"]["count"] == 1


def test_row_fields_take_numbers_and_text_and_refuse_the_rest():
    columns = {"weight": "w", "sensitive": "s"}
    assert row_fields({"w": 3, "s": 1}, columns) == {"weight": 3.0, "sensitive": "1"}
    with pytest.raises(Bad, match=r"field 'w' \(data.weight_column\) must be a number ≥ 0, got 'True'"):
        row_fields({"w": True, "s": "x"}, columns)
    with pytest.raises(Bad, match=r"field 's' \(data.sensitive_column\) must be text or a number, got"):
        row_fields({"w": 1, "s": ["a"]}, columns)


def test_all_zero_training_weights_are_refused(tmp_path):
    rows = [(*r[:2], "0", *r[3:]) for r in rows_with_fields(40)]
    path = write_csv(tmp_path / "d.csv", rows, header=HEADER)
    with pytest.raises(LmtuneError, match=r"data.weight_column = 'w': every training row has weight 0"):
        prepare_data(config_for(path, **COLUMNS), "labelled")


@pytest.mark.parametrize("kept", ["pos", "neg"])
def test_a_classifier_learns_only_from_rows_with_weight(tiny_model_dir, tmp_path, kept):
    """The other label's rows at weight 0: the loss never sees them, so the tuned model calls every test
    text `kept`, whichever that is (unweighted, the same data reaches high accuracy: test_cli)."""
    rows = [(text, label, "1" if label == kept else "0") for text, label in synthetic_rows(120)]
    path = write_csv(tmp_path / "w.csv", rows, header=("text", "label", "w"))
    raw = tiny_config(tiny_model_dir("bert"), path, tmp_path / "runs", data={"weight_column": "w"})
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(raw))
    assert main(["train", str(tmp_path / "run.yaml")]) == 0
    run = tmp_path / "runs" / "run"
    per_class = json.loads((run / "metrics.json").read_text())["test"]["tuned"]["per_class"]
    other = "neg" if kept == "pos" else "pos"
    assert per_class[kept]["recall"] == 1.0 and per_class[other]["recall"] == 0.0
    saved = [json.loads(line) for line in (run / "data" / "train.jsonl").read_text().splitlines()]
    assert {(r["label"], r["weight"]) for r in saved} == {(kept, 1.0), (other, 0.0)}


def test_generative_examples_carry_their_weight_to_the_batch():
    from lmtune.data.batches import Encoded

    encoded = [Encoded([5, 6, 7], [-100, 6, 7], "a:1", weight=0.25), Encoded([5, 6], [-100, 6], "a:2")]
    dataset = as_dataset(encoded, weights=True)
    assert dataset["weight"] == [0.25, 1.0]
    assert "weight" not in as_dataset(encoded).column_names  # validation rows: plain loss
    batch = collate(0)([dataset[0], dataset[1]])
    assert batch["weight"].tolist() == [0.25, 1.0] and batch["input_ids"].shape == (2, 3)


def test_weights_with_packing_or_preference_are_refused(tmp_path):
    from lmtune.tasks import preference, sft

    path = tmp_path / "chat.jsonl"
    path.write_text(
        "".join(json.dumps({"instruction": f"q{i}", "output": f"a{i}", "w": 1}) + "\n" for i in range(30))
    )
    config = validate(
        {
            "task": "sft",
            "model": {"name": "bundled:smollm2-135m-instruct"},
            "data": {"train": str(path), "weight_column": "w"},
            "chat": {"packing": True},
        },
        "test",
    )
    with pytest.raises(
        LmtuneError, match=r"data.weight_column = 'w' with packed rows \(chat.packing = true\)"
    ):
        sft.prepare(config)
    config = validate({"task": "preference", "data": {"train": str(path), "weight_column": "w"}}, "t")
    with pytest.raises(
        LmtuneError, match=r"data.weight_column = 'w': the preference losses .* take no per-row"
    ):
        preference.prepare(config)


@pytest.mark.parametrize("arch", ["llama", "t5"])
def test_weighted_generative_runs_train_end_to_end(tiny_generative_dir, tmp_path, arch):
    """sft and seq2seq runs with data.weight_column: the weights pass the Trainer's column filter and
    the collator to the language-model loss; the saved splits keep them."""
    from conftest import capital_records, tiny_sft_config

    records = [{**r, "w": 0.5 + (i % 2)} for i, r in enumerate(capital_records(48))]
    path = tmp_path / "capitals.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    raw = tiny_sft_config(
        tiny_generative_dir(arch),
        path,
        tmp_path / "runs",
        data={"weight_column": "w"},
        training={"max_steps": 4, "eval_every": 2},
        evaluation={"generation": {"max_new_tokens": 4, "prompts": 4}, "baselines": []},
    )
    raw["task"] = "sft" if arch == "llama" else "seq2seq"
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(raw))
    assert main(["train", str(tmp_path / "run.yaml")]) == 0
    run = tmp_path / "runs" / "run"
    assert json.loads((run / "metrics.json").read_text())["steps"] == 4
    saved = [json.loads(line) for line in (run / "data" / "train.jsonl").read_text().splitlines()]
    assert {r["weight"] for r in saved} == {0.5, 1.5}
