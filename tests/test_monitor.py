"""Monitoring while training: TensorBoard scalars, the terminal view, trackers, and the NaN stop."""

from __future__ import annotations

import importlib.machinery
import io
import json
import re
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from conftest import tiny_config
from transformers import TrainerCallback, TrainerControl, TrainerState

from lmtune.cli import main
from lmtune.config import validate
from lmtune.errors import LmtuneError
from lmtune.monitor import LiveView, _env_defaults, divergence_error, memory_stats, status_line
from lmtune.runs import last_complete_checkpoint, open_run
from lmtune.tasks import classify, encoder
from lmtune.train import check_setup


def _run(config):
    with open_run(config) as run_dir:
        classify.train(config, classify.prepare(config), run_dir)


def _scalars(tb_dir: Path) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tb_dir))
    events.Reload()
    return {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}


def test_tensorboard_gets_throughput_memory_and_the_schedule(tiny_model_dir, labelled_csv, tmp_path, capsys):
    training = dict(
        epochs=2, logging_steps=1, eval_every=5, warmup_ratio=0.1, early_stopping={"patience": None}
    )
    config = validate(
        tiny_config(tiny_model_dir("bert"), labelled_csv, tmp_path / "runs", training=training), "t"
    )
    _run(config)
    run = tmp_path / "runs" / "run"
    scalars = _scalars(run / "tb")
    for tag in (
        "loss",
        "learning_rate",
        "grad_norm",
        "samples_per_second",
        "tokens_per_second",
        "memory_rss_mb",
    ):
        assert f"train/{tag}" in scalars, sorted(scalars)
    assert {"eval/loss", "eval/f1_macro"} <= set(scalars)
    assert all(v > 0 for v in scalars["train/samples_per_second"].values())
    assert all(v > 0 for v in scalars["train/tokens_per_second"].values())
    assert all(v > 50 for v in scalars["train/memory_rss_mb"].values())  # MB: a Python process with torch
    peak, now = scalars["train/memory_peak_rss_mb"], scalars["train/memory_rss_mb"]
    assert all(peak[s] >= now[s] for s in now)
    # linear schedule, 22 steps, 3 warmup steps: the rate logged at step s is the one step s used
    total, warmup, lr = 22, 3, 5e-3
    expected = {
        s: lr * ((s - 1) / warmup if s - 1 < warmup else (total - s + 1) / (total - warmup))
        for s in range(1, 23)
    }
    rates = scalars["train/learning_rate"]
    assert sorted(rates) == list(range(1, 23))
    assert all(rates[s] == pytest.approx(expected[s], rel=1e-5, abs=1e-9) for s in rates)
    # the same figures reach history.json, and transformers' raw dict lines are gone from the output
    history = json.loads((run / "history.json").read_text())
    logged = [h for h in history if "loss" in h]
    assert all("samples_per_second" in h and "memory_rss_mb" in h for h in logged)
    assert not any("train_runtime" in h for h in logged)  # only the final summary carries it
    out = capsys.readouterr().out
    assert "{'loss'" not in out and "step 22/22 · loss" in out and "step 5 evaluation · loss" in out


def _state(max_steps=10, step=0):
    state = TrainerState()
    state.max_steps, state.global_step = max_steps, step
    return state


def _args(**overrides):
    return SimpleNamespace(**{"disable_tqdm": False, "metric_for_best_model": "eval_f1_macro", **overrides})


def test_live_view_keeps_a_bar_and_a_status_line_with_the_newest_figures():
    screen = io.StringIO()
    view, args, state, control = LiveView(interactive=True, file=screen), _args(), _state(), TrainerControl()
    view.on_train_begin(args, state, control)
    for step in (1, 2, 3):
        state.global_step = step
        view.on_step_end(args, state, control)
    logs = {"loss": 0.5, "learning_rate": 1e-4, "grad_norm": 1.25, "samples_per_second": 50.0}
    view.on_log(args, state, control, logs={**logs, "tokens_per_second": 3200.0, "memory_rss_mb": 1536.0})
    line = view.line.desc
    for text in (
        "step 3/10",
        "loss 0.5",
        "lr 1.00e-04",
        "grad norm 1.25",
        "50.0 samples/s",
        "3,200 tokens/s",
    ):
        assert text in line, line
    assert "RSS 1.50 GB" in line and "eval" not in line
    for _ in range(2):  # an evaluation shows its own bar beneath, gone when it ends
        view.on_prediction_step(args, state, control, eval_dataloader=[0, 1, 2])
    assert view.eval_bar.n == 2 and view.eval_bar.total == 3
    view.on_log(args, state, control, logs={"eval_loss": 0.4, "eval_f1_macro": 0.8125})
    view.on_evaluate(args, state, control)
    assert view.eval_bar is None
    state.global_step = 4
    view.on_step_end(args, state, control)
    view.on_log(args, state, control, logs={**logs, "loss": 0.25})
    line = view.line.desc
    assert "step 4/10 · loss 0.25" in line and "eval f1_macro 0.8125 (step 3)" in line
    assert view.bar.n == 4 and view.bar.total == 10
    view.on_train_end(args, state, control)
    assert view.bar is None and "step 4/10" in screen.getvalue()


