"""Adaptation methods, one registry entry each: which parameters train and how.

A method takes the freshly loaded model and its `method` config section, and returns the model to
train. Classifiers (encoders) train their task head in full next to the method's parameters;
generative models (decoder-only and encoder-decoder) train only the method's parameters. Adding one =
one function + one line in lmtune.models.registry + one row in tests/test_peft_methods.py.

Recipes use apply_method, load_options and count_parameters from here, and save_weights, load_weights,
is_adapter and merge from lmtune.models.weights, so they need not know which method made a model.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable

import torch
from torch import nn

from lmtune.errors import LmtuneError
from lmtune.models import adapters, registry
from lmtune.models.adapters import LINEAR

SEQ_CLS, CAUSAL_LM, SEQ_2_SEQ_LM = "SEQ_CLS", "CAUSAL_LM", "SEQ_2_SEQ_LM"  # peft task types
# task heads stay unquantized under qlora so they can train (passing skip modules drops transformers' own)
UNQUANTIZED = ["lm_head", "classifier", "score", "logits_proj", "sequence_summary", "qa_outputs"]
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def task_type(model: nn.Module) -> str:
    """The peft task type: seq2seq LM, causal LM, or (anything that cannot generate) classification.

    can_generate() rather than is_encoder_decoder alone: BartForSequenceClassification is an
    encoder-decoder classifier."""
    if not type(model).can_generate():
        return SEQ_CLS
    return SEQ_2_SEQ_LM if getattr(model.config, "is_encoder_decoder", False) else CAUSAL_LM


def base_and_head(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """The pre-trained body and the names of the task-head modules (top-level children outside it)."""
    prefix = getattr(model, "base_model_prefix", "")
    base = getattr(model, prefix, None)
    if base is None:
        raise LmtuneError(f"method: cannot find the pre-trained body of {type(model).__name__}")
    head = [
        name
        for name, child in model.named_children()
        if name != prefix and any(True for _ in child.parameters())
    ]
    return base, head


def scope(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """Where a method looks for layers, and the head trained in full: the body and its head for a
    classifier; the whole model and no head for generative models (lm_head is often tied to the embeddings)."""
    return base_and_head(model) if task_type(model) == SEQ_CLS else (model, [])


def layer_stacks(root: nn.Module) -> dict[str, nn.ModuleList]:
    """The stacks of transformer blocks by name: outermost ModuleLists whose blocks hold an attention
    module (one stack for encoders and decoder-only models, encoder + decoder for seq2seq)."""
    stacks: dict[str, nn.ModuleList] = {}
    for name, module in root.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if any(name.startswith(f"{outer}.") for outer in stacks):
            continue
        if any(adapters.is_attention(child) for child, _ in module[0].named_modules()):
            stacks[name] = module
    return stacks


def _numel(parameter: torch.Tensor) -> int:
    """Elements of a parameter; a bitsandbytes 4-bit weight packs two per byte, its quant_state knows the shape."""
    shape = getattr(getattr(parameter, "quant_state", None), "shape", None)
    return shape.numel() if shape is not None else parameter.numel()


def count_parameters(model: nn.Module) -> tuple[int, int]:
    trainable = sum(_numel(p) for p in model.parameters() if p.requires_grad)
    total = sum(_numel(p) for p in model.parameters())
    return trainable, total


# --------------------------------------------------------------------------- methods


def full(model: nn.Module, config) -> nn.Module:
    """Every weight trains."""
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return model


def freeze(model: nn.Module, config) -> nn.Module:
    """Freeze embeddings and lower layers; the top `trainable_layers` blocks of each stack (and a
    classifier's head) train."""
    root, _ = scope(model)
    stacks = list(layer_stacks(root).values())
    if not stacks:
        raise LmtuneError(f"method.freeze: no layer stack found in {type(root).__name__}")
    keep, depth = config.freeze.trainable_layers, min(len(stack) for stack in stacks)
    if keep > depth:
        raise LmtuneError(
            f"method.freeze.trainable_layers = {keep}, but the model has {depth} layers; allowed: 0..{depth}"
        )
    for parameter in root.parameters():
        parameter.requires_grad_(False)
    for stack in stacks:
        for layer in list(stack)[len(stack) - keep :]:
            for parameter in layer.parameters():
                parameter.requires_grad_(True)
    # anything after the layer stack in the body (e.g. BERT's pooler) feeds the head: train it too
    for name, child in root.named_children():
        if "pool" in name:
            for parameter in child.parameters():
                parameter.requires_grad_(True)
    return model


def _check_names(root: nn.Module, targets: list[str], key: str) -> None:
    """Explicit target names must exist in the model (peft would fail later with a long message)."""
    names = {name.rsplit(".", 1)[-1] for name, _ in root.named_modules()}
    missing = [t for t in targets if t.rsplit(".", 1)[-1] not in names]
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in root.named_modules() if isinstance(m, LINEAR)})
        raise LmtuneError(f"{key}: {missing} not in the model; linear layers: {', '.join(linear)}")


