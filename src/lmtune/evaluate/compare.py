"""`lmtune compare RUN…`: runs (and the untuned base) on the same examples — one table of scores with
95% intervals, a paired test of each model against a reference, and plots.

Two intervals that overlap do not prove "no difference", and two that barely do not overlap do not
prove one: the verdict comes from the paired test (McNemar for accuracy, paired bootstrap otherwise),
which uses that both models answered the same examples.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path

from lmtune.errors import LmtuneError
from lmtune.evaluate import metrics as registry
from lmtune.evaluate import predictions
from lmtune.evaluate.report import metrics_table
from lmtune.page import STYLE, png, subplots, table


@dataclass
class Entry:
    name: str  # shown in tables: the run directory's name, or "base"
    saved: dict  # predictions.json's content
    model: str  # which model of `saved`: "tuned" or "base"


def gather(run_dirs: list[Path], scorer, *, base: bool = True) -> list[Entry]:
    """The models to compare: the base of the first run (when it has one and `base`), then each run.

    `scorer(run_dir, with_base)` gives a run's predictions (saved ones, or scored on a file now)."""
    entries: list[Entry] = []
    for i, run_dir in enumerate(run_dirs):
        saved = scorer(run_dir, base and i == 0)
        if i == 0 and base and "base" in predictions.models(saved):
            entries.append(Entry("base", saved, "base"))
        entries.append(Entry(_unique(run_dir, run_dirs), saved, "tuned"))
    return entries


def _unique(run_dir: Path, run_dirs: list[Path]) -> str:
    same = [r for r in run_dirs if r.name == run_dir.name]
    return run_dir.name if len(same) == 1 else str(run_dir)


def compare(
    entries: list[Entry], names: list[str] | None = None, reference: str | None = None, seed: int = 0
) -> dict:
    """Scores with intervals for every entry, and paired tests of each entry against the reference."""
    if len(entries) < 2:
        raise LmtuneError(
            "compare needs two models: give two or more run directories, or one run scored with its base"
        )
    kinds = [k for k in entries[0].saved["kinds"] if all(k in e.saved["kinds"] for e in entries)]
    if not kinds:
        raise LmtuneError("compare: the runs share no kind of score (classification vs language model)")
    _check_same_examples(entries, kinds)
    allowed = [n for kind in kinds for n in registry.names_for(kind)]
    names = names or [n for kind in kinds for n in registry.KINDS[kind].compare]
    for name in names:
        if name not in allowed:
            raise LmtuneError(
                f"--metrics: unknown metric '{name}' for these runs; allowed: {', '.join(allowed)}"
            )
    by_name = {e.name: e for e in entries}
    reference = reference or next(e.name for e in entries if e.model == "tuned")
    if reference not in by_name:
        raise LmtuneError(
            f"--reference '{reference}' is not one of the compared models: {', '.join(by_name)}"
        )
    ref = by_name[reference]
    scores = {e.name: predictions.scores(e.saved, e.model, names, seed=seed) for e in entries}
    for model, result in scores.items():
        undefined = [n for n in names if result.get(n) is None]
        if undefined:
            raise LmtuneError(
                f"--metrics: {', '.join(undefined)} is undefined for '{model}' on these examples "
                "(no class probabilities, or a class absent from the truth); choose another metric"
            )
    tests = []
    for entry in entries:
        if entry is ref:
            continue
        for name in names:
            kind = next(k for k in kinds if name in registry.names_for(k))
            result = registry.paired(
                kind,
                name,
                predictions.inputs(ref.saved, kind, ref.model),
                predictions.inputs(entry.saved, kind, entry.model),
                labels=ref.saved.get("labels"),
                seed=seed,
            )
            low_a, high_a = scores[ref.name]["ci"][name]
            low_b, high_b = scores[entry.name]["ci"][name]
            result["intervals_overlap"] = low_b <= high_a and low_a <= high_b
            tests.append({"model": entry.name, "reference": ref.name, **result})
    examples = {k: len(entries[0].saved["kinds"][k]["where"]) for k in kinds}
    return {"metrics": names, "reference": ref.name, "scores": scores, "tests": tests, "examples": examples}


