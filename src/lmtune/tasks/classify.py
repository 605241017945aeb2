"""Text classification for any encoder AutoModelForSequenceClassification supports.

Baselines on the same test split: the untuned base (pre-trained body, fresh seeded head) and a
linear probe (logistic regression on the frozen body's mean-pooled embeddings): the honest
"existing model" a fine-tune must beat.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from sklearn.linear_model import LogisticRegression
from transformers import DataCollatorWithPadding, set_seed

from lmtune import assets
from lmtune.config import RunConfig, load_config
from lmtune.data.pipeline import plan, prepare_data, read_file
from lmtune.data.report import data_sections
from lmtune.data.rows import write_jsonl
from lmtune.errors import LmtuneError
from lmtune.evaluate import checks, predictions
from lmtune.evaluate.metrics import classification_metrics, headline
from lmtune.evaluate.report import classification_sections
from lmtune.models.infer import infer_texts, logits_step, mean_pooled_step
from lmtune.models.load import load_classifier, load_tokenizer, position_limit
from lmtune.models.loss import classification_loss
from lmtune.models.methods import load_options
from lmtune.models.precision import inference_precision
from lmtune.models.weights import load_weights, save_weights
from lmtune.runs import model_meta
from lmtune.tasks import components
from lmtune.tasks.contract import Predictor, TrainResult
from lmtune.train import build_trainer, check_setup, fit


@dataclass
class Rows:
    """Texts and string labels of one split, with the place each row came from."""

    texts: list[str]
    labels: list[str]
    where: list[str]
    weights: list[float] | None = None  # per-row loss weights (data.weight_column × data.augment.balance)

    def __len__(self) -> int:
        return len(self.texts)

    @classmethod
    def of(cls, rows) -> Rows:
        """From pipeline rows (a Dataset or a list of dicts)."""
        rows = rows if isinstance(rows, list) else rows.to_list()
        weights = [row.get("weight") for row in rows]
        weights = [1.0 if w is None else w for w in weights] if any(w is not None for w in weights) else None
        where = [r.get("where", f"row {i}") for i, r in enumerate(rows, 1)]
        return cls([r["text"] for r in rows], [r["label"] for r in rows], where, weights)


@dataclass
class Prepared:
    """Everything a run needs, read and validated before any run directory is created."""

    model_path: Path | str
    tokenizer: object
    model: object  # loaded here so that a broken model fails before a run directory exists
    labels: list[str]
    train: Rows
    validation: Rows
    test: Rows
    data_report: dict
    saved: dict  # the prepared rows (Datasets), written to the run's data/ folder
    references: dict = field(default_factory=dict)  # each audit check's references, read and checked


# ------------------------------------------------------------------------------------ data


def prepare(config: RunConfig) -> Prepared:
    check_setup(config)  # an impossible precision or a missing tracker fails before any work
    inputs = plan(config)  # a missing file fails before any model is touched
    model_path = assets.resolve_model(config.model.name)
    trusted = config.model.trust_remote_code
    tokenizer = load_tokenizer(model_path, trusted)
    limit = position_limit(model_path, tokenizer, trusted)
    if limit is not None and config.model.max_length > limit:
        raise LmtuneError(
            f"model.max_length = {config.model.max_length}: the model reads at most {limit} tokens; allowed: 4..{limit}"
        )
    data = prepare_data(config, "labelled", tokenizer, inputs)
    train, validation, test = (Rows.of(data.splits[name]) for name in ("train", "validation", "test"))
    labels = sorted(set(train.labels))
    if len(labels) < 2:
        source = inputs["train"]
        raise LmtuneError(
            f"{source.paths[0]}: column '{source.label_column}' has one class ({labels[0]!r}); need ≥ 2"
        )
    references = checks.read(config, tokenizer)  # a bad reference fails before the model loads
    set_seed(config.training.seed)  # the new classification head is initialised from the seed
    model = load_classifier(
        model_path,
        labels,
        attn_implementation=config.model.attn_implementation,
        dropout=config.model.dropout,
        pad_token_id=tokenizer.pad_token_id,
        trust_remote_code=trusted,
        **load_options(config.method),
    )
    return Prepared(
        model_path, tokenizer, model, labels, train, validation, test, data.report, data.splits, references
    )


def tokenized(
    rows: Rows,
    tokenizer,
    max_length: int,
    label2id: dict[str, int],
    *,
    by_length: bool = False,
    weights: bool = False,
) -> Dataset:
    """Token ids, labels and lengths (and with `weights`, the rows' loss weights where they carry any);
    evaluation sets are sorted by length to cut padding."""
    encoded = tokenizer(rows.texts, truncation=True, max_length=max_length)
    data = {
        "input_ids": encoded["input_ids"],
        "attention_mask": encoded["attention_mask"],
        "labels": [label2id[label] for label in rows.labels],
        "length": [len(ids) for ids in encoded["input_ids"]],
    }
    if "token_type_ids" in encoded:
        data["token_type_ids"] = encoded["token_type_ids"]
    if weights and rows.weights is not None:
        data["weight"] = rows.weights
    dataset = Dataset.from_dict(data)
    return dataset.select(np.argsort(data["length"], kind="stable")) if by_length else dataset


def count_truncated(texts: list[str], lengths: list[int], tokenizer, max_length: int) -> int:
    """Texts that lost tokens to max_length (those at the limit are re-counted without truncation)."""
    at_limit = [text for text, length in zip(texts, lengths, strict=True) if length >= max_length]
    if not at_limit:
        return 0
    return sum(len(ids) > max_length for ids in tokenizer(at_limit)["input_ids"])


# ------------------------------------------------------------------------------- inference


def linear_probe(config: RunConfig, model, prepared: Prepared, label2id: dict[str, int]) -> dict:
    """Logistic regression on the frozen body's mean-pooled embeddings: its test predictions."""
    train_x = infer_texts(
        config, model, prepared.tokenizer, prepared.train.texts, mean_pooled_step, "probe: embed train"
    )
    test_x = infer_texts(
        config, model, prepared.tokenizer, prepared.test.texts, mean_pooled_step, "probe: embed test"
    )
    probe = LogisticRegression(max_iter=2000, random_state=config.training.seed)
    probe.fit(train_x, [label2id[label] for label in prepared.train.labels])
    probs = np.zeros((len(test_x), len(label2id)))
    probs[:, probe.classes_] = probe.predict_proba(test_x)  # a class train lacks keeps probability 0
    return {"y_pred": probs.argmax(-1), "probs": probs}


def infer(config: RunConfig, model, tokenizer, rows: Rows, desc: str) -> dict:
    """The model's predicted label ids and class probabilities for each row."""
    logits = infer_texts(config, model, tokenizer, rows.texts, logits_step, desc)
    probs = torch.softmax(torch.from_numpy(logits).float(), -1).numpy()
    return {"y_pred": probs.argmax(-1), "probs": probs}


def prediction_block(rows: Rows, labels: list[str], outputs: dict[str, dict]) -> dict:
    """predictions.json's classify block: the rows' true label ids and each model's outputs."""
    label2id = {label: i for i, label in enumerate(labels)}
    truth = {"y_true": np.array([label2id[label] for label in rows.labels])}
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


def _save_splits(prepared: Prepared, folder: Path) -> None:
    folder.mkdir(exist_ok=True)
    for name, rows in prepared.saved.items():
        write_jsonl(rows, folder / f"{name}.jsonl")


def train(
    config: RunConfig, prepared: Prepared, run_dir: Path, resume: bool = False, callbacks: tuple = ()
) -> TrainResult:
    """Baselines, fine-tune, test, save model + metrics + report into run_dir; return metrics.

    `callbacks`: extra TrainerCallbacks (a search prunes trials through one)."""
    components.begin(config, run_dir, resume)
    _save_splits(prepared, run_dir / "data")
    labels = prepared.labels
    label2id = {label: i for i, label in enumerate(labels)}
    tokenizer, model = prepared.tokenizer, prepared.model
    outputs: dict[str, dict] = {}
    if "base" in config.evaluation.baselines:
        outputs["base"] = infer(config, model, tokenizer, prepared.test, "base: test")
    if "probe" in config.evaluation.baselines:
        outputs["probe"] = linear_probe(config, model, prepared, label2id)
    before = checks.measure(config, model, tokenizer, prepared.references)  # the untuned body

    model, params = components.adapt(config, model)
    max_length = config.model.max_length
    per_row = bool(
        config.data.weight_column
    )  # else balance weights follow the class: the loss's class weights
    train_dataset = tokenized(prepared.train, tokenizer, max_length, label2id, weights=per_row)
    truncated = count_truncated(prepared.train.texts, train_dataset["length"], tokenizer, max_length)
    print(
        f"data: {len(prepared.train)} train / {len(prepared.validation)} validation / {len(prepared.test)} test rows, "
        f"{len(labels)} classes; {truncated} training texts cut to model.max_length={max_length}"
    )
    trainer = build_trainer(
        config,
        run_dir,
        model=model,
        tokenizer=tokenizer,
        train_dataset=train_dataset,
        eval_dataset=tokenized(prepared.validation, tokenizer, max_length, label2id, by_length=True)
        if len(prepared.validation)
        else None,
        collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=_compute_metrics(labels),
        loss=classification_loss(None if per_row else _class_weights(prepared.train, labels)),
        callbacks=callbacks,
    )
    history = fit(trainer, run_dir, resume)
    model = trainer.model

    outputs["tuned"] = infer(config, model, tokenizer, prepared.test, "tuned: test")
    audits = checks.compare(config, model, tokenizer, prepared.references, before)
    block = prediction_block(prepared.test, labels, outputs)
    results = scores_of(config, block, labels)
    predictions.save(run_dir, {"classify": block}, labels)
    _save_model(config, prepared.model_path, model, tokenizer, labels, run_dir / "model")

    rows = {name: len(getattr(prepared, name)) for name in ("train", "validation", "test")}
    metrics = components.result(trainer, history, results, params, rows, audits)
    metrics.update(truncated_train_texts=truncated, labels=labels)
    return components.finish(
        config,
        run_dir,
        metrics,
        prepared.data_report,
        sections=classification_sections(results, labels, config.evaluation.metrics)
        + checks.sections(audits)
        + data_sections(prepared.data_report),
        history=history,
        metric=config.evaluation.metric,
        n_classes=len(labels),
        facts={
            "task": "classify",
            "model": config.model.name,
            "method": f"{config.method.name} ({params[0]:,} / {params[1]:,} trainable)",
            "rows (train / validation / test)": " / ".join(str(v) for v in rows.values()),
            "training texts truncated": f"{truncated} (model.max_length = {max_length})",
            "steps": metrics["steps"],
            "precision": inference_precision(config, model),
            "train samples/s": f"{metrics['train_samples_per_second'] or 0:.1f}",
        },
    )


def _class_weights(rows: Rows, labels: list[str]) -> list[float] | None:
    """data.augment.balance = weights: each row's weight depends on its class only."""
    if rows.weights is None:
        return None
    by_label = dict(zip(rows.labels, rows.weights, strict=True))
    return [by_label[label] for label in labels]


def _save_model(config: RunConfig, base_path, model, tokenizer, labels: list[str], folder: Path) -> None:
    save_weights(model, folder)
    tokenizer.save_pretrained(folder)
    (folder / "labels.json").write_text(json.dumps(labels, ensure_ascii=False))
    (folder / "lmtune_model.json").write_text(json.dumps(model_meta(config, base_path, folder), indent=2))


# --------------------------------------------------------------------------- using a run


def load(run_dir: Path) -> Predictor:
    """A finished run's classifier (base + adapter, or full weights), tokenizer and labels."""
    config = load_config(run_dir / "config.yaml")
    folder = run_dir / "model"
    info = _model_info(run_dir)
    labels = json.loads((folder / "labels.json").read_text())
    trusted = config.model.trust_remote_code
    tokenizer = load_tokenizer(folder, trusted)
    if info["adapter"]:
        model = load_weights(base_model(info, config, labels, tokenizer), folder)
    else:
        attn = info["attn_implementation"]
        model = load_classifier(folder, labels, attn_implementation=attn, trust_remote_code=trusted)
    return Predictor("classify", config, model, tokenizer, info, labels=labels, run_dir=run_dir)


def evaluate(run_dir: Path, data: str | None = None, **reader: str | None) -> dict:
    """Score a finished run (with 95% intervals) on its own test split, or on any labelled file.

    `reader` (text_column, label_column, separator, encoding) overrides how `data` is read; by
    default it is read like the user files of the run (same columns, suffix-based format).
    """
    saved = predictions_on(run_dir, data, **reader)
    config = load_config(run_dir / "config.yaml")
    return scores_of(config, saved["kinds"]["classify"], saved["labels"])["tuned"]


def predictions_on(run_dir: Path, data: str | None = None, *, base: bool = False, **reader) -> dict:
    """The run's (and with `base`, the untuned base model's) predictions on its test split or a file,
    in predictions.json's form: what `lmtune compare --data` pairs between runs."""
    run = load(run_dir)
    config, model, tokenizer, labels = run.config, run.model, run.tokenizer, run.labels
    if data is None:
        rows = Rows.of(_saved_test_rows(run_dir))
    else:
        rows = Rows.of(read_file(config, data, "labelled", tokenizer, reader))
    known = set(labels)
    for label, where in zip(rows.labels, rows.where, strict=True):
        if label not in known:
            raise LmtuneError(
                f"{where}: label {label!r} is unknown to this model; its labels: {', '.join(labels)}"
            )
    outputs = {"tuned": infer(config, model, tokenizer, rows, "eval")}
    if base:
        outputs = {
            "base": infer(
                config, base_model(_model_info(run_dir), config, labels, tokenizer), tokenizer, rows, "base"
            ),
            **outputs,
        }
    return {"labels": labels, "kinds": {"classify": prediction_block(rows, labels, outputs)}}


def _saved_test_rows(run_dir: Path) -> list[dict]:
    """The run's own test split as it saved it (data/test.jsonl)."""
    saved = run_dir / "data" / "test.jsonl"
    try:
        rows = [json.loads(line) for line in saved.read_text(encoding="utf-8").splitlines() if line]
        if all(
            isinstance(r, dict) and isinstance(r["text"], str) and isinstance(r["label"], str) for r in rows
        ):
            return rows
    except (OSError, ValueError, KeyError, TypeError):
        pass
    raise LmtuneError(
        f"{saved}: missing or unreadable; the run directory is damaged (score a file with --data instead)"
    )


def _model_info(run_dir: Path) -> dict:
    return json.loads((run_dir / "model" / "lmtune_model.json").read_text())


def base_model(info: dict, config: RunConfig, labels: list[str], tokenizer):
    """The untuned base as training scored it: pre-trained body, head initialised from the run's seed
    (an adapter run's saved weights are loaded onto it)."""
    set_seed(config.training.seed)
    return load_classifier(
        assets.resolve_base(info["base_model"], info.get("base_path")),
        labels,
        attn_implementation=info["attn_implementation"],
        dropout=config.model.dropout,
        pad_token_id=tokenizer.pad_token_id,
        trust_remote_code=config.model.trust_remote_code,
        **load_options(config.method),
    )


def predict(run_dir: Path, texts: list[str]) -> list[dict]:
    """Label and class probabilities for each text."""
    return predict_with(load(run_dir), texts)


def predict_with(run: Predictor, texts: list[str]) -> list[dict]:
    labels = run.labels
    logits = infer_texts(run.config, run.model, run.tokenizer, texts, logits_step, "predict")
    probs = torch.softmax(torch.from_numpy(logits), -1).numpy()
    return [
        {
            "text": text,
            "label": labels[int(p.argmax())],
            "score": float(p.max()),
            "scores": dict(zip(labels, map(float, p), strict=True)),
        }
        for text, p in zip(texts, probs, strict=True)
    ]
