"""Which precision to train, score and generate in, for this machine and model.

Here, not in train.py: inference (models/infer.py, evaluate/generation.py) needs it too, and lower
layers never import the training layer.
"""

from __future__ import annotations

import torch

from lmtune.config import RunConfig
from lmtune.errors import LmtuneError
from lmtune.models.load import device
from lmtune.models.methods.common import count_parameters

# On a GPU a small model is bound by kernel launches, and autocast's extra cast kernels cost more
# than bf16 matmuls save: measured on an H100 with MiniLM (22.7M parameters, SST-2, batch 32),
# bf16 autocast ran at 569 samples/s against 1,199 in fp32. Large models gain from bf16.
GPU_BF16_MIN_PARAMETERS = 100_000_000


def resolve_precision(requested: str, n_parameters: int | None = None) -> str:
    """auto → bf16 where it is faster: CPUs with AMX or AVX512-BF16, and GPUs with bf16 for models of
    at least GPU_BF16_MIN_PARAMETERS; else fp32 (fp16 on GPUs without bf16)."""
    if requested == "fp16" and not torch.cuda.is_available():
        raise LmtuneError("training.precision = 'fp16' needs a CUDA GPU; allowed on CPU: auto, fp32, bf16")
    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        if n_parameters is not None and n_parameters < GPU_BF16_MIN_PARAMETERS:
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_bf16() else "fp32"


def cpu_has_bf16() -> bool:
    """AMX or AVX512-BF16 on this CPU. Shim over torch's private CPU-feature probes (torch.cpu has no
    public one); tests/test_train.py fails when torch renames them."""
    cpu = torch.cpu
    return (
        getattr(cpu, "_is_amx_tile_supported", lambda: False)()
        or getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
    )


def inference_precision(config: RunConfig, model) -> str:
    """The precision to score or generate with; a run trained in fp16 on a GPU still runs on a CPU."""
    requested = config.training.precision
    if requested == "fp16" and not torch.cuda.is_available():
        requested = "auto"
    return resolve_precision(requested, count_parameters(model)[1])


def bf16_autocast(precision: str) -> torch.autocast:
    """bf16 autocast on the device models run on when `precision` is bf16; a no-op context otherwise."""
    return torch.autocast(device().type, dtype=torch.bfloat16, enabled=precision == "bf16")
