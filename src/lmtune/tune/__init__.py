"""`lmtune tune CONFIG`: hyper-parameter search with Optuna over the keys of a run config.

The config's `search:` section names the sampler, the budget and the space (dotted config keys).
Each trial is an ordinary run (prepare + train) of the config with the trial's values, written to
`<output.dir>/<output.name>/trials/trial-NNNN`; its objective is the run's best validation score of
`evaluation.metric` (loss minimised, any other maximised). Beside the trials:

    study.db          the Optuna study (SQLite; search.storage may name PostgreSQL instead)
    config.yaml       the resolved config the workers read
    logs/             each trial's training output
    leaderboard.csv   every trial: rank, value, state, duration, parameters
    best.yaml         the base config with the best values, output.name <name>-best: `lmtune train` it
    search.json       the summary; report.html: leaderboard, history and importance plots

Killed at any point, the same command continues the study: finished trials are kept, the trial that
was running is failed and its parameters run again. `--workers N` runs N processes on one study,
each with cores // N torch threads. Workers on several machines share a study through one
PostgreSQL URL in search.storage (each machine runs `lmtune tune CONFIG` with the same config).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from lmtune.config import RunConfig, dump_config
from lmtune.errors import Interrupted, LmtuneError
from lmtune.runs import check_output_dir, hold, remove_if_empty
from lmtune.tune import study as studies
from lmtune.tune.results import format_leaderboard, summarise
from lmtune.tune.space import parse_space

__all__ = ["tune"]


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _check_objective(config: RunConfig, source: str) -> None:
    data = config.data
    if config.training.cv_folds:
        raise LmtuneError(
            f"{source}: training.cv_folds cannot be searched over (a trial is one run); remove it, or "
            "validate every trial on one fold with data.split.folds and data.split.fold"
        )
    folds = data.split.fold is not None
    if data.validation is None and data.split.validation == 0 and not folds:
        raise LmtuneError(
            f"{source}: the search's objective is the validation {config.evaluation.metric}, but the config "
            "has no validation split; set data.split.validation (e.g. 0.1) or data.validation"
        )


def _prepare_folder(folder: Path, config: RunConfig, overwrite: bool) -> None:
    """The search folder is lmtune's own: never write into (or remove) a folder it did not make."""
    if folder.exists() and any(folder.iterdir()) and not (folder / studies.MARKER).is_file():
        raise LmtuneError(
            f"'{folder}' exists and is not an lmtune search directory; lmtune will not write into it: "
            "set output.name"
        )
    if overwrite and folder.exists():
        shutil.rmtree(folder)  # the default SQLite study goes with it; another storage: see create_or_check
    folder.mkdir(parents=True, exist_ok=True)
    studies.write_marker(folder, config)


def tune(config: RunConfig, source: str, *, workers: int = 1, overwrite: bool = False) -> int:
    """Run (or continue) the search of `config`, then write and print its results."""
    if config.search is None:
        raise LmtuneError(
            f"{source}: no search: section; add one with a sampler, a budget and a space "
            "(see examples/tune_drug_reviews.yaml)"
        )
    if workers < 1:
        raise LmtuneError(f"--workers {workers}: must be at least 1")
    space = parse_space(config, source)
    _check_objective(config, source)
    n_budget = studies.budget(config, space)
    folder = studies.study_dir(config)
    made = check_output_dir(config)
    try:
        with hold(folder, shared=True):  # searches of one name share it; a `train` of that name waits
            return _search(config, folder, space, n_budget, workers, overwrite)
    except BaseException:
        remove_if_empty(made)
        raise


