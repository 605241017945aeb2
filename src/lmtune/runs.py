"""The run directory's life: built under `<name>.partial`, renamed into place only when complete.

A failed or interrupted run therefore never touches an earlier run of the same name; an
interrupted one keeps its checkpoints in the partial directory for `--resume`.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import yaml

from lmtune.config import RunConfig
from lmtune.errors import LmtuneError

PARTIAL = ".partial"
MARKER = "lmtune_run.json"


def final_dir(config: RunConfig) -> Path:
    return Path(config.output.dir) / config.output.name


def partial_dir(config: RunConfig) -> Path:
    final = final_dir(config)
    return final.with_name(final.name + PARTIAL)


def last_complete_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint whose trainer_state.json (the Trainer writes it last) parses.

    A run killed while saving leaves a half-written checkpoint; it is removed so that resuming
    starts from the last whole one.
    """
    folder = run_dir / "checkpoints"
    numbered = [p for p in folder.glob("checkpoint-*") if p.name.rsplit("-", 1)[-1].isdigit()]
    candidates = sorted(numbered, key=lambda p: int(p.name.rsplit("-", 1)[-1]), reverse=True)
    for candidate in candidates:
        try:
            json.loads((candidate / "trainer_state.json").read_text())
            return candidate
        except (OSError, ValueError):
            shutil.rmtree(candidate, ignore_errors=True)
    return None


def _has_checkpoint(path: Path) -> bool:
    return any((path / "checkpoints").glob("checkpoint-*/trainer_state.json"))


@contextmanager
def open_run(config: RunConfig, *, resume: bool = False, overwrite: bool = False):
    """Yield the partial directory to work in; publish it as the final run directory on success."""
    final, partial = final_dir(config), partial_dir(config)
    if final.exists() and not overwrite and not resume:
        raise LmtuneError(
            f"run directory '{final}' exists; pass --overwrite to replace it or set output.name"
        )
    if final.exists() and not (final / MARKER).is_file():
        raise LmtuneError(
            f"'{final}' exists and is not an lmtune run directory; lmtune will not replace it: set output.name"
        )
    if resume:
        if not partial.is_dir() or not _has_checkpoint(partial):
            raise LmtuneError(f"--resume: no interrupted run with checkpoints at '{partial}'")
    elif partial.exists():
        if not overwrite:
            raise LmtuneError(
                f"an interrupted run exists at '{partial}'; pass --resume to continue it or --overwrite to start again"
            )
        shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    try:
        yield partial
    except KeyboardInterrupt:
        if _has_checkpoint(partial):
            raise LmtuneError(
                f"interrupted; checkpoints kept in '{partial}'; continue with: lmtune train CONFIG --resume"
            ) from None
        shutil.rmtree(partial, ignore_errors=True)
        raise LmtuneError("interrupted before the first checkpoint; nothing was kept") from None
    except BaseException:
        if not _has_checkpoint(partial):
            shutil.rmtree(partial, ignore_errors=True)
        raise
    publish(partial, final)


def check_resumable(run_dir: Path, config: RunConfig, resume: bool) -> None:
    """Resuming with a changed config would silently mix two runs: refuse, naming the keys."""
    saved = run_dir / "config.yaml"
    if not resume or not saved.is_file():
        return
    before = _flat(yaml.safe_load(saved.read_text()) or {})
    after = _flat(config.model_dump(mode="json"))
    changed = sorted(key for key in before.keys() | after.keys() if before.get(key) != after.get(key))
    if changed:
        raise LmtuneError(
            f"--resume: the config differs from the interrupted run's in {', '.join(changed)}; "
            "resume with the same config or start again with --overwrite"
        )


def _flat(config: dict) -> dict:
    """{"training": {"seed": 1}} → {"training.seed": 1}: one level, enough to name a changed key."""
    return {
        f"{section}.{key}" if key else section: value
        for section, body in config.items()
        for key, value in (body.items() if isinstance(body, dict) else [("", body)])
    }


def prune_checkpoints(folder: Path, keep: str | None) -> None:
    """After a finished run, keep only the best checkpoint, without the optimizer state: model/ holds
    the same weights and a finished run is never resumed (saves ~2x the model size on disk)."""
    if not folder.is_dir():
        return
    for checkpoint in folder.glob("checkpoint-*"):
        if checkpoint.name != keep:
            shutil.rmtree(checkpoint, ignore_errors=True)
        else:
            for state in ("optimizer.pt", "scheduler.pt"):
                (checkpoint / state).unlink(missing_ok=True)


def publish(partial: Path, final: Path) -> None:
    """Swap the finished run into place; an older run of the same name is removed only afterwards."""
    old = None
    if final.exists():
        # a fresh hidden name: never a folder the user owns, such as `<name>.old`
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.replaced-", dir=final.parent))
        old.rmdir()
        final.rename(old)
    partial.rename(final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_run(path: str | Path) -> dict:
    """The marker of a finished run directory (its task and name), or one clear error."""
    path = Path(path)
    if not path.is_dir():
        raise LmtuneError(f"run directory '{path}' does not exist")
    if not (path / MARKER).is_file():
        raise LmtuneError(f"'{path}' is not a finished lmtune run directory (no {MARKER})")
    try:
        marker = json.loads((path / MARKER).read_text())
        marker["task"]  # noqa: B018 - presence check
    except (ValueError, KeyError, TypeError):
        raise LmtuneError(f"{path / MARKER}: unreadable run marker; the run directory is damaged") from None
    if marker.get("cv_folds"):  # k models, none of them "the" model: each fold is a run of its own
        k = marker["cv_folds"]
        raise LmtuneError(
            f"'{path}' is a cross-validation run of {k} models; use one of them: {path / 'folds'}/fold-N (N = 1..{k})"
        )
    if not (path / "model" / "lmtune_model.json").is_file():
        raise LmtuneError(f"'{path}' is not a finished lmtune run directory (no model/lmtune_model.json)")
    return marker


def model_meta(config: RunConfig, base_path, folder: Path, **extra) -> dict:
    """lmtune_model.json: what a saved model needs to be loaded again (base, method, adapter or not)."""
    from lmtune.models.weights import is_adapter

    return {
        "task": config.task,
        **extra,
        "base_model": config.model.name,
        "base_path": str(Path(base_path).resolve()),
        "method": config.method.name,
        "adapter": is_adapter(folder),
        "max_length": config.model.max_length,
        "attn_implementation": config.model.attn_implementation,
    }
