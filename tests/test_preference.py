"""Preference tuning end to end on a tiny random-init decoder: DPO and IPO with LoRA, KTO, the run's
scores, report, predictions, and starting from a finished SFT run."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from conftest import CAPITALS, SHARED, capital_records, tiny_sft_config

from lmtune.chat import chat
from lmtune.cli import main
from lmtune.config import validate
from lmtune.models.load import load_generative
from lmtune.runs import open_run
from lmtune.tasks import preference, sft
from lmtune.tasks.contract import Predictor

WRONG = {
    country: other for country, other in zip(CAPITALS, [*list(CAPITALS.values())[1:], "Paris"], strict=True)
}


def capital_pairs(n: int, seed: int = 0) -> list[dict]:
    """The right capital is chosen, a wrong one rejected: what a tiny model learns to prefer."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):  # distinct prompts: pairs of one prompt would share a split
        country = rng.choice(list(CAPITALS))
        rows.append(
            {
                "prompt": f"Question {i}: what is the capital of {country}?",
                "chosen": CAPITALS[country],
                "rejected": WRONG[country],
            }
        )
    return rows


def preference_config(model_dir, data_path, out, **sections) -> dict:
    raw = {
        "task": "preference",
        "model": {"name": str(model_dir), "max_length": 64},
        "data": {"train": str(data_path), "dedup": {"exact": False}, "leakage": {"check": False}},
        # a random-init model learns a preference fast only when every weight moves and beta is large
        "method": {"name": "full"},
        # group_by_length off: here a pair's length names its country, so the sampler's length-sorted
        # batches would hold one or two countries each
        "training": {
            "epochs": 3,
            "batch_size": 8,
            "learning_rate": 1e-2,
            "logging_steps": 5,
            "group_by_length": False,
        },
        "preference": {"loss": "dpo", "beta": 1.0},
        "evaluation": {"generation": {"max_new_tokens": 6, "prompts": 4}},
        "output": {"dir": str(out), "name": "run"},
    }
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return raw


def run(raw: dict):
    config = validate(raw, "test")
    prepared = preference.prepare(config)
    with open_run(config) as run_dir:
        metrics = preference.train(config, prepared, run_dir)
    return config, metrics


def kto_file(tmp_path, pairs: list[dict]):
    """Each pair as two unpaired answers (KTO): the chosen one desirable, the rejected one not."""
    rows = []
    for pair in pairs:
        rows.append({"prompt": pair["prompt"], "completion": pair["chosen"], "label": True})
        rows.append({"prompt": pair["prompt"] + " ", "completion": pair["rejected"], "label": False})
    path = tmp_path / "kto.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def pairs_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in capital_pairs(160)))
    return path


def test_dpo_learns_to_prefer_the_chosen_answers(tiny_generative_dir, pairs_file, tmp_path):
    model_dir = tiny_generative_dir("llama")
    config, metrics = run(preference_config(model_dir, pairs_file, tmp_path / "runs"))
    base, tuned = metrics["test"]["base"], metrics["test"]["tuned"]
    assert tuned["preference_accuracy"] > base["preference_accuracy"] + 0.3
    assert tuned["preference_accuracy"] >= 0.75 and tuned["ci"]["preference_accuracy"][0] > 0.5
    assert tuned["reward_margin"] > base["reward_margin"] + 1
    assert tuned["rejected_logp_per_token"] < base["rejected_logp_per_token"]
    assert tuned["implicit_reward_accuracy"] >= 0.9 and base["implicit_reward_accuracy"] is None
    assert 0 <= tuned["stop_rate"] <= 1 and tuned["answer_tokens"] > 0
    # the tuned model's own answers: exact KL to the starting model over the vocabulary, with an interval
    assert 0 < tuned["ci"]["kl_to_reference"][0] <= tuned["kl_to_reference"] and "kl_to_reference" not in base
    run_dir = tmp_path / "runs" / "run"
    history = json.loads((run_dir / "history.json").read_text())
    assert any("rewards/margins" in h for h in history)  # TRL's curves reach the run's logs
    report = (run_dir / "report.html").read_text()
    assert "Held-out pairs: before and after" in report and "Sample answers" in report
    assert "Preference training curves" in report and report.count("data:image/png") >= 2
    saved = json.loads((run_dir / "model" / "lmtune_model.json").read_text())
    assert saved["template"] == "tokenizer" and saved["stop"]["token_ids"] == [2]
    again = preference.evaluate(run_dir)  # its own held-out pairs, from data/test.jsonl
    assert again["preference_accuracy"] == pytest.approx(tuned["preference_accuracy"])
    answers = Predictor.open(run_dir).predict(["Question 7: what is the capital of Spain?"])
    assert isinstance(answers[0]["answer"], str) and "stopped" in answers[0]
    turns = iter(["Question 3: what is the capital of Peru?", "/exit"])
    assert chat(run_dir, read=lambda prompt: next(turns)) == 0  # a preference run chats like an SFT one
    assert main(["compare", str(run_dir), "--out", str(tmp_path / "cmp")]) == 0  # tuned vs its base, paired
    summary = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    tests = {t["metric"]: t for t in summary["tests"]}
    accuracy = tests["preference_accuracy"]  # the base against the run (the reference): far behind
    assert accuracy["test"] == "mcnemar" and accuracy["difference"] < -0.3 and accuracy["significant"]
    assert main(["export", str(run_dir), "--merge", str(tmp_path / "merged")]) == 0
    assert (tmp_path / "merged" / "config.json").is_file()


