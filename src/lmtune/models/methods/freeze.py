"""freeze: embeddings and lower layers stay frozen; the top blocks of each stack (and a classifier's
head) train."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lmtune.models.methods import Method, MethodSettings, register
from lmtune.sections import Section


class FreezeConfig(Section):
    trainable_layers: int = Field(
        2, ge=0, description="top transformer layers left trainable (plus the head)"
    )


class FreezeSettings(MethodSettings):
    name: Literal["freeze"] = "freeze"
    freeze: FreezeConfig = FreezeConfig()


def apply(model, settings: FreezeSettings):
    from lmtune.errors import LmtuneError
    from lmtune.models.methods.common import layer_stacks, scope

    root, _ = scope(model)
    stacks = list(layer_stacks(root).values())
    if not stacks:
        raise LmtuneError(f"method.freeze: no layer stack found in {type(root).__name__}")
    keep, depth = settings.freeze.trainable_layers, min(len(stack) for stack in stacks)
    if keep > depth:
        raise LmtuneError(
            f"method.freeze.trainable_layers = {keep}, but the model has {depth} layers; allowed: 0..{depth}"
        )
    for parameter in root.parameters():
        parameter.requires_grad_(False)
    for stack in stacks:
        for layer in list(stack)[len(stack) - keep :]:
            for parameter in layer.parameters():
                parameter.requires_grad_(True)
    # anything after the layer stack in the body (e.g. BERT's pooler) feeds the head: train it too
    for name, child in root.named_children():
        if "pool" in name:
            for parameter in child.parameters():
                parameter.requires_grad_(True)
    return model


register(Method("the lower layers stay frozen, the top ones and the head train", FreezeSettings, apply))
