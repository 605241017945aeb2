"""Saving, reloading and merging what a method trained, whatever the method: peft adapters, lmtune's
bottleneck adapters, or whole models (full / freeze)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from lmtune.errors import LmtuneError
from lmtune.models import adapters
from lmtune.models.load import check_weights


def is_adapter(folder: Path | str) -> bool:
    """Whether `folder` holds only what a method trained (peft or bottleneck adapter), not a whole model."""
    return (Path(folder) / adapters.CONFIG_FILE).is_file()


def save_weights(model: nn.Module, folder: Path | str) -> None:
    """What the method trained: peft → its adapter files; bottleneck → adapter_weights.safetensors +
    adapter_config.json; full / freeze → the whole model."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if adapters.has_adapters(model):
        adapters.save(model, folder)
    else:
        model.save_pretrained(folder)


def load_weights(base: nn.Module, folder: Path | str) -> nn.Module:
    """The trained model, rebuilt from a freshly loaded base (loaded with the run's load_options), for
    inference and export: every parameter comes back frozen, whatever the method.

    A whole saved model (full / freeze) is loaded from the folder; the base then only gives its class,
    dtype and attention kernel."""
    folder = Path(folder)
    if adapters.is_saved_here(folder):
        model = adapters.load(base, folder)
    elif is_adapter(folder):
        from peft import PeftModel

        check_weights(folder)
        model = PeftModel.from_pretrained(base, str(folder))
    else:
        check_weights(folder)
        attn = base.config._attn_implementation
        model = type(base).from_pretrained(
            str(folder),
            dtype=base.dtype,
            attn_implementation=attn,
            use_safetensors=True,
            trust_remote_code=False,
        )
        model = model.to(base.device)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def merge(model: nn.Module) -> nn.Module:
    """A plain transformers model for export: LoRA, DoRA, IA3 (and qlora, dequantized) merged into the
    base weights; full / freeze models are returned as they are."""
    if adapters.has_adapters(model):
        raise _cannot_merge("adapter")
    if not hasattr(model, "peft_config"):
        return model
    peft_config = model.active_peft_config
    if peft_config.is_prompt_learning:
        raise _cannot_merge(peft_config.peft_type.value.lower())
    if getattr(model.get_base_model(), "is_loaded_in_4bit", False):
        return _merge_4bit(model)
    _settle_saved_modules(model)
    return model.merge_and_unload()


def _settle_saved_modules(model: nn.Module) -> None:
    """Put each trained head (peft modules_to_save copy) in its wrapper's place before merging: peft's IA3
    unload assumes the wrapped module has a `weight`, which RoBERTa's two-layer head has not."""
    from peft.utils import ModulesToSaveWrapper

    for name, module in list(model.named_modules()):
        if isinstance(module, ModulesToSaveWrapper):
            model.set_submodule(name, module.unload_and_optionally_merge_module(True, False, None))


def _cannot_merge(method: str) -> LmtuneError:
    return LmtuneError(
        f"merge: {method} cannot be merged into the base weights; export the adapter instead (--adapter)"
    )


def _merge_4bit(model: nn.Module) -> nn.Module:
    """peft merges into a 4-bit layer by re-quantizing the sum, which adds rounding noise (measured on a
    tiny Llama: 8% of the update's effect on the logits). Dequantize the base to fp32 first, put the
    trained LoRA weights back on it and merge there: the export then matches the trained model."""
    from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

    peft_config, state = model.active_peft_config, get_peft_model_state_dict(model)
    base = model.unload().dequantize(dtype=torch.float32).float()
    base.is_loaded_in_4bit = False
    plain = get_peft_model(base, peft_config)
    set_peft_model_state_dict(plain, state)
    return _restore_conv1d(plain.merge_and_unload())


def _restore_conv1d(model: nn.Module) -> nn.Module:
    """transformers loads GPT-2's Conv1D layers as transposed 4-bit linears, so they dequantize to
    nn.Linear and would save under transposed shapes: turn them back into the Conv1D the class expects."""
    from transformers.pytorch_utils import Conv1D

    with torch.device("meta"):
        skeleton = type(model)(model.config)
    for name, expected in skeleton.named_modules():
        linear = model.get_submodule(name)
        if isinstance(expected, Conv1D) and type(linear) is nn.Linear:
            with torch.device("meta"):
                conv = Conv1D(linear.out_features, linear.in_features)
            conv.weight = nn.Parameter(linear.weight.detach().T.contiguous())
            conv.bias = linear.bias
            model.set_submodule(name, conv)
    return model
