"""A run's report.html: its results, training curves and their diagnosis (on lmtune.page)."""

from __future__ import annotations

import html
import json
from pathlib import Path

from lmtune.data.tags import entities
from lmtune.evaluate.diagnose import check
from lmtune.evaluate.metrics import HEADLINE, higher_is_better
from lmtune.evaluate.spans import exact_match, f1
from lmtune.page import png, subplots, table, write_page

# classification scores the report's table shows (HEADLINE first)
CLASSIFY = [*HEADLINE, "f1_weighted", "f1_micro", "mcc", "roc_auc"]
# language-model scores, in the order tables show them
SCORES = ["loss", "perplexity", "rouge1", "rouge2", "rougeL", "bleu", "chrf", "exact_match", "stop_rate"]


def curves_plot(history: list[dict], metric: str) -> str | None:
    """Training loss, validation loss and the validation metric over steps."""
    train = [(h["step"], h["loss"]) for h in history if "loss" in h]
    evals = [h for h in history if "eval_loss" in h]
    if not train and not evals:
        return None
    fig, (left, right) = subplots(1, 2, figsize=(11, 3.6))
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
    return png(fig)


def confusion_plot(matrix: list[list[int]], labels: list[str], title: str) -> str:
    size = max(3.2, 0.6 * len(labels) + 2)
    fig, ax = subplots(figsize=(size, size * 0.85))
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
    return png(fig)


def comparison_bars(results: dict[str, dict], scores: list[str]) -> str:
    """Grouped bars of 0..1 scores, one colour per model (base, tuned, …)."""
    fig, ax = subplots(figsize=(8, 3.4))
    width = 0.8 / len(results)
    for k, (name, metrics) in enumerate(results.items()):
        values = [metrics[s] for s in scores]
        intervals = [metrics.get("ci", {}).get(s, (v, v)) for s, v in zip(scores, values, strict=True)]
        # clipped at 0: a percentile interval of a skewed statistic may lie beside its value
        errors = [
            [max(0.0, v - lo) for v, (lo, _) in zip(values, intervals, strict=True)],
            [max(0.0, hi - v) for v, (_, hi) in zip(values, intervals, strict=True)],
        ]
        ax.bar([i + k * width for i in range(len(scores))], values, width, yerr=errors, capsize=3, label=name)
    ax.set_xticks([i + width * (len(results) - 1) / 2 for i in range(len(scores))], scores)
    ax.set_ylim(0, 1)
    ax.legend()
    ax.set_title("test split")
    return png(fig)


def comparison_plot(results: dict[str, dict]) -> str:
    return comparison_bars(results, HEADLINE)


def metrics_table(results: dict[str, dict], names: list[str]) -> str:
    """One row per model: each score with its 95% bootstrap interval beneath it."""
    names = [m for m in names if all(m in r for r in results.values())]
    head = "".join(f"<th>{html.escape(m)}</th>" for m in names)

    def cell(result: dict, metric: str) -> str:
        value, low_high = result[metric], result.get("ci", {}).get(metric)
        if value is None:
            return "<td>–</td>"
        interval = f"<br><small>[{low_high[0]:.3f}, {low_high[1]:.3f}]</small>" if low_high else ""
        return f"<td>{value:.4f}{interval}</td>"

    rows = "".join(
        f"<tr><td>{html.escape(name)}</td>" + "".join(cell(r, m) for m in names) + "</tr>"
        for name, r in results.items()
    )
    note = "<p><small>[low, high]: 95% bootstrap confidence interval over the test examples</small></p>"
    return f"<table><tr><th>model</th>{head}</tr>{rows}</table>" + (
        note if any("ci" in r for r in results.values()) else ""
    )


def _per_class(metrics: dict) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(label)}</td><td>{m['precision']:.3f}</td><td>{m['recall']:.3f}</td>"
        f"<td>{m['f1']:.3f}</td><td>{m['support']}</td></tr>"
        for label, m in metrics["per_class"].items()
    )
    return f"<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>{rows}</table>"


