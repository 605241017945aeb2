"""Multi-label classification (task classify with data.multi_label): every text (or sentence pair) has a
set of labels — possibly none — and the model says yes or no to each (sigmoid outputs, binary
cross-entropy).

A label is predicted when its probability reaches its own threshold, tuned on the validation split to
that label's best F1 (thresholds from 0.05 to 0.95 by 0.05; a label validation never shows keeps 0.5);
the thresholds are saved with the model and reported. Baselines on the same test split: the untuned base
(fresh seeded head, thresholds 0.5) and a probe (one logistic regression per label on the frozen body's
mean-pooled embeddings, its thresholds tuned on validation the same way).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier

from lmtune.config import RunConfig, load_config
from lmtune.errors import LmtuneError
from lmtune.evaluate import checks, predictions
from lmtune.evaluate.metrics import score
from lmtune.evaluate.report import multilabel_sections
from lmtune.models.infer import infer_texts, logits_step
from lmtune.models.loss import multi_label_loss
from lmtune.tasks import MULTI_LABEL, components, encoder
from lmtune.tasks.contract import Predictor, TrainResult
from lmtune.tasks.encoder import Rows
from lmtune.tasks.multilabel_measures import per_label
from lmtune.train import fit

HEAD = {"problem_type": "multi_label_classification"}
GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)  # the thresholds tried per label
DEFAULT = 0.5


@dataclass(kw_only=True)
class Prepared(encoder.Prepared):
    labels: list[str]  # every label the training rows carry, sorted (their ids are the positions)


def sets(rows: Rows) -> list[list[str]]:
    """Each row's labels (the pipeline stores them as a sorted JSON list)."""
    return [json.loads(text) for text in rows.labels]


def multi_hot(rows: Rows, labels: list[str]) -> np.ndarray:
    index = {label: i for i, label in enumerate(labels)}
    hot = np.zeros((len(rows), len(labels)), dtype=np.float32)
    for i, names in enumerate(sets(rows)):
        hot[i, [index[name] for name in names]] = 1
    return hot


def prepare(config: RunConfig) -> Prepared:
    setup = encoder.setup(config, "multilabel")
    train, validation, test = setup.splits()
    labels = sorted({label for names in sets(train) for label in names})
    if not labels:
        source = setup.sources["train"]
        raise LmtuneError(
            f"{source.paths[0]}: column '{source.label_column}' holds no label in any training row"
        )
    references = checks.read(config, setup.tokenizer)
    model = encoder.with_head(config, setup.model_path, labels, setup.tokenizer, **HEAD)
    return Prepared.of(setup, model, (train, validation, test), references, labels=labels)


# ------------------------------------------------------------------------------- inference


def probabilities(config: RunConfig, model, tokenizer, rows: Rows, desc: str) -> np.ndarray:
    """(rows, labels): each label's sigmoid probability."""
    logits = infer_texts(config, model, tokenizer, rows.inputs, logits_step, desc)
    return torch.sigmoid(torch.from_numpy(logits).float()).numpy()


