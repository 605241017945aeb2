"""Shared fixtures: tiny random-init encoders built in the test, and small learnable datasets."""

from __future__ import annotations

import csv
import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from transformers import (  # noqa: E402
    AutoModelForSequenceClassification,  # noqa: E402
    AutoTokenizer,
    BertConfig,
    RobertaConfig,
    XLNetConfig,
)

from lmtune.assets import resolve_model  # noqa: E402
from lmtune.models import load as _load  # noqa: E402, F401  (silences transformers' save/load bars)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

TINY = dict(hidden_size=32, num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
CONFIGS = {
    "bert": lambda vocab: BertConfig(vocab_size=vocab, num_hidden_layers=2, **TINY),
    "roberta": lambda vocab: RobertaConfig(vocab_size=vocab, num_hidden_layers=2, pad_token_id=0, **TINY),
    "xlnet": lambda vocab: XLNetConfig(
        vocab_size=vocab, d_model=32, n_layer=2, n_head=2, d_inner=64, pad_token_id=0
    ),
}


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Build (once per session) a tiny random-init model directory of a given architecture.

    The bundled MiniLM's WordPiece tokenizer is reused so the directory is complete and offline.
    """
    built: dict[str, Path] = {}

    def build(arch: str) -> Path:
        if arch not in built:
            tokenizer = AutoTokenizer.from_pretrained(str(resolve_model("bundled:minilm")))
            folder = tmp_path_factory.mktemp(f"tiny-{arch}")
            config = CONFIGS[arch](len(tokenizer))
            AutoModelForSequenceClassification.from_config(config).save_pretrained(folder)
            tokenizer.save_pretrained(folder)
            built[arch] = folder
        return built[arch]

    return build


POSITIVE = ["good", "great", "lovely", "excellent", "wonderful", "happy"]
NEGATIVE = ["bad", "awful", "terrible", "horrible", "sad", "poor"]
FILLER = ["the", "movie", "was", "really", "food", "service", "day", "quite", "very", "this"]


def synthetic_rows(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """Texts whose label is given by a sentiment word: learnable by a tiny model in a few steps."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "pos" if i % 2 == 0 else "neg"
        words = rng.sample(FILLER, 4) + [rng.choice(POSITIVE if label == "pos" else NEGATIVE)]
        rng.shuffle(words)
        rows.append((" ".join(words), label))
    return rows


def write_csv(path: Path, rows, header=("text", "label"), delimiter=",") -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def labelled_csv(tmp_path) -> Path:
    return write_csv(tmp_path / "reviews.csv", synthetic_rows(120))


def tiny_config(model_dir: Path, data_path: Path, out: Path, **sections) -> dict:
    """A raw run config for fast tests: tiny model, few steps, no probe."""
    raw = {
        "task": "classify",
        "model": {"name": str(model_dir), "max_length": 32},
        "data": {"train": str(data_path)},
        "method": {"name": "full"},
        "training": {
            "epochs": 2,
            "batch_size": 8,
            "learning_rate": 5e-3,
            "logging_steps": 2,
            "eval_every": 5,
        },
        "evaluation": {"baselines": ["base"]},
        "output": {"dir": str(out), "name": "run"},
    }
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return raw
