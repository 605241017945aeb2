"""The metrics registry and its statistics: every score equals the reference library's, the vectorised
bootstrap resamples what it claims to, and the paired tests give the textbook p-values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sacrebleu
from rouge_score import rouge_scorer
from sklearn import metrics as skm

from lmtune.errors import LmtuneError
from lmtune.evaluate import metrics, stats
from lmtune.evaluate.metrics import classification_metrics, headline, paired, score


def classified(n: int, k: int, *, right: float = 0.7, never: int | None = None, seed: int = 0) -> dict:
    """Labels, predictions right on about `right` of them (never predicting class `never`), and
    probabilities that lean to the truth."""
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, k, n)
    y_pred = np.where(rng.random(n) < right, y_true, rng.integers(0, k, n))
    if never is not None:
        y_pred[y_pred == never] = (never + 1) % k
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y_true]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return {"y_true": y_true, "y_pred": y_pred, "probs": probs}


def sklearn_scores(y_true, y_pred, probs, k: int) -> dict:
    ids = list(range(k))
    expected = {"accuracy": skm.accuracy_score(y_true, y_pred), "mcc": skm.matthews_corrcoef(y_true, y_pred)}
    for average in ("macro", "micro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(
            y_true, y_pred, labels=ids, average=average, zero_division=0
        )
        expected |= {f"precision_{average}": p, f"recall_{average}": r, f"f1_{average}": f}
    if k == 2:
        expected["roc_auc"] = skm.roc_auc_score(y_true, probs[:, 1])
    else:
        expected["roc_auc"] = skm.roc_auc_score(y_true, probs, multi_class="ovr", average="macro", labels=ids)
    return expected


# ------------------------------------------------------------------------------ classification


@pytest.mark.parametrize("k", [3, 2])
def test_every_classification_scalar_equals_scikit_learn(k):
    data = classified(300, k, never=k - 1, seed=k)
    labels = [f"c{i}" for i in range(k)]
    result = classification_metrics(data["y_true"], data["y_pred"], labels, data["probs"], ci=False)
    expected = sklearn_scores(data["y_true"], data["y_pred"], data["probs"], k)
    assert set(metrics.names_for("classify")) == set(expected)
    for name, value in expected.items():
        assert result[name] == pytest.approx(value, abs=1e-12), name
    # what callers read today is still there
    p, r, f, s = skm.precision_recall_fscore_support(
        data["y_true"], data["y_pred"], labels=list(range(k)), zero_division=0
    )
    assert result["per_class"][labels[-1]]["precision"] == 0.0  # never predicted
    for i, label in enumerate(labels):
        assert result["per_class"][label] == pytest.approx(
            {"precision": p[i], "recall": r[i], "f1": f[i], "support": s[i]}
        )
    assert result["confusion_matrix"] == skm.confusion_matrix(data["y_true"], data["y_pred"]).tolist()
    assert result["n"] == 300 and result["ci"] == {}
    assert headline(result) == {m: result[m] for m in metrics.HEADLINE}


def test_a_class_missing_from_the_truth_leaves_roc_auc_undefined():
    data = classified(200, 3)
    data["y_true"][data["y_true"] == 1] = 0
    result = score("classify", data, labels=["a", "b", "c"])
    assert result["roc_auc"] is None and "roc_auc" not in result["ci"]
    recall = skm.recall_score(
        data["y_true"], data["y_pred"], labels=[0, 1, 2], average="macro", zero_division=0
    )
    assert result["recall_macro"] == pytest.approx(recall)  # the absent class counts as 0
    no_probs = score("classify", {**data, "probs": None}, ["roc_auc", "accuracy"], labels=["a", "b", "c"])
    assert no_probs["roc_auc"] is None and list(no_probs["ci"]) == ["accuracy"]


def test_resampled_scores_equal_scikit_learn_on_the_same_resampled_examples():
    """The (resamples, k, k) count tensor and the weighted AUC are what sklearn sees on y[idx]."""
    data = classified(500, 3, never=2, seed=4)
    names = ["accuracy", "f1_macro", "f1_weighted", "precision_macro", "mcc", "roc_auc"]
    idx = next(stats.resamples(500, 6, seed=1))
    values = metrics.resampled("classify", data, names, idx, labels=["a", "b", "c"])
    assert values.shape == (6, len(names))
    for row, i in zip(values, idx, strict=True):
        expected = sklearn_scores(data["y_true"][i], data["y_pred"][i], data["probs"][i], 3)
        assert row == pytest.approx([expected[m] for m in names], abs=1e-12)


# ------------------------------------------------------------------------------------ bootstrap


def test_a_rare_class_a_resample_misses_does_not_drag_the_macro_interval_below_the_value():
    """20 rows of class 0 and one row each of ten rare classes, all right: macro F1 is 1, and so is every
    resample's (a class absent from a resample is not scored as 0)."""
    y = np.array([0] * 20 + list(range(1, 11)))
    result = classification_metrics(y, y, [str(i) for i in range(11)])
    for name in ("f1_macro", "precision_macro", "recall_macro"):
        assert result[name] == 1.0
        assert result["ci"][name] == [1.0, 1.0]


