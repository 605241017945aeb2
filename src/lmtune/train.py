"""Build transformers' Trainer from the run config and a recipe's pieces; train, checkpoint, resume.

lmtune's speed comes from choices made here and in models/load.py, not from doing less work:
bf16 autocast where the hardware has it (AMX/AVX512-BF16 CPUs, recent GPUs), eager attention on
CPU, the fused AdamW kernel, length-grouped batches with dynamic padding, and length-sorted
evaluation batches.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.tensorboard import SummaryWriter
from transformers import (
    EarlyStoppingCallback,
    PrinterCallback,
    ProgressCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from transformers.integrations import TensorBoardCallback

from lmtune import faults, shims
from lmtune.config import RunConfig
from lmtune.errors import LmtuneError
from lmtune.evaluate.metrics import higher_is_better
from lmtune.models.loss import Loss
from lmtune.models.methods.common import count_parameters
from lmtune.models.precision import resolve_precision
from lmtune.monitor import LiveView, Monitor, divergence_error, tracker_callbacks
from lmtune.runs import last_complete_checkpoint


def check_setup(config: RunConfig) -> None:
    """What the machine must offer this run, checked before any data is read or directory created: the
    precision, and the trackers of training.report_to (only a run needs them; eval/predict of the run
    on another machine do not)."""
    import importlib.util

    resolve_precision(config.training.precision)
    missing = [name for name in config.training.report_to if importlib.util.find_spec(name) is None]
    if missing:
        raise LmtuneError(
            f"training.report_to = {config.training.report_to}: {', '.join(missing)} not installed "
            f"(pip install {' '.join(missing)}); allowed without extra packages: tensorboard"
        )


# A penalty term added to the training loss (EWC, L2-SP, a domain-adversarial term, …):
# penalty(model, inputs, outputs) -> scalar tensor. Evaluation scores the recipe's loss alone.
Penalty = Callable[[torch.nn.Module, dict, object], torch.Tensor]


class Guards:
    """What lmtune adds to any Trainer (its own, TRL's): a stop at the first non-finite loss, the
    fault-injection points, and a step LR schedule (linear warmup, then multiply by gamma every N steps)."""

    def __init__(self, *args, step_schedule: tuple[int, float] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._step_schedule = step_schedule

    def training_step(self, model, inputs, num_items_in_batch=None):
        """Stop at the first NaN/inf loss, before the optimizer step: no poisoned weights and no
        checkpoint after it. One isfinite on the loss already computed; the Trainer syncs on the same
        value each step anyway (logging_nan_inf_filter)."""
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not torch.isfinite(loss):
            raise divergence_error(self.args, self.state.global_step + 1, loss.item())
        faults.point("train.step")
        return loss

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
        super().save_model(output_dir, _internal_call)
        if _internal_call:  # inside a checkpoint: weights written, optimizer and trainer state not yet
            faults.point("checkpoint.weights")

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self._step_schedule is None:
            return super().create_scheduler(num_training_steps, optimizer)
        step_size, gamma = self._step_schedule
        warmup = self.args.get_warmup_steps(num_training_steps)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / max(1, warmup)
            return gamma ** ((step - warmup) // step_size)

        if self.lr_scheduler is None:
            self.lr_scheduler = LambdaLR(optimizer or self.optimizer, factor)
        return self.lr_scheduler


class LmtuneTrainer(Guards, Trainer):
    """The Trainer of lmtune's own recipes: Guards, plus the loss seam (the recipe's Loss, per-row
    weights, penalty terms)."""

    def __init__(self, *args, loss: Loss | None = None, penalties: Sequence[Penalty] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self._loss = loss
        self._penalties = tuple(penalties)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The recipe's loss (or, where it gives none or returns None, the Trainer's: the model's own),
        on the batch without its `weight` column, which goes to the loss instead; plus the penalties."""
        weights = inputs.pop("weight", None)
        result = self._loss(model, inputs, weights, num_items_in_batch) if self._loss else None
        if result is None:
            if weights is not None:
                raise LmtuneError("the training rows carry weights, but this task's loss cannot use them")
            loss, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)
        else:
            loss, outputs, self.loss_is_scaled_for_ga = result
        if model.training:
            for penalty in self._penalties:
                loss = loss + penalty(model, inputs, outputs)
        return (loss, outputs) if return_outputs else loss


class FaultPoints(TrainerCallback):
    """A whole checkpoint written: where the fault-injection tests kill a run (lmtune.faults)."""

    def on_save(self, args, state, control, **kwargs):
        faults.point("checkpoint.saved")