def test_live_view_prints_plain_lines_without_a_terminal_or_with_disable_tqdm(capsys):
    tty = _Tty()
    for view, args in ((LiveView(), _args()), (LiveView(file=tty), _args(disable_tqdm=True))):
        state, control = _state(step=2), TrainerControl()
        view.on_train_begin(args, state, control)
        assert view.bar is None  # pytest's captured stderr is no terminal; disable_tqdm wins over one
        view.on_log(args, state, control, logs={"loss": 0.7, "learning_rate": 2e-5})
        view.on_log(args, state, control, logs={"eval_loss": 0.6, "eval_f1_macro": 0.5})
        view.on_log(args, state, control, logs={"train_runtime": 12.5, "train_loss": 0.65})
        view.on_train_end(args, state, control)
    for out in (capsys.readouterr().out, tty.getvalue()):
        assert out.splitlines() == [
            "step 2/10 · loss 0.7 · lr 2.00e-05",
            "step 2 evaluation · loss 0.6 · f1_macro 0.5",
            "training done in 12.5 s · mean training loss 0.65",
        ]


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_status_line_and_memory():
    assert status_line({}) == ""
    stats = memory_stats()
    assert stats["memory_rss_mb"] > 0 and stats["memory_peak_rss_mb"] >= stats["memory_rss_mb"]
    line = status_line({"step": 7, "loss": 2e-6, "cuda_max_allocated_mb": 2048.0}, max_steps=None)
    assert line == "step 7 · loss 2.00e-06 · GPU peak 2.00 GB"


# ------------------------------------------------------------------------------------ trackers


@pytest.mark.skipif(
    any(importlib.util.find_spec(m) for m in ("wandb", "mlflow")), reason="trackers installed"
)
def test_a_tracker_that_is_not_installed_fails_before_any_run_directory(
    tiny_model_dir, labelled_csv, tmp_path, capsys
):
    with pytest.raises(
        LmtuneError, match=r"training.report_to = \['tensorboard', 'wandb'\]: wandb not installed"
    ):
        check_setup(validate({"training": {"report_to": ["tensorboard", "wandb"]}}, "run.yaml"))
    raw = tiny_config(
        tiny_model_dir("bert"), labelled_csv, tmp_path / "runs", training={"report_to": ["mlflow"]}
    )
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "mlflow not installed (pip install mlflow)" in err
    assert not (tmp_path / "runs").exists()
    assert validate({"training": {"report_to": []}}, "t").training.report_to == []


class _FakeMlflow(types.ModuleType):
    """The few calls transformers' MLflowCallback makes, recorded."""

    __version__ = "2.20.0"

    def __init__(self):
        super().__init__("mlflow")
        self.__spec__ = importlib.machinery.ModuleSpec("mlflow", None)
        self.utils = SimpleNamespace(
            validation=SimpleNamespace(MAX_PARAM_VAL_LENGTH=6000, MAX_PARAMS_TAGS_PER_BATCH=100)
        )
        self.uri, self.run, self.metrics = None, None, []

    def is_tracking_uri_set(self):
        return self.uri is not None

    def set_tracking_uri(self, uri):
        self.uri = uri

    def get_tracking_uri(self):
        return self.uri

    def active_run(self):
        return self.run

    def start_run(self, run_name=None, nested=False):
        self.run = SimpleNamespace(info=SimpleNamespace(run_id="1"))

    def end_run(self):
        self.run = None

    def log_params(self, params, synchronous=True):
        pass

    def log_metrics(self, metrics, step, synchronous=True):
        self.metrics.append((step, metrics))


