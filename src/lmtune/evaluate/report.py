"""A self-contained report.html: tables and plots inlined as base64 PNGs, no network needed to view."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lmtune.evaluate.metrics import HEADLINE  # noqa: E402


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def curves_plot(history: list[dict], metric: str) -> str | None:
    """Training loss, validation loss and the validation metric over steps."""
    train = [(h["step"], h["loss"]) for h in history if "loss" in h]
    evals = [h for h in history if "eval_loss" in h]
    if not train and not evals:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6))
    if train:
        left.plot(*zip(*train, strict=True), label="train loss")
    if evals:
        left.plot([h["step"] for h in evals], [h["eval_loss"] for h in evals], "o-", label="validation loss")
        key = f"eval_{metric}"
        if metric != "loss" and key in evals[0]:
            right.plot([h["step"] for h in evals], [h[key] for h in evals], "o-", color="tab:green")
            right.set_title(f"validation {metric}")
    left.set_xlabel("step")
    left.set_title("loss")
    left.legend()
    right.set_xlabel("step")
    return _png(fig)


def confusion_plot(matrix: list[list[int]], labels: list[str], title: str) -> str:
    size = max(3.2, 0.6 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    peak = max(max(row) for row in matrix) or 1
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            ax.text(
                j, i, str(value), ha="center", va="center", color="white" if value > peak / 2 else "black"
            )
    return _png(fig)


def comparison_plot(results: dict[str, dict]) -> str:
    fig, ax = plt.subplots(figsize=(8, 3.4))
    width = 0.8 / len(results)
    for k, (name, metrics) in enumerate(results.items()):
        ax.bar(
            [i + k * width for i in range(len(HEADLINE))], [metrics[m] for m in HEADLINE], width, label=name
        )
    ax.set_xticks([i + width * (len(results) - 1) / 2 for i in range(len(HEADLINE))], HEADLINE)
    ax.set_ylim(0, 1)
    ax.legend()
    ax.set_title("test split")
    return _png(fig)


def _table(results: dict[str, dict]) -> str:
    head = "".join(f"<th>{m}</th>" for m in HEADLINE)
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td>"
        + "".join(f"<td>{metrics[m]:.4f}</td>" for m in HEADLINE)
        + "</tr>"
        for name, metrics in results.items()
    )
    return f"<table><tr><th>model</th>{head}</tr>{rows}</table>"


def _per_class(metrics: dict) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(label)}</td><td>{m['precision']:.3f}</td><td>{m['recall']:.3f}</td>"
        f"<td>{m['f1']:.3f}</td><td>{m['support']}</td></tr>"
        for label, m in metrics["per_class"].items()
    )
    return f"<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>{rows}</table>"


STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}
td:first-child,th:first-child{text-align:left}h2{border-bottom:1px solid #ddd;margin-top:2em}
img{max-width:100%}.grid{display:flex;flex-wrap:wrap;gap:1em}pre{background:#f6f6f6;padding:1em;overflow:auto}"""


def write_report(
    path: Path,
    *,
    title: str,
    results: dict[str, dict],
    labels: list[str],
    history: list[dict],
    metric: str,
    facts: dict[str, str],
    config_text: str,
) -> Path:
    """Write report.html: before/after table and plot, curves, per-class scores, confusion matrices."""
    facts_rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in facts.items()
    )
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
        f"<h2>Run</h2><table>{facts_rows}</table>",
        "<h2>Test metrics: before and after</h2>",
        _table(results),
        comparison_plot(results),
    ]
    curves = curves_plot(history, metric)
    if curves:
        parts += ["<h2>Training curves</h2>", curves]
    tuned = results.get("tuned")
    if tuned:
        parts += ["<h2>Per-class scores (tuned)</h2>", _per_class(tuned)]
    parts.append("<h2>Confusion matrices (test)</h2><div class='grid'>")
    parts += [confusion_plot(m["confusion_matrix"], labels, name) for name, m in results.items()]
    parts.append("</div>")
    parts += ["<h2>Resolved config</h2>", f"<pre>{html.escape(config_text)}</pre>", "</body></html>"]
    path.write_text("".join(parts), encoding="utf-8")
    return path
