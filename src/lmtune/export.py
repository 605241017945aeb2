"""Export a finished run's model as a plain Hugging Face directory (safetensors only).

`--merge`: adapters folded into the base weights, loadable with `from_pretrained` and no lmtune.
`--adapter`: the adapter alone, with the base model it needs named in its config.
Written to a scratch folder beside the target and renamed into place, so a failed export leaves
nothing half-written and an existing folder is only replaced with --overwrite.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch

from lmtune.errors import LmtuneError
from lmtune.models.weights import merge, save_weights
from lmtune.runs import publish, read_run

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
CARRIED = ("generation_config.json", "lmtune_model.json", "labels.json")


def _load(run_dir: Path, task: str):
    """(model, tokenizer) of a finished run, whatever its task."""
    if task == "classify":
        from lmtune.tasks.classify import load_run

        _, model, tokenizer, _ = load_run(run_dir)
        return model, tokenizer
    from lmtune.tasks.generative import load_run

    run = load_run(run_dir)
    return run.model, run.tokenizer


def export(run_dir: Path, out: Path, *, merged: bool, dtype: str = "fp32", overwrite: bool = False) -> Path:
    task = read_run(run_dir)["task"]
    if out.exists() and not overwrite:
        raise LmtuneError(f"export: '{out}' exists; pass --overwrite to replace it")
    if out.exists() and not out.is_dir():
        raise LmtuneError(f"export: '{out}' is a file, not a folder")
    model, tokenizer = _load(run_dir, task)
    adapter = hasattr(model, "peft_config") or getattr(model, "lmtune_adapters", None) is not None
    if not merged and not adapter:
        raise LmtuneError(
            f"export --adapter: {run_dir} trained every weight (no adapter); export it with --merge"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.export-", dir=out.parent))
    try:
        if merged:
            plain = merge(model) if adapter else model
            plain.to(DTYPES[dtype]).save_pretrained(scratch)
        else:
            save_weights(model.to(DTYPES[dtype]), scratch)
        tokenizer.save_pretrained(scratch)
        for name in CARRIED:
            source = run_dir / "model" / name
            if source.is_file() and not (merged and name == "lmtune_model.json"):
                shutil.copy2(source, scratch / name)
        publish(scratch, out)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return out
