"""What a run shows while it trains: throughput and memory in every log, a live terminal view,
experiment trackers, and a stop with one clear message when the loss stops being a number.

The Trainer already logs loss, learning rate and gradient norm; `Monitor` adds samples/s, tokens/s
and memory to the same logs dict, so they reach history.json, TensorBoard and any tracker alike.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import TrainerCallback
from transformers.integrations import MLflowCallback, WandbCallback

from lmtune.errors import LmtuneError
from lmtune.runs import last_complete_checkpoint

MB = 1024 * 1024
# transformers' running figures since the start of training, evaluation time included; the
# per-interval figures below replace them in training logs so one number means one thing
CUMULATIVE = ("train_runtime", "train_tokens_per_second")


# ----------------------------------------------------------------------------------- memory


def _rss_bytes() -> float | None:
    try:
        import psutil

        return float(psutil.Process().memory_info().rss)
    except ImportError:
        pass
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _peak_rss_bytes() -> float | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return float(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB on Linux


def memory_stats() -> dict[str, float]:
    """Process RSS now and at its peak, and on CUDA the tensors' allocation now and at its peak (MB)."""
    stats = {}
    now, peak = _rss_bytes(), _peak_rss_bytes()
    if now is not None:
        stats["memory_rss_mb"] = round(now / MB, 1)
    if peak is not None:  # the kernel updates the high-water mark lazily: never below the current RSS
        stats["memory_peak_rss_mb"] = round(max(peak, now or 0) / MB, 1)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        stats["cuda_allocated_mb"] = round(torch.cuda.memory_allocated() / MB, 1)
        stats["cuda_max_allocated_mb"] = round(torch.cuda.max_memory_allocated() / MB, 1)
    return stats


# ------------------------------------------------------------------------ throughput + memory


class Monitor(TrainerCallback):
    """Adds samples/s, tokens/s and memory to each training log.

    Throughput counts the time between optimizer steps, evaluation and checkpoint saving excluded
    (they would make a logging interval that holds an evaluation look slow). Samples are optimizer
    steps × the effective batch size, as in transformers' own train_samples_per_second; tokens come
    from state.num_input_tokens_seen (non-padding tokens: TrainingArguments.include_num_input_tokens_seen).
    Must run before the loggers: build_trainer puts it first.
    """

    def __init__(self):
        self._anchor = 0.0
        self._busy = 0.0
        self._step = 0
        self._tokens = 0

    def _resume(self, *_args, **_kwargs):
        self._anchor = time.perf_counter()

    def on_train_begin(self, args, state, control, **kwargs):
        self._resume()
        self._busy = 0.0
        self._step, self._tokens = state.global_step, state.num_input_tokens_seen

    on_evaluate = on_save = _resume

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        self._busy += now - self._anchor
        self._anchor = now

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or "loss" not in logs:
            return
        extra = memory_stats()
        steps = state.global_step - self._step
        if self._busy > 0 and steps > 0:
            samples = steps * args.train_batch_size * args.gradient_accumulation_steps * args.world_size
            extra["samples_per_second"] = round(samples / self._busy, 2)
            if args.include_num_input_tokens_seen != "no":
                tokens = state.num_input_tokens_seen - self._tokens
                extra["tokens_per_second"] = round(tokens / self._busy, 1)
        self._busy, self._step, self._tokens = 0.0, state.global_step, state.num_input_tokens_seen
        # the Trainer copied logs into log_history before calling back: keep both the same
        entry = state.log_history[-1] if state.log_history else {}
        for key in CUMULATIVE:
            logs.pop(key, None)
            entry.pop(key, None)
        logs.update(extra)
        entry.update(extra)


# ----------------------------------------------------------------------------- terminal view


def _number(value: float) -> str:
    return f"{value:.2e}" if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5) else f"{value:.4g}"


