"""What the method modules share: where a method looks for layers (scope, layer_stacks), the peft
task type, explicit target names checked against the model, and parameter counts. Imports torch, so
method modules import it inside their functions (lmtune.models.methods stays torch-free).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from lmtune.errors import LmtuneError
from lmtune.models import adapters
from lmtune.models.adapters import LINEAR

SEQ_CLS, CAUSAL_LM, SEQ_2_SEQ_LM = "SEQ_CLS", "CAUSAL_LM", "SEQ_2_SEQ_LM"  # peft task types


def task_type(model: nn.Module) -> str:
    """The peft task type: seq2seq LM, causal LM, or (anything that cannot generate) classification.

    can_generate() rather than is_encoder_decoder alone: BartForSequenceClassification is an
    encoder-decoder classifier."""
    if not type(model).can_generate():
        return SEQ_CLS
    return SEQ_2_SEQ_LM if getattr(model.config, "is_encoder_decoder", False) else CAUSAL_LM


def base_and_head(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """The pre-trained body and the names of the task-head modules (top-level children outside it)."""
    prefix = getattr(model, "base_model_prefix", "")
    base = getattr(model, prefix, None)
    if base is None:
        raise LmtuneError(f"method: cannot find the pre-trained body of {type(model).__name__}")
    head = [
        name
        for name, child in model.named_children()
        if name != prefix and any(True for _ in child.parameters())
    ]
    return base, head


def scope(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """Where a method looks for layers, and the head trained in full: the body and its head for a
    classifier; the whole model and no head for generative models (lm_head is often tied to the embeddings)."""
    return base_and_head(model) if task_type(model) == SEQ_CLS else (model, [])


def layer_stacks(root: nn.Module) -> dict[str, nn.ModuleList]:
    """The stacks of transformer blocks by name: outermost ModuleLists whose blocks hold an attention
    module (one stack for encoders and decoder-only models, encoder + decoder for seq2seq)."""
    stacks: dict[str, nn.ModuleList] = {}
    for name, module in root.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if any(name.startswith(f"{outer}.") for outer in stacks):
            continue
        if any(adapters.is_attention(child) for child, _ in module[0].named_modules()):
            stacks[name] = module
    return stacks


def _numel(parameter: torch.Tensor) -> int:
    """Elements of a parameter; a bitsandbytes 4-bit weight packs two per byte, its quant_state knows the shape."""
    shape = getattr(getattr(parameter, "quant_state", None), "shape", None)
    return shape.numel() if shape is not None else parameter.numel()


def count_parameters(model: nn.Module) -> tuple[int, int]:
    trainable = sum(_numel(p) for p in model.parameters() if p.requires_grad)
    total = sum(_numel(p) for p in model.parameters())
    return trainable, total


def linear_names(root: nn.Module) -> list[str]:
    """The distinct names of the linear layers under root (to list the choices in an error)."""
    return sorted({n.rsplit(".", 1)[-1] for n, m in root.named_modules() if isinstance(m, LINEAR)})


def check_names(root: nn.Module, targets: list[str], key: str) -> None:
    """Explicit target names must exist in the model (peft would fail later with a long message)."""
    names = {name.rsplit(".", 1)[-1] for name, _ in root.named_modules()}
    missing = [t for t in targets if t.rsplit(".", 1)[-1] not in names]
    if missing:
        raise LmtuneError(
            f"{key}: {missing} not in the model; linear layers: {', '.join(linear_names(root))}"
        )


def peft_model(model: nn.Module, peft_config) -> nn.Module:
    from peft import get_peft_model

    with warnings.catch_warnings():  # peft switches fan_in_fan_out on for GPT-2's Conv1D itself, and says so
        warnings.filterwarnings("ignore", message=".*fan_in_fan_out.*")
        return get_peft_model(model, peft_config)