def _check_same_examples(entries: list[Entry], kinds: list[str]) -> None:
    """Paired tests need the same examples in the same order; name the first pair that differs."""
    first = entries[0]
    for entry in entries[1:]:
        for kind in kinds:
            a, b = first.saved["kinds"][kind], entry.saved["kinds"][kind]
            if a["where"] != b["where"] or a["truth"] != b["truth"]:
                raise LmtuneError(
                    f"'{first.name}' and '{entry.name}' were scored on different {kind} examples "
                    f"({len(a['where'])} vs {len(b['where'])}); compare them on one file with --data FILE"
                )


def verdict(test: dict) -> str:
    """The paired test's answer in words; a bootstrap p-value at its resolution floor is shown as a bound."""
    p = test["p_value"]
    shown = "p ≤ 0.001" if test["test"] == "paired bootstrap" and p <= 0.001 else f"p = {p:.2g}"
    if test["significant"]:
        better = (
            "better"
            if (test["difference"] > 0) == registry.METRICS[test["metric"]].higher_is_better
            else "worse"
        )
        return f"significant: {better} ({shown})"
    return f"no significant difference ({shown})"


def summary(result: dict) -> str:
    """The comparison as text: the scores table, then one line per paired test."""
    names = result["metrics"]
    table_rows = {n: {m: s[m] for m in names} | {"ci": s["ci"]} for n, s in result["scores"].items()}
    lines = [_text_table(table_rows, names), "", f"paired tests against '{result['reference']}':"]
    for t in result["tests"]:
        overlap = "intervals overlap" if t["intervals_overlap"] else "intervals do not overlap"
        lines.append(
            f"  {t['model']:<16} {t['metric']:<12} {t['difference']:+.4f} [{t['ci'][0]:+.4f}, {t['ci'][1]:+.4f}]"
            f"  {t['test']}: {verdict(t)}; {overlap}"
        )
    return "\n".join(lines)


def _text_table(rows: dict[str, dict], names: list[str]) -> str:
    cells = {
        model: [f"{r[m]:.4f} [{r['ci'][m][0]:.3f}, {r['ci'][m][1]:.3f}]" for m in names]
        for model, r in rows.items()
    }
    width = max(14, *(len(c) + 2 for row in cells.values() for c in row), *(len(m) + 2 for m in names))
    left = max(8, *(len(m) + 2 for m in rows))
    lines = [f"{'model':<{left}}" + "".join(f"{m:>{width}}" for m in names)]
    lines += [f"{model:<{left}}" + "".join(f"{c:>{width}}" for c in row) for model, row in cells.items()]
    return "\n".join(lines) + "\n[low, high]: 95% bootstrap confidence interval"


def interval_plot(result: dict) -> str:
    """Each metric's point estimate and 95% interval per model, side by side."""
    names, scores = result["metrics"], result["scores"]
    fig, axes = subplots(1, len(names), figsize=(4.2 * len(names), 0.5 * len(scores) + 1.8), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        models = list(scores)
        values = [scores[m][name] for m in models]
        lows = [max(0.0, v - scores[m]["ci"][name][0]) for m, v in zip(models, values, strict=True)]
        highs = [max(0.0, scores[m]["ci"][name][1] - v) for m, v in zip(models, values, strict=True)]
        ax.errorbar(values, range(len(models)), xerr=[lows, highs], fmt="o", capsize=4)
        ax.set_yticks(range(len(models)), models)
        ax.invert_yaxis()
        ax.set_title(f"{name} (95% CI)")
        ax.grid(axis="x", alpha=0.3)
    return png(fig)


def write(result: dict, out: Path) -> Path:
    """compare.json and a self-contained compare.html in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(result, indent=2))
    rows = [
        [
            t["model"],
            t["metric"],
            t["difference"],
            f"[{t['ci'][0]:+.4f}, {t['ci'][1]:+.4f}]",
            t["test"],
            verdict(t),
        ]
        for t in result["tests"]
    ]
    examples = ", ".join(f"{n} {kind}" for kind, n in result["examples"].items())
    body = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>lmtune compare</title><style>{STYLE}</style>",
        "</head><body><h1>lmtune compare</h1>",
        f"<p>{html.escape(examples)} examples, the same for every model.</p>",
        "<h2>Scores</h2>",
        metrics_table(result["scores"], result["metrics"]),
        interval_plot(result),
        f"<h2>Paired tests against {html.escape(result['reference'])}</h2>",
        table(["model", "metric", "difference", "95% CI of the difference", "test", "verdict"], rows),
        "</body></html>",
    ]
    path = out / "compare.html"
    path.write_text("".join(body), encoding="utf-8")
    return path
