"""The run diagnosis: rules on synthetic log histories, the report section, and two real MiniLM runs."""

from __future__ import annotations

import math
import random
import re

import pytest
import yaml

from lmtune.cli import main
from lmtune.evaluate.diagnose import check, diagnose
from lmtune.evaluate.report import write_report


def history(
    train: list[float], evals: dict[int, float] | None = None, grads=None, every: int = 10
) -> list[dict]:
    """Trainer-style logs: a training log every `every` steps (the first at step 1), evaluations by step."""
    steps = [1] + [every * i for i in range(1, len(train))]
    logs = [
        {"loss": loss, "grad_norm": grads[i] if grads else 1.0, "learning_rate": 1e-4, "step": step}
        for i, (step, loss) in enumerate(zip(steps, train, strict=True))
    ]
    logs += [{"eval_loss": v, "eval_f1_macro": 1 - v, "step": s} for s, v in (evals or {}).items()]
    return sorted(logs, key=lambda h: h["step"])


def kinds(logs, **kwargs) -> list[str]:
    kwargs = {"metric": "f1_macro", "greater_is_better": True, **kwargs}
    return [f.kind for f in diagnose(logs, **kwargs)]


def decay(n: int, start: float, end: float) -> list[float]:
    return [end + (start - end) * math.exp(-4 * i / (n - 1)) for i in range(n)]


def test_a_training_loss_of_exactly_zero_is_read_without_dividing_by_it():
    logs = history([0.5, 0.1, 0, 0, 0, 0, 0, 0.9])
    found = diagnose(logs, metric="f1_macro", greater_is_better=True)
    spike = next(f for f in found if f.kind == "instability")
    assert "inf× the median 0" in spike.evidence


def test_clear_overfitting_is_found_with_its_steps():
    evals = {20: 0.55, 40: 0.412, 60: 0.45, 80: 0.52, 100: 0.58, 120: 0.633}
    logs = history(decay(13, 0.69, 0.02), evals)
    (finding,) = diagnose(logs, metric="f1_macro", greater_is_better=True)
    assert finding.kind == "overfitting"
    assert (
        "validation loss 0.412 at step 40 → 0.633 at step 120 (+54%) while training loss fell"
        in finding.evidence
    )
    assert "validation f1_macro best 0.588 at step 40, 0.367 at the last evaluation" in finding.evidence
    assert "training.early_stopping.patience" in finding.suggestion and "weight_decay" in finding.suggestion


def test_clean_convergence_finds_nothing_and_says_why():
    evals = {20: 0.6, 40: 0.45, 60: 0.38, 80: 0.35, 100: 0.34, 120: 0.335}
    logs = history(decay(13, 1.1, 0.3), evals)
    result = check(logs, metric="f1_macro", greater_is_better=True, n_classes=3)
    assert result.findings == []
    text = "\n".join(result.passed)
    assert "no overfitting: validation loss at its minimum (0.335) at the last evaluation (step 120)" in text
    assert "no underfitting: training loss" in text and "below chance level log(3) = 1.099" in text
    assert "no instability" in text and "no divergence: every logged loss is finite" in text


def test_noisy_but_sane_runs_find_nothing():
    for seed in range(20):
        rng = random.Random(seed)
        train = [v * rng.uniform(0.8, 1.2) for v in decay(40, 1.1, 0.35)]
        grads = [rng.uniform(0.5, 3.0) * (1 + i / 10) for i in range(40)]
        # validation settles and wobbles by ±4% around its floor
        evals = {s: (0.5 + 0.4 * math.exp(-s / 80)) * rng.uniform(0.96, 1.04) for s in range(50, 400, 50)}
        assert kinds(history(train, evals, grads), n_classes=3) == [], seed


def test_a_plateau_at_chance_level_is_underfitting():
    rng = random.Random(0)
    train = [math.log(3) * rng.uniform(0.98, 1.02) for _ in range(30)]
    evals = {s: math.log(3) * rng.uniform(0.99, 1.01) for s in range(50, 300, 50)}
    (finding,) = diagnose(history(train, evals), metric="f1_macro", greater_is_better=True, n_classes=3)
    assert finding.kind == "underfitting"
    assert re.search(r"of chance level log\(3\) = 1.099", finding.evidence), finding.evidence
    assert "learning_rate" in finding.suggestion and "lora.r" in finding.suggestion
    # a language model (no chance level) whose loss barely moves is underfitting too
    assert kinds(history([2.0 * rng.uniform(0.97, 1.03) for _ in range(30)]), metric="loss") == [
        "underfitting"
    ]


def test_a_loss_spike_is_instability():
    train = decay(30, 1.1, 0.3)
    train[20] = 2.4
    (finding,) = diagnose(history(train), metric="loss", greater_is_better=False)
    assert finding.kind == "instability"
    assert finding.evidence.startswith("training loss 2.4 at step 200, ")
    assert "learning_rate" in finding.suggestion and "warmup" in finding.suggestion


def test_a_gradient_norm_spike_is_instability_but_late_small_norms_are_not():
    grads = [2.0] * 30
    grads[25] = 60.0
    (finding,) = diagnose(history(decay(30, 1.1, 0.3), grads=grads), metric="loss", greater_is_better=False)
    assert (
        finding.kind == "instability"
        and "gradient norm 60 at step 250, 30× its running median 2" in finding.evidence
    )
    # converged: norms fall to 0.01 and one jumps to 0.2, still far below the run's usual size
    quiet = [3.0] * 15 + [0.01] * 15
    quiet[25] = 0.2
    assert kinds(history(decay(30, 1.1, 0.3), grads=quiet), metric="loss", greater_is_better=False) == []


