"""Real weights prove the generative path: LoRA on the bundled SmolLM2 with real Alpaca records lowers
the held-out loss, and the tuned model still ends its answers at <|im_end|>."""

from __future__ import annotations

import json

import pytest
from conftest import SHARED

from lmtune.cli import main

ALPACA = SHARED / "alpaca_1k" / "alpaca_data_1k.json"


@pytest.mark.skipif(not ALPACA.is_file(), reason="needs ../shared/data/alpaca_1k")
def test_lora_sft_of_smollm2_on_alpaca_lowers_heldout_loss_and_stops(tmp_path):
    config = tmp_path / "alpaca.yaml"
    config.write_text(
        f"""
task: sft
model: {{name: "bundled:smollm2-135m-instruct", max_length: 384}}
data: {{train: "{ALPACA}", max_train_rows: 200, split: {{validation: 0.02, test: 0.03}}, on_error: skip}}
method: {{name: lora, lora: {{r: 16, alpha: 32, dropout: 0.05}}}}
training: {{max_steps: 16, batch_size: 8, learning_rate: 3.0e-4, eval_every: 16, logging_steps: 4}}
evaluation: {{generation: {{max_new_tokens: 160, prompts: 12, repetition_penalty: 1.15}}}}
output: {{dir: "{tmp_path / "runs"}", name: alpaca}}
"""
    )
    assert main(["train", str(config)]) == 0
    metrics = json.loads((tmp_path / "runs" / "alpaca" / "metrics.json").read_text())["test"]
    base, tuned = metrics["base"], metrics["tuned"]
    assert tuned["loss"] < base["loss"] - 0.03, (base["loss"], tuned["loss"])
    # 16 steps teach stopping only partly, and 12 prompts are a small sample: across three splits of
    # these rows the tuned model stopped on 6 to 11 of 12 prompts (base 4 to 5). What must hold is that
    # tuning does not break stopping (the "endless generation" bug drives this towards 0).
    assert tuned["stop_rate"] >= max(base["stop_rate"], 0.5), (base["stop_rate"], tuned["stop_rate"])