def test_intervals_contain_the_value_and_shrink_like_one_over_root_n():
    widths = {}
    for n in (400, 1600):
        result = score("classify", classified(n, 3, seed=n), labels=["a", "b", "c"], seed=1)
        for name in metrics.names_for("classify"):
            low, high = result["ci"][name]
            assert low <= result[name] <= high, (n, name)
        widths[n] = {m: result["ci"][m][1] - result["ci"][m][0] for m in ("accuracy", "f1_macro", "mcc")}
    for name, wide in widths[400].items():
        assert 1.6 < wide / widths[1600][name] < 2.5, name


def test_accuracy_interval_agrees_with_the_normal_approximation():
    n = 2000
    result = score("classify", classified(n, 3, seed=7), ["accuracy"], n_boot=2000, seed=3)
    p = result["accuracy"]
    half = 1.959964 * math.sqrt(p * (1 - p) / n)
    assert result["ci"]["accuracy"] == pytest.approx([p - half, p + half], abs=0.003)


def test_the_same_seed_gives_the_same_interval():
    data = classified(300, 3)
    first = score("classify", data, ["f1_macro"], seed=5)["ci"]
    assert score("classify", data, ["f1_macro"], seed=5)["ci"] == first
    assert score("classify", data, ["f1_macro"], seed=6)["ci"] != first


def test_one_example_or_a_constant_statistic_gives_a_point_interval():
    one = score("lm", {"loss_sum": [6.0], "tokens": [3]})
    assert one["loss"] == 2.0 and one["ci"]["loss"] == [2.0, 2.0]
    assert one["ci"]["perplexity"] == [math.exp(2), math.exp(2)]
    perfect = score("classify", {"y_true": np.arange(50) % 2, "y_pred": np.arange(50) % 2}, ["accuracy"])
    assert perfect["ci"]["accuracy"] == [1.0, 1.0]


def test_no_examples_is_a_one_line_error_naming_where():
    with pytest.raises(LmtuneError, match=r"^test split: no examples to compute classify metrics"):
        score("classify", {"y_true": [], "y_pred": []}, where="test split")
    with pytest.raises(LmtuneError, match="no examples"):
        score("generate", {"predictions": [], "references": []})


def test_language_model_loss_is_token_weighted_and_its_interval_comes_from_resampled_sums():
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 40, 800)
    loss_sum = tokens * rng.gamma(4, 0.5, 800)
    result = score("lm", {"loss_sum": loss_sum, "tokens": tokens})
    assert result["loss"] == pytest.approx(loss_sum.sum() / tokens.sum())
    assert result["perplexity"] == pytest.approx(math.exp(result["loss"]))
    idx = next(stats.resamples(800, 3, seed=0))
    values = metrics.resampled("lm", {"loss_sum": loss_sum, "tokens": tokens}, ["loss"], idx)
    assert values[:, 0] == pytest.approx([loss_sum[i].sum() / tokens[i].sum() for i in idx])
    assert result["ci"]["loss"][0] < result["loss"] < result["ci"]["loss"][1]
    capped = score("lm", {"loss_sum": [500.0], "tokens": [2]}, ci=False)
    assert capped["perplexity"] == math.exp(50)