def tune_thresholds(truth: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Per label, the GRID threshold with the best F1 on these rows (ties: the one nearest 0.5); a label
    with no true row here keeps 0.5 (its F1 is 0 at every threshold)."""
    chosen = np.full(truth.shape[1], DEFAULT)
    decided = probs[:, :, None] >= GRID  # (rows, labels, thresholds)
    y = truth[:, :, None].astype(bool)
    tp, fp, fn = (decided & y).sum(0), (decided & ~y).sum(0), (~decided & y).sum(0)
    f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
    for j in np.flatnonzero(truth.sum(0) > 0):
        best = np.flatnonzero(np.isclose(f1[j], f1[j].max()))
        chosen[j] = GRID[best[np.argmin(np.abs(GRID[best] - DEFAULT))]]
    return chosen


def outputs_of(probs: np.ndarray, thresholds: np.ndarray) -> dict:
    return {"y_pred": (probs >= thresholds).astype(np.int8), "probs": probs}


def linear_probe(config: RunConfig, model, prepared: Prepared) -> tuple[dict, np.ndarray]:
    """One logistic regression per label on the frozen body's embeddings: its test outputs and thresholds."""
    embed = {
        name: encoder.embed(
            config, model, prepared.tokenizer, getattr(prepared, name), f"probe: embed {name}"
        )
        for name in ("train", "validation", "test")
        if len(getattr(prepared, name))
    }
    probe = OneVsRestClassifier(LogisticRegression(max_iter=2000, random_state=config.training.seed))
    probe.fit(embed["train"], multi_hot(prepared.train, prepared.labels))
    thresholds = np.full(len(prepared.labels), DEFAULT)
    if "validation" in embed:
        truth = multi_hot(prepared.validation, prepared.labels)
        thresholds = tune_thresholds(truth, probe.predict_proba(embed["validation"]))
    return outputs_of(probe.predict_proba(embed["test"]), thresholds), thresholds


def prediction_block(rows: Rows, labels: list[str], outputs: dict[str, dict]) -> dict:
    """predictions.json's multilabel block: the rows' true label sets (multi-hot) and each model's outputs."""
    return predictions.kind_block(rows.where, {"y_true": multi_hot(rows, labels).astype(np.int8)}, outputs)


def scores_of(config: RunConfig, block: dict, labels: list[str], thresholds: dict[str, dict] | None = None):
    """Every model's scores with 95% intervals, its per-label table (with its thresholds when known)."""
    results = {}
    for name, out in block["models"].items():
        result = score("multilabel", {**block["truth"], **out}, seed=config.training.seed)
        result["per_label"] = per_label(block["truth"]["y_true"], out["y_pred"], labels)
        for label, threshold in (thresholds or {}).get(name, {}).items():
            result["per_label"][label]["threshold"] = threshold
        results[name] = result
    return results


def _compute_metrics(labels: list[str]):
    """Validation scores at thresholds tuned on validation itself: what the finished run will use, so the
    best checkpoint is the best after tuning (at fixed 0.5 a model that is still calibrating its sigmoids
    looks worse than one predicting every label, and early stopping would end it)."""
    names = [m for m in MULTI_LABEL.metrics if m != "loss"]

    def compute(eval_pred) -> dict:
        logits = (
            eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
        )
        probs = torch.sigmoid(torch.from_numpy(np.asarray(logits)).float()).numpy()
        truth = np.asarray(eval_pred.label_ids).astype(np.int8)
        decided = outputs_of(probs, tune_thresholds(truth, probs))["y_pred"]
        scored = score("multilabel", {"y_true": truth, "y_pred": decided}, names, ci=False)
        return {name: scored[name] for name in names}

    return compute


# --------------------------------------------------------------------------------- training


def train(
    config: RunConfig, prepared: Prepared, run_dir: Path, resume: bool = False, callbacks: tuple = ()
) -> TrainResult:
    """Baselines, fine-tune, tune thresholds on validation, test, save model + metrics + report."""
    encoder.begin(config, run_dir, prepared, resume)
    labels, tokenizer, model = prepared.labels, prepared.tokenizer, prepared.model
    k = len(labels)
    outputs: dict[str, dict] = {}
    thresholds: dict[str, np.ndarray] = {}
    if "base" in config.evaluation.baselines:
        thresholds["base"] = np.full(k, DEFAULT)
        outputs["base"] = outputs_of(
            probabilities(config, model, tokenizer, prepared.test, "base: test"), thresholds["base"]
        )
    if "probe" in config.evaluation.baselines:
        outputs["probe"], thresholds["probe"] = linear_probe(config, model, prepared)
    before = checks.measure(config, model, tokenizer, prepared.references)

    model, params = components.adapt(config, model)
    trainer, truncated = encoder.trainer(
        config,
        run_dir,
        prepared,
        model,
        lambda rows: multi_hot(rows, labels).tolist(),
        summary=f", {k} labels",
        compute_metrics=_compute_metrics(labels),
        loss=multi_label_loss(),
        callbacks=callbacks,
        per_row=bool(config.data.weight_column),
    )
    history = fit(trainer, run_dir, resume)
    model = trainer.model
    validation = prepared.validation

    thresholds["tuned"] = np.full(k, DEFAULT)
    if len(validation):
        probs = probabilities(config, model, tokenizer, validation, "tuned: thresholds on validation")
        thresholds["tuned"] = tune_thresholds(multi_hot(validation, labels), probs)
    outputs["tuned"] = outputs_of(
        probabilities(config, model, tokenizer, prepared.test, "tuned: test"), thresholds["tuned"]
    )
    audits = checks.compare(config, model, tokenizer, prepared.references, before)
    block = prediction_block(prepared.test, labels, outputs)
    by_label = {name: dict(zip(labels, map(float, t), strict=True)) for name, t in thresholds.items()}
    results = scores_of(config, block, labels, by_label)
    predictions.save(run_dir, {"multilabel": block}, labels)
    encoder.save_model(
        config,
        prepared.model_path,
        model,
        tokenizer,
        run_dir / "model",
        labels,
        multi_label=True,
        thresholds=by_label["tuned"],
    )
    return encoder.finish(
        config,
        run_dir,
        prepared,
        trainer,
        history,
        results,
        params,
        audits,
        truncated,
        sections=multilabel_sections(results, config.evaluation.metrics),
        own={"labels": labels, "thresholds": by_label["tuned"]},
        facts={
            "labels": f"{k} ({'tuned on validation' if len(validation) else 'no validation: all 0.5'} thresholds)"
        },
    )


# --------------------------------------------------------------------------- using a run


def load(run_dir: Path) -> Predictor:
    """A finished run's multi-label classifier, tokenizer, labels and per-label thresholds (in info)."""
    labels = json.loads((run_dir / "model" / "labels.json").read_text())
    config, model, tokenizer, info = encoder.open_run(run_dir, labels, **HEAD)
    return Predictor("classify", config, model, tokenizer, info, labels=labels, run_dir=run_dir)


def _thresholds(run: Predictor) -> np.ndarray:
    return np.array([run.info["thresholds"][label] for label in run.labels])


def evaluate(run_dir: Path, data: str | None = None, **reader: str | None) -> dict:
    saved = predictions_on(run_dir, data, **reader)
    return scores_of(load_config(run_dir / "config.yaml"), saved["kinds"]["multilabel"], saved["labels"])[
        "tuned"
    ]


def predictions_on(run_dir: Path, data: str | None = None, *, base: bool = False, **reader) -> dict:
    """The run's (and with `base`, the untuned base's, at thresholds 0.5) outputs on its test split or a file."""
    run = load(run_dir)
    config, tokenizer, labels = run.config, run.tokenizer, run.labels
    rows = encoder.rows_to_score(run_dir, config, tokenizer, data, "multilabel", reader)
    known = set(labels)
    for names, where in zip(sets(rows), rows.where, strict=True):
        if unknown := [name for name in names if name not in known]:
            raise LmtuneError(
                f"{where}: label {unknown[0]!r} is unknown to this model; its labels: {', '.join(labels)}"
            )
    outputs = {
        "tuned": outputs_of(probabilities(config, run.model, tokenizer, rows, "eval"), _thresholds(run))
    }
    if base:
        untuned = encoder.base_model(run.info, config, labels, tokenizer, **HEAD)
        outputs = {
            "base": outputs_of(
                probabilities(config, untuned, tokenizer, rows, "base"), np.full(len(labels), DEFAULT)
            ),
            **outputs,
        }
    return {"labels": labels, "kinds": {"multilabel": prediction_block(rows, labels, outputs)}}


def predict_with(run: Predictor, texts: list) -> list[dict]:
    """Every label whose probability reaches its threshold, and each label's probability."""
    inputs = encoder.inputs_of(run.config, texts)
    logits = infer_texts(run.config, run.model, run.tokenizer, inputs, logits_step, "predict")
    probs = torch.sigmoid(torch.from_numpy(logits).float()).numpy()
    thresholds = _thresholds(run)
    return [
        {
            **encoder.shown(item),
            "labels": [label for label, p, t in zip(run.labels, row, thresholds, strict=True) if p >= t],
            "scores": dict(zip(run.labels, map(float, row), strict=True)),
        }
        for item, row in zip(inputs, probs, strict=True)
    ]
