"""Catastrophic forgetting: does tuning cost the model abilities it had before?

The first entry of the checks registry (lmtune.evaluate.checks). Each `audit.forgetting` reference
(`evaluation.forgetting`, its older place, works the same) is read in `prepare` (a bad one fails before any run directory
exists), scored on the untuned model and again on the tuned one, and compared:

- perplexity (generative tasks): token-weighted perplexity of the recipe's own encoding of the
  reference (plain-text documents cut into model.max_length windows, chats scored on their answers).
- probe (classify; sft too): does the body's frozen mean-pooled embedding still separate a second
  labelled task? Logistic regression on standardised features (the embedding's scale changes with
  tuning; standardising keeps that out of the score), k-fold cross-validated with the run's seed, so
  before and after see the same folds and only the representation differs.

A relative worsening beyond the reference's threshold (perplexity up, probe accuracy down) is flagged.
"""

from __future__ import annotations

import html
import random
import sys
from collections import Counter
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np

from lmtune import assets
from lmtune.config import DataConfig, PiiConfig, ReferenceConfig, RunConfig
from lmtune.data.load import ReadOptions, expand, iter_records
from lmtune.data.pipeline import read_file
from lmtune.data.rows import to_example
from lmtune.errors import LmtuneError
from lmtune.models.infer import infer_texts, mean_pooled_step
from lmtune.page import png, subplots, table
from lmtune.tasks import TASKS

METRICS = {"perplexity": "perplexity", "probe": "probe_accuracy"}
FOLDS = 5


@dataclass
class Reference:
    """One reference as read and encoded in `prepare`: token windows (perplexity) or labelled texts."""

    name: str
    kind: str
    threshold: float
    encoded: list = field(default_factory=list)  # perplexity: lmtune.data.batches.Encoded
    texts: list[str] = field(default_factory=list)  # probe
    labels: list[str] = field(default_factory=list)
    folds: int = FOLDS

    def __len__(self) -> int:
        return len(self.encoded) if self.kind == "perplexity" else len(self.texts)


# ------------------------------------------------------------------------------------ reading


def read(config: RunConfig, tokenizer, encode_split=None) -> list[Reference]:
    """Every forgetting reference, read and encoded up front; `encode_split` is the generative
    recipe's (the same windows and chat rendering as its own test split). Errors name the key the
    user wrote: audit.forgetting.N, or evaluation.forgetting.N."""
    place = "audit" if config.audit.forgetting else "evaluation"
    references: list[Reference] = []
    for i, ref in enumerate(getattr(config, place).forgetting):
        key = f"{place}.forgetting.{i}"
        kind = _kind(config.task, ref.kind, key)
        reader, paths, name = _source(config, ref, key)
        name = _unique(name, [r.name for r in references])
        if kind == "probe":
            _check_columns(reader, paths[0], key)
        rows = _rows(reader, paths, kind, f"{key} ({name})")
        if len(rows) > ref.max_rows:
            keep = sorted(random.Random(config.training.seed).sample(range(len(rows)), ref.max_rows))
            rows = [rows[k] for k in keep]
        reference = Reference(name, kind, ref.threshold)
        if kind == "probe":
            reference.texts, reference.labels = [r["text"] for r in rows], [r["label"] for r in rows]
            reference.folds = _folds(reference.labels, key)
        else:
            reference.encoded = _encode(config, tokenizer, rows, encode_split, key)
        references.append(reference)
    return references


def _rows(reader: RunConfig, paths: list[Path], kind: str, where: str) -> list[dict]:
    """The reference's rows after the default cleaning; no tokenizer: nothing filters on tokens."""
    try:
        return [
            row
            for path in paths
            for row in read_file(reader, str(path), "labelled" if kind == "probe" else "generative")
        ]
    except LmtuneError as exc:
        raise LmtuneError(f"{where}: {exc}") from None


def _kind(task: str, kind: str, key: str) -> str:
    allowed = TASKS[task].forgetting
    if kind == "auto":
        return allowed[0]
    if kind not in allowed:
        raise LmtuneError(
            f"{key}.kind = {kind!r}: not available for task {task}; allowed: {', '.join(('auto', *allowed))}"
        )
    return kind


