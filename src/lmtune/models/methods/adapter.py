"""adapter: bottleneck adapters (lmtune.models.adapters) after the attention and/or MLP of every block."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lmtune.models.methods import Method, MethodSettings, register
from lmtune.sections import Section


class AdapterConfig(Section):
    style: Literal["houlsby", "pfeiffer"] = Field(
        "pfeiffer", description="houlsby: after attention and MLP; pfeiffer: after the MLP only"
    )
    reduction_factor: int = Field(16, ge=1, description="bottleneck width = hidden size / this")
    non_linearity: Literal["relu", "gelu", "silu", "tanh"] = "relu"


class AdapterSettings(MethodSettings):
    name: Literal["adapter"] = "adapter"
    adapter: AdapterConfig = AdapterConfig()


def apply(model, settings: AdapterSettings):
    from lmtune.models import adapters
    from lmtune.models.methods.common import layer_stacks, scope

    _, head = scope(model)
    return adapters.add(model, layer_stacks(model), head, settings.adapter)


register(
    Method("bottleneck adapters after attention and/or MLP (Houlsby / Pfeiffer)", AdapterSettings, apply)
)
