"""The `qa:` section of a run config (task: qa), beside its recipe."""

from __future__ import annotations

from pydantic import Field

from lmtune.sections import Section


class QaConfig(Section):
    """task: qa — extractive question answering: the answer is a span of the context, found by start and
    end heads over its sub-words; a context longer than model.max_length is read in overlapping windows."""

    doc_stride: int = Field(
        128,
        ge=8,
        description="sub-words two consecutive windows of a long context share (as transformers' run_qa); "
        "must leave room for the question: below model.max_length / 2",
    )
    max_answer_length: int = Field(30, ge=1, description="the longest answer considered, in sub-words")
    n_best: int = Field(20, ge=1, description="start and end candidates per window the span search pairs")
    null_threshold: float = Field(
        0.0,
        description="data with unanswerable questions: answer nothing when the no-answer score beats the "
        "best span's by more than this (SQuAD v2's null_score_diff_threshold)",
    )
    probe_windows: int = Field(
        800,
        ge=10,
        description="probe baseline: training windows (seeded) whose frozen hidden states train linear "
        "start and end heads",
    )