def test_kto_learns_from_unpaired_answers_and_the_cli_trains_a_preference_run(
    tiny_generative_dir, tmp_path, capsys
):
    import yaml

    path = kto_file(tmp_path, capital_pairs(120, seed=1))
    raw = preference_config(
        tiny_generative_dir("llama"),
        path,
        tmp_path / "runs",
        preference={"loss": "kto"},
        training={"epochs": 4},
    )
    (tmp_path / "kto.yaml").write_text(yaml.safe_dump(raw))
    assert main(["train", str(tmp_path / "kto.yaml")]) == 0
    out = capsys.readouterr().out
    assert "run directory:" in out and "desirable_auc" in out  # the terminal table: the unpaired scores
    metrics = json.loads((tmp_path / "runs" / "run" / "metrics.json").read_text())
    assert metrics["loss"] == "kto" and metrics["steps"] > 0
    base, tuned = metrics["test"]["base"], metrics["test"]["tuned"]  # held-out answers, desirable or not
    assert tuned["desirable_auc"] >= 0.8 and tuned["desirable_auc"] > base["desirable_auc"] + 0.2
    assert tuned["ci"]["implicit_reward_auc"][0] > 0.5 and base["implicit_reward_auc"] is None
    assert tuned["desirable_logp_per_token"] > base["desirable_logp_per_token"]
    assert tuned["kl_to_reference"] > 0
    history = json.loads((tmp_path / "runs" / "run" / "history.json").read_text())
    assert any("kl" in h for h in history)  # KTO's own logs
    raw["preference"]["loss"] = "dpo"
    raw["output"]["name"] = "wrong"
    (tmp_path / "dpo.yaml").write_text(yaml.safe_dump(raw))
    assert main(["train", str(tmp_path / "dpo.yaml")]) == 2
    err = capsys.readouterr().err
    assert (
        "preference.loss = 'dpo' cannot train on unpaired answers (prompt, completion, label); use preference.loss: kto"
        in err
    )
    assert not (tmp_path / "runs" / "wrong").exists()


