"""Load pre-trained models and tokenizers by task, offline, with lmtune's runtime choices applied."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForQuestionAnswering,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    PreTrainedTokenizerBase,
)

from lmtune import shims
from lmtune.errors import LmtuneError, machine_failure


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def attention_for(requested: str) -> str:
    """auto → eager on CPU: for short texts torch's CPU flash-attention backward is ~2x slower than
    eager matmul attention (measured on MiniLM, 24-64 tokens); sdpa on GPU."""
    if requested != "auto":
        return requested
    return "sdpa" if torch.cuda.is_available() else "eager"


# CPU inference (no backward) has its crossover near 64 tokens: MiniLM, batch 64, bf16 autocast,
# eager vs sdpa ex/s: 1193 vs 1006 at 32 tokens, 532 vs 525 at 64, 163 vs 223 at 128, 52 vs 99 at 256.
CPU_SDPA_MIN_TOKENS = 64


def inference_attention(requested: str, tokens: int) -> str | None:
    """The faster attention kernel for an inference batch of `tokens` columns (auto on CPU only)."""
    if requested != "auto" or torch.cuda.is_available():
        return None
    return "sdpa" if tokens > CPU_SDPA_MIN_TOKENS else "eager"


# CPU training: eager attention wins on short rows, sdpa (flash attention, which keeps no attention
# matrix for the backward pass) on long ones. SmolLM2-135M + LoRA, batch 4, bf16 autocast, s/step and
# peak RSS eager vs sdpa: 1.74 vs 1.86 (3.2 vs 2.9 GB) at 128 tokens; 7.11 vs 6.32 (9.8 vs 7.3 GB) at 512.
CPU_TRAIN_SDPA_MIN_TOKENS = 256


def training_attention(requested: str, row_tokens: float) -> str | None:
    """The faster training kernel for rows of about `row_tokens` tokens (auto on CPU only)."""
    if requested != "auto" or torch.cuda.is_available():
        return None
    return "sdpa" if row_tokens > CPU_TRAIN_SDPA_MIN_TOKENS else "eager"


def set_attention(model, name: str) -> None:
    """Switch the attention kernel in place; architectures without it (e.g. XLNet has no sdpa) keep theirs."""
    if model.config._attn_implementation != name:
        with contextlib.suppress(ValueError, ImportError):
            model.set_attn_implementation(name)


# --------------------------------------------------------------------- what a folder may run

CODE_FILES = ("config.json", "tokenizer_config.json", "processor_config.json")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def _json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # unreadable: the loader that needs it says so
    return value if isinstance(value, dict) else {}


def check_code(path: Path | str, trust_remote_code: bool = False) -> None:
    """A model folder that ships Python (auto_map) is refused unless the run allows it by name. Every
    from_pretrained call passes trust_remote_code explicitly too (left unset, transformers asks on stdin,
    and `yes |` in front of a command answers); refusing first gives one line naming the key."""
    folder = Path(path)
    if trust_remote_code or not folder.is_dir():
        return
    for name in CODE_FILES:
        if "auto_map" in _json(folder / name):
            raise LmtuneError(
                f"model.name: '{path}' ships its own Python code (auto_map in {name}), which lmtune does not "
                "run; read it, then set model.trust_remote_code: true to run it (dangerous: it runs with "
                "your rights)"
            )


def check_weights(path: Path | str) -> None:
    """Weights load from safetensors only: a pickle (pytorch_model.bin, *.pt) can run code when it is
    unpickled, so a folder holding weights only in that form is refused by name."""
    folder = Path(path)
    if not folder.is_dir() or any(folder.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise LmtuneError(
            f"model.name: '{path}' holds its weights only as {pickles[0]} (a pickle, which can run code when "
            "loaded); lmtune loads safetensors only: convert it where you trust it (load it, then "
            "save_pretrained(…, safe_serialization=True))"
        )


def load_tokenizer(
    path: Path | str, trust_remote_code: bool = False, *, words: bool = False
) -> PreTrainedTokenizerBase:
    """The model's tokenizer, with a pad token. `words`: it will read text already split into words
    (token classification), which needs a fast tokenizer (word ids of its sub-words) and, for byte-level
    BPE (RoBERTa, GPT-2), a space before each word as in running text."""
    check_code(path, trust_remote_code)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
        if words and getattr(tokenizer, "add_prefix_space", None) is False:
            tokenizer = AutoTokenizer.from_pretrained(
                str(path), trust_remote_code=trust_remote_code, add_prefix_space=True
            )
    except Exception as exc:
        raise LmtuneError(
            f"model.name: cannot load a tokenizer from '{path}' ({type(exc).__name__}: {exc})"
        ) from None
    if words and not tokenizer.is_fast:
        raise LmtuneError(
            f"model.name: '{path}' has no fast tokenizer (tokenizer.json); token classification needs one "
            "to map sub-words to words"
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def _override_dropout(config, dropout: float | None) -> None:
    """Set every float dropout rate in a model config (names differ across architectures)."""
    if dropout is None:
        return
    for key, value in list(config.to_dict().items()):
        if "dropout" in key and isinstance(value, float):
            setattr(config, key, dropout)


def _read_config(path: Path | str, trust_remote_code: bool = False, **overrides):
    check_code(path, trust_remote_code)
    try:
        return AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code, **overrides)
    except Exception as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LmtuneError(f"model.name: cannot read a model config from '{path}' ({message})") from None


def _from_pretrained(auto_class, path: Path | str, config, attn_implementation: str, what: str, **options):
    if "quantization_config" in options:  # qlora: its 4-bit layers must train exactly on CPU too
        with shims.bitsandbytes_exact_cpu_path():
            return _load_model(auto_class, path, config, attn_implementation, what, **options)
    return _load_model(auto_class, path, config, attn_implementation, what, **options)


def _load_model(auto_class, path: Path | str, config, attn_implementation: str, what: str, **options):
    """from_pretrained with lmtune's attention choice; an architecture without that kernel keeps its own.
    Safetensors only; remote code only when the caller's options allow it (trust_remote_code)."""
    check_weights(path)
    options = {"trust_remote_code": False, **options, "use_safetensors": True}
    check_code(path, options["trust_remote_code"])
    attn = attention_for(attn_implementation)
    try:
        try:
            return auto_class.from_pretrained(str(path), config=config, attn_implementation=attn, **options)
        except ValueError as exc:
            if "attn" not in str(exc).lower() and "attention" not in str(exc).lower():
                raise
            return auto_class.from_pretrained(str(path), config=config, **options)
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as exc:
        if machine_failure(exc) and not isinstance(exc, FileNotFoundError):
            raise  # a full disk or a lost permission is reported as such, not as a bad model
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LmtuneError(f"model.name: cannot load '{path}' {what} ({message[:300]})") from None


