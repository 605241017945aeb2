"""The adaptation methods by name, torch-free: validating a config reads this table, and
models/methods.py binds each name to the function of the same name (a name without one fails there,
at import). Adding a method = its function in methods.py + one line here + one row in
tests/test_peft_methods.py."""

from __future__ import annotations

METHODS: dict[str, str] = {
    "full": "every weight trains",
    "freeze": "the lower layers stay frozen, the top ones and the head train",
    "lora": "low-rank adapters on the linear layers (peft)",
    "dora": "LoRA with weight decomposition (magnitude + direction)",
    "qlora": "LoRA on a base loaded in 4-bit NF4 (bitsandbytes)",
    "ia3": "learned rescaling vectors on keys, values and the MLP (peft)",
    "prompt_tuning": "learned virtual tokens before the input (peft)",
    "prefix_tuning": "learned key/value prefixes in every layer (peft)",
    "adapter": "bottleneck adapters after attention and/or MLP (Houlsby / Pfeiffer)",
}