# ---------------------------------------------------------------------------------- generation


WORDS = "the cat sat on a mat while dogs ran fast in parks under big red skies".split()  # noqa: SIM905


def answers(n: int = 120, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    words = np.array(WORDS)
    references = [" ".join(rng.choice(words, rng.integers(2, 12))) + "." for _ in range(n)]
    predictions = [
        " ".join(w if rng.random() < 0.7 else str(rng.choice(words)) for w in r.split()) for r in references
    ]
    predictions[:10] = references[:10]
    predictions[10:12] = ["The cat, sat!", ""]
    return {"predictions": predictions, "references": references}


def test_generation_metrics_equal_rouge_score_and_sacrebleu():
    data = answers()
    result = score("generate", data, ci=False)
    preds, refs = data["predictions"], data["references"]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    for name in ("rouge1", "rouge2", "rougeL"):
        expected = np.mean([scorer.score(r, p)[name].fmeasure for p, r in zip(preds, refs, strict=True)])
        assert result[name] == pytest.approx(expected, abs=1e-12)
    assert result["bleu"] == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score / 100, abs=1e-12)
    assert result["chrf"] == pytest.approx(sacrebleu.corpus_chrf(preds, [refs]).score / 100, abs=1e-12)
    exact = [metrics.normalise(p) == metrics.normalise(r) for p, r in zip(preds, refs, strict=True)]
    assert result["exact_match"] == pytest.approx(np.mean(exact)) and result["exact_match"] >= 10 / 120


def test_corpus_bleu_and_chrf_of_a_resample_are_sacrebleus_on_the_resampled_corpus():
    data = answers()
    preds, refs = data["predictions"], data["references"]
    everything = metrics.resampled("generate", data, ["bleu", "chrf"], np.arange(len(preds)))
    assert everything[0] == pytest.approx(
        [sacrebleu.corpus_bleu(preds, [refs]).score / 100, sacrebleu.corpus_chrf(preds, [refs]).score / 100],
        abs=1e-12,
    )
    idx = next(stats.resamples(len(preds), 3, seed=2))
    values = metrics.resampled("generate", data, ["bleu", "chrf", "rougeL"], idx)
    for row, i in zip(values, idx, strict=True):
        p, r = [preds[j] for j in i], [refs[j] for j in i]
        assert row[0] == pytest.approx(sacrebleu.corpus_bleu(p, [r]).score / 100, abs=1e-12)
        assert row[1] == pytest.approx(sacrebleu.corpus_chrf(p, [r]).score / 100, abs=1e-12)
    with_ci = score("generate", data, ["bleu", "exact_match"])
    for name in ("bleu", "exact_match"):
        assert with_ci["ci"][name][0] <= with_ci[name] <= with_ci["ci"][name][1]


def test_generation_metrics_wrapper_keeps_the_keys_and_adds_intervals():
    from lmtune.evaluate.generation import generation_metrics, normalise

    data = answers(40)
    result = generation_metrics(data["predictions"], data["references"])
    assert list(result) == ["rouge1", "rouge2", "rougeL", "bleu", "chrf", "exact_match", "ci", "n"]
    assert set(result["ci"]) == {"rouge1", "rouge2", "rougeL", "bleu", "chrf", "exact_match"}
    assert normalise("The  Cat, sat!") == "cat sat"


# ---------------------------------------------------------------------------------- paired tests