def status_line(latest: dict, max_steps: int | None = None, metric: str = "eval_loss") -> str:
    """One line of the newest figures: step, loss, lr, grad norm, throughput, eval metric, memory.

    `latest` merges every log so far (a key keeps its last value); `metric` is the eval key shown."""
    parts = []
    if "step" in latest:
        parts.append(f"step {latest['step']}" + (f"/{max_steps}" if max_steps and max_steps > 0 else ""))
    for key, label in (("loss", "loss"), ("learning_rate", "lr"), ("grad_norm", "grad norm")):
        if key in latest:
            parts.append(f"{label} {_number(latest[key])}")
    if "samples_per_second" in latest:
        parts.append(f"{latest['samples_per_second']:.1f} samples/s")
    if "tokens_per_second" in latest:
        parts.append(f"{latest['tokens_per_second']:,.0f} tokens/s")
    if metric in latest:
        name = metric.removeprefix("eval_")
        parts.append(f"eval {name} {_number(latest[metric])} (step {latest.get('eval_step', '?')})")
    if "cuda_max_allocated_mb" in latest:
        parts.append(f"GPU peak {latest['cuda_max_allocated_mb'] / 1024:.2f} GB")
    if "memory_rss_mb" in latest:
        peak = latest.get("memory_peak_rss_mb")
        parts.append(
            f"RSS {latest['memory_rss_mb'] / 1024:.2f} GB" + (f" (peak {peak / 1024:.2f})" if peak else "")
        )
    return " · ".join(parts)


def eval_line(logs: dict, step: int, metric: str = "eval_loss") -> str:
    """An evaluation's loss and headline metric as one line (for logs that are not a terminal)."""
    parts = [f"step {step} evaluation"]
    for key in dict.fromkeys(("eval_loss", metric)):
        if key in logs:
            parts.append(f"{key.removeprefix('eval_')} {_number(logs[key])}")
    return " · ".join(parts)


def summary_line(logs: dict) -> str:
    """The Trainer's final log (runtime, mean training loss) as one line."""
    parts = [f"training done in {logs['train_runtime']:.1f} s"]
    if "train_samples_per_second" in logs:
        parts.append(f"{logs['train_samples_per_second']:.1f} samples/s overall")
    if "train_loss" in logs:
        parts.append(f"mean training loss {_number(logs['train_loss'])}")
    return " · ".join(parts)


class LiveView(TrainerCallback):
    """Replaces transformers' progress output (raw dict lines) with one tqdm bar for the steps (rate,
    ETA) and a status line beneath it that always holds the newest figures.

    On a terminal the two are redrawn in place; where stderr is not a terminal (a log file, CI) or
    with disable_tqdm, each log prints one plain status line instead, so logs stay readable.
    `interactive` and `file` exist for tests.
    """

    def __init__(self, interactive: bool | None = None, file=None):
        self.interactive = interactive
        self.file = file
        self.latest: dict = {}
        self.metric = "eval_loss"
        self.max_steps = None
        self.bar = self.line = self.eval_bar = None

    def _is_interactive(self, args) -> bool:
        if self.interactive is not None:
            return self.interactive
        stream = self.file or sys.stderr
        return not args.disable_tqdm and hasattr(stream, "isatty") and stream.isatty()

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        self.metric = args.metric_for_best_model or "eval_loss"
        if not self.metric.startswith("eval_"):
            self.metric = f"eval_{self.metric}"
        self.max_steps = state.max_steps
        self.latest = {"step": state.global_step}
        if self._is_interactive(args):
            self.bar = tqdm(
                total=state.max_steps,
                initial=state.global_step,
                desc="train",
                unit="step",
                position=0,
                dynamic_ncols=True,
                file=self.file,
            )
            self.line = tqdm(total=0, position=1, bar_format="{desc}", file=self.file)
            self.line.set_description_str(status_line(self.latest, self.max_steps, self.metric))

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        if self.bar is None or eval_dataloader is None:
            return
        if self.eval_bar is None:
            try:
                total = len(eval_dataloader)
            except TypeError:  # an iterable dataset: no length, no bar
                return
            self.eval_bar = tqdm(total=total, desc="evaluate", position=2, leave=False, file=self.file)
        self.eval_bar.update(1)

    def on_evaluate(self, args, state, control, **kwargs):
        if self.eval_bar is not None:
            self.eval_bar.close()
            self.eval_bar = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        if "loss" not in logs and not any(k.startswith("eval_") for k in logs):
            if "train_runtime" in logs:  # the Trainer's final summary
                self._print(summary_line(logs))
            return
        self.latest.update(logs, step=state.global_step)
        if self.metric in logs:
            self.latest["eval_step"] = state.global_step
        if self.line is not None:
            self.line.set_description_str(status_line(self.latest, self.max_steps, self.metric))
        elif "loss" in logs:
            self._print(status_line(self.latest, self.max_steps, self.metric))
        else:
            self._print(eval_line(logs, state.global_step, self.metric))

    def _print(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.file)
        else:
            print(text, file=self.file or sys.stdout, flush=True)

    def on_train_end(self, args, state, control, **kwargs):
        for bar in (self.eval_bar, self.line, self.bar):
            if bar is not None:
                bar.close()
        self.bar = self.line = self.eval_bar = None


