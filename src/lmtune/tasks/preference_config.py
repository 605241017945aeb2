"""The `preference:` section of a run config (task: preference), beside its recipe: lmtune.config gathers
it through the task's TASKS entry, so the task's settings never touch the common config module."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from lmtune.sections import Section


class PreferenceConfig(Section):
    """task: preference — tuning on answers people preferred (TRL's DPOTrainer / KTOTrainer)."""

    loss: Literal["dpo", "ipo", "simpo", "orpo", "kto"] = Field(
        "dpo",
        description="dpo: the sigmoid loss on the policy's log-ratio margin over the reference; ipo: its "
        "squared form (Azar et al.), less prone to overfit deterministic preferences; simpo: length-"
        "normalised log-probability margin with a target margin, no reference model; orpo: SFT loss plus "
        "an odds-ratio penalty, no reference model; kto: unpaired answers labelled desirable or not",
    )
    beta: float = Field(
        0.1, gt=0, le=10, description="how far from the reference the policy may move: higher = closer"
    )
    label_smoothing: float = Field(
        0.0, ge=0, lt=0.5, description="dpo: the assumed share of flipped preference labels (robust DPO)"
    )
    sft_weight: float = Field(
        0.0,
        ge=0,
        description="dpo, ipo: weight of a negative log-likelihood term on the chosen answers (RPO, Pang et "
        "al. 2024; TRL's loss_type 'sft'): keeps the chosen answers likely, end-of-turn included, against "
        "the known drift of both answers down; 0 = off",
    )
    simpo_gamma: float = Field(0.5, ge=0, description="simpo: the target reward margin")
    shared_prompt: bool = Field(
        True,
        description="compute each pair's prompt once for both answers (lmtune.models.shared_prompt): in "
        "held-out scoring, and in dpo/ipo training with an adapter (lora, dora, qlora, ia3) on a plain-head "
        "causal LM; the same loss as TRL's separate sequences for less work. false: TRL's own step",
    )
    desirable_weight: float = Field(1.0, gt=0, description="kto: weight of the desirable answers' loss")
    undesirable_weight: float = Field(1.0, gt=0, description="kto: weight of the undesirable answers' loss")

    @model_validator(mode="after")
    def _sft_term_has_a_loss_to_join(self) -> PreferenceConfig:
        if self.sft_weight and self.loss not in ("dpo", "ipo"):
            raise ValueError(
                f"sft_weight = {self.sft_weight:g} with loss {self.loss!r}: the NLL term joins dpo or ipo "
                "(orpo has its own); allowed: 0 for simpo, orpo, kto"
            )
        return self
