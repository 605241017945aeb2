"""What a search leaves: leaderboard.csv (and printed), best.yaml, search.json and report.html.

All of it is computed from the study alone, so it is the same whichever worker or invocation ran
which trial, and an interrupted search can be summarised by running the same command again.
"""

from __future__ import annotations

import csv
import html
import json
import math
from pathlib import Path

import optuna
import yaml
from matplotlib.ticker import MaxNLocator
from optuna.trial import FrozenTrial, TrialState

from lmtune.config import RunConfig, dump_config, validate
from lmtune.page import png, subplots, table, write_page
from lmtune.tune.space import apply, base_raw

STATES = {
    TrialState.COMPLETE: "complete",
    TrialState.PRUNED: "pruned",
    TrialState.FAIL: "fail",
    TrialState.RUNNING: "running",
}


def _last(trial: FrozenTrial) -> float | None:
    steps = trial.intermediate_values
    return steps[max(steps)] if steps else None


def _duration(trial: FrozenTrial) -> float | None:
    if trial.datetime_start and trial.datetime_complete:
        return round((trial.datetime_complete - trial.datetime_start).total_seconds(), 1)
    return None


def ranked(study: optuna.Study) -> list[FrozenTrial]:
    """Completed trials, best first; among equal scores the earlier trial first (the one found first)."""
    sign = -1 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sorted(complete, key=lambda t: (sign * t.value, t.number))


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The leaderboard's first trial (Optuna's own best_trial breaks ties differently)."""
    complete = ranked(study)
    return complete[0] if complete else None


def leaderboard(study: optuna.Study, keys: list[str]) -> list[dict]:
    """Completed trials best first (ranked), then pruned ones by their last score, then the rest."""
    sign = -1 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1
    trials = [t for t in study.get_trials(deepcopy=False) if t.state in STATES]
    complete = ranked(study)
    pruned = sorted(
        (t for t in trials if t.state == TrialState.PRUNED),
        key=lambda t: sign * (_last(t) if _last(t) is not None else sign * math.inf),  # none: last
    )
    rest = [t for t in trials if t.state not in (TrialState.COMPLETE, TrialState.PRUNED)]
    rows = []
    for rank, trial in enumerate(complete + pruned + rest, 1):
        value = trial.value if trial.state == TrialState.COMPLETE else None
        if trial.state == TrialState.PRUNED:  # its score when it was stopped
            value = _last(trial)
        note = trial.user_attrs.get("error") or trial.user_attrs.get("note") or ""
        if "retry_of" in trial.user_attrs:
            note = f"retry of #{trial.user_attrs['retry_of']}" + (f"; {note}" if note else "")
        rows.append(
            {
                "rank": rank if trial.state == TrialState.COMPLETE else "",
                "trial": trial.number,
                "value": value,
                "state": STATES[trial.state],
                "duration_s": _duration(trial),
                **{key: trial.params.get(key, "") for key in keys},
                "worker": trial.user_attrs.get("worker", ""),
                "note": note,
            }
        )
    return rows


def write_csv(rows: list[dict], path: Path) -> None:
    if not rows:
        path.write_text("rank,trial,value,state,duration_s,worker,note\n")
        return
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _cell(value) -> str:
    if value is None or value == "":
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def format_leaderboard(rows: list[dict], keys: list[str], metric: str, limit: int = 20) -> str:
    """The printed leaderboard: rank, trial, value, state, duration, params (the best `limit` rows)."""
    header = ["rank", "trial", metric, "state", "time_s", *keys, "note"]
    cells = [
        [_cell(r["rank"]), f"#{r['trial']}", _cell(r["value"]), r["state"], _cell(r["duration_s"])]
        + [_cell(r[k]) for k in keys]
        + [r["note"][:70] + ("…" if len(r["note"]) > 70 else "")]
        for r in rows[:limit]
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    if len(rows) > limit:
        lines.append(f"… {len(rows) - limit} more rows in leaderboard.csv")
    return "\n".join(lines)


def best_raw(config: RunConfig, trial: FrozenTrial) -> dict:
    """The base config with the best values applied, as its own run `<name>-best` (no search section)."""
    raw = apply(base_raw(config), trial.params)
    raw["output"] = {"dir": config.output.dir, "name": f"{config.output.name}-best"}
    validate(raw, "best.yaml")  # the values passed in a trial: this cannot fail, but never write a bad file
    return raw


def write_best(config: RunConfig, trial: FrozenTrial, path: Path) -> None:
    metric = config.evaluation.metric
    header = (
        f"# The best trial of search '{config.output.name}': #{trial.number}, validation {metric} "
        f"{trial.value:.4f}\n# {', '.join(f'{k}={v}' for k, v in trial.params.items())}\n"
        f"# Train it with its full evaluation (baselines, report):  lmtune train {path}\n"
    )
    path.write_text(header + yaml.safe_dump(best_raw(config, trial), sort_keys=False), encoding="utf-8")


# ------------------------------------------------------------------------------------ report


def history_plot(study: optuna.Study, metric: str) -> str | None:
    """Each trial's score by trial number, and the best so far."""
    trials = [
        t for t in study.get_trials(deepcopy=False) if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
    ]
    if not trials:
        return None
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    fig, ax = subplots(figsize=(8, 3.6))
    complete = [(t.number, t.value) for t in trials if t.state == TrialState.COMPLETE]
    pruned = [(t.number, _last(t)) for t in trials if t.state == TrialState.PRUNED and _last(t) is not None]
    if complete:
        ax.plot(*zip(*complete, strict=True), "o", label="complete")
        best, steps = None, []
        for number, value in complete:
            best = value if best is None else (max(best, value) if maximize else min(best, value))
            steps.append((number, best))
        ax.step(*zip(*steps, strict=True), where="post", color="tab:red", label="best so far")
    if pruned:
        ax.plot(*zip(*pruned, strict=True), "x", color="tab:gray", label="pruned (last score)")
    ax.set_xlabel("trial")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"validation {metric}")
    ax.set_title("Optimization history")
    ax.legend()
    return png(fig)


