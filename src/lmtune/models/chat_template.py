"""Chat templates and end-of-turn handling, shared by training, evaluation, predict, chat and export.

The template chosen for a run is written into the tokenizer (`tokenizer.chat_template`) and saved
with the model, so a plain `apply_chat_template` on an exported model renders prompts exactly as
training did. Token ids come from rendering prefixes of a conversation: the text before each
assistant turn (with the generation prompt) is context, the rest of that turn is the response,
and both are tokenized separately — the prompt of `predict` is then token-for-token the context
the model was trained on, and the end-of-turn marker is always part of a trained response, which
is what teaches the model to stop.
"""

from __future__ import annotations

from dataclasses import dataclass

from lmtune.errors import LmtuneError

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA3 = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
# Stanford Alpaca's prompt; the response ends with the tokenizer's EOS, the stop signal of base models.
ALPACA = (
    "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] + '\n\n' }}"
    "{% else %}{{ 'Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n' }}{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '### Instruction:\n' + message['content'] + '\n\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ '### Response:\n' + message['content'] + eos_token + '\n\n' }}"
    "{% elif message['role'] == 'tool' %}{{ '### Tool result:\n' + message['content'] + '\n\n' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '### Response:\n' }}{% endif %}"
)
TEMPLATES: dict[str, str] = {"chatml": CHATML, "llama3": LLAMA3, "alpaca": ALPACA}


def _is_token(tokenizer, text: str) -> bool:
    ids = tokenizer.encode(text, add_special_tokens=False)
    return len(ids) == 1 and tokenizer.convert_ids_to_tokens(ids[0]) == text


def apply_template(tokenizer, name: str) -> str:
    """Install the run's template into the tokenizer; return the name actually used.

    auto: the tokenizer's own template, else chatml when its markers are single tokens, else alpaca
    (whose responses end in EOS, which every causal tokenizer has).
    """
    own = getattr(tokenizer, "chat_template", None)
    if name == "auto":
        if own:
            return "tokenizer"
        name = "chatml" if _is_token(tokenizer, "<|im_end|>") else "alpaca"
    if name == "tokenizer":
        if not own:
            raise LmtuneError(
                "chat.template = 'tokenizer': this tokenizer has no chat template; allowed: auto, "
                + ", ".join(TEMPLATES)
            )
        return name
    if name == "alpaca" and tokenizer.eos_token is None:
        raise LmtuneError("chat.template = 'alpaca' needs a tokenizer with an EOS token")
    tokenizer.chat_template = TEMPLATES[name]
    return name


def render(tokenizer, messages: list[dict], generation_prompt: bool = False) -> str:
    try:
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=generation_prompt
        )
    except Exception as exc:  # jinja raises for roles a template does not know, etc.
        raise LmtuneError(f"chat template failed ({type(exc).__name__}: {exc})") from None


def segments(tokenizer, messages: list[dict]) -> list[tuple[str, bool]]:
    """The rendered conversation as (text, is_response) pieces, in order."""
    pieces: list[tuple[str, bool]] = []
    done = ""
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        context = render(tokenizer, messages[:i], generation_prompt=True)
        turn = render(tokenizer, messages[: i + 1])
        if not context.startswith(done) or not turn.startswith(context):
            raise LmtuneError(
                "the chat template renders earlier turns differently as a conversation grows, so "
                "responses cannot be masked reliably; set chat.template to chatml, llama3 or alpaca"
            )
        pieces.append((context[len(done) :], False))
        pieces.append((turn[len(context) :], True))
        done = turn
    rest = render(tokenizer, messages)[len(done) :]
    if rest:
        pieces.append((rest, False))
    return [(text, trained) for text, trained in pieces if text]


def encode_conversation(tokenizer, messages: list[dict], train_on: str) -> tuple[list[int], list[int]]:
    """input_ids and labels (-100 where no loss) of one conversation."""
    input_ids: list[int] = []
    labels: list[int] = []
    for text, is_response in segments(tokenizer, messages):
        ids = tokenizer.encode(text, add_special_tokens=False)
        input_ids += ids
        labels += ids if (is_response or train_on == "all") else [-100] * len(ids)
    return input_ids, labels


def encode_text(tokenizer, text: str) -> list[int]:
    """A plain-text document (continued pre-training), ending in EOS so documents stay apart."""
    ids = tokenizer.encode(text, add_special_tokens=True)
    if tokenizer.eos_token_id is not None and (not ids or ids[-1] != tokenizer.eos_token_id):
        ids.append(tokenizer.eos_token_id)
    return ids


@dataclass
class Stop:
    """What ends a generated answer: token ids (single-token markers and EOS) or marker strings."""

    token_ids: list[int]
    strings: list[str]


def end_of_turn(tokenizer) -> Stop:
    """Find the template's end-of-turn marker: render a turn and look at what follows the answer."""
    probe = "lmtune-probe-answer"
    messages = [{"role": "user", "content": "x"}, {"role": "assistant", "content": probe}]
    response = next(text for text, is_response in segments(tokenizer, messages) if is_response)
    marker = response.split(probe, 1)[1].strip()
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    strings: list[str] = []
    if marker and _is_token(tokenizer, marker):
        marker_id = tokenizer.convert_tokens_to_ids(marker)
        ids = [marker_id] + [i for i in ids if i != marker_id]
    elif marker:
        strings.append(marker)
    if not ids and not strings:
        raise LmtuneError("the chat template marks no end of turn and the tokenizer has no EOS token")
    return Stop(ids, strings)
