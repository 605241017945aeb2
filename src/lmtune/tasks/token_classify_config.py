"""The `token_classify:` section of a run config (task: token_classify), beside its recipe."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lmtune.sections import Section


class TokenClassifyConfig(Section):
    """task: token_classify — a tag per word (named entities, IOB2) from an encoder with a per-token head;
    the data's tags are read by data.tag_column and data.tag_scheme."""

    label_subwords: Literal["first", "all"] = Field(
        "first",
        description="first: a word's first sub-word carries its tag, the rest are ignored in the loss (as "
        "transformers' run_ner); all: every sub-word is trained on the word's tag (B- as I- after the "
        "first). Scores are per word either way, read at each word's first sub-word",
    )
    probe_words: int = Field(
        50_000,
        ge=100,
        description="probe baseline: at most this many training words (whole sentences, seeded) for the "
        "per-word logistic regression on the frozen body's hidden states",
    )