def test_group_by_length_batches_pairs_by_the_padded_length_and_the_settings_reach_trl(
    tiny_generative_dir, tmp_path
):
    from lmtune.tasks.preference import trainer_for

    pairs = capital_pairs(120)
    for i, pair in enumerate(pairs):  # prompts of 10 lengths, in turn: every run of 8 pairs mixes them
        pair["prompt"] = pair["prompt"].replace("what", "please " * (3 * (i % 10)) + "what")
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in pairs))
    raw = preference_config(tiny_generative_dir("llama"), path, tmp_path / "runs", model={"max_length": 128})
    raw["training"]["group_by_length"] = True
    raw["preference"]["sft_weight"] = 0.5
    config = validate(raw, "test")
    prepared = preference.prepare(config)
    rows = preference._rows(prepared.splits["train"], unpaired=False)
    trainer = trainer_for(
        config,
        tmp_path / "run",
        model=prepared.model,
        tokenizer=prepared.tokenizer,
        train_dataset=rows,
        eval_dataset=None,
    )
    # the NLL term on the chosen answers, and validation batches no wider than training's
    assert (trainer.args.loss_type, trainer.args.loss_weights) == (["sigmoid", "sft"], [1.0, 0.5])
    assert trainer.args.per_device_eval_batch_size == 8 < config.training.eval_batch_size
    batches = list(trainer.get_train_dataloader())
    lengths = rows["length"]
    # each pair's `length` is what TRL's collator pads to: the longest batch comes first, as wide as it
    assert batches[0]["input_ids"].shape[1] == max(lengths)
    padded = sum(b["input_ids"].shape[1] * len(b["input_ids"]) // 2 for b in batches)
    in_order = sum(max(lengths[k : k + 8]) * len(lengths[k : k + 8]) for k in range(0, len(lengths), 8))
    # padding scored, grouped vs the pairs in file order (measured 464 vs 816 tokens): the sampler sorts
    # within groups of a few batches, so it cuts padding by about half here, not to nothing
    assert sum(lengths) <= padded and padded - sum(lengths) < (in_order - sum(lengths)) * 2 / 3


def test_over_long_pairs_are_bad_records_named_by_line(tiny_generative_dir, tmp_path):
    from lmtune.errors import LmtuneError

    rows = capital_pairs(60)
    rows[4]["chosen"] = "word " * 200
    path = tmp_path / "long.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = validate(preference_config(tiny_generative_dir("llama"), path, tmp_path / "runs"), "test")
    with pytest.raises(
        LmtuneError,
        match=r"long\.jsonl:5: prompt \+ answer is \d+ tokens after templating, longer than model\.max_length = 64",
    ):
        preference.prepare(config)
    skip = validate(
        preference_config(tiny_generative_dir("llama"), path, tmp_path / "runs", data={"on_error": "skip"}),
        "test",
    )
    prepared = preference.prepare(skip)
    assert [where for where, _ in prepared.report["skipped"]] == [f"{path}:5"]


def test_sft_then_ipo_keeps_the_sft_runs_weights_template_and_end_of_turn(
    tiny_generative_dir, pairs_file, tmp_path
):
    """Two commands: an SFT run, then preference tuning with model.name = that run (its weights, chat
    template and end-of-turn kept)."""
    model_dir = tiny_generative_dir("llama")
    data = tmp_path / "capitals.json"
    data.write_text(json.dumps(capital_records(160)))
    raw = tiny_sft_config(
        model_dir,
        data,
        tmp_path / "runs",
        training={"eval_every": None},
        output={"name": "sft"},
    )
    config = validate(raw, "test")
    with open_run(config) as run_dir:
        sft_metrics = sft.train(config, sft.prepare(config), run_dir)
    sft_dir = tmp_path / "runs" / "sft"
    raw = preference_config(
        sft_dir,
        pairs_file,
        tmp_path / "runs",
        preference={"loss": "ipo", "beta": 0.5},
        training={"epochs": 1, "learning_rate": 1e-3},
        output={"name": "ipo"},
    )
    config = validate(raw, "test")
    prepared = preference.prepare(config)
    untuned = preference.log_probs(
        config, load_generative(model_dir), prepared.tokenizer, prepared.splits["test"], "x"
    )
    untuned_accuracy = np.mean(np.array(untuned["chosen_logp"]) > np.array(untuned["rejected_logp"]))
    with open_run(config) as run_dir:
        metrics = preference.train(config, prepared, run_dir)
    base, tuned = metrics["test"]["base"], metrics["test"]["tuned"]
    # the "base" of this run is the SFT model: it prefers the right capitals far more than the untuned one
    print(
        untuned_accuracy,
        base["preference_accuracy"],
        tuned["preference_accuracy"],
        sft_metrics["test"]["tuned"]["exact_match"],
    )
    assert base["preference_accuracy"] > untuned_accuracy + 0.2
    assert tuned["preference_accuracy"] >= base["preference_accuracy"]
    saved = json.loads((tmp_path / "runs" / "ipo" / "model" / "lmtune_model.json").read_text())
    before = json.loads((sft_dir / "model" / "lmtune_model.json").read_text())
    assert saved["stop"] == before["stop"] and saved["template"] == "tokenizer"
    assert saved["started_from"] == str(sft_dir) and metrics["loss"] == "ipo"
    answers = Predictor.open(tmp_path / "runs" / "ipo").predict(["What is the capital of Japan?"])
    assert answers[0]["stopped"] and answers[0]["answer"] == "Tokyo"


def test_an_adapter_sft_run_starts_as_its_merged_model(tiny_generative_dir, tmp_path):
    import torch

    from lmtune.tasks import generative

    data = tmp_path / "capitals.json"
    data.write_text(json.dumps(capital_records(40)))
    raw = tiny_sft_config(
        tiny_generative_dir("llama"),
        data,
        tmp_path / "runs",
        method={"name": "lora", "lora": {"r": 4, "alpha": 8, "dropout": 0.0}},
        training={"epochs": 1, "eval_every": None},
        evaluation={"baselines": [], "generation": {"prompts": 0}},
    )
    config = validate(raw, "test")
    with open_run(config) as run_dir:
        sft.train(config, sft.prepare(config), run_dir)
    sft_dir = tmp_path / "runs" / "run"
    pref = validate(preference_config(sft_dir, data, tmp_path / "runs"), "test")
    path, start = preference._start(pref)
    assert path == sft_dir and start["adapter"]
    merged = preference._load_start(pref, path, start)
    assert not hasattr(merged, "peft_config")  # a plain model: a new method goes on top of it
    ids = torch.tensor([[1, 5, 9, 42, 7]])
    with torch.no_grad():
        expected = generative.load(sft_dir).model.eval()(input_ids=ids).logits
        assert torch.allclose(merged.eval()(input_ids=ids).logits, expected, atol=1e-4)


@pytest.mark.parametrize("loss", ["simpo", "orpo"])
def test_reference_free_losses_train_through_the_shimmed_experimental_trainers(
    tiny_generative_dir, pairs_file, tmp_path, loss
):
    raw = preference_config(
        tiny_generative_dir("llama"),
        pairs_file,
        tmp_path / "runs",
        preference={"loss": loss, "beta": 1.0},
        training={"epochs": 2},
        evaluation={"generation": {"max_new_tokens": 4, "prompts": 2}},
    )
    _, metrics = run(raw)
    base, tuned = metrics["test"]["base"], metrics["test"]["tuned"]
    assert metrics["loss"] == loss and metrics["steps"] > 0
    assert tuned["preference_accuracy"] > base["preference_accuracy"]
    report = (tmp_path / "runs" / "run" / "report.html").read_text()
    assert "none (this loss needs no reference model)" in report


def test_the_sft_term_joins_only_the_losses_it_can(tmp_path):
    from lmtune.errors import LmtuneError

    raw = preference_config("unused", tmp_path / "pairs.jsonl", tmp_path / "runs")
    for loss in ("kto", "orpo", "simpo"):
        raw["preference"] = {"loss": loss, "sft_weight": 0.5}
        with pytest.raises(
            LmtuneError, match=f"sft_weight = 0.5 with loss '{loss}': the NLL term joins dpo or ipo"
        ):
            validate(raw, "run.yaml")


HH = SHARED / "preference" / "hh_rlhf_harmless_base_test.jsonl.gz"


@pytest.mark.slow
@pytest.mark.skipif(not HH.is_file(), reason=f"{HH} absent (the shared public datasets)")
def test_dpo_on_the_real_smollm2_with_lora_reads_hh_transcripts_and_keeps_its_end_of_turn(tmp_path):
    """The one real-weights preference run: the bundled SmolLM2 + LoRA, a few HH harmless pairs (a .gz
    of transcripts), 2 steps. Real weights give real likelihoods; the adapter opens in peft."""
    import gzip

    from peft import PeftConfig
    from transformers import AutoTokenizer

    with gzip.open(HH, "rt", encoding="utf-8") as source:
        lines = [next(source) for _ in range(48)]
    path = tmp_path / "hh.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as out:
        out.writelines(lines)
    raw = {
        "task": "preference",
        "model": {"name": "bundled:smollm2-135m-instruct", "max_length": 256},
        "data": {"train": str(path), "on_error": "skip", "split": {"validation": 0.0, "test": 0.25}},
        "method": {"name": "lora", "lora": {"r": 8, "alpha": 16}},
        "preference": {"loss": "dpo", "beta": 0.1, "sft_weight": 0.5},
        "training": {"max_steps": 2, "batch_size": 4, "learning_rate": 1e-4, "logging_steps": 1},
        "evaluation": {"generation": {"max_new_tokens": 24, "prompts": 2}},
        "output": {"dir": str(tmp_path / "runs"), "name": "run"},
    }
    config, metrics = run(raw)
    base, tuned = metrics["test"]["base"], metrics["test"]["tuned"]
    assert metrics["steps"] == 2 and base["n"] == tuned["n"] >= 8
    for result in (base, tuned):  # a trained model's likelihoods (a random-init one sits near -10.8)
        assert -6 < result["rejected_logp_per_token"] < -0.1 and -6 < result["chosen_logp_per_token"] < -0.1
    # two small steps: the policy moved, a little (nats per token)
    assert 0 < tuned["kl_to_reference"] < 0.5 and tuned["implicit_reward_accuracy"] is not None
    run_dir = tmp_path / "runs" / "run"
    model_dir = run_dir / "model"
    saved = json.loads((model_dir / "lmtune_model.json").read_text())
    end_of_turn = AutoTokenizer.from_pretrained(model_dir).convert_tokens_to_ids("<|im_end|>")
    assert saved["stop"]["token_ids"] == [end_of_turn] and saved["adapter"]
    assert PeftConfig.from_pretrained(model_dir).peft_type.value == "LORA"
    assert json.loads((model_dir / "generation_config.json").read_text())["eos_token_id"] == [end_of_turn]


def test_a_search_tunes_a_preference_run_on_its_validation_loss(tiny_generative_dir, tmp_path):
    import yaml

    from lmtune.runs import read_run

    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in capital_pairs(60)))
    raw = preference_config(
        tiny_generative_dir("llama"),
        path,
        tmp_path / "runs",
        data={"split": {"validation": 0.2, "test": 0.2}},
        training={"max_steps": 3, "eval_every": 3},
        evaluation={"generation": {"prompts": 0}},
    )
    raw["output"]["name"] = "search"
    beta = {"type": "categorical", "choices": [0.5, 2.0]}
    raw["search"] = {"sampler": "grid", "trials": None, "pruning": "none", "space": {"preference.beta": beta}}
    (tmp_path / "search.yaml").write_text(yaml.safe_dump(raw))
    assert main(["tune", str(tmp_path / "search.yaml")]) == 0
    folder = tmp_path / "runs" / "search"
    trials = sorted((folder / "trials").iterdir())
    assert len(trials) == 2
    for trial in trials:  # each trial is a preference run, scored on its validation loss, without the base
        metrics = json.loads((trial / "metrics.json").read_text())
        assert read_run(trial)["task"] == "preference" and metrics["best_validation"] > 0
        assert (
            list(metrics["test"]) == ["tuned"]
            and metrics["test"]["tuned"]["implicit_reward_accuracy"] is None
        )
    best = yaml.safe_load((folder / "best.yaml").read_text())
    assert best["task"] == "preference" and best["preference"]["beta"] in (0.5, 2.0)


