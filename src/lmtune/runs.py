"""The run directory's life: built under `<name>.partial`, renamed into place only when complete.

A failed or interrupted run therefore never touches an earlier run of the same name; an
interrupted one keeps its checkpoints in the partial directory for `--resume`. lmtune deletes
only what it made: a `.partial` holds PARTIAL_MARKER from the moment it is created, a finished
run MARKER; a folder with neither is never removed, whatever the flags. One process at a time
writes a name: `claim` holds a lock for the whole run (see `hold`).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import yaml

from lmtune import faults
from lmtune.config import RunConfig, dump_config
from lmtune.errors import Interrupted, LmtuneError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; runs of one name are then not guarded
    fcntl = None

PARTIAL = ".partial"
MARKER = "lmtune_run.json"
PARTIAL_MARKER = "lmtune_partial.json"  # written first into every .partial lmtune creates
DATA_MARKER = "lmtune_data.json"  # a finished `lmtune data prepare` folder
EXPORT_MARKER = "lmtune_export.json"  # a finished `lmtune export` folder
MARKERS = (PARTIAL_MARKER, MARKER, DATA_MARKER, EXPORT_MARKER)


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


def made_by_lmtune(folder: Path) -> bool:
    """A folder lmtune may remove: a partial it created, a finished run, data folder or export."""
    return any((folder / marker).is_file() for marker in MARKERS)


def make_partial(folder: Path) -> Path:
    """Create `folder` (a `.partial`) with its marker inside, before anything else goes in."""
    folder.mkdir(parents=True)
    try:
        (folder / PARTIAL_MARKER).write_text(json.dumps(_holder()))
    except BaseException:  # a full disk: an unmarked folder left here could never be removed by lmtune
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder


def _not_ours(folder: Path, what: str) -> LmtuneError:
    return LmtuneError(
        f"'{folder}' exists and lmtune did not make it (no {PARTIAL_MARKER}); lmtune will not remove it: "
        f"move it away or {what}"
    )


def remove_partial(folder: Path, what: str) -> None:
    """Remove a leftover `.partial`, but only one lmtune made; anything else is refused by name."""
    if not folder.exists():
        return
    if not folder.is_dir() or not made_by_lmtune(folder):
        raise _not_ours(folder, what)
    shutil.rmtree(folder)


def check_output_dir(config: RunConfig) -> list[Path]:
    """output.dir is a folder lmtune can write in, made if need be, before any work; returns the folders
    it made (outermost first), for `claim` to remove again when the run fails."""
    folder = Path(config.output.dir)
    made = [p for p in [*reversed(folder.parents), folder] if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise LmtuneError(f"output.dir = '{folder}' is a file; give a folder") from None
    except OSError as exc:
        raise LmtuneError(f"output.dir = '{folder}': cannot make the folder ({exc.strerror})") from None
    if not folder.is_dir():
        raise LmtuneError(f"output.dir = '{folder}' is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise LmtuneError(f"output.dir = '{folder}': this user cannot write in it")
    return made


def check_run_dir(config: RunConfig, *, resume: bool = False, overwrite: bool = False) -> None:
    """Every refusal of open_run, without touching anything: run before the data pipeline, so that a run
    that cannot be written says so at once, not after minutes of work."""
    check_output_dir(config)
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
        if not partial.is_dir():
            raise LmtuneError(f"--resume: no interrupted run at '{partial}'; start without --resume")
        if not _has_checkpoint(partial):
            raise LmtuneError(
                f"--resume: the interrupted run at '{partial}' stopped before its first checkpoint, so there "
                "is nothing to resume; pass --overwrite to start again"
            )
    elif partial.exists():
        if not partial.is_dir() or not made_by_lmtune(partial):
            raise _not_ours(partial, "set output.name")
        if not overwrite:
            hint = "--resume to continue it or " if _has_checkpoint(partial) else ""
            raise LmtuneError(
                f"an interrupted run exists at '{partial}'; pass {hint}--overwrite to start again"
            )


@contextmanager
def claim(config: RunConfig, *, resume: bool = False, overwrite: bool = False):
    """Hold the run's name for the whole of `lmtune train` (data pipeline included) and refuse at once
    what open_run would refuse later."""
    made = check_output_dir(config)
    try:
        with hold(final_dir(config)):
            recover(final_dir(config), partial_dir(config))
            check_run_dir(config, resume=resume, overwrite=overwrite)
            yield
    except BaseException:
        remove_if_empty(made)  # a run refused or failed before its directory: leave no empty folders
        raise


def remove_if_empty(folders: list[Path]) -> None:
    """Remove folders lmtune made (innermost first) as long as they are empty."""
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:
            return


@contextmanager
def open_run(config: RunConfig, *, resume: bool = False, overwrite: bool = False):
    """Yield the partial directory to work in; publish it as the final run directory on success."""
    check_run_dir(config, resume=resume, overwrite=overwrite)
    final, partial = final_dir(config), partial_dir(config)
    if not resume:
        remove_partial(partial, "set output.name")
        make_partial(partial)
    try:
        yield partial
    except KeyboardInterrupt:
        if _has_checkpoint(partial):
            raise Interrupted(
                f"interrupted; checkpoints kept in '{partial}'; continue with: lmtune train CONFIG --resume"
            ) from None
        shutil.rmtree(partial, ignore_errors=True)
        raise Interrupted("interrupted before the first checkpoint; nothing was kept") from None
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
    after = _flat(yaml.safe_load(dump_config(config)))  # as it would be saved
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


def prune_checkpoints(folder: Path, keep: str | None, keep_checkpoints: bool = False) -> None:
    """After a finished run, model/ holds the trained weights and a finished run is never resumed: the
    checkpoints go (training.keep_checkpoints keeps the best one, without the optimizer state)."""
    if not folder.is_dir():
        return
    if not keep_checkpoints:
        shutil.rmtree(folder)
        return
    for checkpoint in folder.glob("checkpoint-*"):
        if checkpoint.name != keep:
            shutil.rmtree(checkpoint, ignore_errors=True)
        else:
            for state in ("optimizer.pt", "scheduler.pt"):
                (checkpoint / state).unlink(missing_ok=True)


def publish(partial: Path, final: Path) -> None:
    """Swap the finished run into place; an older run of the same name is removed only afterwards."""
    (partial / PARTIAL_MARKER).unlink(missing_ok=True)  # a finished folder carries its own marker
    old = None
    if final.exists():
        old = replaced_dir(final)
        if old.exists():  # left by a publish killed after its swap
            remove_partial(old, "remove it")
        final.rename(old)
        faults.point("run.swap")
    partial.rename(final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def building(partial: Path, final: Path):
    """Yield `partial` (made with its marker) to write a folder in; publish it as `final` when the block
    ends, remove it when the block raises: the one way a data folder or an export is written (runs, which
    keep checkpoints for --resume, go through open_run)."""
    make_partial(partial)
    try:
        yield partial
        publish(partial, final)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def replaced_dir(final: Path) -> Path:
    """Where publish puts the folder it replaces until the new one is in place: a hidden name of
    lmtune's own, never a folder the user owns such as `<name>.old`."""
    return final.with_name(f".{final.name}.replaced")


