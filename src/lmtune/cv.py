"""Cross-validation (`training.cv_folds: k`): k ordinary runs of the task's recipe, fold i validated on
fold i of the training rows and trained on the others, gathered in one run directory with mean ± std.

It works at the data level (`data.split.folds` / `data.split.fold`), so every recipe cross-validates the
same way. The test split is the same for every fold: the spread of the test scores shows how much the
result depends on which rows trained (and picked the best checkpoint), not a second test set.

    <run>/folds/fold-N   a complete run directory (validated on data.split.fold = N-1): eval, predict, …
    <run>/cv_metrics.json   per fold, mean and std (numpy's, ddof=0) of every scalar test score of the
                            tuned model and of the best validation score
    <run>/report.html, config.yaml, lmtune_run.json   the marker says cv_folds: `lmtune eval/predict`
                            refuse the directory and name the fold runs instead (there is no one model)

The whole directory is built under `<name>.partial` and published only when every fold finished: a crash
in any fold leaves an earlier run of the same name untouched.
"""

from __future__ import annotations

import gc
import html
import json
from pathlib import Path

import numpy as np

from lmtune.config import RunConfig, dump_config, validate
from lmtune.errors import LmtuneError
from lmtune.runs import MARKER, open_run
from lmtune.tasks import TASKS

# scores plotted across folds, when a task has them (the rest are in the tables)


def fold_config(config: RunConfig, fold: int) -> RunConfig:
    """The config of fold `fold` (0-based): an ordinary run validated on that fold, named `<name>-fold-N`,
    so that its folder's config.yaml trains exactly that fold again on its own."""
    raw = config.model_dump(mode="json")
    raw["data"]["split"].update(folds=config.training.cv_folds, fold=fold)
    raw["training"]["cv_folds"] = None
    raw["output"]["name"] = f"{config.output.name}-fold-{fold + 1}"
    return validate(raw, f"training.cv_folds (fold {fold + 1})")


def check_flags(config: RunConfig, resume: bool) -> None:
    """What a cross-validation run refuses up front (before the name is claimed or data read)."""
    if not config.training.cv_folds:
        raise LmtuneError("training.cv_folds is not set; allowed: 2..20")
    if resume:
        raise LmtuneError(
            "--resume: a cross-validation run (training.cv_folds) cannot be resumed; use --overwrite"
        )


def cross_validate(config: RunConfig, *, resume: bool = False, overwrite: bool = False) -> dict:
    """Train the k folds into one run directory; write cv_metrics.json and report.html; return the summary."""
    from lmtune.tasks import recipe

    check_flags(config, resume)
    k = config.training.cv_folds
    task = recipe(config.task)
    configs = [fold_config(config, i) for i in range(k)]
    prepared = task.prepare(configs[0])  # bad data or a broken model fail before any directory exists
    results = []
    with open_run(config, overwrite=overwrite) as run_dir:
        (run_dir / "config.yaml").write_text(dump_config(config))
        for i, fold in enumerate(configs):
            print(f"\n===== fold {i + 1}/{k} (validation: data.split.fold = {i}) =====", flush=True)
            if prepared is None:
                prepared = task.prepare(fold)
            fold_dir = run_dir / "folds" / f"fold-{i + 1}"
            fold_dir.mkdir(parents=True)
            try:
                results.append(task.train(fold, prepared, fold_dir, resume=False))
            except LmtuneError as error:  # the whole run goes, fold checkpoints with it: say so
                raise LmtuneError(
                    f"fold {i + 1}/{k}: {error}; nothing of this cross-validation run was kept "
                    "(it cannot be resumed: start again)"
                ) from None
            prepared = None  # the model and rows of one fold at a time
            gc.collect()
        summary = summarize(results, config.evaluation.metric)
        (run_dir / "cv_metrics.json").write_text(json.dumps(summary, indent=2))
        write_report(run_dir / "report.html", config, summary)
        (run_dir / MARKER).write_text(
            json.dumps({"task": config.task, "name": config.output.name, "cv_folds": k})
        )
    return summary


def _scalars(metrics: dict) -> dict[str, float]:
    """The scores among a model's metrics: floats (ints there are counts, such as n and support)."""
    return {name: float(value) for name, value in metrics.items() if isinstance(value, float)}


def summarize(results: list[dict], metric: str) -> dict:
    """Per-fold scores and their mean and std: the scalar test scores every fold's tuned model has, and
    the best validation score (None when a fold never evaluated)."""
    per_fold = [
        {
            "fold": i,
            "run": f"folds/fold-{i}",
            "rows": r["rows"],
            "steps": r["steps"],
            "best_validation": r["best_validation"],
            "test": _scalars(r["test"]["tuned"]),
        }
        for i, r in enumerate(results, 1)
    ]
    names = [n for n in per_fold[0]["test"] if all(n in f["test"] for f in per_fold)]
    values = {n: np.array([f["test"][n] for f in per_fold]) for n in names}
    best = [f["best_validation"] for f in per_fold]
    best_values = np.array(best, dtype=float) if None not in best else None
    return {
        "folds": len(results),
        "validation_metric": metric,
        "std_ddof": 0,
        "per_fold": per_fold,
        "mean": {
            "test": {n: float(v.mean()) for n, v in values.items()},
            "best_validation": float(best_values.mean()) if best_values is not None else None,
        },
        "std": {
            "test": {n: float(v.std()) for n, v in values.items()},
            "best_validation": float(best_values.std()) if best_values is not None else None,
        },
    }


