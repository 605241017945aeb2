"""qlora: LoRA on a base loaded in 4-bit NF4 (bitsandbytes); its load_options quantize while loading."""

from __future__ import annotations

import importlib.util
from typing import Literal

from pydantic import Field

from lmtune.models.methods import Method, MethodSettings, register
from lmtune.models.methods.lora import LoraConfig, adapt
from lmtune.sections import Section

# task heads stay unquantized under qlora so they can train (passing skip modules drops transformers' own)
UNQUANTIZED = ["lm_head", "classifier", "score", "logits_proj", "sequence_summary", "qa_outputs"]


class QloraConfig(Section):
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = Field(True, description="quantize the quantization constants too")
    compute_dtype: Literal["bf16", "fp16", "fp32"] = "bf16"


class QloraSettings(MethodSettings):
    name: Literal["qlora"] = "qlora"
    lora: LoraConfig = Field(LoraConfig(), description="the adapters trained on the 4-bit base")
    qlora: QloraConfig = QloraConfig()


def _repacked(model) -> bool:
    return any(
        getattr(
            getattr(getattr(module, "weight", None), "quant_state", None), "packing_format_for_cpu", False
        )
        for module in model.modules()
    )


def apply(model, settings: QloraSettings):
    from peft import prepare_model_for_kbit_training

    from lmtune.errors import LmtuneError

    if not getattr(model, "is_loaded_in_4bit", False) or _repacked(model):
        raise LmtuneError(
            "method.name = 'qlora' needs the base loaded in 4-bit with load_options(config.method) "
            "passed to from_pretrained"
        )
    # freezes the base, upcasts the unquantized rest to fp32, enables gradient checkpointing (the memory
    # saving qlora is chosen for; ~40% slower steps measured on CPU)
    model = prepare_model_for_kbit_training(model, gradient_checkpointing_kwargs={"use_reentrant": False})
    return adapt(model, settings.lora)


def load_options(settings: QloraSettings) -> dict:
    """Quantize while loading. Works on CPU too (bitsandbytes 0.50 has CPU 4-bit kernels), and on one
    CUDA GPU."""
    import torch
    from transformers import BitsAndBytesConfig

    from lmtune.errors import LmtuneError

    if importlib.util.find_spec("bitsandbytes") is None:
        raise LmtuneError("method.name = 'qlora' needs bitsandbytes: pip install bitsandbytes")
    q = settings.qlora
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=q.quant_type,
        bnb_4bit_use_double_quant=q.double_quant,
        bnb_4bit_compute_dtype=dtypes[q.compute_dtype],
        llm_int8_skip_modules=UNQUANTIZED,
    )
    return {"quantization_config": quantization}


register(Method("LoRA on a base loaded in 4-bit NF4 (bitsandbytes)", QloraSettings, apply, load_options))
