"""DPO and IPO with each pair's prompt computed once: TRL's DPOTrainer with its loss step replaced by one
on lmtune.models.shared_prompt, for adapters (lora, dora, qlora, ia3) on plain-head causal LMs, whose
reference is the same model with TRL's frozen copy of the starting adapter (or no adapter) switched in.

TRL runs the prompt + chosen and the prompt + rejected sequences side by side, for the policy and again
for the reference; here the prompt runs once for both answers, in both passes. The losses are TRL's
formulas for the loss types lmtune asks for (sigmoid = DPO, robust = DPO with label smoothing, ipo, sft),
and the training curves log TRL's reward and log-probability series under TRL's names (the per-token
logits and top-1 accuracy series, which need the vocabulary-sized logits, are not logged). Everything
else (data, batching, evaluation, logging, checkpoints) stays TRL's.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from lmtune import shims
from lmtune.models.shared_prompt import answer_log_probs, supported

LOSSES = ("sigmoid", "robust", "ipo", "sft")


def usable(model, loss_types: list[str]) -> bool:
    """Whether the shared-prompt step can stand in for TRL's: an adapter (the reference is the model
    with TRL's frozen copy of it, or none, switched in), an architecture models.shared_prompt supports,
    and only losses written here."""
    return hasattr(model, "disable_adapter") and supported(model) and set(loss_types) <= set(LOSSES)


def split_batch(inputs: dict) -> tuple[list[list[int]], list[list[int]]]:
    """TRL's preference batch (rows 0..B-1: prompt + chosen, rows B..2B-1: prompt + rejected, right-padded,
    completion_mask marking the answers) as B prompts and their 2B answers (chosen, rejected per prompt)."""
    ids, mask, completion = (inputs[k].tolist() for k in ("input_ids", "attention_mask", "completion_mask"))
    half = len(ids) // 2
    prompts, answers = [], []
    for i in range(half):
        for row in (i, half + i):
            length, start = sum(mask[row]), completion[row].index(1)
            if row == i:
                prompts.append(ids[row][:start])
            answers.append(ids[row][start:length])
    return prompts, answers


def preference_loss(
    loss_types, loss_weights, beta: float, label_smoothing: float, policy, reference, tokens
) -> tuple[torch.Tensor, dict[str, float]]:
    """TRL's DPOTrainer losses from summed answer log-probabilities ([chosen, rejected] per pair,
    interleaved) and the series it logs."""
    chosen, rejected = policy[0::2], policy[1::2]
    ref_chosen, ref_rejected = reference[0::2], reference[1::2]
    chosen_ratio, rejected_ratio = chosen - ref_chosen, rejected - ref_rejected
    delta = chosen_ratio - rejected_ratio
    loss = policy.new_zeros(())
    for kind, weight in zip(loss_types, loss_weights, strict=True):
        if kind == "sigmoid":
            per_pair = -F.logsigmoid(beta * delta)
        elif kind == "robust":  # Chowdhury et al. 2024: label_smoothing = the share of flipped labels
            clean = -(1 - label_smoothing) * F.logsigmoid(beta * delta)
            flipped = -label_smoothing * F.logsigmoid(-beta * delta)
            per_pair = (clean - flipped) / (1 - 2 * label_smoothing)
        elif kind == "ipo":  # per-token averages, as TRL (and the IPO authors) normalise them
            n_chosen, n_rejected = tokens[0::2].clamp(min=1), tokens[1::2].clamp(min=1)
            per_pair = (chosen_ratio / n_chosen - rejected_ratio / n_rejected - 1 / (2 * beta)) ** 2
        else:  # sft: the chosen answers' mean token negative log-likelihood over the batch
            per_pair = (-chosen.sum() / tokens[0::2].sum().clamp(min=1)).expand(len(chosen))
        loss = loss + per_pair.mean() * weight
    chosen_reward, rejected_reward = beta * chosen_ratio.detach(), beta * rejected_ratio.detach()
    logged = {
        "rewards/chosen": chosen_reward.mean().item(),
        "rewards/rejected": rejected_reward.mean().item(),
        "rewards/accuracies": (chosen_reward > rejected_reward).float().mean().item(),
        "rewards/margins": (chosen_reward - rejected_reward).mean().item(),
        "logps/chosen": chosen.detach().mean().item(),
        "logps/rejected": rejected.detach().mean().item(),
    }
    return loss, logged


@functools.cache
def trainer_class():
    """DPOTrainer with the shared-prompt loss step (TRL imported only when a run builds one)."""
    from trl import DPOTrainer
    from trl.trainer.utils import use_adapter

    class SharedPromptDPOTrainer(DPOTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if return_outputs:  # logits for compute_metrics: lmtune never asks (prediction_loss_only)
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            prompts, answers = split_batch(inputs)
            pad = self.processing_class.pad_token_id
            policy, tokens = answer_log_probs(model, prompts, answers, pad)
            # TRL's reference for an adapter: its frozen copy "ref" made at the start, else the base
            unwrapped = self.accelerator.unwrap_model(model)
            frozen = "ref" if "ref" in unwrapped.peft_config else None
            with torch.no_grad(), use_adapter(unwrapped, adapter_name=frozen):
                reference, _ = answer_log_probs(model, prompts, answers, pad)
            loss, logged = preference_loss(
                self.loss_types, self.loss_weights, self.beta, self.label_smoothing, policy, reference, tokens
            )
            series = shims.trl_metrics(self)["train" if self.model.training else "eval"]
            for key, value in logged.items():
                series[key].append(value)
            return loss

    return SharedPromptDPOTrainer
