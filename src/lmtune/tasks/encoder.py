"""What the encoder tasks share (classify, regress): rows that are texts or sentence pairs, the checks
and data pipeline before any model loads, the body with a fresh seeded head, tokenising with the
tokenizer's pair encoding, the frozen body's embeddings a probe learns from, and a run's saved model,
test rows and metadata.

A recipe keeps what is its own: its targets, loss, probe, scores and report sections.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from datasets import Dataset
from transformers import DataCollatorWithPadding, set_seed

from lmtune import assets
from lmtune.config import RunConfig, load_config
from lmtune.data.pipeline import Input, PreparedData, plan, prepare_data, read_file
from lmtune.data.report import data_sections
from lmtune.data.rows import READERS, write_jsonl
from lmtune.errors import LmtuneError
from lmtune.evaluate import checks
from lmtune.models.infer import Inputs, encode, infer_texts, mean_pooled_step
from lmtune.models.load import load_classifier, load_tokenizer, position_limit
from lmtune.models.methods import load_options
from lmtune.models.precision import inference_precision
from lmtune.models.weights import load_weights, save_weights
from lmtune.runs import model_meta
from lmtune.tasks import components
from lmtune.tasks.contract import TrainResult
from lmtune.train import build_trainer, check_setup

SPLITS = ("train", "validation", "test")


@dataclass
class Rows:
    """The texts (or sentence pairs) and targets of one split, with the place each row came from."""

    texts: list[str]
    labels: list[str]  # the target as text: a class name, a number's decimal text
    where: list[str]
    weights: list[float] | None = None  # per-row loss weights (data.weight_column × data.augment.balance)
    pairs: list[str] | None = None  # each text's second sentence (data.text_pair)
    words: bool = False  # each text is a sentence's tokens joined by spaces (token classification)

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def inputs(self) -> Inputs:
        """What the model reads: the texts, (first, second) pairs, or each sentence's words."""
        if self.words:
            return [text.split(" ") for text in self.texts]
        return self.texts if self.pairs is None else list(zip(self.texts, self.pairs, strict=True))

    @classmethod
    def of(cls, rows, words: bool = False) -> Rows:
        """From pipeline rows (a Dataset or a list of dicts); `words`: rows of tokens (reader "tokens")."""
        rows = rows if isinstance(rows, list) else rows.to_list()
        weights = [row.get("weight") for row in rows]
        weights = [1.0 if w is None else w for w in weights] if any(w is not None for w in weights) else None
        pairs = [row.get("text_pair") for row in rows]
        where = [r.get("where", f"row {i}") for i, r in enumerate(rows, 1)]
        return cls(
            [r["text"] for r in rows],
            [r["label"] for r in rows],
            where,
            weights,
            pairs if any(p is not None for p in pairs) else None,
            words,
        )


@dataclass
class Setup:
    """The checked inputs, model path, tokenizer and prepared data of an encoder run."""

    sources: dict[str, Input]
    model_path: Path | str
    tokenizer: object
    data: PreparedData
    words: bool = False  # rows of tokens

    def splits(self) -> tuple[Rows, Rows, Rows]:
        return tuple(Rows.of(self.data.splits[name], self.words) for name in SPLITS)  # type: ignore[return-value]


@dataclass
class Prepared:
    """Everything a run needs, read and validated before any run directory is created; a recipe's own
    Prepared adds its fields (classify: labels; regress: target) as keyword-only ones."""

    model_path: Path | str
    tokenizer: object
    model: object  # loaded here so that a broken model fails before a run directory exists
    train: Rows
    validation: Rows
    test: Rows
    data_report: dict
    saved: dict  # the prepared rows (Datasets), written to the run's data/ folder
    references: dict = field(default_factory=dict)  # each audit check's references, read and checked

    @classmethod
    def of(cls, setup: Setup, model, splits: tuple[Rows, Rows, Rows], references: dict, **own):
        data = setup.data
        return cls(
            setup.model_path, setup.tokenizer, model, *splits, data.report, data.splits, references, **own
        )

    @property
    def rows(self) -> dict[str, int]:
        return {name: len(getattr(self, name)) for name in SPLITS}


