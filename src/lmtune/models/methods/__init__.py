"""Adaptation methods, one module each: which parameters train and how (PEFT's one-module-per-method
style). A method module declares its settings (a MethodSettings: `name` plus the sub-sections it reads,
e.g. `method.lora`) beside its `apply(model, settings) -> model` and registers both with one line;
adding a method = its module + its name in MODULES + one row in tests/test_peft_methods.py.

Torch-free to import: lmtune.config builds `method:` as a union of the registered settings
(discriminated on `name`), and validating a config must not load torch. The modules import torch
inside their functions.

Classifiers (encoders) train their task head in full next to the method's parameters; generative models
(decoder-only and encoder-decoder) train only the method's parameters. Recipes use apply_method,
load_options and count_parameters from here, and lmtune.models.weights to save and load, so they need
not know which method made a model.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lmtune.sections import Section

# the method modules, in the order `method.name` lists them
MODULES = ("full", "freeze", "lora", "qlora", "ia3", "prompt", "adapter")


class MethodSettings(Section):
    """The `method:` section of one method: its name and the sub-sections it reads."""

    name: str


@dataclass(frozen=True)
class Method:
    about: str  # one line for listings
    settings: type[MethodSettings]  # its `method:` section; `name` is a Literal of the method's name
    apply: Callable[[Any, Any], Any]  # (model, settings) -> the model to train
    load_options: Callable[[Any], dict] | None = None  # extra from_pretrained arguments (qlora's 4-bit)


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """One line per method module: `register(Method(...))`, under the Literal its settings' name holds."""
    (name,) = method.settings.model_fields["name"].annotation.__args__
    if name in METHODS:
        raise ValueError(f"method {name!r} registered twice")
    METHODS[name] = method
    return method


for _module in MODULES:
    importlib.import_module(f"{__name__}.{_module}")


def apply_method(model, settings):
    """The model to train under `settings` (the run's method section)."""
    return METHODS[settings.name].apply(model, settings)


def load_options(settings) -> dict:
    """Extra from_pretrained arguments the method needs (qlora quantizes while loading); {} otherwise."""
    method = METHODS[settings.name]
    return method.load_options(settings) if method.load_options else {}
