"""Text classification for any encoder AutoModelForSequenceClassification supports.

Baselines on the same test split: the untuned base (pre-trained body, fresh seeded head) and a
linear probe (logistic regression on the frozen body's mean-pooled embeddings): the honest
"existing model" a fine-tune must beat.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from lmtune.config import RunConfig, load_config
from lmtune.errors import LmtuneError
from lmtune.evaluate import checks, predictions
from lmtune.evaluate.metrics import classification_metrics, headline
from lmtune.evaluate.report import classification_sections
from lmtune.models.infer import infer_texts, logits_step
from lmtune.models.loss import classification_loss
from lmtune.tasks import components, encoder, multilabel
from lmtune.tasks.contract import Predictor, TrainResult
from lmtune.tasks.encoder import Rows
from lmtune.train import fit


@dataclass(kw_only=True)
class Prepared(encoder.Prepared):
    labels: list[str]  # the classes, sorted (their ids are the positions)


# ------------------------------------------------------------------------------------ data


def prepare(config: RunConfig) -> Prepared | multilabel.Prepared:
    if config.data.multi_label:  # a set of labels per row: its own recipe, under the same task name
        return multilabel.prepare(config)
    setup = encoder.setup(config, "labelled")
    train, validation, test = setup.splits()
    labels = sorted(set(train.labels))
    if len(labels) < 2:
        source = setup.sources["train"]
        raise LmtuneError(
            f"{source.paths[0]}: column '{source.label_column}' has one class ({labels[0]!r}); need ≥ 2"
        )
    references = checks.read(config, setup.tokenizer)  # a bad reference fails before the model loads
    model = encoder.with_head(config, setup.model_path, labels, setup.tokenizer)
    return Prepared.of(setup, model, (train, validation, test), references, labels=labels)


def _targets(rows: Rows, label2id: dict[str, int]) -> list[int]:
    return [label2id[label] for label in rows.labels]


# ------------------------------------------------------------------------------- inference


def linear_probe(config: RunConfig, model, prepared: Prepared, label2id: dict[str, int]) -> dict:
    """Logistic regression on the frozen body's mean-pooled embeddings: its test predictions."""
    train_x = encoder.embed(config, model, prepared.tokenizer, prepared.train, "probe: embed train")
    test_x = encoder.embed(config, model, prepared.tokenizer, prepared.test, "probe: embed test")
    probe = LogisticRegression(max_iter=2000, random_state=config.training.seed)
    probe.fit(train_x, _targets(prepared.train, label2id))
    probs = np.zeros((len(test_x), len(label2id)))
    probs[:, probe.classes_] = probe.predict_proba(test_x)  # a class train lacks keeps probability 0
    return {"y_pred": probs.argmax(-1), "probs": probs}


def infer(config: RunConfig, model, tokenizer, rows: Rows, desc: str) -> dict:
    """The model's predicted label ids and class probabilities for each row."""
    logits = infer_texts(config, model, tokenizer, rows.inputs, logits_step, desc)
    probs = torch.softmax(torch.from_numpy(logits).float(), -1).numpy()
    return {"y_pred": probs.argmax(-1), "probs": probs}


def prediction_block(rows: Rows, labels: list[str], outputs: dict[str, dict]) -> dict:
    """predictions.json's classify block: the rows' true label ids and each model's outputs."""
    label2id = {label: i for i, label in enumerate(labels)}
    truth = {"y_true": np.array(_targets(rows, label2id))}
    return predictions.kind_block(rows.where, truth, outputs)


def scores_of(config: RunConfig, block: dict, labels: list[str]) -> dict[str, dict]:
    """Every model's metrics with 95% intervals (seeded by the run), from its predictions block."""
    return {
        name: classification_metrics(
            block["truth"]["y_true"],
            out["y_pred"],
            labels,
            np.asarray(out["probs"]),
            seed=config.training.seed,
        )
        for name, out in block["models"].items()
    }


def _compute_metrics(labels: list[str]):
    def compute(eval_pred) -> dict:
        logits, label_ids = eval_pred.predictions, eval_pred.label_ids
        if isinstance(logits, tuple):
            logits = logits[0]
        return headline(classification_metrics(label_ids, np.argmax(logits, -1), labels, ci=False))

    return compute


# --------------------------------------------------------------------------------- training


