"""The `regress:` section of a run config (task: regress), beside its recipe."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lmtune.sections import Section


class RegressConfig(Section):
    """task: regress — a number per text or sentence pair (a similarity score, a rating) from an encoder
    with a one-output head; data.label_column names the number's column."""

    loss: Literal["mse", "huber"] = Field(
        "mse", description="mse: squared error; huber: squared near 0, linear beyond huber_delta (outliers)"
    )
    huber_delta: float = Field(
        1.0, gt=0, description="huber: where the loss turns linear, in standardised target units"
    )
    standardize: bool = Field(
        True,
        description="train on (target - mean) / sd of the training targets and map predictions back: a "
        "fresh head starts near the mean, and the loss has the same scale for every target range",
    )
