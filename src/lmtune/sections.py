"""What every config section is built from: torch-free and free of lmtune.config, so that a task's or a
method's own module can declare its section beside its code and lmtune.config gathers them (no cycle)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from lmtune.errors import shorten

SEED = {"ge": 0, "le": 2**32 - 1}  # what numpy, scikit-learn and torch all take


class Section(BaseModel):
    # NaN and infinity are never a sensible setting (`training.epochs: .inf` would pass `gt=0`)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def registered(value: str, registry: dict, what: str) -> str:
    """Registry-backed choices: the allowed values are whatever is registered."""
    if value not in registry:
        raise ValueError(registered_error(value, registry, what))
    return value


def registered_error(value, registry: dict, what: str) -> str:
    return f"unknown {what} {shorten(value)}; allowed: {', '.join(registry)}"