# head kind → (the transformers auto class, what a load error says it was loading for)
HEADS = {
    "sequence": (AutoModelForSequenceClassification, "for classification"),
    "token": (AutoModelForTokenClassification, "for token classification"),
    "qa": (AutoModelForQuestionAnswering, "for question answering"),
}


def load_classifier(
    path: Path | str,
    labels: list[str],
    *,
    attn_implementation: str = "auto",
    dropout: float | None = None,
    pad_token_id: int | None = None,
    trust_remote_code: bool = False,
    problem_type: str | None = None,
    new_head: bool = False,
    kind: str = "sequence",
    **options,
):
    """The `kind` of head (HEADS: sequence — AutoModelForSequenceClassification; token — a label per
    sub-word; qa — start and end logits per sub-word, `labels` ["start", "end"]) with the label map in
    its config; the head is new (seeded).

    `problem_type` "regression": one output per label, the model's own loss is MSE. `new_head`: a
    checkpoint's head of another shape (a 2-class classifier fine-tuned into a regressor) is replaced,
    not an error. `options` are extra from_pretrained arguments a method needs (e.g. 4-bit quantization)."""
    config = _read_config(
        path,
        trust_remote_code,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        **({"problem_type": problem_type} if problem_type else {}),
    )
    _override_dropout(config, dropout)
    if pad_token_id is not None and getattr(config, "pad_token_id", None) is None:
        config.pad_token_id = pad_token_id
    return _from_pretrained(
        HEADS[kind][0],
        path,
        config,
        attn_implementation,
        HEADS[kind][1],
        trust_remote_code=trust_remote_code,
        **({"ignore_mismatched_sizes": True} if new_head else {}),
        **options,
    )


def is_encoder_decoder(path: Path | str, trust_remote_code: bool = False) -> bool:
    return bool(getattr(_read_config(path, trust_remote_code), "is_encoder_decoder", False))


def load_generative(
    path: Path | str,
    *,
    attn_implementation: str = "auto",
    dropout: float | None = None,
    trust_remote_code: bool = False,
    **options,
):
    """AutoModelForCausalLM, or AutoModelForSeq2SeqLM for encoder-decoders (T5, BART), in fp32.

    `options` are extra from_pretrained arguments a method needs (e.g. 4-bit quantization)."""
    config = _read_config(path, trust_remote_code)
    _override_dropout(config, dropout)
    options["trust_remote_code"] = trust_remote_code
    if config.is_encoder_decoder:
        return _from_pretrained(
            AutoModelForSeq2SeqLM,
            path,
            config,
            attn_implementation,
            "as a sequence-to-sequence model",
            **options,
        )
    return _from_pretrained(
        AutoModelForCausalLM, path, config, attn_implementation, "as a causal language model", **options
    )


def position_limit(
    path: Path | str, tokenizer: PreTrainedTokenizerBase, trust_remote_code: bool = False
) -> int | None:
    """The most tokens the model can read (learned position embeddings), or None when unbounded."""
    config = _read_config(path, trust_remote_code)
    limits = [getattr(config, "max_position_embeddings", None), tokenizer.model_max_length]
    limits = [n for n in limits if isinstance(n, int) and 0 < n < 1_000_000]
    return min(limits) if limits else None
