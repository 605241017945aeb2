"""Task recipes, one module each, registered by name.

A recipe module provides `prepare(config)` (read and validate everything, no side effects),
`train(config, prepared, run_dir, resume, callbacks)`, `evaluate(run_dir, data)` and `predict(run_dir, texts)`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

TASKS: dict[str, str] = {
    "classify": "lmtune.tasks.classify",
    "sft": "lmtune.tasks.sft",
    "seq2seq": "lmtune.tasks.seq2seq",
}

# Validation metrics (the first is the default) and baselines each task offers; kept here, not in
# the recipes, so that validating a config does not import torch.
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "classify": ("f1_macro", "accuracy", "precision_macro", "recall_macro", "loss"),
    "sft": ("loss",),
    "seq2seq": ("loss",),
}
# what rows a task's data pipeline makes: text + label, or generative examples (chats, documents)
TASK_KINDS: dict[str, str] = {"classify": "labelled", "sft": "generative", "seq2seq": "generative"}
TASK_BASELINES: dict[str, tuple[str, ...]] = {
    "classify": ("base", "probe"),
    "sft": ("base",),
    "seq2seq": ("base",),
}


def recipe(task: str) -> ModuleType:
    return importlib.import_module(TASKS[task])
