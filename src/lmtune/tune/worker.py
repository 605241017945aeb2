"""A search worker: take a trial, train it the ordinary way (prepare + train in an open_run), report.

Any number of workers share one study; each takes trials until the budget is reached. A trial's
training output goes to logs/trial-NNNN.log; the terminal gets one line per finished trial.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState
from transformers import TrainerCallback

from lmtune.config import RunConfig, validate
from lmtune.errors import Interrupted, LmtuneError
from lmtune.runs import open_run
from lmtune.tasks import recipe
from lmtune.tune import study as studies
from lmtune.tune.results import best_trial
from lmtune.tune.space import Dimension, base_raw, grid_size, parse_space, trial_raw

POLL_S = 2.0  # a worker waiting for others' running trials looks again this often
MAX_FAILURES_IN_ROW = 5  # then the search stops: the problem is not the sampled values


class Pruning(TrainerCallback):
    """Reports each validation score to the trial; stops training when the pruner says so.

    The step reported is the evaluation's index (1, 2, …): trials with other batch sizes or epochs
    are compared at the same evaluation, which with one evaluation per epoch is the same epoch."""

    def __init__(self, trial: optuna.Trial, metric: str):
        self.trial, self.metric, self.evaluations = trial, metric, 0

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        value = (metrics or {}).get(f"eval_{self.metric}")
        if value is None:
            return
        self.evaluations += 1
        self.trial.report(float(value), self.evaluations)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at evaluation {self.evaluations}: {self.metric} {value:.4f}")


@contextlib.contextmanager
def quiet(log: Path):
    """Send everything a trial prints (progress bars, Trainer logs, warnings) to its log file."""
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, "a", encoding="utf-8") as handle:
        os.dup2(handle.fileno(), 1)
        os.dup2(handle.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


@contextlib.contextmanager
def heartbeat(study: optuna.Study, storage, trial: optuna.Trial):
    """Record the trial's heartbeat while it runs: other hosts can tell a dead worker by its silence."""
    stop = threading.Event()
    tid = studies.trial_id(storage, study, trial.number)

    def beat():
        while True:
            with contextlib.suppress(Exception):  # a busy database skips one beat, not the trial
                storage.record_heartbeat(tid)
            if stop.wait(studies.HEARTBEAT_S):
                return

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def train_trial(config: RunConfig, trial: optuna.Trial, folder: Path) -> float:
    """The ordinary training path on the trial's config; the objective is best_validation."""
    task = recipe(config.task)
    with quiet(folder / "logs" / f"{config.output.name}.log"):
        prepared = task.prepare(config)
        with open_run(config, overwrite=True) as run_dir:
            metrics = task.train(
                config, prepared, run_dir, callbacks=(Pruning(trial, config.evaluation.metric),)
            )
    value = metrics.get("best_validation")
    if value is None:
        raise LmtuneError("no validation score: the validation split came out empty")
    if not math.isfinite(value):
        raise LmtuneError(f"validation {config.evaluation.metric} is {value} (training diverged)")
    return float(value)


def _interrupted(error: BaseException) -> bool:
    """open_run turns Ctrl-C into an LmtuneError: still an interruption, not a bad trial."""
    return isinstance(error, KeyboardInterrupt | Interrupted) or isinstance(
        error.__context__, KeyboardInterrupt
    )


def _tell(study, trial, state: TrialState, value: float | None = None, **attrs):
    """Record how a trial ended. One that another host already failed (its heartbeat fell silent for
    GRACE_S) keeps that state: its parameters are queued again there. None in that case."""
    try:
        for key, note in attrs.items():
            trial.set_user_attr(key, note)
        return study.tell(trial, value, state=state)
    except optuna.exceptions.UpdateFinishedTrialError:
        return None