def _rows(summary: dict) -> list[tuple[str, float | None, float | None, list]]:
    """(name, mean, std, per-fold values) for each test score, then the best validation score."""
    folds, mean, std = summary["per_fold"], summary["mean"], summary["std"]
    rows = [(n, mean["test"][n], std["test"][n], [f["test"][n] for f in folds]) for n in mean["test"]]
    name = f"best validation {summary['validation_metric']}"
    return [
        *rows,
        (name, mean["best_validation"], std["best_validation"], [f["best_validation"] for f in folds]),
    ]


def _number(value) -> str:
    return "–" if value is None else f"{value:.4f}"


def format_summary(summary: dict) -> str:
    """The terminal table: each score's mean ± std, then its value in every fold."""
    k, test_rows = summary["folds"], summary["per_fold"][0]["rows"]["test"]
    rows = _rows(summary)
    width = max(len(r[0]) for r in rows) + 2
    lines = [
        f"Cross-validation, {k} folds: mean ± std (ddof=0) over the folds; "
        f"test split ({test_rows} examples) the same for every fold",
        f"{'metric':<{width}}{'mean ± std':>19}" + "".join(f"{f'fold {i}':>9}" for i in range(1, k + 1)),
    ]
    for name, mean, std, values in rows:
        both = f"{_number(mean)} ± {_number(std)}"
        lines.append(f"{name:<{width}}{both:>19}" + "".join(f"{_number(v):>9}" for v in values))
    return "\n".join(lines)


def across_folds_plot(summary: dict, columns: tuple[str, ...]) -> str:
    """One panel per headline score: its value in each fold, the mean (line) and ± std (band)."""
    from lmtune.page import png, subplots

    rows = {r[0]: r for r in _rows(summary)}
    shown = [n for n in columns if n in rows]
    best = f"best validation {summary['validation_metric']}"
    shown = (shown or list(rows)[:4]) + ([best] if rows[best][1] is not None else [])
    fig, axes = subplots(1, len(shown), figsize=(2.8 * len(shown), 2.8), squeeze=False)
    folds = list(range(1, summary["folds"] + 1))
    for ax, name in zip(axes[0], shown, strict=True):
        _, mean, std, values = rows[name]
        ax.axhspan(mean - std, mean + std, color="tab:blue", alpha=0.15)
        ax.axhline(mean, color="tab:blue", lw=1)
        ax.plot(folds, values, "o", color="tab:blue")
        ax.set_xticks(folds)
        ax.set_xlabel("fold")
        ax.set_title(name, fontsize=9)
    fig.tight_layout()
    return png(fig)


def write_report(path: Path, config: RunConfig, summary: dict) -> Path:
    """report.html: facts, mean ± std and per-fold scores, the scores across folds, links to each fold."""
    from lmtune.page import table, write_page

    k, first = summary["folds"], summary["per_fold"][0]
    header = ["score", "mean ± std", *(f"fold {i}" for i in range(1, k + 1))]
    scores = [[n, f"{_number(m)} ± {_number(s)}", *map(_number, v)] for n, m, s, v in _rows(summary)]
    folds = "".join(
        f"<tr><td><a href='{f['run']}/report.html'>fold {f['fold']}</a></td><td>{f['rows']['train']}</td>"
        f"<td>{f['rows']['validation']}</td><td>{f['rows']['test']}</td><td>{f['steps']}</td>"
        f"<td>{_number(f['best_validation'])}</td><td>{html.escape(f['run'])}</td></tr>"
        for f in summary["per_fold"]
    )
    fold_table = (
        "<table><tr><th>fold</th><th>train rows</th><th>validation rows</th><th>test rows</th><th>steps</th>"
        f"<th>best validation {html.escape(summary['validation_metric'])}</th><th>run directory</th></tr>"
        f"{folds}</table>"
    )
    return write_page(
        path,
        title=f"lmtune cross-validation: {config.output.name}",
        facts={
            "task": config.task,
            "model": config.model.name,
            "method": config.method.name,
            "folds": f"{k} (fold N validates on data.split.fold = N-1 and trains on the others)",
            "test rows": f"{first['rows']['test']}, the same for every fold",
            "std": "numpy's (ddof=0) over the folds",
        },
        sections=[
            (
                "Cross-validation: mean ± std over the folds (tuned model, test split)",
                table(header, scores),
            ),
            ("Scores across folds", across_folds_plot(summary, TASKS[config.task].columns)),
            ("Folds", fold_table),
        ],
        config_text=dump_config(config),
    )