def lora_targets(model: nn.Module, wanted: list[str] | str) -> list[str]:
    """all-linear: a classifier's whole body (its head trains in full instead); a generative model's
    attention and MLP layers in every block (not lm_head, not embeddings). Conv1D counts as linear."""
    root, _ = scope(model)
    if wanted != "all-linear":
        _check_names(root, list(wanted), "method.lora.target_modules")
        return list(wanted)
    parts = [root] if task_type(model) == SEQ_CLS else list(layer_stacks(model).values())
    inside = {id(module) for part in parts for module in part.modules()}
    targets = [
        name for name, module in model.named_modules() if isinstance(module, LINEAR) and id(module) in inside
    ]
    if not targets:
        raise LmtuneError(f"method.lora.target_modules: {type(root).__name__} has no linear layers")
    return targets


def _lora(model: nn.Module, config, dora: bool) -> nn.Module:
    from peft import LoraConfig

    settings, (_, head) = config.lora, scope(model)
    peft_config = LoraConfig(
        task_type=task_type(model),
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=lora_targets(model, settings.target_modules),
        modules_to_save=head or None,
        use_dora=dora,
    )
    return _peft(model, peft_config)


def _peft(model: nn.Module, peft_config) -> nn.Module:
    from peft import get_peft_model

    with warnings.catch_warnings():  # peft switches fan_in_fan_out on for GPT-2's Conv1D itself, and says so
        warnings.filterwarnings("ignore", message=".*fan_in_fan_out.*")
        return get_peft_model(model, peft_config)


def lora(model: nn.Module, config) -> nn.Module:
    """Low-rank adapters (peft) on the linear layers (see lora_targets)."""
    return _lora(model, config, dora=False)


def dora(model: nn.Module, config) -> nn.Module:
    """LoRA with weight decomposition (magnitude + direction), same method.lora settings."""
    return _lora(model, config, dora=True)


def _repacked(model: nn.Module) -> bool:
    return any(
        getattr(
            getattr(getattr(module, "weight", None), "quant_state", None), "packing_format_for_cpu", False
        )
        for module in model.modules()
    )


def qlora(model: nn.Module, config) -> nn.Module:
    """LoRA on a base loaded in 4-bit NF4 (pass load_options(config) to from_pretrained)."""
    from peft import prepare_model_for_kbit_training

    if not getattr(model, "is_loaded_in_4bit", False) or _repacked(model):
        raise LmtuneError(
            "method.name = 'qlora' needs the base loaded in 4-bit with load_options(config.method) "
            "passed to from_pretrained"
        )
    # freezes the base, upcasts the unquantized rest to fp32, enables gradient checkpointing (the memory
    # saving qlora is chosen for; ~40% slower steps measured on CPU)
    model = prepare_model_for_kbit_training(model, gradient_checkpointing_kwargs={"use_reentrant": False})
    return _lora(model, config, dora=False)


def ia3(model: nn.Module, config) -> nn.Module:
    """(IA)^3: learned scaling vectors on keys, values and the MLP; peft's per-architecture defaults for auto."""
    from peft import IA3Config
    from peft.utils import constants

    defaults = constants.TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING
    feedforward_defaults = constants.TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING
    root, head = scope(model)
    model_type, wanted = model.config.model_type, config.ia3.target_modules
    if wanted == "auto" and model_type not in defaults:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in root.named_modules() if isinstance(m, LINEAR)})
        raise LmtuneError(
            f"method.ia3.target_modules = 'auto' has no default for model type '{model_type}'; "
            f"list them, from the linear layers: {', '.join(linear)}"
        )
    if wanted == "auto":
        targets, feedforward = defaults[model_type], feedforward_defaults[model_type]
    else:
        _check_names(root, list(wanted), "method.ia3.target_modules")
        targets = list(wanted)
        feedforward = [t for t in targets if t in feedforward_defaults.get(model_type, [])]
    peft_config = IA3Config(
        task_type=task_type(model),
        target_modules=list(targets),
        feedforward_modules=list(feedforward),
        modules_to_save=head or None,
    )
    return _peft(model, peft_config)


