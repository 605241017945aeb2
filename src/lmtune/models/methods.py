"""Adaptation methods, one registry entry each: which parameters train and how.

A method takes the freshly loaded model and its `method` config section, and returns the model
to train. Adding one = one function + one line in METHODS + one row in tests/test_methods.py.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from lmtune.errors import LmtuneError


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


def transformer_layers(base: nn.Module) -> nn.ModuleList:
    """The stack of transformer blocks: the longest ModuleList in the body."""
    lists = [m for m in base.modules() if isinstance(m, nn.ModuleList)]
    if not lists:
        raise LmtuneError(f"method.freeze: no layer stack found in {type(base).__name__}")
    return max(lists, key=len)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def full(model: nn.Module, config) -> nn.Module:
    """Every weight trains."""
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return model


def freeze(model: nn.Module, config) -> nn.Module:
    """Freeze embeddings and lower layers; the top `trainable_layers` blocks and the head train."""
    base, _ = base_and_head(model)
    layers = transformer_layers(base)
    keep = config.freeze.trainable_layers
    if keep > len(layers):
        raise LmtuneError(
            f"method.freeze.trainable_layers = {keep}, but the model has {len(layers)} layers; allowed: 0..{len(layers)}"
        )
    for parameter in base.parameters():
        parameter.requires_grad_(False)
    for layer in list(layers)[len(layers) - keep :]:
        for parameter in layer.parameters():
            parameter.requires_grad_(True)
    # anything after the layer stack in the body (e.g. BERT's pooler) feeds the head: train it too
    for name, child in base.named_children():
        if "pool" in name:
            for parameter in child.parameters():
                parameter.requires_grad_(True)
    return model


def lora_targets(base: nn.Module, prefix: str) -> list[str]:
    """Full names of every nn.Linear in the pre-trained body (the head is trained in full instead)."""
    return [f"{prefix}.{name}" for name, module in base.named_modules() if isinstance(module, nn.Linear)]


def lora(model: nn.Module, config) -> nn.Module:
    """Low-rank adapters (peft) on the body's linear layers; the task head is trained in full."""
    from peft import LoraConfig, TaskType, get_peft_model

    base, head = base_and_head(model)
    settings = config.lora
    targets = settings.target_modules
    if targets == "all-linear":
        targets = lora_targets(base, model.base_model_prefix)
        if not targets:
            raise LmtuneError(f"method.lora.target_modules: {type(base).__name__} has no linear layers")
    else:
        names = {name.rsplit(".", 1)[-1] for name, _ in base.named_modules()}
        missing = [t for t in targets if t.rsplit(".", 1)[-1] not in names]
        if missing:
            linear = sorted(
                {n.rsplit(".", 1)[-1] for n, m in base.named_modules() if isinstance(m, nn.Linear)}
            )
            raise LmtuneError(
                f"method.lora.target_modules: {missing} not in the model; linear layers: {', '.join(linear)}"
            )
    peft_config = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets,
        modules_to_save=head,
    )
    return get_peft_model(model, peft_config)


METHODS: dict[str, Callable[[nn.Module, object], nn.Module]] = {
    "full": full,
    "freeze": freeze,
    "lora": lora,
}


def apply_method(model: nn.Module, config) -> nn.Module:
    return METHODS[config.name](model, config)