def setup(config: RunConfig, reader: str) -> Setup:
    """Everything before the model loads, in the order that fails cheapest first: an impossible
    precision or a missing tracker, a missing file, a max_length past the model's positions, bad rows."""
    check_setup(config)
    sources = plan(config)
    model_path = assets.resolve_model(config.model.name)
    trusted = config.model.trust_remote_code
    words = READERS[reader].tokens
    tokenizer = load_tokenizer(model_path, trusted, words=words)
    limit = position_limit(model_path, tokenizer, trusted)
    if limit is not None and config.model.max_length > limit:
        raise LmtuneError(
            f"model.max_length = {config.model.max_length}: the model reads at most {limit} tokens; allowed: 4..{limit}"
        )
    return Setup(sources, model_path, tokenizer, prepare_data(config, reader, tokenizer, sources), words)


def with_head(
    config: RunConfig, path: Path | str, labels: list[str], tokenizer, attn: str | None = None, **head
):
    """The body at `path` with a new sequence head of len(labels) outputs, initialised from the run's
    seed (so the untuned base is the same model every time it is rebuilt). `head`: load_classifier's
    head options (problem_type)."""
    set_seed(config.training.seed)
    return load_classifier(
        path,
        labels,
        attn_implementation=attn or config.model.attn_implementation,
        dropout=config.model.dropout,
        pad_token_id=tokenizer.pad_token_id,
        trust_remote_code=config.model.trust_remote_code,
        new_head=True,
        **head,
        **load_options(config.method),
    )


# --------------------------------------------------------------------------------- tokens


def tokenized(
    rows: Rows,
    tokenizer,
    max_length: int,
    targets: list | Callable,
    *,
    by_length: bool = False,
    weights: bool = False,
) -> Dataset:
    """Token ids (a pair as the tokenizer's pair encoding, with its segment ids), targets and lengths (and
    with `weights`, the rows' loss weights where they carry any); evaluation sets are sorted by length
    to cut padding. `targets` is a list, one per row, or a function of the encoding that gives it (a
    label per sub-word needs the sub-words' word ids)."""
    encoded = encode(tokenizer, rows.inputs, truncation=True, max_length=max_length)
    data = {
        "input_ids": encoded["input_ids"],
        "attention_mask": encoded["attention_mask"],
        "labels": targets(encoded) if callable(targets) else targets,
        "length": [len(ids) for ids in encoded["input_ids"]],
    }
    if "token_type_ids" in encoded:
        data["token_type_ids"] = encoded["token_type_ids"]
    if weights and rows.weights is not None:
        data["weight"] = rows.weights
    dataset = Dataset.from_dict(data)
    return dataset.select(np.argsort(data["length"], kind="stable")) if by_length else dataset


def count_truncated(rows: Rows, lengths: list[int], tokenizer, max_length: int) -> int:
    """Rows that lost tokens to max_length (a pair loses them from its longer text first: longest_first);
    those at the limit are re-counted without truncation."""
    inputs = rows.inputs
    at_limit = [item for item, length in zip(inputs, lengths, strict=True) if length >= max_length]
    if not at_limit:
        return 0
    return sum(len(ids) > max_length for ids in encode(tokenizer, at_limit)["input_ids"])


def trainer(
    config: RunConfig,
    run_dir: Path,
    prepared: Prepared,
    model,
    targets: Callable[[Rows], list | Callable],
    *,
    summary: str,
    compute_metrics,
    loss,
    callbacks: tuple = (),
    per_row: bool = False,
    eval_targets: Callable[[Rows], list | Callable] | None = None,
    collator=None,
):
    """(the Trainer, training rows truncated) for an encoder recipe: its rows tokenized with their
    `targets` (validation sorted by length, with `eval_targets` when they differ), the padding collator
    (or the recipe's), the recipe's metrics and loss; the split sizes and truncation said in one line,
    `summary` after the sizes."""
    max_length, tokenizer = config.model.max_length, prepared.tokenizer
    train, validation = prepared.train, prepared.validation
    dataset = tokenized(train, tokenizer, max_length, targets(train), weights=per_row)
    truncated = count_truncated(train, dataset["length"], tokenizer, max_length)
    what = "sentence pairs" if train.pairs is not None else "sentences" if train.words else "texts"
    sizes = f"{len(train)} train / {len(validation)} validation / {len(prepared.test)} test rows"
    print(f"data: {sizes}{summary}; {truncated} training {what} cut to model.max_length={max_length}")
    built = build_trainer(
        config,
        run_dir,
        model=model,
        tokenizer=tokenizer,
        train_dataset=dataset,
        eval_dataset=tokenized(
            validation, tokenizer, max_length, (eval_targets or targets)(validation), by_length=True
        )
        if len(validation)
        else None,
        collator=collator or DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_metrics,
        loss=loss,
        callbacks=callbacks,
    )
    return built, truncated