def _source(config: RunConfig, ref: ReferenceConfig, key: str) -> tuple[RunConfig, list[Path], str]:
    """A config that reads the reference (its own columns and reader keys; no PII scrubbing or length
    filters: it is scored, never trained on or stored), its files, and its default name."""
    options: dict = {"encoding": "auto", "quoting": "auto"}
    text, label = ref.text_column, ref.label_column
    if isinstance(ref.data, str) and ref.data.startswith(assets.PREFIX):
        try:
            files = assets.resolve_dataset(ref.data)
        except LmtuneError as exc:
            raise LmtuneError(f"{key}.data: {str(exc).split(': ', 1)[-1]}") from None
        paths, name = [files.test or files.train], ref.data.removeprefix(assets.PREFIX)
        options = {"encoding": files.encoding, "quoting": files.options.get("quoting", "auto")}
        options["separator"] = files.options.get("separator")
        text, label = text or files.text_column, label or files.label_column
    else:
        paths = expand(ref.data, f"{key}.data")
        name = paths[0].stem
    data = DataConfig(
        text_column=text or "text",
        label_column=label or "label",
        separator=ref.separator or options.get("separator"),
        columns=ref.columns,
        encoding=options["encoding"],
        quoting=options["quoting"],
        on_error=config.data.on_error,
        pii=PiiConfig(action="off"),
    )
    return config.model_copy(update={"data": data}), paths, ref.name or name


def _unique(name: str, taken: list[str]) -> str:
    found, n = name, 1
    while found in taken:
        n += 1
        found = f"{name} ({n})"
    return found


def _check_columns(reader: RunConfig, path: Path, key: str) -> None:
    """A probe needs labelled rows: a file without the columns fails here, naming the reference's keys."""
    d = reader.data
    options = ReadOptions(d.encoding, d.separator, d.quoting, d.columns)
    first = next((r for r, _, problem in islice(iter_records(path, options), 200) if problem is None), None)
    if first is None:
        return  # nothing readable: the read reports the first bad record
    for column, setting in ((d.text_column, "text_column"), (d.label_column, "label_column")):
        if column not in first:
            raise LmtuneError(
                f"{key}: kind probe needs labelled rows, but {path} has no field '{column}' "
                f"(fields: {', '.join(map(str, first))}); set {key}.{setting}"
            )


def _folds(labels: list[str], key: str) -> int:
    counts = Counter(labels)
    if len(counts) < 2 or min(counts.values()) < 2:
        shown = ", ".join(f"{label!r}: {n}" for label, n in counts.most_common())
        raise LmtuneError(f"{key}: a probe needs ≥ 2 classes with ≥ 2 rows each; the rows read have {shown}")
    return min(FOLDS, min(counts.values()))


def _encode(config: RunConfig, tokenizer, rows: list[dict], encode_split, key: str) -> list:
    examples = [to_example(row) for row in rows]
    if config.task == "seq2seq" and any(e.text is not None for e in examples):
        raise LmtuneError(
            f"{key}.data: plain text has no perplexity under an encoder-decoder model; give instruction "
            "or chat records (a seq2seq model is scored on answers to inputs)"
        )
    try:
        encoded = encode_split(config, tokenizer, examples, {})
    except LmtuneError as exc:
        raise LmtuneError(f"{key}: {exc}") from None
    if not encoded:
        raise LmtuneError(f"{key}: no usable examples left (see data.on_error and model.max_length)")
    return encoded


# ---------------------------------------------------------------------------------- scoring


def measure(config: RunConfig, model, tokenizer, references: list[Reference]) -> list[float]:
    """One score per reference: perplexity, or cross-validated probe accuracy."""
    return [_score(config, model, tokenizer, reference) for reference in references]


def _score(config: RunConfig, model, tokenizer, reference: Reference) -> float:
    desc = f"forgetting: {reference.name}"
    if reference.kind == "perplexity":
        from lmtune.evaluate.generation import heldout_loss  # generation scoring imports are heavy

        return heldout_loss(config, model, tokenizer.pad_token_id, reference.encoded, desc)["perplexity"]
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features = infer_texts(config, model, tokenizer, reference.texts, mean_pooled_step, desc)
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    folds = StratifiedKFold(reference.folds, shuffle=True, random_state=config.training.seed)
    return float(np.mean(cross_val_score(probe, features, reference.labels, cv=folds)))