def test_a_kto_run_cross_validates_on_its_unpaired_scores(tiny_generative_dir, tmp_path):
    """training.cv_folds on unpaired (KTO) answers: k fold runs, and the unpaired headline columns
    (desirable_auc, implicit_reward_auc) averaged over them."""
    import yaml

    path = kto_file(tmp_path, capital_pairs(60, seed=2))
    raw = preference_config(
        tiny_generative_dir("llama"),
        path,
        tmp_path / "runs",
        preference={"loss": "kto"},
        training={"epochs": 1, "cv_folds": 2},
        evaluation={"generation": {"max_new_tokens": 2, "prompts": 2}},
    )
    (tmp_path / "kto.yaml").write_text(yaml.safe_dump(raw))
    assert main(["train", str(tmp_path / "kto.yaml")]) == 0
    run_dir = tmp_path / "runs" / "run"
    cv = json.loads((run_dir / "cv_metrics.json").read_text())
    assert cv["folds"] == 2 and sorted(p.name for p in (run_dir / "folds").iterdir()) == ["fold-1", "fold-2"]
    assert {"desirable_auc", "implicit_reward_auc"} <= set(cv["mean"]["test"])
    per_fold = [f["test"]["desirable_auc"] for f in cv["per_fold"]]
    assert cv["mean"]["test"]["desirable_auc"] == pytest.approx(sum(per_fold) / 2)
