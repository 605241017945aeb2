"""task: qa — SQuAD scores by hand, SQuAD and JSONL files through the pipeline (bad answers at their place,
answers kept right through cleaning and PII scrubbing, a shared context is leakage), windows that
reassemble every answer, the span search, and tiny runs of every encoder family with full and LoRA."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from conftest import FILLER, SHARED, tiny_config

from lmtune.cli import main
from lmtune.config import validate
from lmtune.data.pipeline import prepare_data
from lmtune.errors import LmtuneError
from lmtune.evaluate.metrics import score
from lmtune.evaluate.spans import qa_scores
from lmtune.models.load import load_tokenizer
from lmtune.runs import open_run
from lmtune.tasks import qa
from lmtune.tasks.contract import Predictor
from lmtune.tasks.encoder import Rows

PEOPLE = ["john", "mary", "peter", "anna", "omar", "li"]
PLACES = ["london", "paris", "berlin", "tokyo", "rome", "oslo"]


def squad(n: int, seed: int = 0, long: int = 40) -> dict:
    """SQuAD-format data: contexts of filler around "<who> visited <where>", two questions each."""
    rng = random.Random(seed)
    paragraphs = []
    for k in range(n):
        who, where = rng.choice(PEOPLE), rng.choice(PLACES)
        pre = " ".join(rng.choice(FILLER) for _ in range(rng.randint(5, long)))
        post = " ".join(rng.choice(FILLER) for _ in range(rng.randint(5, 20)))
        context = f"{pre} {who} visited {where} {post}"
        at = len(pre) + 1
        qas = [
            {
                "id": f"{k}a",
                "question": f"who visited {where}?",
                "answers": [{"text": who, "answer_start": at}],
            },
            {
                "id": f"{k}b",
                "question": f"where did {who} go?",
                "answers": [{"text": where, "answer_start": at + len(who) + 9}],
            },
        ]
        paragraphs.append({"context": context, "qas": qas})
    return {"version": "1.1", "data": [{"title": "synthetic", "paragraphs": paragraphs}]}


def _data_config(path, **data):
    raw = {"task": "qa", "data": {"train": str(path), "split": {"test": 0.25}, **data}}
    return validate(raw, "test")


def _rows(prepared) -> list[dict]:
    return [row for split in prepared.splits.values() for row in split]


# ----------------------------------------------------------------------------------- metrics


def test_squad_scores_by_hand():
    golds = [["Denver Broncos", "The Denver Broncos"], ["Denver Broncos"], [], [], ["the 1990s"]]
    answers = ["denver broncos!", "Broncos", "", "Carolina", "1990s"]
    got = score("qa", {"answers": [json.dumps(g) for g in golds], "answer": answers}, ci=False)
    # em: right (normalised), wrong, right (no answer, none given), wrong, right (article dropped)
    assert got["em"] == pytest.approx(3 / 5)
    # f1: 1, 2·(1·0.5)/1.5, 1, 0, 1
    assert got["f1"] == pytest.approx((1 + 2 / 3 + 1 + 0 + 1) / 5)
    assert got["f1"] == pytest.approx(qa_scores(answers, golds)["f1"])


# -------------------------------------------------------------------------------------- data


def test_squad_and_jsonl_files_through_the_pipeline(tmp_path):
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(squad(30)))
    rows = _rows(prepare_data(_data_config(path), "qa"))
    assert len(rows) == 60
    for row in rows:
        (answer,) = json.loads(row["label"])
        assert row["text"][answer["start"] : answer["start"] + len(answer["text"])] == answer["text"]
        assert row["text_pair"].startswith(("who", "where")) and ".paragraphs[" in row["where"]
    # questions of one context never straddle splits
    prepared = prepare_data(_data_config(path), "qa")
    where = {name: {r["text"] for r in split} for name, split in prepared.splits.items()}
    assert not (where["train"] & where["test"]) and not (where["train"] & where["validation"])
    # Hugging Face layout in JSONL, and an unanswerable question
    lines = tmp_path / "qa.jsonl"
    records = [
        {
            "question": "who?",
            "context": f"it was {name} there",
            "answers": {"text": [name], "answer_start": [7]},
        }
        for name in PEOPLE * 2
    ] + [
        {"question": "why?", "context": f"nobody knows {x}", "answers": {"text": [], "answer_start": []}}
        for x in PLACES
    ]
    lines.write_text("\n".join(json.dumps(r) for r in records))
    rows = _rows(prepare_data(_data_config(lines, dedup={"exact": False}), "qa"))
    assert sum(r["label"] == "[]" for r in rows) == 6 and len(rows) == 18


def test_an_answer_that_is_not_at_its_start_is_a_bad_row_at_its_place(tmp_path):
    data = squad(8)
    data["data"][0]["paragraphs"][2]["qas"][1]["answers"][0]["answer_start"] += 3
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(
        LmtuneError,
        match=r"bad.json: data\[0\].paragraphs\[2\].qas\[1\]: answers\[0\]: answer_start \d+ does not find its text",
    ):
        prepare_data(_data_config(path), "qa")
    skipped = prepare_data(_data_config(path, on_error="skip"), "qa")
    assert skipped.report["bad_rows"]["count"] == 1


def test_answers_stay_right_through_cleaning_and_private_data(tmp_path):
    records = []
    for year in range(1950, 1962):
        context = f"<p>Write to ada@example.com &amp; friends:   the  winner was <b>Grace   Hopper</b> in {year}.</p>"
        answer = {"text": "Grace   Hopper", "answer_start": context.index("Grace")}
        mail = {"text": "ada@example.com", "answer_start": context.index("ada")}
        markup = {"text": "<b>", "answer_start": context.index("<b>")}  # cleaning removes all of it
        records += [
            {"question": "who won?", "context": context, "answers": [answer]},
            {"question": "whose mail?", "context": context, "answers": [mail]},
            {"question": "what tag?", "context": context, "answers": [markup]},
        ]
    path = tmp_path / "qa.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records))
    config = _data_config(
        path,
        split={"test": 0.3, "validation": 0.0},
        leakage={"check": False},
        clean={"html": True},
        pii={"action": "replace", "types": ["email"]},
    )
    prepared = prepare_data(config, "qa")
    rows = _rows(prepared)
    assert len(rows) == 24 and {r["text_pair"] for r in rows} == {"who won?", "whose mail?"}
    for row in rows:
        (found,) = json.loads(row["label"])
        assert row["text"][found["start"] : found["start"] + len(found["text"])] == found["text"]
        assert "<EMAIL>" in row["text"] and "<b>" not in row["text"] and "ada@" not in row["text"]
        # the span follows the text: blanks collapsed, and private data replaced inside the answer too
        assert found["text"] == ("Grace Hopper" if row["text_pair"] == "who won?" else "<EMAIL>")
    assert prepared.report["filtered"]["every answer removed by cleaning or private-data scrubbing"] == 12


def test_a_context_in_train_and_test_is_a_leak(tmp_path):
    data = squad(20)
    train, test = tmp_path / "train.json", tmp_path / "test.json"
    train.write_text(json.dumps(data))
    shared = {"data": [{"title": "t", "paragraphs": [data["data"][0]["paragraphs"][3]]}]}
    shared["data"][0]["paragraphs"][0] = {
        **shared["data"][0]["paragraphs"][0],
        "qas": [
            {
                "id": "new",
                "question": "what else happened?",
                "answers": [
                    {
                        "text": "visited",
                        "answer_start": data["data"][0]["paragraphs"][3]["context"].index("visited"),
                    }
                ],
            }
        ],
    }
    test.write_text(json.dumps(shared))
    prepared = prepare_data(_data_config(train, test=str(test)), "qa")
    leak = next(s for s in prepared.report["steps"] if s["step"] == "leakage")
    assert leak["rows_out"] < leak["rows_in"]  # the context's two training questions left train


@pytest.mark.skipif(not (SHARED / "squad").is_dir(), reason="../shared/data/squad not present")
def test_windows_reassemble_every_answer_of_squad():
    config = validate(
        {"task": "qa", "model": {"max_length": 128}, "qa": {"doc_stride": 32}, "data": {"train": "x.json"}},
        "test",
    )
    data = json.loads((SHARED / "squad" / "dev-v1.1.json").read_text())["data"][:3]
    questions, contexts, golds = [], [], []
    for article in data:
        for paragraph in article["paragraphs"]:
            for q in paragraph["qas"]:
                questions.append(q["question"])
                contexts.append(paragraph["context"])
                golds.append([{"text": a["text"], "start": a["answer_start"]} for a in q["answers"]])
    from lmtune.assets import resolve_model

    tokenizer = load_tokenizer(resolve_model("bundled:minilm"))
    w = qa.windows(config, tokenizer, questions, contexts)
    assert len(w) > len(questions)  # long contexts were split
    starts, ends = qa.targets(w, golds)
    found = {}
    for i, example in enumerate(w.example):
        covered = [o for o in w.offsets[i] if o is not None]
        assert covered and covered[0][0] <= covered[-1][1]
        if starts[i] != w.cls[i]:
            a, b = w.offsets[i][starts[i]][0], w.offsets[i][ends[i]][1]
            found[example] = contexts[example][a:b]
    assert len(found) == len(questions)  # every answer lies wholly inside some window
    for example, span in found.items():
        answer = golds[example][0]["text"]
        assert answer in span and len(span) <= len(answer) + 12, (answer, span)  # at most a word's rest
    exact = sum(span == golds[e][0]["text"] for e, span in found.items())
    assert exact / len(found) > 0.97


def test_span_search_limits_and_no_answer():
    config = validate(
        {"task": "qa", "data": {"train": "x.json"}, "qa": {"max_answer_length": 2, "n_best": 5}}, "test"
    )
    context = "alpha beta gamma delta"
    offsets = [None, None, (0, 5), (6, 10), (11, 16), (17, 22), None]  # [CLS] q [SEP]-less toy window
    w = qa.Windows([{}], [0], [offsets], [0])
    logits = np.full((7, 2), -5.0)
    logits[2, 0], logits[5, 1] = 9.0, 9.0  # best start alpha, best end delta: 4 words, too long
    logits[4, 1] = 4.0  # gamma as end: alpha..gamma is 3 words, still too long
    logits[3, 0], logits[4, 0] = 3.0, 7.0  # gamma..delta (2 words) is the best allowed span
    ((answer, value, start, end),) = qa.best_answers(config, w, [logits], [context], unanswerable=False)
    assert answer == "gamma delta" and (start, end) == (11, 22) and value == pytest.approx(16.0)
    logits[0] = [20.0, 20.0]  # [CLS] beats every span
    assert qa.best_answers(config, w, [logits], [context], unanswerable=True)[0][0] == ""
    assert qa.best_answers(config, w, [logits], [context], unanswerable=False)[0][0] == "gamma delta"


# ---------------------------------------------------------------------------------------- runs


def qa_config(model_dir, data_path, out, **sections):
    raw = tiny_config(model_dir, data_path, out, **sections)
    raw["task"] = "qa"
    raw["model"]["max_length"] = 48
    raw["qa"] = {"doc_stride": 16, "probe_windows": 100, **sections.get("qa", {})}
    raw["data"]["split"] = {"method": "hash"}
    raw["training"]["early_stopping"] = {"patience": None}
    raw["evaluation"] = {"baselines": ["base", "probe"], **sections.get("evaluation", {})}
    return validate(raw, "test")


@pytest.fixture(scope="module")
def squad_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("qa") / "squad.json"
    path.write_text(json.dumps(squad(150)))
    return path


@pytest.fixture(scope="module")
def qa_runs(tiny_model_dir, squad_file, tmp_path_factory):
    """A full and a LoRA run of tiny BERT on the synthetic questions, trained once for the tests below."""
    out = tmp_path_factory.mktemp("qa_runs")
    runs = {}
    for method in ("full", "lora"):
        sections = {
            "method": {"name": method},
            "output": {"dir": str(out), "name": method},
            "training": {"epochs": 6, "eval_every": 20},
        }
        if method == "lora":
            sections["method"]["lora"] = {"r": 8, "alpha": 16}
            sections["training"]["learning_rate"] = 2e-2
        cfg = qa_config(tiny_model_dir("bert"), squad_file, out, **sections)
        prepared = qa.prepare(cfg)
        with open_run(cfg) as run_dir:
            runs[method] = (out / method, qa.train(cfg, prepared, run_dir))
    return runs


@pytest.mark.parametrize("method", ["full", "lora"])
def test_a_run_learns_to_answer_and_beats_its_untuned_base(qa_runs, method):
    run_dir, metrics = qa_runs[method]
    tuned, base = metrics["test"]["tuned"], metrics["test"]["base"]
    # rank-8 LoRA on a random-init body adapts less than full training: a smaller margin, still far
    # above chance (the untuned head's answers)
    margin = {"full": 0.3, "lora": 0.1}[method]
    assert tuned["f1"] > base["f1"] + margin and tuned["em"] > base["em"], metrics["test"]
    assert (
        set(metrics["test"]) == {"base", "probe", "tuned"}
        and metrics["training_windows"] > metrics["rows"]["train"]
    )
    block = json.loads((run_dir / "predictions.json").read_text())["kinds"]["qa"]
    assert (
        len(block["truth"]["answers"]) == len(block["models"]["tuned"]["answer"]) == metrics["rows"]["test"]
    )
    report = (run_dir / "report.html").read_text()
    assert "Wrong answers (test, tuned)" in report and "<th>f1</th>" in report
    assert json.loads((run_dir / "model" / "lmtune_model.json").read_text())["adapter"] is (method == "lora")


def test_a_finished_run_answers_evaluates_and_compares(qa_runs, tmp_path, capsys):
    run_dir, metrics = qa_runs["full"]
    assert qa.evaluate(run_dir)["f1"] == pytest.approx(metrics["test"]["tuned"]["f1"])
    context = "the day was quite nice and mary visited rome today"
    (answer,) = Predictor.open(run_dir).predict([("who visited rome?", context)])
    assert context[answer["start"] : answer["end"]] == answer["answer"] and answer["answer"]
    other = tmp_path / "other.json"
    other.write_text(json.dumps(squad(20, seed=4)))
    scored = qa.evaluate(run_dir, str(other))
    assert scored["n"] == 40 and 0 <= scored["f1"] <= 1
    assert list(qa.predictions_on(run_dir, base=True)["kinds"]["qa"]["models"]) == ["base", "tuned"]
    assert main(["predict", str(run_dir), "who visited rome?", "--context", context]) == 0
    printed = capsys.readouterr().out
    assert "who visited rome?" in printed
    assert main(["predict", str(run_dir), "who visited rome?"]) == 2  # a qa run needs its context
    assert "--context" in capsys.readouterr().err
    assert main(["compare", str(run_dir), str(qa_runs["lora"][0]), "--out", str(tmp_path / "cmp")]) == 0
    assert '"f1"' in (tmp_path / "cmp" / "compare.json").read_text()


@pytest.mark.parametrize("arch", ["roberta", "xlnet"])
@pytest.mark.parametrize("method", ["full", "lora"])
def test_roberta_and_xlnet_answer_with_full_and_lora(tiny_model_dir, tmp_path, arch, method):
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(squad(60, seed=1)))
    cfg = qa_config(
        tiny_model_dir(arch),
        path,
        tmp_path / "runs",
        method={"name": method, **({"lora": {"r": 4, "alpha": 8}} if method == "lora" else {})},
        training={"epochs": 1, **({"learning_rate": 2e-2} if method == "lora" else {})},
        evaluation={"baselines": []},
    )
    prepared = qa.prepare(cfg)
    with open_run(cfg) as run_dir:
        metrics = qa.train(cfg, prepared, run_dir)
    assert np.isfinite(metrics["test"]["tuned"]["f1"]) and metrics["steps"] > 0
    (answer,) = Predictor.open(tmp_path / "runs" / "run").predict(
        ["who visited rome?\tthe day mary visited rome"]
    )
    assert (
        answer["answer"] == ""
        or "the day mary visited rome"[answer["start"] : answer["end"]] == answer["answer"]
    )


def test_refusals_before_training(tiny_model_dir, squad_file, tmp_path):
    with pytest.raises(LmtuneError, match=r"qa.doc_stride = 24: must be below model.max_length / 2 \(24\)"):
        qa.prepare(qa_config(tiny_model_dir("bert"), squad_file, tmp_path / "runs", qa={"doc_stride": 24}))
    assert not (tmp_path / "runs").exists()
    rows = Rows(["a context"], ["[]"], ["x"], pairs=["a question"])
    assert qa.answers_of(rows) == [[]]


def test_a_search_maximises_f1(tiny_model_dir, squad_file, tmp_path):
    import optuna
    import yaml

    raw = tiny_config(
        tiny_model_dir("bert"), squad_file, tmp_path / "runs", training={"max_steps": 6, "eval_every": 3}
    )
    raw.update(task="qa", evaluation={"baselines": []}, qa={"doc_stride": 16})
    raw["model"]["max_length"] = 48
    raw["data"]["split"] = {"method": "hash"}
    raw["output"]["name"] = "search"
    raw["search"] = {
        "sampler": "grid",
        "pruning": "none",
        "seed": 0,
        "space": {"training.learning_rate": {"type": "categorical", "choices": [1e-3, 1e-2]}},
    }
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