def test_mcnemar_is_the_exact_binomial_with_few_discordant_pairs_and_chi_square_with_many():
    def outcomes(both: int, only_a: int, only_b: int, neither: int):
        a = [True] * both + [True] * only_a + [False] * only_b + [False] * neither
        b = [True] * both + [False] * only_a + [True] * only_b + [False] * neither
        return np.array(a), np.array(b)

    small = stats.mcnemar(*outcomes(50, 3, 9, 10))
    exact = 2 * sum(math.comb(12, i) for i in range(4)) / 2**12  # two-sided, P(X <= 3 | 12, 1/2) twice
    assert (small["b"], small["c"], small["method"]) == (3, 9, "exact")
    assert small["p_value"] == pytest.approx(exact, rel=1e-12)
    large = stats.mcnemar(*outcomes(300, 40, 70, 90))
    chi = (abs(40 - 70) - 1) ** 2 / (40 + 70)
    assert (large["b"], large["c"], large["method"]) == (40, 70, "chi-square")
    assert large["p_value"] == pytest.approx(math.erfc(math.sqrt(chi / 2)), rel=1e-12)  # chi2 sf, 1 df
    assert stats.mcnemar(*outcomes(20, 0, 0, 5))["p_value"] == 1.0


def test_bootstrap_p_value_is_the_doubled_share_across_zero():
    assert stats.bootstrap_p(np.full(999, 0.2), 0.2) == pytest.approx(2 / 1000)
    assert stats.bootstrap_p(np.r_[np.full(500, -0.1), np.full(500, 0.1)], 0.1) == 1.0
    assert stats.bootstrap_p(np.r_[np.full(49, -0.1), np.full(950, 0.1)], 0.1) == pytest.approx(0.1)
    assert stats.bootstrap_p(np.full(10, 0.3), 0.0) == 1.0


@pytest.mark.parametrize("name", ["accuracy", "f1_macro", "roc_auc"])
def test_identical_models_differ_by_nothing(name):
    data = classified(300, 3)
    result = paired("classify", name, data, data, labels=["a", "b", "c"], n_boot=300)
    assert result["difference"] == 0 and result["ci"] == [0.0, 0.0]
    assert result["p_value"] == 1.0 and result["significant"] is False
    assert result["test"] == ("mcnemar" if name == "accuracy" else "paired bootstrap")


def test_ninety_against_sixty_percent_right_is_significant():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 4, 500)
    right_a, right_b = rng.permutation(500) < 300, rng.permutation(500) < 450  # 60% and 90% right
    a = {"y_true": y_true, "y_pred": np.where(right_a, y_true, (y_true + 1) % 4)}
    b = {"y_true": y_true, "y_pred": np.where(right_b, y_true, (y_true + 1) % 4)}
    result = paired("classify", "accuracy", a, b)
    assert (result["a"], result["b"]) == (0.6, 0.9) and result["difference"] == pytest.approx(0.3)
    assert result["test"] == "mcnemar" and result["mcnemar"]["method"] == "chi-square"
    assert result["p_value"] < 1e-6 and result["significant"] is True
    assert result["ci"][0] < 0.3 < result["ci"][1] and result["ci"][0] > 0.2
    f1 = paired("classify", "f1_macro", a, b, n_boot=500)
    assert f1["test"] == "paired bootstrap" and f1["p_value"] == pytest.approx(2 / 501) and f1["significant"]


def test_paired_bootstrap_on_generated_answers():
    data = answers(80)
    perfect = {"predictions": data["references"], "references": data["references"]}
    result = paired("generate", "bleu", data, perfect, n_boot=300)
    assert result["b"] == pytest.approx(1.0) and result["difference"] > 0 and result["significant"]


def test_a_paired_test_refuses_different_examples():
    data = classified(100, 3)
    with pytest.raises(LmtuneError, match="model a has 100 examples, model b 99"):
        paired("classify", "f1_macro", data, {k: v[:99] for k, v in data.items()})
    shuffled = {**data, "y_true": data["y_true"][::-1]}
    with pytest.raises(LmtuneError, match="y_true differ"):
        paired("classify", "accuracy", data, shuffled)
    gen = answers(20)
    with pytest.raises(LmtuneError, match="references differ"):
        paired("generate", "rougeL", gen, {**gen, "references": gen["predictions"]})
    with pytest.raises(LmtuneError, match="roc_auc is undefined"):
        paired("classify", "roc_auc", {**data, "probs": None}, data)


# -------------------------------------------------------------------------------- names and errors


