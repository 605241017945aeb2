"""Per-example predictions of every model a run scored (base, probe, tuned), kept in predictions.json.

Scores with confidence intervals and paired tests between runs both need the examples, not only the
averages: a run keeps what each model predicted on each test example, in a columnar file, by kind:

    {"labels": [...] | null,
     "kinds": {"classify": {"where": [...], "truth": {"y_true": [...]},
                            "models": {"base": {"y_pred": [...], "probs": [[...], ...]}, "tuned": {...}}},
               "lm":       {"where": [...], "truth": {}, "models": {"tuned": {"loss_sum": [...], "tokens": [...]}}},
               "generate": {"where": [...], "truth": {"references": [...]}, "models": {"tuned": {"predictions": [...]}}}}}

A kind's registry inputs (evaluate/metrics.py) for one model are its truth merged with that model's columns.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lmtune.errors import LmtuneError
from lmtune.evaluate import metrics as registry

FILE = "predictions.json"


def kind_block(where: list[str], truth: dict, models: dict[str, dict]) -> dict:
    """One kind's examples: their ids, the truth, and each model's columns (numpy arrays become lists)."""
    return {"where": list(where), "truth": _plain(truth), "models": {m: _plain(c) for m, c in models.items()}}


def save(run_dir: Path, kinds: dict[str, dict], labels: list[str] | None = None) -> None:
    (run_dir / FILE).write_text(json.dumps({"labels": labels, "kinds": kinds}, ensure_ascii=False))


def load(run_dir: Path) -> dict:
    path = Path(run_dir) / FILE
    if not path.is_file():
        raise LmtuneError(
            f"{run_dir}: no {FILE} (a run from an older lmtune); score it on a file with --data FILE"
        )
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        saved["kinds"]  # noqa: B018 - presence check
    except (ValueError, KeyError, TypeError):
        raise LmtuneError(f"{path}: unreadable predictions file; the run directory is damaged") from None
    return saved


def inputs(saved: dict, kind: str, model: str) -> dict:
    """The registry inputs of one model for one kind, as numpy arrays where the metric wants them."""
    block = saved["kinds"][kind]
    merged = {**block["truth"], **block["models"][model]}
    return {k: (v if k in ("predictions", "references") else np.asarray(v)) for k, v in merged.items()}


def models(saved: dict) -> list[str]:
    """Model names in the order they were scored (base first, tuned last)."""
    names: list[str] = []
    for block in saved["kinds"].values():
        names += [m for m in block["models"] if m not in names]
    return names


def scores(
    saved: dict, model: str, names: list[str] | None = None, *, ci: bool = True, seed: int = 0
) -> dict:
    """Every metric of every kind this model has, flat, with a "ci" side table."""
    result: dict = {"ci": {}}
    for kind, block in saved["kinds"].items():
        if model not in block["models"] or not block["where"]:
            continue
        wanted = [n for n in names if n in registry.names_for(kind)] if names else None
        if wanted == []:
            continue
        scored = registry.score(
            kind, inputs(saved, kind, model), wanted, labels=saved.get("labels"), ci=ci, seed=seed
        )
        result["ci"].update(scored.pop("ci", {}))
        result.setdefault("n", scored.pop("n", None))  # the first kind's count: classify, or lm examples
        result.update(scored)
    return result


def _plain(columns: dict) -> dict:
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in columns.items()}