def _generative(model: nn.Module, name: str) -> str:
    task = task_type(model)
    if task == SEQ_CLS:
        raise LmtuneError(
            f"method.name = '{name}' needs a generative model (causal or seq2seq LM), not "
            f"{type(model).__name__}; for classifiers use full, freeze, lora, dora, qlora, ia3 or adapter"
        )
    return task


def _probe(model: nn.Module, name: str) -> None:
    """peft sizes prompts and prefixes from config fields (heads, layers, hidden size) that do not match
    every architecture's attention (e.g. T5 with d_kv * heads != d_model, BART with different encoder and
    decoder heads or depths): a 2-token forward and generate find that out now, not mid-training."""
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


def _prompt_learning(model: nn.Module, name: str, peft_config) -> nn.Module:
    from peft import get_peft_model

    peft_model = get_peft_model(model, peft_config)
    _probe(peft_model, name)
    return peft_model


def prompt_tuning(model: nn.Module, config) -> nn.Module:
    """Learned virtual-token embeddings prepended to every input; the model itself stays frozen.

    Without init_text they start as embeddings of random vocabulary tokens (better than random vectors,
    whose scale does not match the model's embeddings)."""
    from peft import PromptTuningConfig

    task, settings = _generative(model, "prompt_tuning"), config.prompt_tuning
    init: dict = {"prompt_tuning_init": "SAMPLE_VOCAB"}
    if settings.init_text:
        init = {
            "prompt_tuning_init": "TEXT",
            "prompt_tuning_init_text": settings.init_text,
            "tokenizer_name_or_path": _init_text_tokenizer(model, settings.init_text),
        }
    peft_config = PromptTuningConfig(task_type=task, num_virtual_tokens=settings.virtual_tokens, **init)
    return _prompt_learning(model, "prompt_tuning", peft_config)


def _init_text_tokenizer(model: nn.Module, text: str) -> str:
    """The tokenizer peft will read init_text with: the model's own, checked here because peft fails on a
    missing one with a long trace and on a text of no tokens with ZeroDivisionError."""
    from transformers import AutoTokenizer

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


def prefix_tuning(model: nn.Module, config) -> nn.Module:
    """Learned key/value prefixes in every attention layer; the model itself stays frozen."""
    from peft import PrefixTuningConfig

    task, settings = _generative(model, "prefix_tuning"), config.prefix_tuning
    if settings.init_text:
        raise LmtuneError("method.prefix_tuning.init_text: only prompt_tuning starts from a text; remove it")
    peft_config = PrefixTuningConfig(task_type=task, num_virtual_tokens=settings.virtual_tokens)
    return _prompt_learning(model, "prefix_tuning", peft_config)


def adapter(model: nn.Module, config) -> nn.Module:
    """Bottleneck adapters (lmtune.models.adapters) after the attention and/or MLP of every block."""
    _, head = scope(model)
    return adapters.add(model, layer_stacks(model), head, config.adapter)


# each registered name (lmtune.models.registry, torch-free) is the function of that name above
METHODS: dict[str, Callable[[nn.Module, object], nn.Module]] = {
    name: globals()[name] for name in registry.METHODS
}


def apply_method(model: nn.Module, config) -> nn.Module:
    return METHODS[config.name](model, config)


def load_options(config) -> dict:
    """Extra from_pretrained arguments the method needs: qlora quantizes while loading; {} otherwise.

    Works on CPU too (bitsandbytes 0.50 has CPU 4-bit kernels), and on one CUDA GPU."""
    if config.name != "qlora":
        return {}
    from transformers import BitsAndBytesConfig

    if importlib.util.find_spec("bitsandbytes") is None:
        raise LmtuneError("method.name = 'qlora' needs bitsandbytes: pip install bitsandbytes")
    settings = config.qlora
    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=settings.quant_type,
        bnb_4bit_use_double_quant=settings.double_quant,
        bnb_4bit_compute_dtype=DTYPES[settings.compute_dtype],
        llm_int8_skip_modules=UNQUANTIZED,
    )
    return {"quantization_config": quantization}