def embed(config: RunConfig, model, tokenizer, rows: Rows, desc: str) -> np.ndarray:
    """The frozen body's mean-pooled embeddings of the rows (a pair embedded as one pair encoding)."""
    return infer_texts(config, model, tokenizer, rows.inputs, mean_pooled_step, desc)


def finish(
    config: RunConfig,
    run_dir: Path,
    prepared: Prepared,
    trainer,
    history: list[dict],
    results: dict,
    params: tuple[int, int],
    audits: dict,
    truncated: int,
    *,
    sections: list[tuple[str, str]],
    own: dict,
    facts: dict | None = None,
    n_classes: int | None = None,
) -> TrainResult:
    """metrics.json (the task's `own` keys after the shared ones), data report and report.html: the task's
    `sections`, then the audits and the data; the shared run facts, then the task's `facts`."""
    rows = prepared.rows
    metrics = components.result(trainer, history, results, params, rows, audits)
    metrics.update(truncated_train_texts=truncated, **own)
    return components.finish(
        config,
        run_dir,
        metrics,
        prepared.data_report,
        sections=sections + checks.sections(audits) + data_sections(prepared.data_report),
        history=history,
        metric=config.evaluation.metric,
        n_classes=n_classes,
        facts=_facts(config, trainer.model, params, rows, truncated, metrics) | (facts or {}),
    )


def _facts(
    config: RunConfig, model, params: tuple[int, int], rows: dict, truncated: int, metrics: dict
) -> dict:
    """The report's run facts every encoder task shows."""
    return {
        "task": config.task,
        "model": config.model.name,
        "method": f"{config.method.name} ({params[0]:,} / {params[1]:,} trainable)",
        "rows (train / validation / test)": " / ".join(str(v) for v in rows.values()),
        "training texts truncated": f"{truncated} (model.max_length = {config.model.max_length})",
        "steps": metrics["steps"],
        "precision": inference_precision(config, model),
        "train samples/s": f"{metrics['train_samples_per_second'] or 0:.1f}",
    }


# ------------------------------------------------------------------------------- run files


def begin(config: RunConfig, run_dir: Path, prepared: Prepared, resume: bool) -> None:
    """The run directory started (components.begin) and the prepared splits saved in its data/ folder."""
    components.begin(config, run_dir, resume)
    save_splits(prepared.saved, run_dir / "data")


def baselines(config: RunConfig, **make: Callable[[], dict]) -> dict[str, dict]:
    """The test outputs of the baselines evaluation.baselines asks for, each made by its function (base,
    probe), in the order given."""
    return {name: fn() for name, fn in make.items() if name in config.evaluation.baselines}


def save_splits(saved: dict, folder: Path) -> None:
    """The prepared rows of each split, as JSONL in the run's data/ folder."""
    folder.mkdir(exist_ok=True)
    for name, rows in saved.items():
        write_jsonl(rows, folder / f"{name}.jsonl")


def save_model(
    config: RunConfig, base_path, model, tokenizer, folder: Path, labels: list[str] | None = None, **meta
) -> None:
    """Weights (or adapter), tokenizer, lmtune_model.json (with the task's own `meta`) and, for a model
    with named outputs, labels.json (their names in id order)."""
    save_weights(model, folder)
    tokenizer.save_pretrained(folder)
    (folder / "lmtune_model.json").write_text(
        json.dumps(model_meta(config, base_path, folder, **meta), indent=2, ensure_ascii=False)
    )
    if labels is not None:
        (folder / "labels.json").write_text(json.dumps(labels, ensure_ascii=False))


