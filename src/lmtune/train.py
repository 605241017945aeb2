"""Build transformers' Trainer from the run config and a recipe's pieces; train, checkpoint, resume.

lmtune's speed comes from choices made here and in models/load.py, not from doing less work:
bf16 autocast where the hardware has it (AMX/AVX512-BF16 CPUs, recent GPUs), eager attention on
CPU, the fused AdamW kernel, length-grouped batches with dynamic padding, and length-sorted
evaluation batches.
"""

from __future__ import annotations

import json
import math
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

from lmtune import faults
from lmtune.config import RunConfig
from lmtune.errors import LmtuneError
from lmtune.models.loss import labelled_loss
from lmtune.models.methods import count_parameters
from lmtune.monitor import LiveView, Monitor, divergence_error, tracker_callbacks
from lmtune.runs import last_complete_checkpoint

# On a GPU a small model is bound by kernel launches, and autocast's extra cast kernels cost more
# than bf16 matmuls save: measured on an H100 with MiniLM (22.7M parameters, SST-2, batch 32),
# bf16 autocast ran at 569 samples/s against 1,199 in fp32. Large models gain from bf16.
GPU_BF16_MIN_PARAMETERS = 100_000_000


def resolve_precision(requested: str, n_parameters: int | None = None) -> str:
    """auto → bf16 where it is faster: CPUs with AMX or AVX512-BF16, and GPUs with bf16 for models of
    at least GPU_BF16_MIN_PARAMETERS; else fp32 (fp16 on GPUs without bf16)."""
    if requested == "fp16" and not torch.cuda.is_available():
        raise LmtuneError("training.precision = 'fp16' needs a CUDA GPU; allowed on CPU: auto, fp32, bf16")
    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        if n_parameters is not None and n_parameters < GPU_BF16_MIN_PARAMETERS:
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    cpu = torch.cpu
    has_bf16 = (
        getattr(cpu, "_is_amx_tile_supported", lambda: False)()
        or getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
    )
    return "bf16" if has_bf16 else "fp32"


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


def inference_precision(config: RunConfig, model) -> str:
    """The precision to score or generate with; a run trained in fp16 on a GPU still runs on a CPU."""
    requested = config.training.precision
    if requested == "fp16" and not torch.cuda.is_available():
        requested = "auto"
    return resolve_precision(requested, count_parameters(model)[1])


class LmtuneTrainer(Trainer):
    """Trainer plus what it lacks: a step LR schedule (linear warmup, then multiply by gamma every N
    steps), for language models the loss computed on labelled positions only, and a stop at the first
    non-finite loss."""

    def __init__(
        self,
        *args,
        step_schedule: tuple[int, float] | None = None,
        labelled_loss: bool = False,
        class_weights: list[float] | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self._step_schedule = step_schedule
        self._labelled_loss = labelled_loss
        self._class_weights = torch.tensor(class_weights) if class_weights else None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self._class_weights is not None and model.training:  # data.augment.balance = weights
            labels = inputs.pop("labels")
            outputs = model(**inputs)
            weights = self._class_weights.to(outputs.logits.device)
            loss = torch.nn.functional.cross_entropy(outputs.logits.float(), labels, weight=weights)
            return (loss, outputs) if return_outputs else loss
        if not self._labelled_loss:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        total, count = labelled_loss(model, inputs)
        # normalised over the whole accumulated batch when the Trainer counted it, else per batch
        self.loss_is_scaled_for_ga = num_items_in_batch is not None
        loss = total / (num_items_in_batch if num_items_in_batch is not None else count.clamp(min=1))
        return (loss, {"loss": loss}) if return_outputs else loss

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


class FaultPoints(TrainerCallback):
    """A whole checkpoint written: where the fault-injection tests kill a run (lmtune.faults)."""

    def on_save(self, args, state, control, **kwargs):
        faults.point("checkpoint.saved")


def training_arguments(
    config: RunConfig, run_dir: Path, has_validation: bool, n_train: int, precision: str
) -> TrainingArguments:
    t = config.training
    steps_per_epoch = max(1, math.ceil(n_train / (t.batch_size * t.gradient_accumulation)))
    eval_steps = t.eval_every or steps_per_epoch
    strategy = "steps" if has_validation else "no"
    metric = config.evaluation.metric
    return TrainingArguments(
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
        greater_is_better=metric != "loss",
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
    language_model: bool = False,
    class_weights: list[float] | None = None,
    callbacks: tuple = (),
) -> Trainer:
    has_validation = eval_dataset is not None and len(eval_dataset) > 0
    precision = resolve_precision(config.training.precision, count_parameters(model)[1])
    args = training_arguments(config, run_dir, has_validation, len(train_dataset), precision)
    trackers = tracker_callbacks(config.training.report_to, run_dir)
    if "tensorboard" in config.training.report_to:
        trackers.insert(0, TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(run_dir / "tb"))))
    # Monitor first: it adds to the logs the others read
    callbacks = [Monitor(), *trackers, *callbacks, FaultPoints()]
    stopping = config.training.early_stopping
    if has_validation and stopping.patience:
        callbacks.append(
            EarlyStoppingCallback(
                early_stopping_patience=stopping.patience, early_stopping_threshold=stopping.threshold
            )
        )
    t = config.training
    trainer = LmtuneTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset if has_validation else None,
        data_collator=collator,
        processing_class=tokenizer,
        compute_metrics=compute_metrics if has_validation else None,
        callbacks=callbacks,
        step_schedule=(t.step_size, t.step_gamma) if t.scheduler == "step" else None,
        labelled_loss=language_model,
        class_weights=class_weights,
    )
    for default in (ProgressCallback, PrinterCallback):  # raw dict lines; LiveView replaces them
        trainer.remove_callback(default)
    trainer.add_callback(LiveView())
    return trainer


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
