"""Language-model examples as token ids, and how they are batched: padding, and packing several
short examples into one row."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from datasets import Dataset


@dataclass
class Encoded:
    """One example as token ids (labels -100 where no loss); prompt/reference only for chat examples."""

    input_ids: list[int]
    labels: list[int]
    where: str
    prompt_ids: list[int] | None = None
    prompt: str | None = None
    reference: str | None = None
    weight: float | None = None  # its weight in the training loss (data.weight_column); None = 1


def as_dataset(encoded: list[Encoded], weights: bool = False) -> Dataset:
    """Token ids, labels and lengths; with `weights`, each example's loss weight when any has one (the
    training rows: the trainer hands a `weight` column to the loss)."""
    data = {
        "input_ids": [e.input_ids for e in encoded],
        "labels": [e.labels for e in encoded],
        "length": [len(e.input_ids) for e in encoded],
    }
    if weights and any(e.weight is not None for e in encoded):
        data["weight"] = [1.0 if e.weight is None else e.weight for e in encoded]
    return Dataset.from_dict(data)


def pad(rows: list[list[int]], pad_id: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask) of rows padded to the longest. Decoder-only prompts pad on the left
    (generation, or answers, continue at the right edge); encoder inputs pad on the right (models with
    learned absolute positions, e.g. BART, expect text to start at 0)."""
    width = max(len(ids) for ids in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, ids in enumerate(rows):
        span = slice(width - len(ids), width) if left else slice(0, len(ids))
        input_ids[row, span] = torch.tensor(ids, dtype=torch.long)
        mask[row, span] = 1
    return input_ids, mask


def collate(pad_id: int):
    """Pad inputs with pad_id and labels with -100, each to its own longest row (labels are the
    decoder side for seq2seq). -100 padding keeps an EOS that doubles as the pad token learnable.
    Packed rows carry position ids and no attention mask; their padding is one more segment that
    nothing attends to."""

    def batch(features: list[dict]) -> dict:
        width = max(len(f["input_ids"]) for f in features)
        label_width = max(len(f["labels"]) for f in features)
        out = {
            "input_ids": torch.tensor(
                [f["input_ids"] + [pad_id] * (width - len(f["input_ids"])) for f in features]
            ),
            "labels": torch.tensor(
                [f["labels"] + [-100] * (label_width - len(f["labels"])) for f in features]
            ),
        }
        if "position_ids" in features[0]:
            out["position_ids"] = torch.tensor(
                [f["position_ids"] + list(range(width - len(f["position_ids"]))) for f in features]
            )
        else:
            out["attention_mask"] = torch.tensor(
                [[1] * len(f["input_ids"]) + [0] * (width - len(f["input_ids"])) for f in features]
            )
        if "weight" in features[0]:  # per-row loss weights: the trainer pops them for the loss
            out["weight"] = torch.tensor([f["weight"] for f in features], dtype=torch.float32)
        return out

    return batch


def pack(encoded: list[Encoded], limit: int) -> list[dict]:
    """Greedy first-fit packing of examples into rows of at most `limit` tokens; positions restart
    at 0 for every example, which is how the model tells them apart."""
    rows: list[dict] = []
    for item in sorted(encoded, key=lambda e: len(e.input_ids), reverse=True):
        n = len(item.input_ids)
        row = next((r for r in rows if len(r["input_ids"]) + n <= limit), None)
        if row is None:
            row = {"input_ids": [], "labels": [], "position_ids": []}
            rows.append(row)
        row["input_ids"] += item.input_ids
        # an example's first token has no context of its own: it is never a target (unpacked, the
        # shift drops it; packed, it would be "predicted" from the previous example)
        row["labels"] += [-100, *item.labels[1:]]
        row["position_ids"] += list(range(n))
    for row in rows:
        row["length"] = len(row["input_ids"])
    return rows
