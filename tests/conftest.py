"""Shared fixtures: tiny random-init encoders built in the test, and small learnable datasets."""

from __future__ import annotations

import csv
import os
import random
from pathlib import Path

import pytest
import torch

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
            torch.manual_seed(0)  # the same weights in every session (a learning test's margin is one number)
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
        # the capital records repeat a handful of questions on purpose: no dedup, no leakage removal
        "data": {
            "train": str(data_path),
            "dedup": {"exact": False},
            "leakage": {"check": False},
            "split": {"method": "stratified"},
        },
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


# ------------------------------------------------------------------------- generative models


def smollm2_tokenizer():
    """SmolLM2's tokenizer (chatml template, <|im_end|> = EOS = pad), shared by the tiny generative models."""
    return AutoTokenizer.from_pretrained(str(resolve_model("bundled:smollm2-135m-instruct")))


def generative_config(arch: str, tokenizer):
    from transformers import BartConfig, GPT2Config, LlamaConfig, Qwen2Config, T5Config

    ids = dict(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    decoder = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
        tie_word_embeddings=True,
    )
    return {
        "llama": lambda: LlamaConfig(**decoder, **ids),
        "qwen2": lambda: Qwen2Config(**decoder, **ids),
        "gpt2": lambda: GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=256, **ids),
        "t5": lambda: T5Config(
            d_model=32,
            d_ff=64,
            d_kv=16,
            num_layers=2,
            num_heads=2,
            decoder_start_token_id=tokenizer.pad_token_id,
            **ids,
        ),
        "bart": lambda: BartConfig(
            d_model=32,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            max_position_embeddings=256,
            decoder_start_token_id=tokenizer.eos_token_id,
            **ids,
        ),
    }[arch]()


@pytest.fixture(scope="session")
def tiny_generative_dir(tmp_path_factory):
    """Build (once per session) a tiny random-init causal or seq2seq model directory with SmolLM2's tokenizer."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    built: dict[str, Path] = {}

    def build(arch: str) -> Path:
        if arch not in built:
            tokenizer = smollm2_tokenizer()
            config = generative_config(arch, tokenizer)
            auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
            folder = tmp_path_factory.mktemp(f"tiny-{arch}")
            torch.manual_seed(0)  # the same weights in every session
            auto.from_config(config).save_pretrained(folder)
            tokenizer.save_pretrained(folder)
            built[arch] = folder
        return built[arch]

    return build


CAPITALS = {
    "France": "Paris",
    "Italy": "Rome",
    "Spain": "Madrid",
    "Japan": "Tokyo",
    "Egypt": "Cairo",
    "Peru": "Lima",
}


def capital_records(n: int, seed: int = 0) -> list[dict]:
    """Alpaca records a tiny model learns in a few hundred steps: a country → its capital, then stop."""
    rng = random.Random(seed)
    countries = list(CAPITALS)
    rows = []
    for _ in range(n):
        country = rng.choice(countries)
        rows.append(
            {"instruction": f"What is the capital of {country}?", "input": "", "output": CAPITALS[country]}
        )
    return rows


def tiny_sft_config(model_dir: Path, data_path: Path, out: Path, **sections) -> dict:
    raw = {
        "task": "sft",
        "model": {"name": str(model_dir), "max_length": 64},
        # the capital records repeat a handful of questions on purpose: no dedup, no leakage removal
        "data": {
            "train": str(data_path),
            "dedup": {"exact": False},
            "leakage": {"check": False},
            "split": {"method": "stratified"},
        },
        "method": {"name": "full"},
        "training": {
            "epochs": 15,
            "batch_size": 8,
            "learning_rate": 0.01,
            "logging_steps": 10,
            "eval_every": 20,
        },
        "evaluation": {"generation": {"max_new_tokens": 8, "prompts": 16}},
        "output": {"dir": str(out), "name": "run"},
    }
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return raw


@pytest.fixture(scope="session")
def cv_run(tiny_model_dir, tmp_path_factory):
    """A finished 3-fold cross-validation (`lmtune train` with training.cv_folds: 3) on 120 rows:
    (run directory, data file, what the command printed). Shared by test_cv and the browser tests."""
    import contextlib
    import io

    import yaml

    from lmtune.cli import main

    tmp = tmp_path_factory.mktemp("cv")
    data = write_csv(tmp / "reviews.csv", synthetic_rows(120))
    config = tmp / "cv.yaml"
    raw = tiny_config(tiny_model_dir("bert"), data, tmp / "runs", training={"cv_folds": 3, "epochs": 1})
    raw["evaluation"]["baselines"] = []  # the tuned model is what cross-validation summarises
    config.write_text(yaml.safe_dump(raw))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["train", str(config)]) == 0
    return tmp / "runs" / "run", data, printed.getvalue()
