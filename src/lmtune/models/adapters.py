"""Bottleneck adapters (Houlsby / Pfeiffer), our own small implementation.

The AdapterHub `adapters` library pins transformers ~=4.57, so it cannot be installed next to
transformers 5. An adapter is down-projection → non-linearity → up-projection added to the output of
a block's attention and/or MLP output projection, before the block's residual add. The up-projection
starts at zero, so the adapted model starts out computing exactly what the base computes.

The output projections are found generically inside each block of the layer stacks (see
`block_targets`), so GPT-2, Llama, Qwen2, T5, BART, BERT and RoBERTa need no per-architecture table.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers.pytorch_utils import Conv1D

from lmtune.errors import LmtuneError

LINEAR = (nn.Linear, Conv1D)  # GPT-2 uses Conv1D (a transposed linear) for its projections
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_weights.safetensors"
KIND = "lmtune-bottleneck"  # tells our adapter_config.json from peft's (which has peft_type instead)


class Bottleneck(nn.Module):
    """hidden + up(act(down(hidden))); kept in fp32 whatever the base dtype, like peft's adapters."""

    def __init__(self, size: int, width: int, non_linearity: str) -> None:
        super().__init__()
        self.down = nn.Linear(size, width)
        self.act = ACTIVATIONS[non_linearity]()
        self.up = nn.Linear(width, size)
        nn.init.zeros_(self.up.weight)  # zero update at the start: the model begins identical to its base
        nn.init.zeros_(self.up.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        update = self.up(self.act(self.down(hidden.to(self.down.weight.dtype))))
        return hidden + update.to(hidden.dtype)


class Adapted(nn.Module):
    """A linear layer followed by its bottleneck adapter.

    `weight` and `bias` stay visible because some models read them (T5 casts its MLP input to
    `wo.weight.dtype`)."""

    def __init__(self, base_layer: nn.Module, adapter: Bottleneck) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.adapter = adapter

    @property
    def weight(self) -> torch.Tensor:
        return self.base_layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base_layer.bias

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.adapter(self.base_layer(hidden))


def _linear_names(module: nn.Module) -> list[str]:
    return [name for name, child in module.named_modules() if isinstance(child, LINEAR)]


def is_attention(name: str) -> bool:
    """Whether a module name is an attention module's: self_attn, attn, SelfAttention, attention, rel_attn..."""
    last = name.rsplit(".", 1)[-1].lower()
    return "attn" in last or "attention" in last


def _attention(block: nn.Module) -> str | None:
    """Name of the block's first attention module."""
    return next((name for name, _ in block.named_modules() if is_attention(name)), None)


def attention_output(block: nn.Module) -> str | None:
    """The output projection of the block's first attention module (the last linear layer inside it)."""
    name = _attention(block)
    inner = _linear_names(block.get_submodule(name)) if name else []
    return f"{name}.{inner[-1]}" if inner else None


def mlp_output(block: nn.Module) -> str | None:
    """The MLP's output projection: the block's last linear layer (all supported blocks end with the MLP)."""
    names = _linear_names(block)
    attention = _attention(block)
    if not names or (attention and names[-1].startswith(attention + ".")):
        return None
    return names[-1]


def block_targets(stacks: dict[str, nn.ModuleList], style: str) -> list[str]:
    """Full names of the layers to adapt: houlsby → attention and MLP outputs, pfeiffer → MLP outputs."""
    targets = []
    for stack_name, stack in stacks.items():
        for index, block in enumerate(stack):
            mlp, attention = mlp_output(block), attention_output(block)
            if mlp is None:
                raise LmtuneError(
                    f"method.name = 'adapter': no MLP output layer found in {type(block).__name__}; "
                    "use lora, dora or ia3 for this model"
                )
            if style == "houlsby" and attention is None:
                raise LmtuneError(
                    f"method.adapter.style = 'houlsby': no attention output projection in "
                    f"{type(block).__name__}; allowed here: pfeiffer"
                )
            wanted = [attention, mlp] if style == "houlsby" else [mlp]
            targets += [f"{stack_name}.{index}.{name}" for name in wanted]
    return targets


def _output_size(layer: nn.Module) -> int:
    return layer.nf if isinstance(layer, Conv1D) else layer.out_features


def insert(model: nn.Module, targets: list[str], reduction_factor: int, non_linearity: str) -> None:
    """Wrap each target layer with a fresh bottleneck of width output size // reduction_factor."""
    for name in targets:
        layer = model.get_submodule(name)
        size = _output_size(layer)
        adapter = Bottleneck(size, max(1, size // reduction_factor), non_linearity)
        model.set_submodule(name, Adapted(layer, adapter.to(layer.weight.device)))


def has_adapters(model: nn.Module) -> bool:
    return any(isinstance(module, Adapted) for module in model.modules())


def add(model: nn.Module, stacks: dict[str, nn.ModuleList], head: list[str], settings) -> nn.Module:
    """Insert adapters per `settings` (method.adapter) and freeze everything but them and the task head."""
    if not stacks:
        raise LmtuneError(
            f"method.name = 'adapter': no transformer layer stack found in {type(model).__name__}"
        )
    targets = block_targets(stacks, settings.style)
    insert(model, targets, settings.reduction_factor, settings.non_linearity)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(".adapter." in name or name.split(".", 1)[0] in head)
    model.lmtune_adapters = {  # what save() writes next to the weights, so load() can rebuild the same model
        "kind": KIND,
        "style": settings.style,
        "reduction_factor": settings.reduction_factor,
        "non_linearity": settings.non_linearity,
        "hidden_size": getattr(model.config, "hidden_size", None),
        "targets": targets,
        "head": head,
    }
    return model


def save(model: nn.Module, folder: Path) -> None:
    """Only what trained: the adapters, and the task head of a classifier."""
    spec = model.lmtune_adapters
    state = {
        name: tensor.detach().contiguous().cpu()
        for name, tensor in model.state_dict().items()
        if ".adapter." in name or name.split(".", 1)[0] in spec["head"]
    }
    save_file(state, str(folder / WEIGHTS_FILE))
    (folder / CONFIG_FILE).write_text(json.dumps(spec, indent=2))


def is_saved_here(folder: Path) -> bool:
    path = folder / CONFIG_FILE
    return path.is_file() and json.loads(path.read_text()).get("kind") == KIND


def load(model: nn.Module, folder: Path) -> nn.Module:
    """Re-insert the saved adapters into a freshly loaded base and load their (and the head's) weights."""
    spec = json.loads((folder / CONFIG_FILE).read_text())
    try:
        insert(model, spec["targets"], spec["reduction_factor"], spec["non_linearity"])
    except AttributeError as exc:
        raise LmtuneError(f"adapter in '{folder}' does not fit this base model ({exc})") from None
    state = load_file(str(folder / WEIGHTS_FILE))
    result = model.load_state_dict(state, strict=False)
    missing = [n for n in result.missing_keys if ".adapter." in n or n.split(".", 1)[0] in spec["head"]]
    if result.unexpected_keys or missing:
        keys = (result.unexpected_keys or missing)[:3]
        raise LmtuneError(f"adapter in '{folder}' does not fit this base model (mismatched keys: {keys})")
    model.lmtune_adapters = spec
    return model