def run_trial(
    study, storage, trial, config: RunConfig, base: dict, space: dict[str, Dimension], folder: Path
):
    """Train one trial and tell the study how it ended; (state, value, note)."""
    number = trial.number
    partial = folder / "trials" / f"trial-{number:04d}.partial"
    try:
        values = {key: dimension.suggest(trial) for key, dimension in space.items()}
        with heartbeat(study, storage, trial):
            trial_config = validate(trial_raw(base, values, folder / "trials", number), f"trial {number}")
            value = train_trial(trial_config, trial, folder)
    except optuna.TrialPruned as pruned:
        shutil.rmtree(partial, ignore_errors=True)
        _tell(study, trial, TrialState.PRUNED, note=str(pruned))
        return "pruned", None, str(pruned)
    except (LmtuneError, KeyboardInterrupt) as error:
        shutil.rmtree(partial, ignore_errors=True)
        if _interrupted(error):
            frozen = _tell(study, trial, TrialState.FAIL, error="interrupted")
            if frozen is not None:
                studies.retry(study, frozen)
            raise KeyboardInterrupt from None
        _tell(study, trial, TrialState.FAIL, error=str(error))
        return "fail", None, str(error)
    except BaseException as error:  # a bug: recorded, then loud
        _tell(study, trial, TrialState.FAIL, error=repr(error))
        raise
    _tell(study, trial, TrialState.COMPLETE, value)
    return "complete", value, ""


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes}m{seconds:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def _value(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def progress(study, trial_number: int, outcome: tuple, seconds: float, total, eta: str, tag: str) -> None:
    """One line per finished trial: i/N, its outcome, the best so far, its params, its time, the ETA."""
    state, value, note = outcome
    trials = study.get_trials(deepcopy=False)
    frozen = next(t for t in trials if t.number == trial_number)
    finished = [t for t in trials if t.state in studies.FINISHED]
    # its place among finished trials: two workers finishing at once still print 3/N and 4/N
    done = (
        sum(t.datetime_complete <= frozen.datetime_complete for t in finished)
        if frozen.datetime_complete
        else len(finished)
    )
    metric = study.user_attrs.get("lmtune_metric", "value")
    params = " ".join(f"{k}={_value(v)}" for k, v in frozen.params.items())
    outcome = (
        f"{metric} {value:.4f}" if state == "complete" else note if state == "pruned" else f"FAILED: {note}"
    )
    leader = best_trial(study)
    best = f"best {leader.value:.4f} (#{leader.number})" if leader else "best -"
    print(
        f"{tag}trial {done}/{total or '?'}  #{trial_number}  {outcome}  {best}  "
        f"{_duration(seconds)}  {params}  {eta}".rstrip(),
        flush=True,
    )


def work(config: RunConfig, *, worker: int = 0, workers: int = 1) -> None:
    """Take trials until the budget is reached, the timeout passes or nothing is left to take."""
    space = parse_space(config, "config")
    folder = studies.study_dir(config)
    url = studies.storage_url(config)
    storage = studies.open_storage(url)
    n_budget = studies.budget(config, space)
    study = optuna.load_study(study_name=config.output.name, storage=storage, pruner=studies.pruner(config))
    study.sampler = studies.sampler(config, space, worker, len(study.trials), n_budget)
    base = base_raw(config)
    timeout = config.search.timeout_min
    deadline = time.monotonic() + timeout * 60 if timeout else math.inf
    tag = f"[worker {worker + 1}] " if workers > 1 else ""
    durations: list[float] = []
    failures_in_row = 0
    while True:
        with studies.claim_lock(url):
            studies.reap(study, storage, folder / "trials")
            trial = _take(study, config, space, n_budget, deadline)
        if trial == "wait":
            time.sleep(POLL_S)
            continue
        if trial is None:
            return
        started = time.monotonic()
        outcome = run_trial(study, storage, trial, config, base, space, folder)
        gc.collect()  # the trial's model and data: before the next one loads its own
        durations.append(time.monotonic() - started)
        eta = _eta(study, n_budget, durations, workers, deadline)
        progress(study, trial.number, outcome, durations[-1], n_budget, eta, tag)
        failures_in_row = failures_in_row + 1 if outcome[0] == "fail" else 0
        if failures_in_row >= MAX_FAILURES_IN_ROW:
            raise LmtuneError(
                f"search stopped: {failures_in_row} trials in a row failed; the last: {outcome[2]}"
            )


def _take(study, config: RunConfig, space, n_budget: int | None, deadline: float):
    """A new trial, "wait" (others' running trials may still fail and free budget), or None: done."""
    trials = study.get_trials(deepcopy=False)
    done = sum(t.state in studies.FINISHED for t in trials)
    running = sum(t.state == TrialState.RUNNING for t in trials)
    waiting = sum(t.state == TrialState.WAITING for t in trials)
    if n_budget is not None and done >= n_budget or time.monotonic() >= deadline:
        return None
    if config.search.sampler == "grid" and not waiting:
        taken = {t.system_attrs.get("grid_id") for t in trials} - {None}
        if len(taken) >= grid_size(space):
            return "wait" if running else None  # every point is taken; a running one may still be killed
    if n_budget is not None and done + running >= n_budget:
        return "wait"
    with studies.calm():
        trial = study.ask()
    trial.set_user_attr("worker", studies.worker_id())
    trial.set_user_attr("threads", torch.get_num_threads())
    return trial


def _eta(study, n_budget: int | None, durations: list[float], workers: int, deadline: float) -> str:
    if n_budget is None:
        left = deadline - time.monotonic()
        if not math.isfinite(left):
            return ""
        return f"timeout in {_duration(left)}" if left > 0 else "timeout reached"
    done = sum(t.state in studies.FINISHED for t in study.get_trials(deepcopy=False))
    remaining = max(0, n_budget - done)
    estimate = remaining * sum(durations) / len(durations) / workers
    if math.isfinite(deadline):
        estimate = min(estimate, max(0.0, deadline - time.monotonic()))
    return f"ETA {_duration(estimate)}" if remaining else "done"
