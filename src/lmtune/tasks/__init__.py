"""Task recipes, one module each, registered by name.

A recipe module provides `prepare(config)` (read and validate everything, no side effects),
`train(config, prepared, run_dir, resume)`, `evaluate(run_dir, data)` and `predict(run_dir, texts)`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

TASKS: dict[str, str] = {
    "classify": "lmtune.tasks.classify",
}


def recipe(task: str) -> ModuleType:
    return importlib.import_module(TASKS[task])