def test_unknown_metric_names_are_one_line_with_the_allowed_list():
    with pytest.raises(LmtuneError) as error:
        metrics.check_names(["accuracy", "f2"], "classify", "evaluation.metrics")
    message = str(error.value)
    assert message == (
        "evaluation.metrics: unknown metric 'f2'; allowed for classify: "
        + ", ".join(metrics.names_for("classify"))
    )
    assert "\n" not in message
    with pytest.raises(LmtuneError, match="unknown metric 'bleu'; allowed for classify: accuracy, "):
        score("classify", classified(10, 2), ["bleu"])
    with pytest.raises(LmtuneError, match="unknown metric 'accuracy'; allowed for lm: loss, perplexity$"):
        paired("lm", "accuracy", {}, {})
    with pytest.raises(LmtuneError, match="unknown metric kind 'ranking'; allowed: classify, generate, lm"):
        metrics.names_for("ranking")


def test_registry_entries_describe_themselves():
    assert metrics.names_for("generate") == ["rouge1", "rouge2", "rougeL", "bleu", "chrf", "exact_match"]
    assert metrics.names_for("lm") == ["loss", "perplexity"]
    assert metrics.names_for("classify")[:4] == metrics.HEADLINE
    assert not metrics.METRICS["loss"].higher_is_better and metrics.METRICS["mcc"].higher_is_better
    assert all(m.description and "\n" not in m.description for m in metrics.METRICS.values())
    assert metrics.names_for_task("sft") == metrics.names_for("generate") + metrics.names_for("lm")


def test_bad_label_ids_and_probabilities_are_one_line_errors():
    with pytest.raises(LmtuneError, match=r"y_pred has label id 3; allowed: 0\.\.2 \(3 labels\)"):
        score("classify", {"y_true": [0, 1, 2], "y_pred": [0, 3, 2]}, labels=["a", "b", "c"])
    with pytest.raises(LmtuneError, match=r"probs has shape \(3, 2\); need .* = \(3, 3\)"):
        score(
            "classify",
            {"y_true": [0, 1, 2], "y_pred": [0, 1, 2], "probs": np.ones((3, 2))},
            labels=list("abc"),
        )
    with pytest.raises(LmtuneError, match="inputs differ in length"):
        score("generate", {"predictions": ["a"], "references": ["a", "b"]})
    with pytest.raises(LmtuneError, match="lm inputs lack tokens"):
        score("lm", {"loss_sum": [1.0]})


def test_the_registry_imports_without_torch():
    import subprocess
    import sys

    code = "import sys, lmtune.evaluate.metrics, lmtune.config; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------------ per-example loss


@pytest.mark.parametrize(("arch", "plain_head"), [("llama", True), ("llama", False), ("t5", False)])
def test_row_losses_split_the_batch_loss_by_example(tiny_generative_dir, monkeypatch, arch, plain_head):
    """Per-example loss sums (for the loss interval) add up to labelled_loss, through each code path."""
    import torch
    from transformers import AutoTokenizer

    from lmtune.data.batches import collate
    from lmtune.models import loss
    from lmtune.models.load import load_generative

    if not plain_head:
        monkeypatch.setattr(loss, "PLAIN_HEAD_TYPES", set())
    folder = tiny_generative_dir(arch)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = load_generative(folder).eval()
    texts = [
        "The capital of France is Paris.",
        "Rome is the capital of Italy.",
        "Madrid is in Spain, and Lima is in Peru.",
    ]
    rows = []
    for i, text in enumerate(texts):
        ids = tokenizer.encode(text)
        if model.config.is_encoder_decoder:
            rows.append({"input_ids": ids, "labels": tokenizer.encode(texts[i - 1])})
        else:
            rows.append({"input_ids": ids, "labels": [-100] * 2 + ids[2:]})
    make = collate(tokenizer.pad_token_id)
    with torch.inference_mode():
        sums, counts = loss.row_losses(model, make(rows))
        alone = [loss.labelled_loss(model, make([row])) for row in rows]
        total, count = loss.labelled_loss(model, make(rows))
    assert counts.tolist() == [int(n) for _, n in alone]
    assert sums.tolist() == pytest.approx([float(s) for s, _ in alone], rel=1e-4)
    assert float(sums.sum()) == pytest.approx(float(total), rel=1e-5) and int(counts.sum()) == int(count)