def recover(final: Path, partial: Path) -> None:
    """Finish a publish that a killed process left between its two renames: the new folder (complete:
    publish only moves finished work) goes into place, else the replaced one comes back; a replaced
    folder left after the swap completed is removed. Called with the name's lock held."""
    old = replaced_dir(final)
    if not old.is_dir() or not made_by_lmtune(old):
        return
    if final.exists():
        shutil.rmtree(old)
    elif partial.is_dir() and not (partial / PARTIAL_MARKER).exists() and made_by_lmtune(partial):
        partial.rename(final)
        shutil.rmtree(old)
    else:
        old.rename(final)


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
    from lmtune.tasks import TASKS  # the registry is torch-free

    if marker["task"] not in TASKS:
        raise LmtuneError(
            f"{path}: made by task '{marker['task']}', which this lmtune does not have ({', '.join(TASKS)})"
        )
    check_model_folder(path / "model", marker["task"])
    return marker


MODEL_KEYS = ("task", "base_model", "method", "adapter", "max_length", "attn_implementation")


def _damaged(path: Path, problem: str) -> LmtuneError:
    return LmtuneError(f"{path}: {problem}; the run directory is damaged (train it again)")


def check_model_folder(folder: Path, task: str) -> None:
    """What loading a run's model needs, checked cheaply up front so a damaged run is one line, not a
    traceback from deep inside transformers: its metadata, its labels, and weights whose safetensors
    headers read (a truncated file fails there)."""
    from safetensors import SafetensorError, safe_open

    meta_path = folder / "lmtune_model.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise _damaged(meta_path, "unreadable") from None
    missing = [key for key in MODEL_KEYS if not isinstance(meta, dict) or key not in meta]
    from lmtune.tasks import TASKS

    rows = TASKS[task].rows
    own = "stop" if TASKS[task].generative else "target" if rows == "numeric" else None
    if own and isinstance(meta, dict) and own not in meta:
        missing.append(own)
    if missing:
        raise _damaged(meta_path, f"missing key '{missing[0]}'")
    if rows in ("labelled", "tokens"):  # models with named outputs: classes, tags
        labels_path = folder / "labels.json"
        try:
            labels = json.loads(labels_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise _damaged(labels_path, "unreadable") from None
        if not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(x, str) for x in labels):
            raise _damaged(labels_path, "not a list of at least two label names")
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        raise _damaged(folder, "no weights (*.safetensors)")
    for file in weights:
        try:
            with safe_open(str(file), framework="pt") as handle:
                handle.keys()
        except (SafetensorError, OSError) as exc:
            raise _damaged(file, f"unreadable weights ({str(exc).splitlines()[0][:120]})") from None


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