def model_info(run_dir: Path) -> dict:
    return json.loads((run_dir / "model" / "lmtune_model.json").read_text())


def open_run(run_dir: Path, labels: list[str], **head) -> tuple[RunConfig, object, object, dict]:
    """A finished run's (config, model, tokenizer, info): base + adapter, or full weights."""
    config = load_config(run_dir / "config.yaml")
    folder = run_dir / "model"
    info = model_info(run_dir)
    trusted = config.model.trust_remote_code
    tokenizer = load_tokenizer(folder, trusted, words=head.get("kind") == "token")
    if info["adapter"]:
        model = load_weights(base_model(info, config, labels, tokenizer, **head), folder)
    else:
        attn = info["attn_implementation"]
        model = load_classifier(folder, labels, attn_implementation=attn, trust_remote_code=trusted, **head)
    return config, model, tokenizer, info


def base_model(info: dict, config: RunConfig, labels: list[str], tokenizer, **head):
    """The untuned base as training scored it: pre-trained body, head initialised from the run's seed
    (an adapter run's saved weights are loaded onto it)."""
    path = assets.resolve_base(info["base_model"], info.get("base_path"))
    return with_head(config, path, labels, tokenizer, info["attn_implementation"], **head)


def rows_to_score(
    run_dir: Path, config: RunConfig, tokenizer, data: str | None, reader_kind: str, reader
) -> Rows:
    """The run's own test split as it saved it, or a file read like the run's user files."""
    words = READERS[reader_kind].tokens
    if data is None:
        return Rows.of(_saved_test_rows(run_dir), words)
    return Rows.of(read_file(config, data, reader_kind, tokenizer, reader), words)


def _saved_test_rows(run_dir: Path) -> list[dict]:
    """data/test.jsonl, checked: each row a text (and a pair's second) with its target as text."""
    saved = run_dir / "data" / "test.jsonl"
    try:
        rows = [json.loads(line) for line in saved.read_text(encoding="utf-8").splitlines() if line]
        if all(
            isinstance(r, dict)
            and isinstance(r["text"], str)
            and isinstance(r["label"], str)
            and isinstance(r.get("text_pair", ""), str)
            for r in rows
        ):
            return rows
    except (OSError, ValueError, KeyError, TypeError):
        pass
    raise LmtuneError(
        f"{saved}: missing or unreadable; the run directory is damaged (score a file with --data instead)"
    )


def inputs_of(config: RunConfig, texts: list) -> Inputs:
    """What `predict` was given, as the run reads it: a sentence-pair run (data.text_pair) takes
    (first, second) pairs, or each text as 'first<TAB>second'; a run of joined columns joins a tuple of
    texts as its training rows were (data.text_separator)."""
    if not config.data.text_pair:
        return [t if isinstance(t, str) else config.data.text_separator.join(t) for t in texts]
    columns = " + ".join(config.data.text_column)
    return pairs_of(texts, f"this run reads sentence pairs ({columns}): give each as 'first<TAB>second'")


def pairs_of(texts: list, how: str) -> list[tuple[str, str]]:
    """Each item as a (first, second) pair: a 2-tuple, or a string 'first<TAB>second'; anything else is
    an error saying `how` to give it."""
    pairs = []
    for i, text in enumerate(texts, 1):
        parts = tuple(text) if not isinstance(text, str) else tuple(text.split("\t", 1))
        if len(parts) != 2 or not all(isinstance(p, str) and p.strip() for p in parts):
            raise LmtuneError(f"text {i}: {how}, got {str(text)[:60]!r}")
        pairs.append(parts)
    return pairs


def shown(item: str | tuple[str, str]) -> dict:
    """A prediction's input as predict shows it: its text, and a pair's second text."""
    return {"text": item} if isinstance(item, str) else {"text": item[0], "text_pair": item[1]}
