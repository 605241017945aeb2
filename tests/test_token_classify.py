"""task: token_classify — entity scores against seqeval, CoNLL / tokens / span data through the pipeline
(bad lines at their line, tags kept aligned through cleaning and PII scrubbing), and tiny runs of every
encoder family with full and LoRA training."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import yaml
from conftest import tiny_config
from seqeval.metrics import accuracy_score, classification_report, f1_score, precision_score, recall_score

from lmtune.cli import main
from lmtune.config import validate
from lmtune.data.pipeline import prepare_data
from lmtune.errors import LmtuneError
from lmtune.evaluate.metrics import paired, score
from lmtune.runs import open_run
from lmtune.tasks import token_classify
from lmtune.tasks.contract import Predictor

PEOPLE = ["john smith", "mary jones", "peter blackburn", "anna berg", "li wei", "omar haddad"]
PLACES = ["london", "paris", "new york", "berlin", "tokyo", "san jose"]
FILLER = ["the", "visited", "met", "in", "today", "and", "said", "that", "was", "there", "later"]


def _chunk(words: list[str], kind: str | None) -> tuple[list[str], list[str]]:
    return words, ["O"] * len(words) if kind is None else [f"B-{kind}"] + [f"I-{kind}"] * (len(words) - 1)


def sentences(n: int, seed: int = 0) -> list[tuple[list[str], list[str]]]:
    """Sentences with one person and one place (multi-word names among them), the rest filler."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        chunks = [
            _chunk(rng.sample(FILLER, rng.randint(1, 3)), None),
            _chunk(rng.choice(PEOPLE).split(), "PER"),
            _chunk([rng.choice(["visited", "met", "in"])], None),
            _chunk(rng.choice(PLACES).split(), "LOC"),
            _chunk(rng.sample(FILLER, rng.randint(0, 2)), None),
        ]
        out.append(([w for words, _ in chunks for w in words], [t for _, tags in chunks for t in tags]))
    return out


