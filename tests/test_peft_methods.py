"""Every method × architecture on tiny random-init models: what trains, that it trains, save/reload, merge.

Generative: GPT-2, Llama, Qwen2 (causal) and T5, BART (seq2seq); classifiers: BERT, RoBERTa. Hidden size
64 because bitsandbytes' 4-bit blocks are 64 wide.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    BartConfig,
    BertConfig,
    GPT2Config,
    LlamaConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
    RobertaConfig,
    T5Config,
    XLNetConfig,
)

from lmtune import shims
from lmtune.config import method_config
from lmtune.errors import LmtuneError
from lmtune.models import adapters
from lmtune.models.methods import apply_method, load_options
from lmtune.models.methods.common import count_parameters, task_type
from lmtune.models.weights import is_adapter, load_weights, merge, save_weights

VOCAB = 100
SPECIAL = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2)
DECODER = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2)
ENCODER = dict(DECODER, max_position_embeddings=64, pad_token_id=0)
SEQ2SEQ = dict(vocab_size=VOCAB, d_model=64, pad_token_id=0, eos_token_id=2, decoder_start_token_id=0)
BART = dict(encoder_layers=2, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2)
CONFIGS = {
    "gpt2": (
        AutoModelForCausalLM,
        lambda: GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=2, **SPECIAL),
    ),
    "llama": (
        AutoModelForCausalLM,
        lambda: LlamaConfig(vocab_size=VOCAB, num_key_value_heads=1, **DECODER, **SPECIAL),
    ),
    "qwen2": (
        AutoModelForCausalLM,
        lambda: Qwen2Config(vocab_size=VOCAB, num_key_value_heads=1, **DECODER, **SPECIAL),
    ),
    "t5": (AutoModelForSeq2SeqLM, lambda: T5Config(d_kv=32, d_ff=128, num_layers=2, num_heads=2, **SEQ2SEQ)),
    "bart": (
        AutoModelForSeq2SeqLM,
        lambda: BartConfig(encoder_ffn_dim=128, decoder_ffn_dim=128, bos_token_id=1, **BART, **SEQ2SEQ),
    ),
    "bert": (AutoModelForSequenceClassification, lambda: BertConfig(vocab_size=VOCAB, **ENCODER)),
    "roberta": (AutoModelForSequenceClassification, lambda: RobertaConfig(vocab_size=VOCAB, **ENCODER)),
    # shapes peft's prefix tuning cannot handle: T5 with d_kv * heads != d_model, BART with unequal heads
    "t5-narrow-heads": (
        AutoModelForSeq2SeqLM,
        lambda: T5Config(d_kv=16, d_ff=128, num_layers=2, num_heads=3, **SEQ2SEQ),
    ),
    "bart-uneven": (
        AutoModelForSeq2SeqLM,
        lambda: BartConfig(
            **{**BART, "decoder_attention_heads": 4}, encoder_ffn_dim=128, decoder_ffn_dim=128, **SEQ2SEQ
        ),
    ),
    "xlnet": (
        AutoModelForSequenceClassification,
        lambda: XLNetConfig(vocab_size=VOCAB, d_model=64, n_layer=2, n_head=2, d_inner=128, pad_token_id=0),
    ),
}
GENERATIVE = ["gpt2", "llama", "qwen2", "t5", "bart"]
CLASSIFIERS = ["bert", "roberta"]
LORA = {"r": 4, "alpha": 8, "dropout": 0.0}
METHODS = {
    "full": {},
    "freeze": {"freeze": {"trainable_layers": 1}},
    "lora": {"lora": LORA},
    "dora": {"lora": LORA},
    "qlora": {"lora": LORA, "qlora": {"compute_dtype": "fp32"}},  # fp32: merged logits comparable
    "ia3": {},
    "prompt_tuning": {"prompt_tuning": {"virtual_tokens": 3}},
    "prefix_tuning": {"prefix_tuning": {"virtual_tokens": 3}},
    "adapter": {"adapter": {"style": "houlsby", "reduction_factor": 4, "non_linearity": "gelu"}},
    "adapter-pfeiffer": {"adapter": {"style": "pfeiffer", "reduction_factor": 8}},
}
# names of the parameters each method trains (besides a classifier's head)
TRAINS = {
    "lora": "lora_",
    "dora": "lora_",
    "qlora": "lora_",
    "ia3": "ia3_l",
    "prompt_tuning": "prompt_encoder",
    "prefix_tuning": "prompt_encoder",
    "adapter": ".adapter.",
    "adapter-pfeiffer": ".adapter.",
}
MERGEABLE = {"full", "freeze", "lora", "dora", "qlora", "ia3"}
UNSUPPORTED = {(arch, m) for arch in CLASSIFIERS for m in ("prompt_tuning", "prefix_tuning")}


def method(name: str):
    return method_config({"name": name.split("-")[0], **METHODS[name]})


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over w0..w95 (ids 4..99), so prompt_tuning can start from a text offline."""
    words = ["[PAD]", "[BOS]", "[EOS]", "[UNK]"] + [f"w{i}" for i in range(VOCAB - 4)]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="[PAD]", bos_token="[BOS]", eos_token="[EOS]", unk_token="[UNK]"
    )


