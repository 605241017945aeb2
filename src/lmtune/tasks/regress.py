"""Regression: a number per text or sentence pair (a similarity score, a rating) from any encoder
AutoModelForSequenceClassification supports, with a one-output head (problem_type "regression").

Trained on the standardised target (regress.standardize: (y − mean) / sd of the training targets, so a
fresh head starts at the mean and the loss has one scale for every range); every score and prediction
is in the target's own units. Baselines on the same test split: the untuned base (pre-trained body,
fresh seeded head) and a probe (ridge regression, its strength chosen by cross-validation, on the frozen
body's standardised mean-pooled embeddings).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.linear_model import RidgeCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from lmtune.config import RunConfig, load_config
from lmtune.errors import LmtuneError
from lmtune.evaluate import checks, predictions
from lmtune.evaluate.metrics import score
from lmtune.evaluate.report import regression_sections
from lmtune.models.infer import infer_texts, logits_step
from lmtune.models.loss import regression_loss
from lmtune.tasks import TASKS, components, encoder
from lmtune.tasks.contract import Predictor, TrainResult
from lmtune.tasks.encoder import Rows
from lmtune.train import fit

HEAD = {"problem_type": "regression"}


@dataclass(frozen=True)
class Target:
    """The target's column and the mean and sd the head learns it in (saved in lmtune_model.json)."""

    column: str
    mean: float
    sd: float

    def scaled(self, rows: Rows) -> list[float]:
        return [(float(v) - self.mean) / self.sd for v in rows.labels]

    def units(self, outputs: np.ndarray) -> np.ndarray:
        return np.asarray(outputs, dtype=np.float64).reshape(len(outputs), -1)[:, 0] * self.sd + self.mean


@dataclass(kw_only=True)
class Prepared(encoder.Prepared):
    target: Target  # the column, mean and sd of the target


def prepare(config: RunConfig) -> Prepared:
    setup = encoder.setup(config, "numeric")
    train, validation, test = setup.splits()
    values = np.asarray(train.labels, dtype=np.float64)
    source = setup.sources["train"]
    if len(values) < 2 or values.std() == 0:
        raise LmtuneError(
            f"{source.paths[0]}: column '{source.label_column}' has "
            + (f"one value ({values[0]:g}) in every training row" if len(values) else "no training rows")
            + "; a regression needs a target that varies"
        )
    standardize = config.regress.standardize
    target = Target(
        source.label_column,
        float(values.mean()) if standardize else 0.0,
        float(values.std()) if standardize else 1.0,
    )
    references = checks.read(config, setup.tokenizer)
    model = encoder.with_head(config, setup.model_path, [target.column], setup.tokenizer, **HEAD)
    return Prepared.of(setup, model, (train, validation, test), references, target=target)


# ------------------------------------------------------------------------------- inference


def infer(config: RunConfig, model, tokenizer, rows: Rows, target: Target, desc: str) -> dict:
    """The model's prediction for each row, in the target's units."""
    return {"y_pred": target.units(infer_texts(config, model, tokenizer, rows.inputs, logits_step, desc))}


def ridge_probe(config: RunConfig, model, prepared: Prepared) -> dict:
    """Ridge regression (strength by leave-one-out cross-validation) on the frozen body's standardised
    mean-pooled embeddings: its test predictions."""
    train_x = encoder.embed(config, model, prepared.tokenizer, prepared.train, "probe: embed train")
    test_x = encoder.embed(config, model, prepared.tokenizer, prepared.test, "probe: embed test")
    probe = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 4, 13)))
    probe.fit(train_x, np.asarray(prepared.train.labels, dtype=np.float64))
    return {"y_pred": probe.predict(test_x)}


def prediction_block(rows: Rows, outputs: dict[str, dict]) -> dict:
    """predictions.json's regress block: the rows' true targets and each model's predictions."""
    truth = {"y_true": np.asarray(rows.labels, dtype=np.float64)}
    return predictions.kind_block(rows.where, truth, outputs)


def scores_of(config: RunConfig, block: dict) -> dict[str, dict]:
    """Every model's errors and correlations with 95% intervals (seeded by the run)."""
    return {
        name: score("regress", {**block["truth"], **out}, seed=config.training.seed)
        for name, out in block["models"].items()
    }