def intermediate_plot(study: optuna.Study, metric: str) -> str | None:
    """Validation score at each evaluation, per trial: where the pruner cut trials short."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.intermediate_values]
    if not trials:
        return None
    fig, ax = subplots(figsize=(8, 3.6))
    for t in trials:
        steps = sorted(t.intermediate_values)
        style = "--" if t.state == TrialState.PRUNED else "-"
        ax.plot(steps, [t.intermediate_values[s] for s in steps], style, marker=".", alpha=0.8)
    ax.set_xlabel("evaluation")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"validation {metric}")
    ax.set_title("Validation score per evaluation (dashed: pruned)")
    return png(fig)


def importance(study: optuna.Study) -> tuple[dict[str, float] | None, str]:
    """Parameter importances (fANOVA), or why there are none."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        return (
            None,
            f"Parameter importance needs at least 2 completed trials; this search has {len(complete)}.",
        )
    if len({t.value for t in complete}) == 1:
        return (
            None,
            f"Parameter importance needs scores that differ; all {len(complete)} completed trials scored {complete[0].value:.4f}.",
        )
    varying = [k for k in complete[0].params if len({repr(t.params.get(k)) for t in complete}) > 1]
    if not varying:
        return None, "Parameter importance needs a parameter that varies between completed trials; none does."
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)  # steadier than PED-ANOVA on few trials
    try:
        return optuna.importance.get_param_importances(study, evaluator=evaluator, params=varying), ""
    except (RuntimeError, ValueError) as exc:
        return None, f"Parameter importance could not be computed: {exc}"


def importance_plot(importances: dict[str, float]) -> str:
    names = list(importances)[::-1]
    fig, ax = subplots(figsize=(7, 0.5 * len(names) + 1.2))
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    ax.set_xlabel("importance (share of the variation in the validation score)")
    ax.set_title("Parameter importance")
    return png(fig)


def write_html(path: Path, config: RunConfig, summary: dict, rows: list[dict], study, keys) -> None:
    metric = config.evaluation.metric
    best = summary["best"]
    facts = {
        "study": f"{summary['study']} ({summary['storage']})",
        "objective": f"validation {metric} ({summary['direction']})",
        "sampler / pruning": f"{config.search.sampler} / {config.search.pruning}",
        "budget": f"{summary['budget'] or 'until timeout'} trials (complete + pruned)",
        "trials": ", ".join(f"{n} {state}" for state, n in summary["counts"].items() if n),
        "best": f"#{best['trial']}: {metric} {best['value']:.4f}" if best else "no trial completed",
    }
    header = ["rank", "trial", metric, "state", "time (s)", *keys, "note"]
    body = [
        [
            r["rank"],
            r["trial"],
            r["value"] if r["value"] is not None else "",
            r["state"],
            r["duration_s"] or "",
        ]
        + [r[k] for k in keys]
        + [r["note"]]
        for r in rows
    ]
    sections = [("Leaderboard", table(header, body))]
    plot = history_plot(study, metric)
    sections.append(("Optimization history", plot or "<p>No trial has finished yet.</p>"))
    importances, why = importance(study)
    if importances:
        sections.append(
            (
                "Parameter importance",
                importance_plot(importances) + table(["parameter", "importance"], list(importances.items())),
            )
        )
    else:
        sections.append(("Parameter importance", f"<p>{html.escape(why)}</p>"))
    curves = intermediate_plot(study, metric)
    if curves:
        sections.append(("Pruning: validation score per evaluation", curves))
    if best:
        sections.append(("best.yaml", f"<pre>{html.escape(Path(best['config']).read_text())}</pre>"))
    write_page(
        path,
        title=f"lmtune search: {config.output.name}",
        facts=facts,
        sections=sections,
        config_text=dump_config(config),
    )


def summarise(study: optuna.Study, config: RunConfig, folder: Path, keys: list[str], extra: dict) -> dict:
    """Write leaderboard.csv, best.yaml, search.json and report.html; return the summary."""
    rows = leaderboard(study, keys)
    write_csv(rows, folder / "leaderboard.csv")
    counts = {name: sum(r["state"] == name for r in rows) for name in STATES.values()}
    best = None
    trial = best_trial(study)
    if trial is not None:
        write_best(config, trial, folder / "best.yaml")
        best = {
            "trial": trial.number,
            "value": trial.value,
            "params": trial.params,
            "run_dir": str(folder / "trials" / f"trial-{trial.number:04d}"),
            "config": str(folder / "best.yaml"),
        }
    else:
        (folder / "best.yaml").unlink(missing_ok=True)
    summary = {
        "study": config.output.name,
        "metric": config.evaluation.metric,
        "direction": study.direction.name.lower(),
        "sampler": config.search.sampler,
        "counts": counts,
        "best": best,
        **extra,
        "trials": rows,
    }
    (folder / "search.json").write_text(json.dumps(summary, indent=2, default=str))
    write_html(folder / "report.html", config, summary, rows, study, keys)
    return summary