# ------------------------------------------------------------------------------------- locking


def _holder() -> dict:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": " ".join(sys.argv)[:300],
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def alive(pid: int) -> bool:
    """Whether process `pid` of this machine still runs."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def lock_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.lock")


@contextmanager
def hold(target: Path, *, shared: bool = False):
    """An advisory lock on the name `target` (a run, a search, a data folder), held until the block ends.

    `lmtune train` holds it exclusively; `lmtune tune` processes share it (several may work on one
    study), so a train and a search of one name never run at once. The lock is flock(2) on a hidden file
    beside the target: the kernel releases it when the process dies, even by SIGKILL, so a killed run
    never leaves a stale lock; the file is removed by its last holder."""
    if fcntl is None:
        yield
        return
    path = lock_path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            holders = _read_holders(fd)
            os.close(fd)
            raise LmtuneError(
                f"'{target}' is being written by {holders or 'another process'}; wait for it to finish or set "
                "output.name"
            ) from None
        try:  # the last holder may have removed the file between our open and flock: take the new one
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        line = json.dumps(_holder()) + "\n"
        if not shared:
            os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_END)
        os.write(fd, line.encode())
        yield
    finally:
        try:  # the last holder removes the file; one that shares it with others leaves it
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            path.unlink(missing_ok=True)
        except BlockingIOError:
            pass
        os.close(fd)


def _read_holders(fd: int) -> str:
    """The live processes named in a lock file: 'process 123 (lmtune train x.yaml, since …)'."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 1 << 16).decode("utf-8", "replace")
    except OSError:
        return ""
    names = []
    for line in text.splitlines():
        try:
            holder = json.loads(line)
            pid = int(holder["pid"])
        except (ValueError, KeyError, TypeError):
            continue
        if holder.get("host") != socket.gethostname() or alive(pid):
            names.append(f"process {pid} ({holder.get('command', '?')}, since {holder.get('started', '?')})")
    return ", ".join(names)
