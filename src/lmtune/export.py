"""Export a finished run's model as a plain Hugging Face directory (safetensors only).

`--merge`: adapters folded into the base weights, loadable with `from_pretrained` and no lmtune.
`--adapter`: the adapter alone, with the base model it needs named in its config.
Written to a scratch folder beside the target and renamed into place, so a failed export leaves
nothing half-written. An existing folder is only replaced with --overwrite, and only when an earlier
export made it (MARKER inside): never the run being exported, a folder holding it or any other run,
the current folder, or a folder of the user's.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from lmtune import faults
from lmtune.errors import LmtuneError
from lmtune.models.weights import merge, save_weights
from lmtune.runs import EXPORT_MARKER as MARKER
from lmtune.runs import MARKER as RUN_MARKER
from lmtune.runs import building, hold, read_run, recover, remove_partial
from lmtune.tasks.contract import Predictor

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
CARRIED = ("generation_config.json", "lmtune_model.json", "labels.json")


def _inside_a_run(path: Path) -> Path | None:
    return next((p for p in [path, *path.parents] if (p / RUN_MARKER).is_file()), None)


def check_target(run_dir: Path, out: Path, overwrite: bool) -> None:
    """Refuse, before any work, every target whose replacement would lose something."""
    run, target, here = run_dir.resolve(), out.resolve(), Path.cwd().resolve()
    if target == run or run.is_relative_to(target):
        raise LmtuneError(f"export: '{out}' is the run being exported or holds it; give another folder")
    if here.is_relative_to(target):
        raise LmtuneError(f"export: '{out}' is the current folder or holds it; give another folder")
    if holder := _inside_a_run(target.parent):
        raise LmtuneError(
            f"export: '{out}' is inside the run directory '{holder}'; runs are never written to"
        )
    if not out.exists():
        return
    if not out.is_dir():
        raise LmtuneError(f"export: '{out}' is a file, not a folder")
    if not overwrite:
        raise LmtuneError(f"export: '{out}' exists; pass --overwrite to replace it")
    if not (out / MARKER).is_file():
        raise LmtuneError(
            f"export: '{out}' exists and is not an lmtune export (no {MARKER}); lmtune will not replace it"
        )
    if held := next((p.parent for p in out.rglob(RUN_MARKER)), None):
        raise LmtuneError(f"export: '{out}' holds the run directory '{held}'; lmtune will not replace it")


def export(run_dir: Path, out: Path, *, merged: bool, dtype: str = "fp32", overwrite: bool = False) -> Path:
    read_run(run_dir)  # a finished, undamaged run, checked before the target
    check_target(run_dir, out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    with hold(out):
        return _export(run_dir, out, merged, dtype)


def _export(run_dir: Path, out: Path, merged: bool, dtype: str) -> Path:
    run = Predictor.open(run_dir)
    model, tokenizer = run.model, run.tokenizer
    adapter = hasattr(model, "peft_config") or getattr(model, "lmtune_adapters", None) is not None
    if not merged and not adapter:
        raise LmtuneError(
            f"export --adapter: {run_dir} trained every weight (no adapter); export it with --merge"
        )
    scratch = out.with_name(f".{out.name}.export.partial")  # one at a time: export holds out's lock
    recover(out, scratch)
    remove_partial(scratch, "give another folder")  # what a killed export left
    with building(scratch, out):
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
        (scratch / MARKER).write_text(
            json.dumps({"run": str(run_dir.resolve()), "merged": merged, "dtype": dtype})
        )
        faults.point("export.write")
    return out