def _search(config: RunConfig, folder: Path, space, n_budget, workers: int, overwrite: bool) -> int:
    _prepare_folder(folder, config, overwrite)
    url = studies.storage_url(config)
    storage = studies.open_storage(url)
    study = studies.create_or_check(config, storage, overwrite=overwrite)
    (folder / "config.yaml").write_text(dump_config(config))
    _announce(config, space, n_budget, workers, url)
    started = time.monotonic()
    try:
        if workers == 1:
            from lmtune.tune.worker import work

            work(config)
        else:
            _spawn(folder / "config.yaml", workers)
    except KeyboardInterrupt:
        _finish(study, config, folder, space, n_budget, workers, url, started)
        raise Interrupted(
            f"interrupted; finished trials are kept in {folder}: run the same command to continue the search"
        ) from None
    except LmtuneError:
        _finish(study, config, folder, space, n_budget, workers, url, started)
        raise
    summary = _finish(study, config, folder, space, n_budget, workers, url, started)
    metric = config.evaluation.metric
    done = summary["counts"]["complete"] + summary["counts"]["pruned"]
    print(f"\nLeaderboard (validation {metric}, {summary['direction']}):")
    print(format_leaderboard(summary["trials"], list(space), metric))
    if n_budget is not None and done < n_budget:
        print(f"\n{done} of {n_budget} trials done (timeout, or nothing left to try); run again to go on")
    if summary["best"]:
        best = summary["best"]
        params = "  ".join(f"{k}={v}" for k, v in best["params"].items())
        print(f"\nbest: trial #{best['trial']}  {metric} {best['value']:.4f}  {params}")
        print(f"best config: {best['config']}  (lmtune train {best['config']})")
    print(f"leaderboard: {folder / 'leaderboard.csv'}\nreport: {folder / 'report.html'}")
    return 0


def _announce(config: RunConfig, space, n_budget, workers: int, url: str) -> None:
    search = config.search
    budget = f"{n_budget} trials" if n_budget else "no trial limit"
    if search.timeout_min:
        budget += f", {search.timeout_min:g} min per invocation"
    print(
        f"search '{config.output.name}': {search.sampler} sampler, {budget}, objective validation "
        f"{config.evaluation.metric}, pruning {search.pruning}, {workers} worker(s); study {studies.masked(url)}"
    )
    for key, dimension in space.items():
        print(f"  {key}: {dimension.describe()}")


def _finish(study, config, folder: Path, space, n_budget, workers: int, url: str, started: float) -> dict:
    """Remove leftovers of trials that ended badly, then write the results."""
    from optuna.trial import TrialState

    running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    for partial in (folder / "trials").glob("trial-*.partial"):
        number = partial.name.removesuffix(".partial").removeprefix("trial-")
        if number.isdigit() and int(number) not in running:
            shutil.rmtree(partial, ignore_errors=True)
    extra = {
        "storage": studies.masked(url),
        "budget": n_budget,
        "workers": workers,
        "wall_s": round(time.monotonic() - started, 1),
    }
    return summarise(study, config, folder, list(space), extra)


def _spawn(config_path: Path, workers: int) -> None:
    """N worker processes on one study, each with its share of the cores; a crash stops them all."""
    threads = max(1, cores() // workers)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    command = [sys.executable, "-m", "lmtune.tune", str(config_path), "--workers", str(workers)]
    command += ["--threads", str(threads), "--parent", str(os.getpid())]
    procs = [subprocess.Popen([*command, "--worker", str(i)], env=env) for i in range(workers)]
    try:
        while any(p.poll() is None for p in procs):
            failed = [(i, p.returncode) for i, p in enumerate(procs) if p.returncode not in (None, 0)]
            if failed:
                break
            time.sleep(0.5)
    except KeyboardInterrupt:  # the workers got the Ctrl-C too: let them record their trials
        for p in procs:
            p.wait()
        raise
    for p in procs:  # after one failure, the others stop cleanly (their trials are retried later)
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    codes = [p.wait() for p in procs]
    for i, code in enumerate(codes, 1):
        if code == 1 or code < 0:
            raise LmtuneError(f"search worker {i} crashed (exit {code}); its traceback is above")
    for i, code in enumerate(codes, 1):
        if code not in (0, 130):
            raise LmtuneError(f"search worker {i} stopped with the error above")