def classification_sections(
    results: dict[str, dict], labels: list[str], names: list[str] | None = None
) -> list[tuple[str, str]]:
    """Before/after table and bars, per-class scores of the tuned model, confusion matrices."""
    sections = [
        (
            "Test metrics: before and after",
            metrics_table(results, names or CLASSIFY) + comparison_plot(results),
        )
    ]
    if "tuned" in results:
        sections.append(("Per-class scores (tuned)", _per_class(results["tuned"])))
    matrices = "".join(confusion_plot(m["confusion_matrix"], labels, name) for name, m in results.items())
    sections.append(("Confusion matrices (test)", f"<div class='grid'>{matrices}</div>"))
    return sections


# regression scores the report's table shows
REGRESS = ["spearman", "pearson", "mse", "rmse", "mae", "r2"]


def scatter_plot(truth: list[float], predicted: dict[str, list[float]]) -> str:
    """Predicted vs true per model, with the line a perfect model's points lie on."""
    fig, axes = subplots(1, len(predicted), figsize=(3.6 * len(predicted) + 0.4, 3.6), squeeze=False)
    low = min(min(truth), *(min(p) for p in predicted.values()))
    high = max(max(truth), *(max(p) for p in predicted.values()))
    for ax, (name, values) in zip(axes[0], predicted.items(), strict=True):
        ax.scatter(truth, values, s=6, alpha=0.35, edgecolors="none")
        ax.plot([low, high], [low, high], color="grey", linewidth=1, linestyle="--")
        ax.set_xlim(low, high)
        ax.set_ylim(low, high)
        ax.set_xlabel("true")
        ax.set_ylabel("predicted")
        ax.set_title(name)
    return png(fig)


def regression_sections(results: dict[str, dict], block: dict, names: list[str] | None = None):
    """Before/after table of every model's errors and correlations, and predicted vs true (test)."""
    truth = block["truth"]["y_true"]
    predicted = {name: out["y_pred"] for name, out in block["models"].items()}
    return [
        ("Test metrics: before and after", metrics_table(results, names or REGRESS)),
        ("Predicted vs true (test)", scatter_plot(truth, predicted)),
    ]


# multi-label scores the report's table shows
MULTI_LABEL = [
    "micro_f1",
    "macro_f1",
    "samples_f1",
    "subset_accuracy",
    "hamming_loss",
    "micro_precision",
    "micro_recall",
]


def multilabel_sections(results: dict[str, dict], names: list[str] | None = None) -> list[tuple[str, str]]:
    """Before/after table and bars, then each label's scores and threshold per model."""
    sections = [
        (
            "Test metrics: before and after",
            metrics_table(results, names or MULTI_LABEL)
            + comparison_bars(results, ["micro_f1", "macro_f1", "samples_f1", "subset_accuracy"]),
        )
    ]
    for name, result in results.items():
        rows = "".join(
            f"<tr><td>{html.escape(label)}</td><td>{m['precision']:.3f}</td><td>{m['recall']:.3f}</td>"
            f"<td>{m['f1']:.3f}</td><td>{m['support']}</td><td>{m.get('threshold', 0.5):.2f}</td></tr>"
            for label, m in result["per_label"].items()
        )
        sections.append(
            (
                f"Per-label scores ({name})",
                "<table><tr><th>label</th><th>precision</th><th>recall</th><th>F1</th><th>support</th>"
                f"<th>threshold</th></tr>{rows}</table>",
            )
        )
    return sections


# token-classification scores the report's table shows
TOKENS = ["entity_f1", "entity_precision", "entity_recall", "entity_macro_f1", "token_accuracy"]
# entity highlight colours, by position of the type in the sorted list (wraps round)
_ENTITY_COLOURS = ["#fde68a", "#bfdbfe", "#bbf7d0", "#fbcfe8", "#ddd6fe", "#fed7aa", "#a5f3fc", "#e5e7eb"]


