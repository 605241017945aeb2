"""The training losses recipes hand to the trainer (one seam: see `Loss`), and the language-model loss
on the labelled positions only.

A causal LM's output layer is vocabulary-sized (49,152 columns for SmolLM2: ~20% of its FLOPs per
token), and with responses-only loss most positions are prompt tokens whose logits are thrown
away. Here the body runs on every token and the output layer only where a label is, which gives
the same loss for less work and far less memory (no batch x length x vocabulary logits tensor).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

# Labelled positions per output-layer call: bounds the logits in memory to CHUNK x vocabulary floats
# (400 MB for SmolLM2) however long the batch. Batches with more labelled tokens recompute each
# chunk's logits in the backward pass instead of keeping them (an evaluation batch of 64 x 512
# plain-text tokens held 6.4 GB of logits and ran a CPU machine out of memory).
CHUNK = 2048

# Architectures whose logits are exactly lm_head(last hidden state): no logit scaling or soft-capping.
PLAIN_HEAD_TYPES = {"llama", "mistral", "qwen2", "qwen3", "gpt2", "gpt_neox", "phi3", "smollm3", "olmo2"}


def _causal_lm(model):
    """The transformers causal LM inside a peft wrapper, or None when inputs are rewritten on the way
    (prompt/prefix tuning add virtual tokens, so the wrapper's own forward must run)."""
    peft_config = getattr(model, "peft_config", None)
    if peft_config and any(c.is_prompt_learning for c in peft_config.values()):
        return None
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(inner.config, "model_type", None) not in PLAIN_HEAD_TYPES:
        return None
    return inner


def labelled_loss(model, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of token losses, number of labelled tokens) of a batch with `labels` (-100 = no loss)."""
    inputs = dict(inputs)
    labels = inputs.pop("labels")
    inner = None if model.config.is_encoder_decoder else _causal_lm(model)
    if inner is None:
        outputs = model(**inputs, labels=labels)
        count = (labels[:, 1:] if not model.config.is_encoder_decoder else labels).ne(-100).sum()
        return outputs.loss * count, count
    body = getattr(inner, inner.base_model_prefix)
    hidden = body(**inputs, use_cache=False).last_hidden_state[:, :-1]
    targets = labels[:, 1:]
    keep = targets.ne(-100)
    head, hidden, targets = inner.get_output_embeddings(), hidden[keep], targets[keep]
    if len(targets) <= CHUNK:
        return _token_loss(head, hidden, targets), keep.sum()
    total = hidden.new_zeros((), dtype=torch.float32)
    for h, t in zip(hidden.split(CHUNK), targets.split(CHUNK), strict=True):
        if torch.is_grad_enabled():  # keep no logits: recompute each chunk's in the backward pass
            total = total + checkpoint(_token_loss, head, h, t, use_reentrant=False)
        else:
            total = total + _token_loss(head, h, t)
    return total, keep.sum()


def _token_loss(head, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(head(hidden).float(), targets, reduction="sum")


def token_losses(head, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-position cross-entropy of head(hidden) against targets, CHUNK positions at a time; under
    autograd each chunk's logits are recomputed in the backward pass instead of kept."""
    chunks = zip(hidden.split(CHUNK), targets.split(CHUNK), strict=True)
    if torch.is_grad_enabled():
        return torch.cat([checkpoint(_position_losses, head, h, t, use_reentrant=False) for h, t in chunks])
    return torch.cat([_position_losses(head, h, t) for h, t in chunks])


def _position_losses(head, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(head(hidden).float(), targets, reduction="none")


def row_losses(model, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of token losses, labelled tokens) per row of a batch: what labelled_loss sums, kept per
    example so that held-out loss and perplexity get bootstrap intervals over the examples."""
    inputs = dict(inputs)
    labels = inputs.pop("labels")
    peft_config = getattr(model, "peft_config", None)
    if peft_config and any(c.is_prompt_learning for c in peft_config.values()):
        # virtual tokens change the sequence the wrapper scores: it scores one row at a time
        rows = [
            labelled_loss(
                model, {**{k: v[i : i + 1] for k, v in inputs.items()}, "labels": labels[i : i + 1]}
            )
            for i in range(len(labels))
        ]
        return torch.stack([s.float() for s, _ in rows]), torch.stack([n for _, n in rows])
    encoder_decoder = model.config.is_encoder_decoder
    targets = labels if encoder_decoder else labels[:, 1:]
    keep = targets.ne(-100)
    inner = None if encoder_decoder else _causal_lm(model)
    if inner is None:  # the model's own logits (T5 builds its decoder inputs from the labels)
        logits = model(**inputs, labels=labels).logits
        logits = logits if encoder_decoder else logits[:, :-1]
        losses = F.cross_entropy(logits[keep].float(), targets[keep], reduction="none")
    else:
        hidden = getattr(inner, inner.base_model_prefix)(**inputs, use_cache=False).last_hidden_state[:, :-1]
        losses = token_losses(inner.get_output_embeddings(), hidden[keep], targets[keep])
    sums = torch.zeros(len(labels), dtype=torch.float32, device=losses.device)
    return sums.index_add_(0, keep.nonzero()[:, 0], losses), keep.sum(1)


# The one loss seam: a recipe gives the trainer a Loss, the trainer adds the penalty terms
# (train.Penalty) to it while training. loss(model, inputs, weights, num_items_in_batch) returns
# (loss, outputs, scaled): `weights` are the batch's per-row weights (the rows' `weight` field, popped
# from the batch by the trainer) or None; `scaled` says the loss is already normalised over the whole
# accumulated batch (num_items_in_batch), so the trainer must not divide it by the accumulation steps.
# A Loss returns None for a batch it leaves to the Trainer's default (the model's own loss).
Loss = Callable[..., tuple[torch.Tensor, object, bool] | None]


def language_model_loss(model, inputs: dict, weights, num_items_in_batch) -> tuple[torch.Tensor, dict, bool]:
    """Mean token loss over the labelled positions. With per-row weights, each row's tokens count
    `weight` times (normalised per batch by the weighted token count)."""
    if weights is not None:
        sums, counts = row_losses(model, inputs)
        weights = weights.to(sums.dtype)
        loss = (sums * weights).sum() / (counts * weights).sum().clamp(min=1e-12)
        return loss, {"loss": loss}, False
    total, count = labelled_loss(model, inputs)
    scaled = num_items_in_batch is not None  # the Trainer counted the labelled tokens of all micro-batches
    loss = total / (num_items_in_batch if scaled else count.clamp(min=1))
    return loss, {"loss": loss}, scaled


def classification_loss(class_weights: list[float] | None = None) -> Loss:
    """Cross-entropy of a sequence classifier. `class_weights` (data.augment.balance = weights: every
    row's weight follows from its class) weigh each class while training; per-row weights, when the
    rows carry them, weigh each row (a weighted mean). Evaluation always scores the plain loss."""
    by_class = torch.tensor(class_weights) if class_weights else None

    def loss(model, inputs: dict, weights, num_items_in_batch):
        if not model.training or (by_class is None and weights is None):
            return None  # the model's own loss, as the Trainer computes it
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        logits = outputs.logits.float()
        if by_class is not None:
            value = F.cross_entropy(logits, labels, weight=by_class.to(logits.device))
        else:
            weights = weights.to(logits.dtype)
            per_row = F.cross_entropy(logits, labels, reduction="none") * weights
            value = per_row.sum() / weights.sum().clamp(min=1e-12)
        return value, outputs, False

    return loss


def regression_loss(kind: str = "mse", delta: float = 1.0) -> Loss:
    """Squared error (`mse`) or Huber loss (`huber`: squared within `delta` of the target, linear beyond,
    so outliers pull less) of a one-output regression head; per-row weights, when the rows carry them,
    weigh each row (a weighted mean). Evaluation scores the plain squared error, the model's own loss."""

    def loss(model, inputs: dict, weights, num_items_in_batch):
        if not model.training or (kind == "mse" and weights is None):
            return None  # the model's own loss (MSE of problem_type regression)
        targets = inputs.pop("labels").float()
        outputs = model(**inputs)
        predicted = outputs.logits.float().squeeze(-1)
        if kind == "huber":
            per_row = F.huber_loss(predicted, targets, reduction="none", delta=delta)
        else:
            per_row = F.mse_loss(predicted, targets, reduction="none")
        if weights is None:
            return per_row.mean(), outputs, False
        weights = weights.to(per_row.dtype)
        return (per_row * weights).sum() / weights.sum().clamp(min=1e-12), outputs, False

    return loss


def multi_label_loss() -> Loss:
    """Binary cross-entropy of every label's sigmoid (problem_type multi_label_classification); per-row
    weights, when the rows carry them, weigh each row's mean over its labels (a weighted mean)."""

    def loss(model, inputs: dict, weights, num_items_in_batch):
        if not model.training or weights is None:
            return None  # the model's own loss (BCE with logits, mean over rows and labels)
        targets = inputs.pop("labels").float()
        outputs = model(**inputs)
        per_row = F.binary_cross_entropy_with_logits(outputs.logits.float(), targets, reduction="none").mean(
            -1
        )
        weights = weights.to(per_row.dtype)
        return (per_row * weights).sum() / weights.sum().clamp(min=1e-12), outputs, False

    return loss