def test_mlflow_gets_the_monitor_figures_in_the_run_directory(
    tiny_model_dir, labelled_csv, tmp_path, monkeypatch
):
    fake = _FakeMlflow()
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    training = {"epochs": 1, "report_to": ["mlflow"]}
    config = validate(
        tiny_config(tiny_model_dir("bert"), labelled_csv, tmp_path / "runs", training=training), "t"
    )
    _run(config)
    assert fake.uri == (tmp_path / "runs" / "run.partial" / "mlruns").resolve().as_uri()
    logged = [m for _, m in fake.metrics if "loss" in m]
    assert logged and all("samples_per_second" in m and "memory_rss_mb" in m for m in logged)
    assert any("eval_f1_macro" in m for _, m in fake.metrics) and fake.run is None  # ended
    assert not (tmp_path / "runs" / "run" / "tb").exists()  # tensorboard was not asked for


def test_tracker_environment_defaults_last_only_for_their_setup(monkeypatch):
    monkeypatch.delenv("WANDB_DIR", raising=False)
    monkeypatch.setenv("WANDB_MODE", "online")
    import os

    with _env_defaults(WANDB_MODE="offline", WANDB_DIR="/runs/x"):
        assert os.environ["WANDB_MODE"] == "online" and os.environ["WANDB_DIR"] == "/runs/x"
    assert "WANDB_DIR" not in os.environ and os.environ["WANDB_MODE"] == "online"


# ----------------------------------------------------------------------------------- divergence


class _Poison(TrainerCallback):
    """Turns the word embeddings into NaN after optimizer step `at`: the next loss is NaN."""

    def __init__(self, at: int):
        self.at = at

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.at:
            import torch

            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(
    tiny_model_dir, labelled_csv, tmp_path, monkeypatch, capsys
):
    training = {"epochs": 2, "eval_every": 5, "save_total_limit": 5}
    raw = tiny_config(tiny_model_dir("bert"), labelled_csv, tmp_path / "runs", training=training)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    build = encoder.build_trainer  # the encoder recipes build their Trainer there
    monkeypatch.setattr(
        encoder,
        "build_trainer",
        lambda *a, **kw: build(*a, **{**kw, "callbacks": (*kw["callbacks"], _Poison(7))}),
    )
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    partial = tmp_path / "runs" / "run.partial"
    checkpoint = partial / "checkpoints" / "checkpoint-5"
    assert re.fullmatch(
        rf"lmtune: error: training diverged at step 8: loss = nan; last good checkpoint: {re.escape(str(checkpoint))}; "
        r"lower training.learning_rate \(now 0.005\), keep training.max_grad_norm \(now 1\)"
        r"(, or use training.precision fp32 \(now bf16\))?",
        err,
    ), err
    assert sorted(p.name for p in (partial / "checkpoints").iterdir()) == [
        "checkpoint-5"
    ]  # none after the NaN
    assert last_complete_checkpoint(partial) == checkpoint and not (tmp_path / "runs" / "run").exists()
    history = json.loads((partial / "history.json").read_text())  # kept for diagnosis
    assert 5 <= max(h["step"] for h in history) < 8
    monkeypatch.undo()  # the cause removed, --resume picks the run up from checkpoint-5 and finishes it
    assert main(["train", str(path), "--resume"]) == 0
    metrics = json.loads((tmp_path / "runs" / "run" / "metrics.json").read_text())
    assert metrics["steps"] > 8


def test_divergence_message_names_what_to_change(tmp_path):
    args = SimpleNamespace(output_dir=str(tmp_path / "checkpoints"), learning_rate=3e-4, max_grad_norm=1.0)
    fp32 = divergence_error(SimpleNamespace(**vars(args), bf16=False, fp16=False), 12, float("inf"))
    assert str(fp32) == (
        "training diverged at step 12: loss = inf; last good checkpoint: none; "
        "lower training.learning_rate (now 0.0003), or keep training.max_grad_norm (now 1)"
    )
    fp16 = divergence_error(SimpleNamespace(**vars(args), bf16=False, fp16=True), 3, float("nan"))
    assert str(fp16).endswith(
        "lower training.learning_rate (now 0.0003), keep training.max_grad_norm (now 1), "
        "or use training.precision fp32 (now fp16)"
    )
