"""The shared parts of a run that every recipe calls in order (torchtune's recipe style): a recipe's
`train` reads top to bottom as begin → baselines → adapt → build trainer → fit → score → save → finish.

Each part does one thing every task does the same way; what differs per task (its rows, loss, scores,
report sections) stays in the recipe.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import set_seed

from lmtune.config import RunConfig, dump_config
from lmtune.evaluate.report import write_report
from lmtune.models.methods import apply_method
from lmtune.models.methods.common import count_parameters
from lmtune.runs import MARKER, check_resumable, prune_checkpoints
from lmtune.tasks.contract import TrainResult


def begin(config: RunConfig, run_dir: Path, resume: bool) -> None:
    """Refuse a resume whose config changed; write the resolved config first (a killed run keeps it)."""
    check_resumable(run_dir, config, resume)
    (run_dir / "config.yaml").write_text(dump_config(config))


def adapt(config: RunConfig, model):
    """The model to train under config.method, seeded; prints and returns (model, (trainable, total))."""
    set_seed(config.training.seed)
    model = apply_method(model, config.method)
    trainable, total = count_parameters(model)
    print(
        f"method {config.method.name}: {trainable:,} of {total:,} parameters trainable ({100 * trainable / total:.2f}%)"
    )
    return model, (trainable, total)


def result(
    trainer, history: list[dict], test: dict, params: tuple[int, int], rows: dict, audits: dict
) -> TrainResult:
    """The keys of metrics.json every task fills (TrainResult), each audit check's results under its
    name (forgetting: [] when not run); the recipe adds its own after them."""
    runtime = next((h for h in reversed(history) if "train_runtime" in h), {})
    state = trainer.state
    return (
        TrainResult(
            test=test,
            best_validation=state.best_metric,
            best_checkpoint=Path(state.best_model_checkpoint).name if state.best_model_checkpoint else None,
            steps=state.global_step,
            train_runtime_s=runtime.get("train_runtime"),
            train_samples_per_second=runtime.get("train_samples_per_second"),
            parameters={"trainable": params[0], "total": params[1]},
            rows=rows,
            forgetting=[],
        )
        | audits
    )


def finish(
    config: RunConfig, run_dir: Path, metrics: TrainResult, data_report: dict, **report
) -> TrainResult:
    """metrics.json, data_report.json and report.html (`report`: write_report's facts, sections, history,
    metric …); then the run marker, and last the checkpoints go (a resume needs them until here)."""
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (run_dir / "data_report.json").write_text(json.dumps(data_report, indent=2, ensure_ascii=False))
    write_report(
        run_dir / "report.html",
        title=f"lmtune run: {config.output.name}",
        config_text=dump_config(config),
        **report,
    )
    (run_dir / MARKER).write_text(json.dumps({"task": config.task, "name": config.output.name}))
    prune_checkpoints(run_dir / "checkpoints", metrics["best_checkpoint"], config.training.keep_checkpoints)
    return metrics