def _compute_metrics(target: Target):
    names = [m for m in TASKS["regress"].metrics if m != "loss"]

    def compute(eval_pred) -> dict:
        outputs = (
            eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
        )
        truth = target.units(eval_pred.label_ids)
        scored = score("regress", {"y_true": truth, "y_pred": target.units(outputs)}, names, ci=False)
        return {name: float("nan") if scored[name] is None else scored[name] for name in names}

    return compute


# --------------------------------------------------------------------------------- training


def train(
    config: RunConfig, prepared: Prepared, run_dir: Path, resume: bool = False, callbacks: tuple = ()
) -> TrainResult:
    """Baselines, fine-tune, test, save model + metrics + report into run_dir; return metrics."""
    encoder.begin(config, run_dir, prepared, resume)
    target, tokenizer, model = prepared.target, prepared.tokenizer, prepared.model
    outputs = encoder.baselines(
        config,
        base=lambda: infer(config, model, tokenizer, prepared.test, target, "base: test"),
        probe=lambda: ridge_probe(config, model, prepared),
    )
    before = checks.measure(config, model, tokenizer, prepared.references)

    model, params = components.adapt(config, model)
    spread = f"target '{target.column}' mean {target.mean:.4g}, sd {target.sd:.4g}"
    trainer, truncated = encoder.trainer(
        config,
        run_dir,
        prepared,
        model,
        target.scaled,
        summary=f"; {spread}",
        compute_metrics=_compute_metrics(target),
        loss=regression_loss(config.regress.loss, config.regress.huber_delta),
        callbacks=callbacks,
        per_row=bool(config.data.weight_column),
    )
    history = fit(trainer, run_dir, resume)
    model = trainer.model

    outputs["tuned"] = infer(config, model, tokenizer, prepared.test, target, "tuned: test")
    audits = checks.compare(config, model, tokenizer, prepared.references, before)
    block = prediction_block(prepared.test, outputs)
    results = scores_of(config, block)
    predictions.save(run_dir, {"regress": block})
    encoder.save_model(config, prepared.model_path, model, tokenizer, run_dir / "model", target=vars(target))

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
        sections=regression_sections(results, block, config.evaluation.metrics),
        own={"target": vars(target)},
        facts={"target": f"{spread} ({config.regress.loss} loss)"},
    )


# --------------------------------------------------------------------------- using a run


def _target(info: dict) -> Target:
    return Target(**info["target"])


def load(run_dir: Path) -> Predictor:
    """A finished run's regressor (base + adapter, or full weights) and tokenizer; its target in info."""
    info = encoder.model_info(run_dir)
    config, model, tokenizer, info = encoder.open_run(run_dir, [info["target"]["column"]], **HEAD)
    return Predictor("regress", config, model, tokenizer, info, run_dir=run_dir)


def evaluate(run_dir: Path, data: str | None = None, **reader: str | None) -> dict:
    """Score a finished run (with 95% intervals) on its own test split, or on any file with the target."""
    saved = predictions_on(run_dir, data, **reader)
    return scores_of(load_config(run_dir / "config.yaml"), saved["kinds"]["regress"])["tuned"]


def predictions_on(run_dir: Path, data: str | None = None, *, base: bool = False, **reader) -> dict:
    """The run's (and with `base`, the untuned base model's) predictions on its test split or a file,
    in predictions.json's form: what `lmtune compare --data` pairs between runs."""
    run = load(run_dir)
    config, tokenizer, target = run.config, run.tokenizer, _target(run.info)
    rows = encoder.rows_to_score(run_dir, config, tokenizer, data, "numeric", reader)
    outputs = {"tuned": infer(config, run.model, tokenizer, rows, target, "eval")}
    if base:
        untuned = encoder.base_model(run.info, config, [target.column], tokenizer, **HEAD)
        outputs = {"base": infer(config, untuned, tokenizer, rows, target, "base"), **outputs}
    return {"labels": None, "kinds": {"regress": prediction_block(rows, outputs)}}


def predict(run_dir: Path, texts: list) -> list[dict]:
    """The predicted number for each text (a pair run: each a (first, second) pair or 'first<TAB>second')."""
    return predict_with(load(run_dir), texts)


def predict_with(run: Predictor, texts: list) -> list[dict]:
    inputs = encoder.inputs_of(run.config, texts)
    logits = infer_texts(run.config, run.model, run.tokenizer, inputs, logits_step, "predict")
    values = _target(run.info).units(logits)
    return [
        {**encoder.shown(item), "score": float(value)} for item, value in zip(inputs, values, strict=True)
    ]
