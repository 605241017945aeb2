"""The Optuna study behind a search: storage, identity check, samplers, a claim lock, dead-trial recovery.

A study lives in an RDB storage (SQLite beside the search by default, PostgreSQL to share it between
machines), so a search killed at any point continues when the same command runs again. A trial left
RUNNING by a dead worker is failed and its parameters queued again: at once when the worker ran on
this host and its process is gone, else after its heartbeat has been silent for GRACE_S seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import time
import warnings
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from lmtune.config import RunConfig
from lmtune.errors import LmtuneError
from lmtune.tune.space import Dimension, changed_keys, fingerprint, grid_of

HEARTBEAT_S = 10  # a running trial writes a heartbeat this often
GRACE_S = 60  # silent this long: its worker is dead (other hosts; this host checks the process)
MAX_RETRIES = 2  # a trial whose worker died is re-run with the same parameters at most this often
MARKER = "lmtune_search.json"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@contextlib.contextmanager
def calm():
    """Optuna warns that heartbeats are experimental and meant for Study.optimize; lmtune's workers
    record them themselves (ask and tell), knowingly."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
        yield


def study_dir(config: RunConfig) -> Path:
    return Path(config.output.dir) / config.output.name


def storage_url(config: RunConfig) -> str:
    return config.search.storage or f"sqlite:///{(study_dir(config) / 'study.db').resolve()}"


def masked(url: str) -> str:
    """The URL without its password, for messages and search.json."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a URL sqlalchemy cannot parse is shown as given
        return url


def direction(config: RunConfig) -> str:
    from lmtune.evaluate.metrics import higher_is_better

    return "maximize" if higher_is_better(config.evaluation.metric) else "minimize"


def budget(config: RunConfig, space: dict[str, Dimension]) -> int | None:
    """COMPLETE + PRUNED trials to reach; None: until search.timeout_min."""
    search = config.search
    if search.sampler == "grid":
        size = int(np.prod([len(v) for v in grid_of(space).values()]))
        return min(search.trials, size) if search.trials else size
    if search.trials:
        return search.trials
    return None if search.timeout_min else 20


def open_storage(url: str, attempts: int = 3) -> optuna.storages.RDBStorage:
    """The study's database; a second process creating the same new database at the same moment
    makes table creation fail once: it is tried again."""
    engine = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}
    try:
        with calm():
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine,
                heartbeat_interval=HEARTBEAT_S,
                grace_period=GRACE_S,
                heartbeat_stale_trial_callback=retry,
            )
    except Exception as exc:  # noqa: BLE001 - a driver missing, a server down, a bad URL: one line
        racing = any(words in str(exc).lower() for words in ("already exists", "unique constraint"))
        if racing and attempts > 1:
            time.sleep(1.0)
            return open_storage(url, attempts - 1)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc.__cause__, ImportError):
            reason = f"{exc.__cause__} (install the database driver, e.g. psycopg2 for postgresql://)"
        raise LmtuneError(f"search.storage '{masked(url)}': cannot open it: {reason}") from None


def create_or_check(config: RunConfig, storage, *, overwrite: bool) -> optuna.Study:
    """The study of this search: created on the first run; later runs must have the same identity."""
    name = config.output.name
    print_url = masked(storage_url(config))
    exists = name in optuna.get_all_study_names(storage)
    if exists and overwrite:
        optuna.delete_study(study_name=name, storage=storage)
        exists = False
    key, identity = fingerprint(config)
    if exists:
        study = optuna.load_study(study_name=name, storage=storage)
        attrs = study.user_attrs
        if attrs.get("lmtune_fingerprint") != key:
            changed = changed_keys(attrs.get("lmtune_identity", {}), identity)
            shown = ", ".join(changed[:6]) + (" …" if len(changed) > 6 else "")
            raise LmtuneError(
                f"{print_url}: study '{name}' was made with a different config (changed: {shown or 'unknown'}); "
                "set a new output.name, or pass --overwrite to start this search again"
            )
        return study
    study = optuna.create_study(study_name=name, storage=storage, direction=direction(config))
    study.set_user_attr("lmtune_fingerprint", key)
    study.set_user_attr("lmtune_identity", identity)
    study.set_user_attr("lmtune_metric", config.evaluation.metric)
    return study


def sampler(config: RunConfig, space: dict[str, Dimension], worker: int, existing: int, n_budget: int | None):
    """The search's sampler, seeded per worker and per resume: a restarted or second worker must not
    draw the same values again (a single uninterrupted worker reproduces search.seed exactly)."""
    search = config.search
    seed = (
        search.seed
        if worker == 0 and existing == 0
        else int(np.random.SeedSequence([search.seed, worker, existing]).generate_state(1)[0])
    )
    if search.sampler == "grid":
        return _Grid(grid_of(space), seed=search.seed)  # one order for all workers
    if search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    startup = min(10, max(3, (n_budget or 30) // 3))  # random trials before TPE models the results
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, constant_liar=True)


class _Grid(optuna.samplers.GridSampler):
    """GridSampler without its Study.stop() after the last point, which only works inside
    Study.optimize; lmtune's workers (ask and tell) stop when no grid point is left."""

    def after_trial(self, study, trial, state, values) -> None:
        return None