# ------------------------------------------------------------------- kinds a task registers itself


def test_the_preference_task_registers_its_kinds_from_its_own_module():
    from lmtune.tasks import TASKS

    assert TASKS["preference"].measures == ("lmtune.tasks.preference_measures",)
    kinds = {
        name: metrics.METRICS[name].kind
        for name in ("preference_accuracy", "desirable_auc", "kl_to_reference")
    }
    assert kinds == {
        "preference_accuracy": "preference",
        "desirable_auc": "unpaired_preference",
        "kl_to_reference": "policy_kl",
    }
    assert set(TASKS["preference"].scores) <= set(metrics.KINDS)
    assert metrics.KINDS["preference"].compare == ("preference_accuracy", "reward_margin")
    with pytest.raises(LmtuneError, match="kind 'lm' or one of its metric names is registered already"):
        metrics.register("lm", metrics.KINDS["lm"], [])


def unpaired(n: int, seed: int = 0, reference: bool = True) -> dict:
    rng = np.random.default_rng(seed)
    desirable = rng.random(n) < 0.5
    tokens = rng.integers(1, 30, n)
    logp = -tokens * (2.0 - 0.4 * desirable + rng.normal(0, 0.5, n))
    inputs = {"logp": logp, "tokens": tokens, "desirable": desirable}
    if reference:
        inputs["ref_logp"] = logp + rng.normal(0, 3, n) - 2 * desirable
    return inputs


def test_unpaired_answers_are_ranked_by_roc_auc_as_scikit_learn_computes_it():
    inputs = unpaired(300)
    result = score("unpaired_preference", inputs)
    per_token = inputs["logp"] / inputs["tokens"]
    assert result["desirable_auc"] == pytest.approx(skm.roc_auc_score(inputs["desirable"], per_token))
    reward = inputs["logp"] - inputs["ref_logp"]
    assert result["implicit_reward_auc"] == pytest.approx(skm.roc_auc_score(inputs["desirable"], reward))
    good = inputs["desirable"]
    assert result["desirable_logp_per_token"] == pytest.approx(
        inputs["logp"][good].sum() / inputs["tokens"][good].sum()
    )
    low, high = result["ci"]["desirable_auc"]
    assert low < result["desirable_auc"] < high and high - low < 0.2
    idx = np.random.default_rng(1).integers(0, 300, (3, 300))  # a resample's AUC is sklearn's on it
    again = metrics.resampled("unpaired_preference", inputs, ["desirable_auc"], idx)[:, 0]
    assert again == pytest.approx([skm.roc_auc_score(inputs["desirable"][i], per_token[i]) for i in idx])
    without = score("unpaired_preference", unpaired(300, reference=False))
    assert without["implicit_reward_auc"] is None and "implicit_reward_auc" not in without["ci"]
    test = paired("unpaired_preference", "desirable_auc", unpaired(300, reference=False), inputs)
    assert test["test"] == "paired bootstrap" and test["difference"] == pytest.approx(0.0)


def test_kl_to_reference_is_token_weighted_and_preference_accuracy_pairs_by_mcnemar():
    result = score("policy_kl", {"kl_sum": [1.0, 3.0, 0.0], "tokens": [10, 10, 20]})
    assert result["kl_to_reference"] == pytest.approx(4 / 40) and result["kl_per_answer"] == pytest.approx(
        4 / 3
    )
    rng = np.random.default_rng(0)
    c, r = rng.normal(-20, 5, 200), rng.normal(-21, 5, 200)
    pairs = {"chosen_logp": c, "rejected_logp": r, "chosen_tokens": [10] * 200, "rejected_tokens": [10] * 200}
    better = {**pairs, "chosen_logp": c + 6}
    test = paired("preference", "preference_accuracy", pairs, better)
    assert test["test"] == "mcnemar" and test["significant"] and test["difference"] > 0.2
