"""prompt_tuning and prefix_tuning: learned virtual tokens before the input, or learned key/value
prefixes in every attention layer (peft); the model itself stays frozen. Generative models only."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lmtune.models.methods import Method, MethodSettings, register
from lmtune.sections import Section


class VirtualTokensConfig(Section):
    virtual_tokens: int = Field(20, ge=1, le=512, description="learned tokens prepended to every input")
    init_text: str | None = Field(None, description="prompt_tuning: initialise from this text's embeddings")


class PromptTuningSettings(MethodSettings):
    name: Literal["prompt_tuning"] = "prompt_tuning"
    prompt_tuning: VirtualTokensConfig = VirtualTokensConfig()


class PrefixTuningSettings(MethodSettings):
    name: Literal["prefix_tuning"] = "prefix_tuning"
    prefix_tuning: VirtualTokensConfig = VirtualTokensConfig()


def _generative(model, name: str) -> str:
    from lmtune.errors import LmtuneError
    from lmtune.models.methods.common import SEQ_CLS, task_type

    task = task_type(model)
    if task == SEQ_CLS:
        raise LmtuneError(
            f"method.name = '{name}' needs a generative model (causal or seq2seq LM), not "
            f"{type(model).__name__}; for classifiers use full, freeze, lora, dora, qlora, ia3 or adapter"
        )
    return task


def _probe(model, name: str) -> None:
    """peft sizes prompts and prefixes from config fields (heads, layers, hidden size) that do not match
    every architecture's attention (e.g. T5 with d_kv * heads != d_model, BART with different encoder and
    decoder heads or depths): a 2-token forward and generate find that out now, not mid-training."""
    import warnings

    import torch

    from lmtune.errors import LmtuneError

    ids = torch.ones((1, 2), dtype=torch.long, device=next(model.parameters()).device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids)
            model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=2, do_sample=False
            )
    except Exception as exc:  # any failure here means the pair does not work; say so in one line
        detail = (str(exc).splitlines() or [""])[0][:160]
        raise LmtuneError(
            f"method.name = '{name}' does not work with {model.config.model_type} models of this shape "
            f"({type(exc).__name__}: {detail}); use lora, dora, ia3 or adapter"
        ) from None
    finally:
        model.train(was_training)


def _prompt_learning(model, name: str, peft_config):
    from peft import get_peft_model

    peft_model = get_peft_model(model, peft_config)
    _probe(peft_model, name)
    return peft_model


def _init_text_tokenizer(model, text: str) -> str:
    """The tokenizer peft will read init_text with: the model's own, checked here because peft fails on a
    missing one with a long trace and on a text of no tokens with ZeroDivisionError."""
    from transformers import AutoTokenizer

    from lmtune.errors import LmtuneError

    path = str(getattr(model, "name_or_path", "") or model.config.name_or_path or "")
    try:
        tokens = (
            AutoTokenizer.from_pretrained(path, trust_remote_code=False)(text)["input_ids"] if path else None
        )
    except (OSError, ValueError) as exc:
        raise LmtuneError(
            f"method.prompt_tuning.init_text: cannot load the tokenizer of '{path}' ({exc})"
        ) from None
    if not tokens:
        raise LmtuneError(
            f"method.prompt_tuning.init_text = {text!r} gives no tokens with the model's tokenizer ('{path}')"
        )
    return path


def prompt_tuning(model, settings: PromptTuningSettings):
    """Without init_text the virtual tokens start as embeddings of random vocabulary tokens (better than
    random vectors, whose scale does not match the model's embeddings)."""
    from peft import PromptTuningConfig

    task, tokens = _generative(model, "prompt_tuning"), settings.prompt_tuning
    init: dict = {"prompt_tuning_init": "SAMPLE_VOCAB"}
    if tokens.init_text:
        init = {
            "prompt_tuning_init": "TEXT",
            "prompt_tuning_init_text": tokens.init_text,
            "tokenizer_name_or_path": _init_text_tokenizer(model, tokens.init_text),
        }
    peft_config = PromptTuningConfig(task_type=task, num_virtual_tokens=tokens.virtual_tokens, **init)
    return _prompt_learning(model, "prompt_tuning", peft_config)


def prefix_tuning(model, settings: PrefixTuningSettings):
    from peft import PrefixTuningConfig

    from lmtune.errors import LmtuneError

    task, tokens = _generative(model, "prefix_tuning"), settings.prefix_tuning
    if tokens.init_text:
        raise LmtuneError("method.prefix_tuning.init_text: only prompt_tuning starts from a text; remove it")
    peft_config = PrefixTuningConfig(task_type=task, num_virtual_tokens=tokens.virtual_tokens)
    return _prompt_learning(model, "prefix_tuning", peft_config)


register(Method("learned virtual tokens before the input (peft)", PromptTuningSettings, prompt_tuning))
register(Method("learned key/value prefixes in every layer (peft)", PrefixTuningSettings, prefix_tuning))
