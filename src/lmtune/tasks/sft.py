"""Supervised fine-tuning of decoder-only models: instructions, chats (loss on the answers), or plain
text (continued pre-training, loss on everything).

The run's chat template and end-of-turn marker are fixed in `prepare` and saved with the model, so
training, evaluation, predict, chat and export all render and stop the same way.
"""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset

from lmtune import assets
from lmtune.config import RunConfig
from lmtune.data.batches import Encoded, as_dataset, pack
from lmtune.data.formats import Example
from lmtune.errors import LmtuneError
from lmtune.models.chat_template import (
    Stop,
    apply_template,
    encode_conversation,
    encode_text,
    end_of_turn,
    render,
)
from lmtune.models.load import load_tokenizer, position_limit
from lmtune.tasks import generative
from lmtune.tasks.generative import Prepared, read_examples, with_system
from lmtune.train import check_setup

# Architectures whose attention masks are built from position ids (transformers' create_causal_mask):
# packed examples restart their positions at 0 and do not see each other.
PACKING_SEPARATES = {"llama", "mistral", "qwen2", "qwen3", "gpt2", "phi3", "smollm3", "olmo2", "gemma2"}


# ------------------------------------------------------------------------------------ data


def encode_chat(config: RunConfig, tokenizer, example: Example) -> Encoded:
    messages = with_system(example.messages, config.chat.system)
    input_ids, labels = encode_conversation(tokenizer, messages, config.chat.train_on)
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    context = render(tokenizer, messages[:last], generation_prompt=True)
    user = next((m["content"] for m in reversed(messages[:last]) if m["role"] == "user"), "")
    return Encoded(
        input_ids,
        labels,
        example.where,
        prompt_ids=tokenizer.encode(context, add_special_tokens=False),
        prompt=user,
        reference=messages[last]["content"],
        weight=example.weight,
    )


def encode_split(config: RunConfig, tokenizer, examples: list[Example], report: dict) -> list[Encoded]:
    """Token ids of every example. Over-long conversations are bad records (data.on_error decides);
    plain-text documents are cut into model.max_length chunks, which are counted."""
    limit = config.model.max_length
    out: list[Encoded] = []
    for example in examples:
        if example.text is not None:
            ids = encode_text(tokenizer, example.text)
            chunks = [ids[i : i + limit] for i in range(0, len(ids), limit)]
            report["documents_split"] = report.get("documents_split", 0) + (len(chunks) > 1)
            out += [
                Encoded(chunk, list(chunk), example.where, weight=example.weight)
                for chunk in chunks
                if len(chunk) > 1
            ]
            continue
        encoded = encode_chat(config, tokenizer, example)
        problem = None
        if len(encoded.input_ids) > limit:
            problem = (
                f"conversation is {len(encoded.input_ids)} tokens, longer than model.max_length = {limit}"
            )
        elif all(label == -100 for label in encoded.labels):
            problem = "no response tokens to learn from"
        if problem is None:
            out.append(encoded)
        else:
            generative.bad_record(config, example.where, problem, report)
    return out


# --------------------------------------------------------------------------------- prepare


def prepare(config: RunConfig) -> Prepared:
    check_setup(config)  # an impossible precision or a missing tracker fails before any work
    model_path = assets.resolve_model(config.model.name)
    tokenizer = load_tokenizer(model_path, config.model.trust_remote_code)
    examples, format, data_report = read_examples(config, tokenizer)
    if config.data.weight_column and (config.chat.packing or format == "text"):
        packed = "chat.packing = true" if config.chat.packing else "plain-text documents are always packed"
        raise LmtuneError(
            f"data.weight_column = {config.data.weight_column!r} with packed rows ({packed}): a packed row "
            "holds several examples, so it has no one weight; drop one of them"
        )
    if tokenizer.eos_token is None:
        raise LmtuneError(
            f"model.name: the tokenizer of '{model_path}' has no EOS token; a causal LM needs one"
        )
    limit = position_limit(model_path, tokenizer, config.model.trust_remote_code)
    if limit is not None and config.model.max_length > limit:
        raise LmtuneError(
            f"model.max_length = {config.model.max_length}: the model reads at most {limit} tokens; allowed: 4..{limit}"
        )
    template = None if format == "text" else apply_template(tokenizer, config.chat.template)
    stop = end_of_turn(tokenizer) if template else Stop([tokenizer.eos_token_id], [])
    splits, report, model = generative.encode_and_load(
        config, model_path, tokenizer, examples, data_report, encode_split
    )
    if model.config.is_encoder_decoder:
        raise LmtuneError(
            f"model.name: '{config.model.name}' is an encoder-decoder model; use task: seq2seq for it"
        )
    return Prepared(model_path, tokenizer, model, stop, splits, report, template, format)


# --------------------------------------------------------------------------------- training


def train_rows(config: RunConfig, prepared, model) -> tuple[Dataset, str]:
    """The training set as rows, packed when asked (always for plain text), and how it was packed."""
    train = prepared.splits["train"]
    if not (config.chat.packing or prepared.format == "text"):
        return as_dataset(train, weights=True), "off"
    rows = Dataset.from_list(pack(train, config.model.max_length))
    note = f"{len(train)} examples in {len(rows)} rows of ≤ {config.model.max_length} tokens"
    if model.config.model_type not in PACKING_SEPARATES:
        note += "; attention crosses example boundaries (this architecture ignores packed position ids)"
    return rows, note


def train(
    config: RunConfig, prepared: Prepared, run_dir: Path, resume: bool = False, callbacks: tuple = ()
) -> dict:
    return generative.train(config, prepared, run_dir, resume, train_rows, callbacks)


# --------------------------------------------------------------------------- using a run


def prompt_ids(run, text: str, history: list[dict] | None = None) -> list[int]:
    """Token ids of a user turn (after an optional history) rendered exactly as in training."""
    messages = with_system([*(history or []), {"role": "user", "content": text}], run.config.chat.system)
    return run.tokenizer.encode(
        render(run.tokenizer, messages, generation_prompt=True), add_special_tokens=False
    )


def evaluate(run_dir: Path, data: str | None = None, **reader) -> dict:
    """Scores of a finished run on `data`, or on its own test split (re-cut from the same files and seed)."""
    return generative.evaluate_run(run_dir, data, read_examples, encode_split, reader)


def predictions_on(run_dir: Path, data: str | None = None, *, base: bool = False, **reader) -> dict:
    return generative.predictions_on(run_dir, data, read_examples, encode_split, reader, base=base)


load, answer = generative.load, generative.answer  # the contract's names for what both recipes share


def predict(run_dir: Path, texts: list[str]) -> list[dict]:
    return predict_with(load(run_dir), texts)


def predict_with(run, texts: list[str]) -> list[dict]:
    return answer(run, [prompt_ids(run, text) for text in texts], texts)