def train(
    config: RunConfig, prepared: Prepared, run_dir: Path, resume: bool = False, callbacks: tuple = ()
) -> TrainResult:
    """Baselines, fine-tune, test, save model + metrics + report into run_dir; return metrics.

    `callbacks`: extra TrainerCallbacks (a search prunes trials through one)."""
    if isinstance(prepared, multilabel.Prepared):
        return multilabel.train(config, prepared, run_dir, resume, callbacks)
    encoder.begin(config, run_dir, prepared, resume)
    labels = prepared.labels
    label2id = {label: i for i, label in enumerate(labels)}
    tokenizer, model = prepared.tokenizer, prepared.model
    outputs = encoder.baselines(
        config,
        base=lambda: infer(config, model, tokenizer, prepared.test, "base: test"),
        probe=lambda: linear_probe(config, model, prepared, label2id),
    )
    before = checks.measure(config, model, tokenizer, prepared.references)  # the untuned body

    model, params = components.adapt(config, model)
    # else balance weights follow the class: the loss's class weights
    per_row = bool(config.data.weight_column)
    trainer, truncated = encoder.trainer(
        config,
        run_dir,
        prepared,
        model,
        lambda rows: _targets(rows, label2id),
        summary=f", {len(labels)} classes",
        compute_metrics=_compute_metrics(labels),
        loss=classification_loss(None if per_row else _class_weights(prepared.train, labels)),
        callbacks=callbacks,
        per_row=per_row,
    )
    history = fit(trainer, run_dir, resume)
    model = trainer.model

    outputs["tuned"] = infer(config, model, tokenizer, prepared.test, "tuned: test")
    audits = checks.compare(config, model, tokenizer, prepared.references, before)
    block = prediction_block(prepared.test, labels, outputs)
    results = scores_of(config, block, labels)
    predictions.save(run_dir, {"classify": block}, labels)
    encoder.save_model(config, prepared.model_path, model, tokenizer, run_dir / "model", labels)

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
        sections=classification_sections(results, labels, config.evaluation.metrics),
        own={"labels": labels},
        n_classes=len(labels),
    )


def _class_weights(rows: Rows, labels: list[str]) -> list[float] | None:
    """data.augment.balance = weights: each row's weight depends on its class only."""
    if rows.weights is None:
        return None
    by_label = dict(zip(rows.labels, rows.weights, strict=True))
    return [by_label[label] for label in labels]


# --------------------------------------------------------------------------- using a run


def load(run_dir: Path) -> Predictor:
    """A finished run's classifier (base + adapter, or full weights), tokenizer and labels."""
    if encoder.model_info(run_dir).get("multi_label"):
        return multilabel.load(run_dir)
    labels = json.loads((run_dir / "model" / "labels.json").read_text())
    config, model, tokenizer, info = encoder.open_run(run_dir, labels)
    return Predictor("classify", config, model, tokenizer, info, labels=labels, run_dir=run_dir)


def evaluate(run_dir: Path, data: str | None = None, **reader: str | None) -> dict:
    """Score a finished run (with 95% intervals) on its own test split, or on any labelled file.

    `reader` (text_column, label_column, separator, encoding) overrides how `data` is read; by
    default it is read like the user files of the run (same columns, suffix-based format).
    """
    if encoder.model_info(run_dir).get("multi_label"):
        return multilabel.evaluate(run_dir, data, **reader)
    saved = predictions_on(run_dir, data, **reader)
    config = load_config(run_dir / "config.yaml")
    return scores_of(config, saved["kinds"]["classify"], saved["labels"])["tuned"]


def predictions_on(run_dir: Path, data: str | None = None, *, base: bool = False, **reader) -> dict:
    """The run's (and with `base`, the untuned base model's) predictions on its test split or a file,
    in predictions.json's form: what `lmtune compare --data` pairs between runs."""
    if encoder.model_info(run_dir).get("multi_label"):
        return multilabel.predictions_on(run_dir, data, base=base, **reader)
    run = load(run_dir)
    config, model, tokenizer, labels = run.config, run.model, run.tokenizer, run.labels
    rows = encoder.rows_to_score(run_dir, config, tokenizer, data, "labelled", reader)
    known = set(labels)
    for label, where in zip(rows.labels, rows.where, strict=True):
        if label not in known:
            raise LmtuneError(
                f"{where}: label {label!r} is unknown to this model; its labels: {', '.join(labels)}"
            )
    outputs = {"tuned": infer(config, model, tokenizer, rows, "eval")}
    if base:
        untuned = encoder.base_model(run.info, config, labels, tokenizer)
        outputs = {"base": infer(config, untuned, tokenizer, rows, "base"), **outputs}
    return {"labels": labels, "kinds": {"classify": prediction_block(rows, labels, outputs)}}


def predict(run_dir: Path, texts: list) -> list[dict]:
    """Label and class probabilities for each text (a pair run: each a (first, second) pair or
    'first<TAB>second')."""
    return predict_with(load(run_dir), texts)


def predict_with(run: Predictor, texts: list) -> list[dict]:
    if run.info.get("multi_label"):
        return multilabel.predict_with(run, texts)
    labels = run.labels
    inputs = encoder.inputs_of(run.config, texts)
    logits = infer_texts(run.config, run.model, run.tokenizer, inputs, logits_step, "predict")
    probs = torch.softmax(torch.from_numpy(logits), -1).numpy()
    return [
        {
            **encoder.shown(item),
            "label": labels[int(p.argmax())],
            "score": float(p.max()),
            "scores": dict(zip(labels, map(float, p), strict=True)),
        }
        for item, p in zip(inputs, probs, strict=True)
    ]
