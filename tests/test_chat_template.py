"""Chat templates: the loss mask token by token, end-of-turn detection, fallbacks and clear errors."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from lmtune.assets import resolve_model
from lmtune.errors import LmtuneError
from lmtune.models.chat_template import (
    Stop,
    apply_template,
    encode_conversation,
    end_of_turn,
    render,
    segments,
)
from lmtune.models.generate import _cut

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "4"},
]


@pytest.fixture
def tokenizer():
    """SmolLM2's tokenizer: a chatml template of its own, <|im_end|> as EOS and as pad token."""
    return AutoTokenizer.from_pretrained(str(resolve_model("bundled:smollm2-135m-instruct")))


def expected_mask(tokenizer, messages, answer_suffix: str) -> tuple[list[int], list[bool]]:
    """Independently of lmtune: tokenize the whole rendered text with character offsets and mark the
    tokens inside each assistant answer (content + end-of-turn suffix)."""
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    spans, cursor = [], 0
    for m in messages:
        if m["role"] == "assistant":
            start = text.index(m["content"] + answer_suffix, cursor)
            cursor = start + len(m["content"] + answer_suffix)
            spans.append((start, cursor))
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = [any(a <= s and e <= b for a, b in spans) for s, e in encoded["offset_mapping"]]
    return encoded["input_ids"], mask


def test_loss_mask_is_on_every_assistant_turn_token_by_token(tokenizer):
    assert apply_template(tokenizer, "auto") == "tokenizer"
    input_ids, labels = encode_conversation(tokenizer, CHAT, "responses")
    ids, mask = expected_mask(tokenizer, CHAT, "<|im_end|>\n")
    assert input_ids == ids  # segment-wise tokenization equals tokenizing the whole conversation
    assert [label != -100 for label in labels] == mask
    assert all(label == token for label, token in zip(labels, input_ids, strict=True) if label != -100)
    trained = tokenizer.decode([t for t, label in zip(input_ids, labels, strict=True) if label != -100])
    assert trained == "Hello! How can I help?<|im_end|>\n4<|im_end|>\n"
    # the EOS that is also the pad token is a label: the model learns to stop
    assert labels.count(tokenizer.eos_token_id) == 2


def test_train_on_all_labels_every_token(tokenizer):
    input_ids, labels = encode_conversation(tokenizer, CHAT, "all")
    assert labels == input_ids


def test_end_of_turn_of_each_template(tokenizer):
    apply_template(tokenizer, "tokenizer")
    assert end_of_turn(tokenizer) == Stop([tokenizer.convert_tokens_to_ids("<|im_end|>")], [])
    assert apply_template(tokenizer, "alpaca") == "alpaca"
    pieces = segments(tokenizer, CHAT[1:3])
    assert pieces[-1] == ("Hello! How can I help?" + tokenizer.eos_token + "\n\n", True)
    assert render(tokenizer, CHAT[1:2], generation_prompt=True).endswith("### Response:\n")
    assert end_of_turn(tokenizer).token_ids == [tokenizer.eos_token_id]
    # llama3 markers are not tokens of this vocabulary: the marker is matched as a string
    apply_template(tokenizer, "llama3")
    assert end_of_turn(tokenizer).strings == ["<|eot_id|>"]


def test_auto_falls_back_to_chatml_when_the_tokenizer_has_no_template(tokenizer):
    tokenizer.chat_template = None
    assert apply_template(tokenizer, "auto") == "chatml"
    assert render(tokenizer, CHAT[1:3]).startswith("<|im_start|>user\nHi there<|im_end|>\n")
    tokenizer.chat_template = None
    with pytest.raises(LmtuneError, match="chat.template = 'tokenizer'.*no chat template"):
        apply_template(tokenizer, "tokenizer")


def test_template_that_rewrites_history_is_refused(tokenizer):
    # renders the first turn differently once the conversation grows: masking would be wrong
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['role'] + (messages|length|string) + ': ' + m['content'] + '\n' }}{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    with pytest.raises(LmtuneError, match="renders earlier turns differently"):
        encode_conversation(tokenizer, CHAT, "responses")


def test_answers_are_cut_at_the_first_stop_token_or_string(tokenizer):
    ids = tokenizer.encode("Paris.", add_special_tokens=False)
    eos = tokenizer.eos_token_id
    assert _cut(ids + [eos] + ids, tokenizer, Stop([eos], [])) == {
        "answer": "Paris.",
        "stopped": True,
        "new_tokens": len(ids),
        "ids": ids + [eos],  # what the model chose, its stop token included (a score of the answer reads it)
    }
    assert _cut(ids, tokenizer, Stop([eos], []))["stopped"] is False
    assert _cut(ids, tokenizer, Stop([eos], []))["ids"] == ids
    marked = tokenizer.encode("Paris.<|eot_id|>more", add_special_tokens=False)
    assert _cut(marked, tokenizer, Stop([eos], ["<|eot_id|>"]))["answer"] == "Paris."