def pruner(config: RunConfig) -> optuna.pruners.BasePruner:
    if config.search.pruning == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=config.search.pruning_startup, n_warmup_steps=0)


@contextlib.contextmanager
def claim_lock(url: str):
    """Counting the budget and taking a trial happen under one lock, so N local workers never start
    more trials than the budget. SQLite only: workers sharing a PostgreSQL study across machines
    may overshoot the budget by up to (workers - 1) trials when they take their last trials at once."""
    try:
        import fcntl

        from sqlalchemy.engine import make_url

        database = make_url(url).database if url.startswith("sqlite") else None
    except ImportError:  # no fcntl (Windows): no lock
        database = None
    if not database or database == ":memory:":
        yield
        return
    with open(f"{database}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def retry(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue a failed trial's parameters again (it did not fail because of them): a killed worker."""
    retries = trial.user_attrs.get("retries", 0)
    if retries >= MAX_RETRIES or not trial.params:
        return
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.WAITING,
            params=trial.params,
            distributions=trial.distributions,
            user_attrs={"retry_of": trial.user_attrs.get("retry_of", trial.number), "retries": retries + 1},
            system_attrs=trial.system_attrs,  # the grid sampler's grid_id: the same grid point
        )
    )


def trial_id(storage: optuna.storages.BaseStorage, study: optuna.Study, number: int) -> int:
    """The storage's id of trial `number`, through optuna's public storage API (Trial._trial_id and
    Study._storage are private): the storage is the one this process opened for the study."""
    study_id = storage.get_study_id_from_name(study.study_name)
    return storage.get_trial_id_from_study_id_trial_number(study_id, number)


def fail(study: optuna.Study, storage, trial: FrozenTrial, message: str) -> bool:
    """Mark a RUNNING trial FAIL with a note; False when another worker finished it first."""
    tid = trial_id(storage, study, trial.number)
    try:
        storage.set_trial_user_attr(tid, "error", message)  # attributes only while running
        return storage.set_trial_state_values(tid, state=TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False


def reap(study: optuna.Study, storage, trials_dir: Path) -> None:
    """Trials left RUNNING by dead workers become FAIL; their parameters run again (call under the lock)."""
    with calm():
        optuna.storages.fail_stale_trials(study)  # other hosts: silent heartbeat
    host = socket.gethostname()
    now = datetime.now()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker")
        if worker is None:  # killed between taking the trial and naming its worker
            if trial.datetime_start and now - trial.datetime_start < timedelta(seconds=GRACE_S):
                continue
            message = "its worker died before starting it"
        else:
            worker_host, _, pid = worker.rpartition(":")
            if worker_host != host or _alive(int(pid)):
                continue
            message = f"worker {worker} died while the trial ran"
        if fail(study, storage, trial, message):
            retry(study, trial)
            shutil.rmtree(trials_dir / f"trial-{trial.number:04d}.partial", ignore_errors=True)


def write_marker(folder: Path, config: RunConfig) -> None:
    (folder / MARKER).write_text(
        json.dumps({"study": config.output.name, "storage": masked(storage_url(config))}, indent=2)
    )
