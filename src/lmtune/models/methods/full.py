"""full: every weight trains."""

from __future__ import annotations

from typing import Literal

from lmtune.models.methods import Method, MethodSettings, register


class FullSettings(MethodSettings):
    name: Literal["full"] = "full"


def apply(model, settings: FullSettings):
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return model


register(Method("every weight trains", FullSettings, apply))