AUTO_CLASS = {}  # folder -> the Auto class that loads it


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors gain nothing from threads, and OpenMP spin-waits when the cores are shared
    (measured on 2 busy cores: 77 s → 12 s for this file)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """A tiny random-init model folder per architecture (built once), with a tokenizer."""
    built: dict = {}

    def build(arch: str):
        if arch not in built:
            folder = tmp_path_factory.mktemp(arch)
            torch.manual_seed(0)
            auto, config = CONFIGS[arch]
            auto.from_config(config()).save_pretrained(folder)
            tiny_tokenizer().save_pretrained(folder)
            built[arch], AUTO_CLASS[folder] = folder, auto
        return built[arch]

    return build


def load(folder, config=None):
    """The base as a recipe loads it: from its folder, with the method's load_options."""
    options = load_options(config) if config else {}
    with shims.bitsandbytes_exact_cpu_path() if options else contextlib.nullcontext():
        return AUTO_CLASS[folder].from_pretrained(str(folder), **options).eval()


def batch(model) -> dict:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(4, VOCAB, (2, 6), generator=generator)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    task = task_type(model.get_base_model() if hasattr(model, "get_base_model") else model)
    labels = {"SEQ_CLS": torch.tensor([0, 1]), "CAUSAL_LM": ids}.get(task, ids[:, :4].clone())
    return {**inputs, "labels": labels}


def logits(model, inputs: dict) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**inputs).logits.float()


def train_step(model, inputs: dict) -> float:
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    loss = model(**inputs).loss
    loss.backward()
    optimizer.step()
    return loss.item()


@pytest.mark.parametrize("arch", GENERATIVE + CLASSIFIERS)
@pytest.mark.parametrize("name", list(METHODS))
def test_method(base_dir, tmp_path, arch, name):
    folder, config = base_dir(arch), method(name)
    model = load(folder, config)
    if (arch, name) in UNSUPPORTED:
        with pytest.raises(LmtuneError, match=rf"method.name = '{config.name}' needs a generative model"):
            apply_method(model, config)
        return
    inputs = batch(model)
    base_logits = logits(model, inputs)
    model = apply_method(model, config)
    trainable, total = count_parameters(model)
    assert 0 < trainable <= total
    assert (trainable == total) == (name == "full")
    if name == "qlora":  # 4-bit weights count by their real number of elements: same as lora's
        assert (trainable, total) == count_parameters(apply_method(load(folder), method("lora")))
        states = [getattr(p, "quant_state", None) for p in model.parameters()]
        assert not any(getattr(state, "packing_format_for_cpu", False) for state in states), "repacked"
    if name.startswith("adapter"):  # zero-initialised up-projection: the model starts as its base
        assert torch.equal(logits(model, inputs), base_logits)

    names = [n for n, p in model.named_parameters() if p.requires_grad]
    head = {"bert": "classifier", "roberta": "classifier"}.get(arch)
    if name in TRAINS:
        assert all(TRAINS[name] in n or (head and head in n) for n in names), names
        assert any(TRAINS[name] in n for n in names)

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert torch.isfinite(torch.tensor(train_step(model, inputs)))
    after = dict(model.named_parameters())
    assert any(not torch.equal(after[n], before[n]) for n in names), "no trainable weight changed"
    frozen = [n for n, p in after.items() if not p.requires_grad]
    assert all(torch.equal(after[n], before[n]) for n in frozen), "a frozen weight changed"

    trained = logits(model, inputs)
    save_weights(model, tmp_path / "saved")
    assert is_adapter(tmp_path / "saved") == (name not in ("full", "freeze"))
    reloaded = load_weights(load(folder, config), tmp_path / "saved")
    assert torch.allclose(logits(reloaded, inputs), trained, atol=1e-6)

    if arch in GENERATIVE:
        prompt = inputs["input_ids"][:, :3]
        out = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=3)
        assert out.shape[0] == 2

    if name in MERGEABLE:
        merged = merge(model)
        assert torch.allclose(logits(merged, inputs), trained, atol=1e-4)
        assert not hasattr(merged, "peft_config") and not adapters.has_adapters(merged)
        assert not any("lora_" in n or "ia3_" in n for n, _ in merged.named_parameters())
        assert type(merged).__name__ == type(load(folder)).__name__
        merged.save_pretrained(tmp_path / "merged")  # the export: loads back as a plain model
        exported = AUTO_CLASS[folder].from_pretrained(tmp_path / "merged")
        assert torch.allclose(logits(exported, inputs), trained, atol=1e-4)
    else:
        with pytest.raises(LmtuneError, match=rf"merge: {config.name} cannot be merged"):
            merge(model)