def test_nan_is_divergence_and_nothing_else():
    train = decay(20, 1.1, 0.3)
    train[12] = math.nan
    (finding,) = diagnose(history(train, {100: 0.5, 150: math.inf}), metric="loss", greater_is_better=False)
    assert finding.kind == "diverged"
    assert finding.evidence.startswith("training loss = nan at step 120 (last finite: ")
    assert "learning_rate" in finding.suggestion and "fp32" in finding.suggestion


def test_a_large_train_validation_gap_alone_is_overfitting():
    evals = {50: 0.9, 100: 0.7, 150: 0.62, 200: 0.6}  # still at its minimum, far above the training loss
    (finding,) = diagnose(history(decay(21, 1.1, 0.01), evals), metric="loss", greater_is_better=False)
    assert finding.kind == "overfitting" and finding.evidence.startswith(
        "at step 200 validation loss 0.6 is "
    )


def test_checks_without_enough_logs_say_so():
    result = check(history([0.7, 0.6], {2: 0.5}), metric="loss", greater_is_better=False)
    assert result.findings == []
    assert any(line.startswith("overfitting not checked: 1 evaluation(s)") for line in result.passed)
    assert any(line.startswith("underfitting not checked") for line in result.passed)


def test_report_has_the_diagnosis_after_the_training_curves(tmp_path):
    evals = {20: 0.55, 40: 0.412, 60: 0.45, 80: 0.52, 100: 0.58, 120: 0.633}
    page = write_report(
        tmp_path / "report.html",
        title="t",
        facts={},
        sections=[("Test metrics", "<p>m</p>"), ("Data", "<p>d</p>")],
        history=history(decay(13, 0.69, 0.02), evals),
        metric="f1_macro",
        config_text="",
    ).read_text()
    curves, diagnosis, data = (page.index(h) for h in ("Training curves", "<h2>Diagnosis", "<h2>Data"))
    assert curves < diagnosis < data
    assert "<b>overfitting</b>: validation loss 0.412 at step 40 → 0.633 at step 120 (+54%)" in page
    assert "no underfitting" in page and "Checks passed" in page


# ------------------------------------------------------------------------------ real MiniLM runs


def _train(tmp_path, name: str, rows: int, model: dict, training: dict) -> str:
    config = {
        "task": "classify",
        "model": {"name": "bundled:minilm", "max_length": 64, **model},
        "data": {
            "train": "bundled:tweets",
            "max_train_rows": rows,
            "split": {"validation": 0.005, "test": 0.005},
        },
        "method": {"name": "full"},
        "training": {"learning_rate": 1e-4, "save_total_limit": 1, **training},
        "evaluation": {"metric": "f1_macro", "baselines": []},
        "output": {"dir": str(tmp_path), "name": name},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path)]) == 0
    return (tmp_path / name / "report.html").read_text()


@pytest.mark.slow
def test_real_minilm_overfitting_is_diagnosed_and_a_sane_run_is_clean(tmp_path):
    # 32 tweets, 16 epochs, no regularisation, no early stopping: memorised, validation loss climbs
    overfit = {"epochs": 16, "batch_size": 8, "weight_decay": 0.0, "warmup_ratio": 0.05, "logging_steps": 4}
    report = _train(
        tmp_path,
        "overfit",
        32,
        {"dropout": 0.0},
        {**overfit, "eval_every": 8, "early_stopping": {"patience": None}},
    )
    assert "<b>overfitting</b>: validation loss" in report
    # 640 tweets, 2 epochs, default regularisation, early stopping: still improving when it ends
    sane = {
        "epochs": 2,
        "batch_size": 32,
        "logging_steps": 5,
        "eval_every": 10,
        "early_stopping": {"patience": 2},
    }
    report = _train(tmp_path, "sane", 640, {}, sane)
    assert "<b>overfitting</b>" not in report and "no overfitting: validation loss" in report


def preference_logs(chosen: list[float], margins: list[float], loss: list[float]) -> list[dict]:
    """TRL-style preference training logs."""
    return [
        {"loss": value, "grad_norm": 1.0, "logps/chosen": c, "rewards/margins": m, "step": 10 * (i + 1)}
        for i, (c, m, value) in enumerate(zip(chosen, margins, loss, strict=True))
    ]


def test_preference_runs_are_checked_for_likelihood_displacement_and_a_collapsed_loss():
    n = 12
    falling = preference_logs(decay(n, -40, -70), decay(n, 0, 20), decay(n, 0.69, 0.05))
    [finding] = [
        f for f in diagnose(falling, metric="loss", greater_is_better=False) if f.kind == "preference"
    ]
    assert "likelihood displacement" in finding.evidence and "learning_rate" in finding.suggestion
    collapsed = preference_logs([-40.0] * n, decay(n, 0, 30), [0.69] * 4 + [0.001] * (n - 4))
    [finding] = [
        f for f in diagnose(collapsed, metric="loss", greater_is_better=False) if f.kind == "preference"
    ]
    assert finding.evidence.startswith("training loss collapsed to")
    healthy = preference_logs(decay(n, -40, -41), decay(n, 0, 2), decay(n, 0.69, 0.4))
    result = check(healthy, metric="loss", greater_is_better=False)
    assert not [f for f in result.findings if f.kind == "preference"]
    assert any(line.startswith("preference: chosen log-probability") for line in result.passed)
    assert not any(
        "preference" in line
        for line in check(history([1.0] * n), metric="loss", greater_is_better=False).passed
    )
