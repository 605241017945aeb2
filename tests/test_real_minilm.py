"""Only real weights prove the point: fine-tuning the bundled MiniLM beats the untuned base."""

from __future__ import annotations

import json

from lmtune.cli import main


def test_finetuning_bundled_minilm_on_tweets_beats_base(tmp_path, capsys):
    overrides = {
        "data.train": "bundled:tweets",
        "data.max_train_rows": 1500,
        "data.split.validation": 0.01,
        "data.split.test": 0.04,
        "model.max_length": 64,
        "training.epochs": 1,
        "training.batch_size": 32,
        "training.learning_rate": 1e-4,
        "output.dir": str(tmp_path),
        "output.name": "minilm",
    }
    args = ["quickstart"] + [item for key, value in overrides.items() for item in ("--set", f"{key}={value}")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "report: " in out and "tuned" in out
    metrics = json.loads((tmp_path / "minilm" / "metrics.json").read_text())["test"]
    base, probe, tuned = metrics["base"], metrics["probe"], metrics["tuned"]
    assert tuned["f1_macro"] >= base["f1_macro"] + 0.20, (base, tuned)
    assert tuned["accuracy"] >= 0.6
    assert probe["f1_macro"] > base["f1_macro"]  # the probe is a real baseline, not noise