def training_settings(
    config: RunConfig, run_dir: Path, model, train_dataset, eval_dataset
) -> tuple[bool, dict]:
    """(has validation, TrainingArguments' keywords) from the run config; TRL's configs take the same ones."""
    has_validation = eval_dataset is not None and len(eval_dataset) > 0
    precision = resolve_precision(config.training.precision, count_parameters(model)[1])
    n_train = len(train_dataset)
    t = config.training
    steps_per_epoch = max(1, math.ceil(n_train / (t.batch_size * t.gradient_accumulation)))
    eval_steps = t.eval_every or steps_per_epoch
    strategy = "steps" if has_validation else "no"
    metric = config.evaluation.metric
    return has_validation, dict(
        output_dir=str(run_dir / "checkpoints"),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps or -1,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation,
        learning_rate=t.learning_rate,
        weight_decay=t.weight_decay,
        warmup_steps=t.warmup_ratio,  # a float < 1 is a ratio of the total steps in transformers 5
        lr_scheduler_type="constant_with_warmup" if t.scheduler in ("constant", "step") else t.scheduler,
        max_grad_norm=t.max_grad_norm,
        optim="adamw_torch_fused",
        seed=t.seed,
        data_seed=t.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not torch.cuda.is_available(),
        train_sampling_strategy="group_by_length" if t.group_by_length else "random",
        length_column_name="length",
        eval_strategy=strategy,
        eval_steps=eval_steps,
        save_strategy="steps" if has_validation else "epoch",
        save_steps=eval_steps,
        save_total_limit=t.save_total_limit,
        load_best_model_at_end=has_validation,
        metric_for_best_model=f"eval_{metric}" if has_validation else None,
        greater_is_better=higher_is_better(metric),
        logging_steps=t.logging_steps,
        logging_first_step=True,
        report_to="none",  # trackers are added by build_trainer, after the Monitor that feeds them
        include_num_input_tokens_seen="non_padding",  # tokens/s in the logs
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        disable_tqdm=False,
        prediction_loss_only=metric == "loss",  # no vocabulary-sized logits gathered for nothing
    )


def build_trainer(
    config: RunConfig,
    run_dir: Path,
    *,
    model,
    tokenizer,
    train_dataset,
    eval_dataset,
    collator,
    compute_metrics,
    loss: Loss | None = None,
    penalties: Sequence[Penalty] = (),
    callbacks: tuple = (),
    eval_in_order: bool = False,
) -> Trainer:
    """The Trainer for a recipe's model, data and loss (models/loss.py: language_model_loss,
    classification_loss; None = the model's own). A `weight` column in the training rows reaches the
    loss as per-row weights (the Trainer would drop it as no argument of the model; then the collator
    drops `length` instead); `penalties` are added to the training loss."""
    has_validation, settings = training_settings(config, run_dir, model, train_dataset, eval_dataset)
    args = TrainingArguments(**settings)
    if "weight" in (getattr(train_dataset, "column_names", None) or []):
        args.remove_unused_columns = False
        collator = _without(collator, "length")
    # eval_in_order: the evaluation's predictions in the dataset's order (QA puts windows back by position)
    trainer_class = shims.in_order_eval_sampler(LmtuneTrainer) if eval_in_order else LmtuneTrainer
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset if has_validation else None,
        data_collator=collator,
        processing_class=tokenizer,
        compute_metrics=compute_metrics if has_validation else None,
        callbacks=_callbacks(config, run_dir, has_validation, callbacks),
        step_schedule=_step_schedule(config),
        loss=loss,
        penalties=penalties,
    )
    return _live(trainer)


def _callbacks(config: RunConfig, run_dir: Path, has_validation: bool, extra: tuple) -> list:
    """Monitor first (it adds to the logs the others read), trackers, the caller's, the fault points,
    early stopping."""
    trackers = tracker_callbacks(config.training.report_to, run_dir)
    if "tensorboard" in config.training.report_to:
        trackers.insert(0, TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(run_dir / "tb"))))
    callbacks = [Monitor(), *trackers, *extra, FaultPoints()]
    stopping = config.training.early_stopping
    if has_validation and stopping.patience:
        callbacks.append(
            EarlyStoppingCallback(
                early_stopping_patience=stopping.patience, early_stopping_threshold=stopping.threshold
            )
        )
    return callbacks


def _step_schedule(config: RunConfig) -> tuple[int, float] | None:
    t = config.training
    return (t.step_size, t.step_gamma) if t.scheduler == "step" else None


def _live(trainer: Trainer) -> Trainer:
    for default in (ProgressCallback, PrinterCallback):  # raw dict lines; LiveView replaces them
        trainer.remove_callback(default)
    trainer.add_callback(LiveView())
    return trainer


def guarded_trainer(
    kind: type[Trainer],
    config: RunConfig,
    run_dir: Path,
    *,
    has_validation: bool,
    eval_dataset,
    callbacks: tuple = (),
    **arguments,
) -> Trainer:
    """A Trainer subclass of another library's (TRL's DPOTrainer, …) with lmtune's Guards, callbacks,
    step schedule and live view: what a recipe on its own trainer builds (tasks/preference.py)."""
    guarded = type(f"Lmtune{kind.__name__}", (Guards, kind), {})
    trainer = guarded(
        eval_dataset=eval_dataset if has_validation else None,
        callbacks=_callbacks(config, run_dir, has_validation, callbacks),
        step_schedule=_step_schedule(config),
        **arguments,
    )
    return _live(trainer)


def _without(collator, key: str):
    """The collator on features without `key` (a column the sampler reads that the model must not get)."""

    def collate(features: list[dict]):
        return collator([{k: v for k, v in f.items() if k != key} for f in features])

    return collate


def fit(trainer: Trainer, run_dir: Path, resume: bool) -> list[dict]:
    """Train (from the last checkpoint when resuming) and return the logged history."""
    checkpoint = None
    if resume:
        checkpoint = last_complete_checkpoint(run_dir)
        if checkpoint is None:
            raise LmtuneError(f"--resume: no checkpoint in {run_dir / 'checkpoints'}; start without --resume")
    try:
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    finally:  # a diverged or interrupted run keeps its history too, for diagnosis
        history = trainer.state.log_history
        (run_dir / "history.json").write_text(json.dumps(history, indent=1))
    return history
