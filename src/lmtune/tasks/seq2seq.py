"""Instruction tuning of encoder-decoder models (T5, BART): the conversation so far is the encoder's
input, the final answer the decoder's target (ending in EOS, where generation stops).

Encoder-decoders have no chat template: a single turn is its (system-prefixed) user text, several
turns are written one per line as "role: content". Only the last assistant turn is learned.
"""

from __future__ import annotations

from pathlib import Path

from lmtune import assets
from lmtune.config import RunConfig
from lmtune.data.batches import Encoded, as_dataset
from lmtune.data.formats import Example
from lmtune.errors import LmtuneError
from lmtune.models.chat_template import Stop
from lmtune.models.load import is_encoder_decoder, load_tokenizer
from lmtune.tasks import generative
from lmtune.tasks.generative import Prepared, read_examples, with_system
from lmtune.train import check_setup


def source_text(messages: list[dict]) -> str:
    """The encoder's input: the user text (after the system prompt) or, for several turns, one line each."""
    system = [m["content"] for m in messages if m["role"] == "system"]
    turns = [m for m in messages if m["role"] != "system"]
    if len(turns) == 1:
        return "\n\n".join([*system, turns[0]["content"]])
    return "\n".join([*(f"system: {s}" for s in system), *(f"{m['role']}: {m['content']}" for m in turns)])


def _with_eos(tokenizer, text: str) -> list[int]:
    ids = tokenizer.encode(text, add_special_tokens=True)
    return ids if ids and ids[-1] == tokenizer.eos_token_id else [*ids, tokenizer.eos_token_id]


def encode_split(config: RunConfig, tokenizer, examples: list[Example], report: dict) -> list[Encoded]:
    limit = config.model.max_length
    out: list[Encoded] = []
    for example in examples:
        if example.text is not None:
            raise LmtuneError(
                f"{example.where}: plain text (continued pre-training) is for decoder-only models; use task: sft"
            )
        messages = with_system(example.messages, config.chat.system)
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        source = _with_eos(tokenizer, source_text(messages[:last]))
        target = _with_eos(tokenizer, messages[last]["content"])
        problem = None
        if len(source) > limit or len(target) > limit:
            problem = (
                f"input {len(source)} / answer {len(target)} tokens, longer than model.max_length = {limit}"
            )
        if problem is None:
            user = next((m["content"] for m in reversed(messages[:last]) if m["role"] == "user"), "")
            reference = messages[last]["content"]
            out.append(Encoded(source, target, example.where, source, user, reference, example.weight))
        else:
            generative.bad_record(config, example.where, problem, report)
    return out


def prepare(config: RunConfig) -> Prepared:
    check_setup(config)  # an impossible precision or a missing tracker fails before any work
    if config.chat.packing:
        raise LmtuneError("chat.packing: packing is for decoder-only models (task sft); set it to false")
    model_path = assets.resolve_model(config.model.name)
    trusted = config.model.trust_remote_code
    if not is_encoder_decoder(model_path, trusted):
        raise LmtuneError(f"model.name: '{config.model.name}' is decoder-only; use task: sft for it")
    tokenizer = load_tokenizer(model_path, trusted)
    examples, _, data_report = read_examples(config, tokenizer)
    if tokenizer.eos_token_id is None:
        raise LmtuneError(f"model.name: the tokenizer of '{model_path}' has no EOS token")
    splits, report, model = generative.encode_and_load(
        config, model_path, tokenizer, examples, data_report, encode_split
    )
    stop = Stop([tokenizer.eos_token_id], [])
    return Prepared(model_path, tokenizer, model, stop, splits, report, template=None, format="chat")


def train(
    config: RunConfig, prepared: Prepared, run_dir: Path, resume: bool = False, callbacks: tuple = ()
) -> dict:
    return generative.train(
        config,
        prepared,
        run_dir,
        resume,
        lambda c, p, m: (as_dataset(p.splits["train"], weights=True), "off"),
        callbacks,
    )


def prompt_ids(run, text: str, history: list[dict] | None = None) -> list[int]:
    messages = with_system([*(history or []), {"role": "user", "content": text}], run.config.chat.system)
    return _with_eos(run.tokenizer, source_text(messages))[-run.config.model.max_length :]


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