# ------------------------------------------------------------------------------------ trackers


@contextmanager
def _env_defaults(**values: str):
    """Set environment variables the user left unset, for the duration of a tracker's setup only,
    so one run's defaults (its directory) never leak into the next run in the same process."""
    added = [key for key in values if key not in os.environ]
    for key in added:
        os.environ[key] = values[key]
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


class LocalMLflow(MLflowCallback):
    """MLflow logging to file:<run_dir>/mlruns unless MLFLOW_TRACKING_URI names another store."""

    def __init__(self, run_dir: Path):
        super().__init__()
        self.run_dir = Path(run_dir)

    def setup(self, args, state, model):
        if not os.environ.get("MLFLOW_TRACKING_URI"):
            import mlflow

            mlflow.set_tracking_uri((self.run_dir / "mlruns").resolve().as_uri())
        super().setup(args, state, model)


class OfflineWandb(WandbCallback):
    """W&B in offline mode (there may be no network; `wandb sync` uploads later) unless WANDB_MODE is
    set, its files under <run_dir> unless WANDB_DIR is set."""

    def __init__(self, run_dir: Path):
        super().__init__()
        self.run_dir = Path(run_dir)

    def setup(self, args, state, model, **kwargs):
        with _env_defaults(WANDB_MODE="offline", WANDB_DIR=str(self.run_dir)):
            super().setup(args, state, model, **kwargs)


def tracker_callbacks(report_to: list[str], run_dir: Path) -> list[TrainerCallback]:
    """Callbacks of the trackers asked for besides TensorBoard (train.check_setup checked that they are
    installed before the run started)."""
    makers = {"mlflow": LocalMLflow, "wandb": OfflineWandb}
    return [makers[name](run_dir) for name in report_to if name in makers]


# ----------------------------------------------------------------------------------- divergence


def precision_of(args) -> str:
    return "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32"


def divergence_error(args, step: int, loss: float) -> LmtuneError:
    """The one-line stop for a non-finite loss, naming the checkpoint `--resume` would start from."""
    checkpoint = last_complete_checkpoint(Path(args.output_dir).parent)
    advice = [f"lower training.learning_rate (now {args.learning_rate:g})", "keep training.max_grad_norm"]
    if args.max_grad_norm and args.max_grad_norm > 0:
        advice[1] += f" (now {args.max_grad_norm:g})"
    precision = precision_of(args)
    if precision != "fp32":
        advice.append(f"use training.precision fp32 (now {precision})")
    return LmtuneError(
        f"training diverged at step {step}: loss = {loss}; last good checkpoint: {checkpoint or 'none'}; "
        + ", ".join(advice[:-1])
        + f", or {advice[-1]}"
    )