def test_generative_lora_targets_every_block_linear_not_lm_head(base_dir):
    model = apply_method(load(base_dir("gpt2")), method("lora"))
    adapted = {n.rsplit(".", 3)[0] for n, _ in model.named_parameters() if "lora_A" in n}
    short = {n.split(".h.0.", 1)[1] for n in adapted if ".h.0." in n}
    assert short == {"attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"}  # GPT-2's Conv1D layers
    assert len(adapted) == 8 and not any("lm_head" in n or "wte" in n for n in adapted)


def test_seq2seq_adapters_sit_in_encoder_and_decoder(base_dir):
    model = apply_method(load(base_dir("t5")), method("adapter"))
    targets = model.lmtune_adapters["targets"]
    assert targets[:2] == [
        "encoder.block.0.layer.0.SelfAttention.o",
        "encoder.block.0.layer.1.DenseReluDense.wo",
    ]
    assert "decoder.block.1.layer.2.DenseReluDense.wo" in targets and len(targets) == 8


@pytest.mark.parametrize(
    ("arch", "name", "message"),
    [
        ("t5-narrow-heads", "prefix_tuning", "method.name = 'prefix_tuning' does not work with t5"),
        ("bart-uneven", "prefix_tuning", "method.name = 'prefix_tuning' does not work with bart"),
        ("xlnet", "ia3", "method.ia3.target_modules = 'auto' has no default for model type 'xlnet'"),
        (
            "xlnet",
            "adapter",
            "method.adapter.style = 'houlsby': no attention output projection in XLNetLayer",
        ),
        ("llama", "qlora-unquantized", "method.name = 'qlora' needs the base loaded in 4-bit"),
    ],
)
def test_unsupported_pairs_fail_up_front(base_dir, arch, name, message):
    config = method(name.removesuffix("-unquantized"))
    with pytest.raises(LmtuneError, match=message.replace("(", r"\(")):
        apply_method(load(base_dir(arch)), config)


def test_xlnet_takes_pfeiffer_adapters(base_dir):
    model = apply_method(load(base_dir("xlnet")), method("adapter-pfeiffer"))
    assert model.lmtune_adapters["targets"] == [
        "transformer.layer.0.ff.layer_2",
        "transformer.layer.1.ff.layer_2",
    ]


def test_explicit_targets_are_checked(base_dir):
    config = method_config({"name": "lora", "lora": {"target_modules": ["qkv"]}})
    with pytest.raises(
        LmtuneError, match=r"method.lora.target_modules: \['qkv'\] not in the model; .*q_proj"
    ):
        apply_method(load(base_dir("llama")), config)


def test_task_type_follows_the_model_class():
    bart = BartConfig(vocab_size=VOCAB, d_model=16, **BART, encoder_ffn_dim=16, decoder_ffn_dim=16)
    assert task_type(AutoModelForSequenceClassification.from_config(bart)) == "SEQ_CLS"
    assert task_type(AutoModelForSeq2SeqLM.from_config(bart)) == "SEQ_2_SEQ_LM"
    assert load_options(method("lora")) == {}


def test_prompt_tuning_starts_from_the_init_text(base_dir):
    config = method_config(
        {"name": "prompt_tuning", "prompt_tuning": {"virtual_tokens": 4, "init_text": "w5 w6"}}
    )
    model = apply_method(load(base_dir("llama")), config)
    prompt = model.prompt_encoder["default"].embedding.weight
    words = model.get_input_embeddings().weight[[9, 10, 9, 10]]  # w5 w6, repeated to 4 virtual tokens
    assert torch.equal(prompt, words)
