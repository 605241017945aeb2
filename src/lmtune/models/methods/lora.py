"""lora and dora: low-rank adapters (peft) on the linear layers; dora adds weight decomposition."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lmtune.models.methods import Method, MethodSettings, register
from lmtune.sections import Section


class LoraConfig(Section):
    r: int = Field(8, ge=1, description="LoRA rank")
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="module names to adapt, or all-linear"
    )


class LoraSettings(MethodSettings):
    name: Literal["lora"] = "lora"
    lora: LoraConfig = LoraConfig()


class DoraSettings(MethodSettings):
    name: Literal["dora"] = "dora"
    lora: LoraConfig = Field(LoraConfig(), description="the LoRA settings (rank, alpha, …) DoRA decomposes")


def targets(model, wanted: list[str] | str) -> list[str]:
    """all-linear: a classifier's whole body (its head trains in full instead); a generative model's
    attention and MLP layers in every block (not lm_head, not embeddings). Conv1D counts as linear."""
    from lmtune.errors import LmtuneError
    from lmtune.models.adapters import LINEAR
    from lmtune.models.methods.common import SEQ_CLS, check_names, layer_stacks, scope, task_type

    root, _ = scope(model)
    if wanted != "all-linear":
        check_names(root, list(wanted), "method.lora.target_modules")
        return list(wanted)
    parts = [root] if task_type(model) == SEQ_CLS else list(layer_stacks(model).values())
    inside = {id(module) for part in parts for module in part.modules()}
    found = [
        name for name, module in model.named_modules() if isinstance(module, LINEAR) and id(module) in inside
    ]
    if not found:
        raise LmtuneError(f"method.lora.target_modules: {type(root).__name__} has no linear layers")
    return found


def adapt(model, settings: LoraConfig, dora: bool = False):
    """The model with LoRA adapters per `settings` (method.lora); the task head of a classifier in full."""
    from peft import LoraConfig as PeftLoraConfig

    from lmtune.models.methods.common import peft_model, scope, task_type

    _, head = scope(model)
    peft_config = PeftLoraConfig(
        task_type=task_type(model),
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets(model, settings.target_modules),
        modules_to_save=head or None,
        use_dora=dora,
    )
    return peft_model(model, peft_config)


register(
    Method(
        "low-rank adapters on the linear layers (peft)",
        LoraSettings,
        lambda model, settings: adapt(model, settings.lora),
    )
)
register(
    Method(
        "LoRA with weight decomposition (magnitude + direction)",
        DoraSettings,
        lambda model, settings: adapt(model, settings.lora, dora=True),
    )
)