def compare(
    config: RunConfig, model, tokenizer, references: list[Reference], before: list[float]
) -> list[dict]:
    """Score the tuned model, compare with `before`, print a line per reference; metrics.json rows."""
    after = measure(config, model, tokenizer, references)
    results = [change(ref, b, a) for ref, b, a in zip(references, before, after, strict=True)]
    for r in results:
        line = f"{r['name']}: {r['metric']} {r['before']:.4g} → {r['after']:.4g} ({relative(r['change'])})"
        if r["catastrophic"]:
            print(
                f"lmtune: WARNING: catastrophic forgetting on {line}, beyond the {r['threshold']:.0%} threshold",
                file=sys.stderr,
            )
        else:
            print(f"forgetting: {line}; threshold {r['threshold']:.0%}")
    return results


def change(reference: Reference, before: float, after: float) -> dict:
    """Relative change of the score; catastrophic when it worsens by more than the threshold."""
    delta = (after - before) / max(abs(before), 1e-12)
    worse = delta if reference.kind == "perplexity" else -delta  # perplexity: lower is better
    return {
        "name": reference.name,
        "kind": reference.kind,
        "metric": METRICS[reference.kind],
        "before": before,
        "after": after,
        "change": delta,
        "threshold": reference.threshold,
        "catastrophic": bool(worse > reference.threshold),
        "n": len(reference),
    }


def relative(change: float) -> str:
    """+12.5% or -6.2%; a change beyond +1000% (a wrecked model) as its factor, e.g. ×1.3e+05."""
    return f"{change:+.1%}" if abs(change) < 10 else f"×{1 + change:.3g}"


# ----------------------------------------------------------------------------------- report


def sections(results: list[dict]) -> list[tuple[str, str]]:
    """The report's "Forgetting" section: red banner lines for flagged references, a table, the bars."""
    if not results:
        return []
    alarms = "".join(
        f"<p style='color:#b00020;font-weight:bold'>Catastrophic forgetting on {html.escape(r['name'])}: "
        f"{r['metric']} {r['before']:.4g} → {r['after']:.4g} ({relative(r['change'])}, threshold "
        f"{r['threshold']:.0%})</p>"
        for r in results
        if r["catastrophic"]
    )
    note = (
        "<p>Reference data scored on the untuned model (before) and the tuned one (after). Perplexity up, "
        "or probe accuracy down, by more than the threshold (relative to before) counts as catastrophic "
        "forgetting.</p>"
    )
    header = ["reference", "kind", "metric", "before", "after", "change", "threshold", "rows", "verdict"]
    rows = [
        [
            r["name"],
            r["kind"],
            r["metric"],
            f"{r['before']:.4g}",
            f"{r['after']:.4g}",
            relative(r["change"]),
            f"{r['threshold']:.0%}",
            r["n"],
            "CATASTROPHIC" if r["catastrophic"] else "ok",
        ]
        for r in results
    ]
    return [("Forgetting", alarms + note + table(header, rows) + _bars(results))]


def _bars(results: list[dict]) -> str:
    """Before/after bars, one small panel per reference, red when flagged; perplexities that moved by more
    than 20x go on a log scale (a linear one would hide the smaller bar)."""
    fig, axes = subplots(1, len(results), figsize=(2.6 * len(results) + 0.6, 3.0), squeeze=False)
    for ax, r in zip(axes[0], results, strict=True):
        values = [r["before"], r["after"]]
        colours = ["tab:blue", "tab:red" if r["catastrophic"] else "tab:green"]
        if r["kind"] == "probe":
            ax.set_ylim(0, 1.1)
        elif max(values) > 20 * min(values):
            ax.set_yscale("log")
            ax.set_ylim(1, max(values) * 5)  # perplexity is at least 1: bars start there
        else:
            ax.set_ylim(0, max(values) * 1.15)
        ax.bar_label(ax.bar(["before", "after"], values, color=colours), fmt="%.4g", fontsize=8)
        ax.set_title(r["name"][:28], fontsize=9)
        ax.set_ylabel(r["metric"])
    fig.tight_layout()
    return png(fig)