def write_conll(path, rows, docstart: bool = True):
    lines = ["-DOCSTART- -X- O", ""] if docstart else []
    for tokens, tags in rows:
        lines += [f"{t} X {g}" for t, g in zip(tokens, tags, strict=True)] + [""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def token_config(model_dir, data_path, out, **sections):
    raw = tiny_config(model_dir, data_path, out, **sections)
    raw["task"] = "token_classify"
    raw["data"]["split"] = {"method": "hash", **sections.get("data", {}).get("split", {})}
    raw["evaluation"] = {"baselines": ["base", "probe"], **sections.get("evaluation", {})}
    return validate(raw, "test")


# ----------------------------------------------------------------------------------- metrics


def _random_tags(rng: random.Random, n: int) -> list[str]:
    """Tags of every kind seqeval must chunk: IOB2, stray I- after O or another type, B- runs."""
    return [rng.choice(["O", "O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "I-ORG"]) for _ in range(n)]


def test_entity_scores_equal_seqeval_on_messy_tags():
    rng = random.Random(7)
    gold = [_random_tags(rng, rng.randint(1, 12)) for _ in range(300)]
    pred = [
        [t if rng.random() < 0.7 else rng.choice(["O", "B-PER", "I-LOC", "B-ORG"]) for t in g] for g in gold
    ]
    got = score("entities", {"gold": [" ".join(g) for g in gold], "pred": [" ".join(p) for p in pred]})
    assert got["entity_f1"] == pytest.approx(f1_score(gold, pred))
    assert got["entity_precision"] == pytest.approx(precision_score(gold, pred))
    assert got["entity_recall"] == pytest.approx(recall_score(gold, pred))
    report = classification_report(gold, pred, output_dict=True, zero_division=0)
    assert got["entity_macro_f1"] == pytest.approx(report["macro avg"]["f1-score"])
    assert got["token_accuracy"] == pytest.approx(accuracy_score(gold, pred))
    low, high = got["ci"]["entity_f1"]
    assert low < got["entity_f1"] < high and high - low < 0.2
    # a paired test of a model against itself: no difference
    same = paired(
        "entities",
        "entity_f1",
        *[{"gold": [" ".join(g) for g in gold], "pred": [" ".join(p) for p in pred]}] * 2,
    )
    assert same["difference"] == 0 and not same["significant"]


def test_entity_scores_by_hand():
    # gold: PER (0-2), LOC (3); predicted: PER right, LOC as ORG, an extra PER
    gold, pred = "B-PER I-PER O B-LOC O", "B-PER I-PER O B-ORG B-PER"
    got = score("entities", {"gold": [gold], "pred": [pred]}, ci=False)
    assert got["entity_precision"] == pytest.approx(1 / 3) and got["entity_recall"] == pytest.approx(1 / 2)
    assert got["entity_f1"] == pytest.approx(2 * 1 / (3 + 2))
    assert got["token_accuracy"] == pytest.approx(3 / 5)
    with pytest.raises(LmtuneError, match="sentence 0 has 2 predicted tags for 5 gold ones"):
        score("entities", {"gold": [gold], "pred": ["O O"]})


# -------------------------------------------------------------------------------------- data


def _data_config(path, **data):
    """Every sentence kept (the synthetic ones repeat): no dedup, no leakage removal."""
    keep = {"dedup": {"exact": False}, "leakage": {"check": False}}
    raw = {
        "task": "token_classify",
        "data": {"train": str(path), "split": {"test": 0.25, "method": "stratified"}, **keep, **data},
    }
    return validate(raw, "test")


def test_conll_through_the_pipeline_docstart_tag_column_and_report(tmp_path):
    rows = sentences(40)
    path = write_conll(tmp_path / "ner.conll", rows)
    prepared = prepare_data(_data_config(path), "tokens")
    got = [r for rows in prepared.splits.values() for r in rows]
    assert len(got) == 40 and all(len(r["text"].split(" ")) == len(json.loads(r["label"])) for r in got)
    assert got[0]["where"].startswith(f"{path}:3")  # the -DOCSTART- line and its blank are not a sentence
    stats = prepared.report["splits"]["train"]
    assert set(stats["labels"]) == {"PER", "LOC"} and stats["labels"]["PER"] == len(prepared.splits["train"])
    assert not prepared.report["repaired"]
    stray = write_conll(tmp_path / "stray.conll", [(["in", "Paris"], ["O", "I-LOC"]), *rows])
    repaired = prepare_data(_data_config(stray), "tokens")
    assert sum(repaired.report["repaired"].values()) == 1  # the I-LOC after O, read as B-LOC
    assert any(json.loads(r["label"]) == ["O", "B-LOC"] for s in repaired.splits.values() for r in s)
    # the tag column by name, from data.columns (a .txt file read as CoNLL with data.format)
    txt = tmp_path / "ner.txt"
    txt.write_text(path.read_text())
    by_name = prepare_data(
        _data_config(txt, format="conll", columns=["word", "pos", "ner"], tag_column="ner"), "tokens"
    )
    assert sum(map(len, by_name.splits.values())) == 40
    pos = _data_config(txt, format="conll", columns=["word", "pos", "ner"], tag_column="pos", on_error="skip")
    with pytest.raises(LmtuneError, match=rf"all 40 rows are bad \(first: {txt}:3: tag 'X' is not IOB2"):
        prepare_data(pos, "tokens")  # "X" is no IOB2 tag: every sentence is a bad row, at its line


def test_bad_conll_lines_and_tags_name_their_line(tmp_path):
    path = tmp_path / "bad.conll"
    path.write_text(
        "EU NNP B-ORG\nrejects VBZ\n\nPeter NNP B-PER\nBlackburn NNP Q-PER\n\nok NN O\n", encoding="utf-8"
    )
    with pytest.raises(LmtuneError, match=rf"{path}:2: 2 columns, the file's lines have 3"):
        prepare_data(_data_config(path), "tokens")
    path.write_text("Peter NNP B-PER\nBlackburn NNP Q-PER\n\nok NN O\n", encoding="utf-8")
    with pytest.raises(LmtuneError, match=rf"{path}:2: tag 'Q-PER' is not IOB2"):
        prepare_data(_data_config(path), "tokens")
    with pytest.raises(LmtuneError, match="data.tag_column = 'ner': not among no data.columns"):
        prepare_data(_data_config(path, tag_column="ner"), "tokens")


def test_tokens_and_span_records_schemes_and_stray_tags(tmp_path):
    path = tmp_path / "ner.jsonl"
    records = [
        {"tokens": ["New", "York", "is", "big"], "tags": ["B-LOC", "E-LOC", "O", "O"]},
        {"tokens": ["Bob", "ran"], "tags": ["S-PER", "O"]},
    ] * 4
    path.write_text("\n".join(json.dumps(r) for r in records))
    rows = prepare_data(_data_config(path, tag_scheme="BIOES"), "tokens")
    labels = {r["text"]: json.loads(r["label"]) for r in [r for split in rows.splits.values() for r in split]}
    assert labels == {"New York is big": ["B-LOC", "I-LOC", "O", "O"], "Bob ran": ["B-PER", "O"]}
    spans = tmp_path / "spans.jsonl"
    text = "Ada Lovelace met Charles Babbage in London."
    spans.write_text(
        "\n".join(
            json.dumps(
                {
                    "text": text,
                    "entities": [
                        {"start": 0, "end": 12, "label": "PER"},
                        {"start": 36, "end": 42, "label": "LOC"},
                    ],
                }
            )
            for _ in range(10)
        )
    )
    rows = prepare_data(_data_config(spans), "tokens")
    row = rows.splits["train"][0]
    assert row["text"] == "Ada Lovelace met Charles Babbage in London ."
    assert json.loads(row["label"]) == ["B-PER", "I-PER", "O", "O", "O", "O", "B-LOC", "O"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"tokens": ["a", "b c"], "tags": ["O", "O"]}) + "\n")
    with pytest.raises(LmtuneError, match=r"bad.jsonl:1: token 1 \('b c'\) holds whitespace"):
        prepare_data(_data_config(bad), "tokens")
    bad.write_text(json.dumps({"tokens": ["a", "b"], "tags": ["O", "X-PER"]}) + "\n")
    with pytest.raises(LmtuneError, match=r"bad.jsonl:1: token 1 \('b'\): tag 'X-PER' is not IOB2"):
        prepare_data(_data_config(bad), "tokens")


def test_cleaning_and_private_data_keep_every_tag_on_its_token(tmp_path):
    rows = [
        (["Mail", "ada@example.com", "or", "call", "+44", "20", "7946", "0958", "now"], ["O"] * 9),
        (
            ["John", "Smith", "said", "caf\u0065\u0301", "in", "Paris"],
            ["B-PER", "I-PER", "O", "O", "O", "B-LOC"],
        ),
    ] * 3
    path = write_conll(tmp_path / "pii.conll", rows, docstart=False)
    config = _data_config(
        path,
        dedup={"exact": False},
        leakage={"check": False},
        pii={"action": "replace", "types": ["email", "phone"]},
    )
    prepared = prepare_data(config, "tokens")
    got = {
        json.dumps(json.loads(r["label"])): r["text"]
        for r in [r for rows in prepared.splits.values() for r in rows]
    }
    scrubbed = got[json.dumps(["O"] * 9)].split(" ")
    assert scrubbed[1] == "<EMAIL>" and scrubbed[4:8] == ["<PHONE>"] * 4 and len(scrubbed) == 9
    assert got[json.dumps(rows[1][1])] == "John Smith said café in Paris"  # NFKC per token: é composed
    assert prepared.report["pii"]["hits"] == {"email": 3, "phone": 3}


# ---------------------------------------------------------------------------------------- runs


@pytest.fixture(scope="module")
def ner_conll(tmp_path_factory):
    return write_conll(tmp_path_factory.mktemp("ner") / "ner.conll", sentences(200))


@pytest.fixture(scope="module")
def ner_runs(tiny_model_dir, ner_conll, tmp_path_factory):
    """A full and a LoRA run of tiny BERT on the synthetic sentences, trained once for the tests below."""
    out = tmp_path_factory.mktemp("ner_runs")
    runs = {}
    for method in ("full", "lora"):
        sections = {
            "method": {"name": method},
            "output": {"dir": str(out), "name": method},
            "training": {"epochs": 3},
        }
        if method == "lora":
            sections["method"]["lora"] = {"r": 8, "alpha": 16}
            sections["training"] = {"learning_rate": 2e-2, "epochs": 4}
        cfg = token_config(tiny_model_dir("bert"), ner_conll, out, **sections)
        prepared = token_classify.prepare(cfg)
        with open_run(cfg) as run_dir:
            runs[method] = (out / method, token_classify.train(cfg, prepared, run_dir))
    return runs


@pytest.mark.parametrize("method", ["full", "lora"])
def test_a_run_learns_the_entities_and_beats_its_untuned_base(ner_runs, method):
    run_dir, metrics = ner_runs[method]
    tuned, base = metrics["test"]["tuned"], metrics["test"]["base"]
    assert tuned["entity_f1"] > 0.8 and tuned["entity_f1"] > base["entity_f1"] + 0.4, metrics["test"]
    assert set(tuned["per_type"]) == {"PER", "LOC"} and tuned["per_type"]["PER"]["support"] > 0
    assert metrics["labels"] == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    assert set(metrics["test"]) == {"base", "probe", "tuned"}
    block = json.loads((run_dir / "predictions.json").read_text())["kinds"]["entities"]
    assert len(block["truth"]["gold"]) == len(block["models"]["tuned"]["pred"]) == metrics["rows"]["test"]
    assert all(
        len(g.split()) == len(p.split())
        for g, p in zip(block["truth"]["gold"], block["models"]["tuned"]["pred"], strict=True)
    )
    report = (run_dir / "report.html").read_text()
    assert "Per-type scores (tuned)" in report and "<th>entity_f1</th>" in report
    assert (
        "Example sentences (test): gold vs tuned" in report
        and "<mark" in report
        and "<sub>PER</sub>" in report
    )
    assert json.loads((run_dir / "model" / "lmtune_model.json").read_text())["adapter"] is (method == "lora")


def test_a_finished_run_predicts_offsets_evaluates_and_compares(ner_runs, tmp_path, capsys):
    run_dir, metrics = ner_runs["full"]
    assert token_classify.evaluate(run_dir)["entity_f1"] == pytest.approx(
        metrics["test"]["tuned"]["entity_f1"]
    )
    run = Predictor.open(run_dir)
    text = "later  mary jones met in san jose today."
    (result,) = run.predict([text])
    found = {(e["label"], e["text"]) for e in result["entities"]}
    assert ("PER", "mary jones") in found and ("LOC", "san jose") in found
    assert all(text[e["start"] : e["end"]] == e["text"] and 0 < e["score"] <= 1 for e in result["entities"])
    other = tmp_path / "other.jsonl"
    other.write_text("\n".join(json.dumps({"tokens": t, "tags": g}) for t, g in sentences(30, seed=5)))
    scored = token_classify.evaluate(run_dir, str(other))
    assert scored["n"] == 30 and scored["entity_f1"] > 0.7
    with_base = token_classify.predictions_on(run_dir, base=True)["kinds"]["entities"]["models"]
    assert list(with_base) == ["base", "tuned"]
    assert main(["predict", str(run_dir), text]) == 0
    printed = capsys.readouterr().out
    assert "PER\t" in printed and "mary jones" in printed
    assert main(["compare", str(run_dir), str(ner_runs["lora"][0]), "--out", str(tmp_path / "cmp")]) == 0
    compared = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert "entity_f1" in json.dumps(compared)


@pytest.mark.parametrize("arch", ["roberta", "xlnet"])
@pytest.mark.parametrize("method", ["full", "lora"])
def test_roberta_and_xlnet_tag_with_full_and_lora(tiny_model_dir, ner_conll, tmp_path, arch, method):
    cfg = token_config(
        tiny_model_dir(arch),
        ner_conll,
        tmp_path / "runs",
        method={"name": method, **({"lora": {"r": 4, "alpha": 8}} if method == "lora" else {})},
        training={"epochs": 2, **({"learning_rate": 2e-2} if method == "lora" else {})},
        evaluation={"baselines": ["base"]},
    )
    prepared = token_classify.prepare(cfg)
    with open_run(cfg) as run_dir:
        metrics = token_classify.train(cfg, prepared, run_dir)
    tuned, base = metrics["test"]["tuned"], metrics["test"]["base"]
    assert tuned["entity_f1"] > base["entity_f1"] and tuned["token_accuracy"] > 0.7, metrics["test"]
    (result,) = Predictor.open(tmp_path / "runs" / "run").predict(["john smith met in paris"])
    assert len(result["tags"]) == 5 and all(t == "O" or t[:2] in ("B-", "I-") for t in result["tags"])


def test_all_subwords_labelled_and_cross_validation(tiny_model_dir, ner_conll, tmp_path):
    raw = tiny_config(
        tiny_model_dir("bert"), ner_conll, tmp_path / "runs", training={"cv_folds": 2, "epochs": 1}
    )
    raw.update(task="token_classify", evaluation={"baselines": []}, token_classify={"label_subwords": "all"})
    raw["data"]["split"] = {"method": "hash"}
    config = tmp_path / "cv.yaml"
    config.write_text(yaml.safe_dump(raw))
    assert main(["train", str(config)]) == 0
    cv = json.loads((tmp_path / "runs" / "run" / "cv_metrics.json").read_text())
    assert cv["folds"] == 2 and cv["validation_metric"] == "entity_f1"
    per_fold = [f["test"]["entity_f1"] for f in cv["per_fold"]]
    assert cv["mean"]["test"]["entity_f1"] == pytest.approx(np.mean(per_fold))


def test_refusals_before_training(tiny_model_dir, tmp_path):
    plain = [(tokens, ["O"] * len(tokens)) for tokens, _ in sentences(40)]
    path = write_conll(tmp_path / "o.conll", plain)
    cfg = token_config(tiny_model_dir("bert"), path, tmp_path / "runs")
    with pytest.raises(LmtuneError, match="no training sentence has an entity"):
        token_classify.prepare(cfg)
    with pytest.raises(LmtuneError, match="data.weight_column: not for task token_classify"):
        token_classify.prepare(
            token_config(tiny_model_dir("bert"), path, tmp_path / "runs", data={"weight_column": "w"})
        )
    assert not (tmp_path / "runs").exists()


def test_merged_export_tags_the_same_in_plain_transformers(ner_runs, tmp_path):
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    run_dir = ner_runs["lora"][0]
    out = tmp_path / "exported"
    assert main(["export", str(run_dir), "--merge", str(out)]) == 0
    model = AutoModelForTokenClassification.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    words = ["later", "mary", "jones", "met", "in", "san", "jose"]
    with torch.inference_mode():
        encoded = tokenizer(words, is_split_into_words=True, return_tensors="pt")
        ids = model(**encoded).logits[0].argmax(-1).tolist()
    firsts = [p for p, w in enumerate(encoded.word_ids()) if w is not None and encoded.word_ids()[p - 1] != w]
    plain = [model.config.id2label[ids[p]] for p in firsts]
    assert plain == Predictor.open(run_dir).predict([" ".join(words)])[0]["tags"]
    assert model.config.id2label[0] == "O" and len(model.config.id2label) == 5


def test_a_search_maximises_entity_f1(tiny_model_dir, ner_conll, tmp_path):
    import optuna

    raw = tiny_config(
        tiny_model_dir("bert"), ner_conll, tmp_path / "runs", training={"max_steps": 6, "eval_every": 3}
    )
    raw.update(task="token_classify", evaluation={"baselines": []})
    raw["data"]["split"] = {"method": "hash"}
    raw["output"]["name"] = "search"
    space = {"training.learning_rate": {"type": "categorical", "choices": [1e-3, 1e-2]}}
    raw["search"] = {"sampler": "grid", "pruning": "none", "seed": 0, "space": space}
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["tune", str(path)]) == 0
    study = optuna.load_study(
        study_name="search", storage=f"sqlite:///{tmp_path / 'runs' / 'search' / 'study.db'}"
    )
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE and len(study.trials) == 2
    for trial in study.trials:
        folder = tmp_path / "runs" / "search" / "trials" / f"trial-{trial.number:04d}"
        assert json.loads((folder / "metrics.json").read_text())["best_validation"] == pytest.approx(
            trial.value
        )
    assert (
        json.loads((tmp_path / "runs" / "search" / "search.json").read_text())["best"]["trial"]
        == study.best_trial.number
    )