def highlighted(words: list[str], tags: list[str], colours: dict[str, str]) -> str:
    """The words with each entity marked in its type's colour and labelled with the type."""
    marks = {first: (kind, end) for kind, first, end in entities(tags)}
    out, i = [], 0
    while i < len(words):
        if i in marks:
            kind, end = marks[i]
            inner = html.escape(" ".join(words[i:end]))
            colour = colours.get(kind, "#e5e7eb")
            out.append(f"<mark style='background:{colour}'>{inner} <sub>{html.escape(kind)}</sub></mark>")
            i = end
        else:
            out.append(html.escape(words[i]))
            i += 1
    return " ".join(out)


def token_sections(
    results: dict[str, dict], block: dict, names: list[str] | None = None, examples: int = 12
) -> list[tuple[str, str]]:
    """Before/after table and bars, each model's per-type scores, then test sentences with the gold
    entities above the tuned model's (sentences it got wrong first)."""
    sections = [
        (
            "Test metrics: before and after",
            metrics_table(results, names or TOKENS)
            + comparison_bars(results, ["entity_f1", "entity_precision", "entity_recall", "token_accuracy"]),
        )
    ]
    for name, result in results.items():
        rows = [
            [kind, m["precision"], m["recall"], m["f1"], m["support"]]
            for kind, m in result["per_type"].items()
        ]
        sections.append(
            (f"Per-type scores ({name})", table(["type", "precision", "recall", "F1", "support"], rows))
        )
    if "tuned" in block["models"]:
        gold, pred = block["truth"]["gold"], block["models"]["tuned"]["pred"]
        types = sorted({kind for tags in gold for kind, _, _ in entities(tags.split())})
        colours = {kind: _ENTITY_COLOURS[i % len(_ENTITY_COLOURS)] for i, kind in enumerate(types)}
        wrong = [i for i, (g, p) in enumerate(zip(gold, pred, strict=True)) if g != p]
        right = [i for i in range(len(gold)) if gold[i] == pred[i] and gold[i].strip("O ")]
        shown = (wrong[: examples * 2 // 3] + right)[:examples]
        rows = []
        for i in shown:
            words = block["truth"]["text"][i].split(" ")
            mark = "✗" if i in wrong else "✓"
            rows.append(
                f"<tr><td>{mark} {html.escape(block['where'][i])}</td><td>gold: {highlighted(words, gold[i].split(), colours)}"
                f"<br>tuned: {highlighted(words, pred[i].split(), colours)}</td></tr>"
            )
        note = f"<p>{len(wrong)} of {len(gold)} test sentences have at least one word tagged differently from gold.</p>"
        sections.append(("Example sentences (test): gold vs tuned", note + f"<table>{''.join(rows)}</table>"))
    return sections


def qa_sections(
    results: dict[str, dict], block: dict, names: list[str] | None = None, shown: int = 25
) -> list[tuple[str, str]]:
    """Before/after table and bars, then test questions the tuned model answered wrong, beside their
    gold answers."""
    sections = [
        (
            "Test metrics: before and after",
            metrics_table(results, names or ["em", "f1"]) + comparison_bars(results, ["em", "f1"]),
        )
    ]
    if "tuned" in block["models"]:
        golds = [json.loads(g) for g in block["truth"]["answers"]]
        answers = block["models"]["tuned"]["answer"]
        wrong = [i for i, (a, g) in enumerate(zip(answers, golds, strict=True)) if not exact_match(a, g)]
        rows = [
            [
                block["where"][i],
                block["truth"]["question"][i],
                " | ".join(golds[i]) or "(no answer)",
                answers[i] or "(no answer)",
                f1(answers[i], golds[i]),
            ]
            for i in wrong[:shown]
        ]
        note = f"<p>{len(wrong)} of {len(answers)} test questions not answered exactly (the first {len(rows)} shown).</p>"
        sections.append(
            (
                "Wrong answers (test, tuned)",
                note + table(["where", "question", "gold answers", "answer", "F1"], rows),
            )
        )
    return sections


def diagnosis_html(history: list[dict], metric: str, greater_is_better: bool, n_classes: int | None) -> str:
    """Findings (evidence, what to change) first, then the checks that passed, with their numbers."""
    result = check(history, metric=metric, greater_is_better=greater_is_better, n_classes=n_classes)
    findings = "".join(
        f"<li><b>{html.escape(f.kind)}</b>: {html.escape(f.evidence)}<br>try: {html.escape(f.suggestion)}</li>"
        for f in result.findings
    )
    passed = "".join(f"<li>{html.escape(line)}</li>" for line in result.passed)
    body = (
        f"<ul class='findings'>{findings}</ul>"
        if findings
        else "<p>No problem found in the training logs.</p>"
    )
    return body + (f"<p>Checks passed:</p><ul>{passed}</ul>" if passed else "")


def write_report(
    path: Path,
    *,
    title: str,
    facts: dict[str, str],
    sections: list[tuple[str, str]],
    history: list[dict],
    metric: str,
    config_text: str,
    greater_is_better: bool | None = None,
    n_classes: int | None = None,
) -> Path:
    """Write report.html: run facts, the task's sections (heading, html), training curves and their
    diagnosis, config. `greater_is_better` defaults to the Trainer's rule (only losses fall);
    `n_classes` lets the diagnosis compare training loss with chance level."""
    sections = list(sections)
    if sections and (
        curves := curves_plot(history, metric)
    ):  # the headline result, then how training got there
        better = greater_is_better if greater_is_better is not None else higher_is_better(metric)
        sections[1:1] = [
            ("Training curves", curves),
            ("Diagnosis", diagnosis_html(history, metric, better, n_classes)),
        ]
    return write_page(path, title=title, facts=facts, sections=sections, config_text=config_text)


def generation_sections(results, answers, test, data_report, config) -> list[tuple[str, str]]:
    """Base vs tuned scores and bars, sample answers side by side, and the records that were skipped."""
    names = list(results)
    wanted = config.evaluation.metrics or SCORES
    shown = [s for s in wanted if all(s in results[n] for n in names)]
    sections = [("Test metrics: before and after", metrics_table(results, shown))]
    bars = [s for s in ("rougeL", "bleu", "exact_match", "stop_rate") if s in shown]
    if bars:
        sections[0] = (sections[0][0], sections[0][1] + comparison_bars(results, bars))
    n = config.evaluation.generation.samples_in_report
    chats = [e for e in test if e.prompt_ids is not None][:n]
    if chats and any(answers.values()):
        header = ["prompt", "reference", *(f"{name} answer" for name in names)]
        cells = []
        for i, e in enumerate(chats):
            outs = [answers[name][i] if i < len(answers[name]) else None for name in names]
            texts = [
                (o["answer"][:600] + ("" if o["stopped"] else " [no end-of-turn]")) if o else "" for o in outs
            ]
            cells.append([e.prompt[:600], (e.reference or "")[:600], *texts])
        body = "".join(
            "<tr>" + "".join(f"<td class='text'>{html.escape(c)}</td>" for c in row) + "</tr>"
            for row in cells
        )
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        sections.append(("Sample answers (test prompts)", f"<table><tr>{head}</tr>{body}</table>"))
    skipped = data_report.get("skipped", [])
    data_rows = [[where, reason] for where, reason in skipped[:50]]
    note = f"<p>{len(skipped)} examples skipped at tokenisation (data.on_error = {config.data.on_error})"
    note += f"; {data_report.get('documents_split', 0)} documents split into max_length chunks</p>"
    body = note + (table(["record", "reason"], data_rows) if data_rows else "")
    sections.append(("Data: tokenisation", body))
    return sections
