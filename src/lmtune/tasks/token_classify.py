"""Token classification (named entities): a tag per word from any encoder AutoModelForTokenClassification
supports, its tags IOB2 whatever scheme the data came in.

Words are the data's tokens (a CoNLL file's, a tokens + tags record's, or the words a span-annotated
text is cut into); the model's fast tokenizer splits them into sub-words (is_split_into_words). A word's
first sub-word carries its tag, the rest are ignored in the loss (token_classify.label_subwords: all
trains them too). Predictions and scores are per word, read at each word's first sub-word, so they do
not depend on the tokenizer; words past model.max_length are predicted O (the truncated sentences are
counted). Entity-level precision, recall and F1 (seqeval's default mode), per type, and word accuracy.

Baselines on the same test split: the untuned base (pre-trained body, fresh seeded head) and a probe
(logistic regression per word on the frozen body's standardised hidden state at its first sub-word).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from transformers import DataCollatorForTokenClassification

from lmtune.config import RunConfig, load_config
from lmtune.data.tags import entities
from lmtune.data.tokens import IGNORE, align, words_of
from lmtune.errors import LmtuneError
from lmtune.evaluate import checks, predictions
from lmtune.evaluate.metrics import score
from lmtune.evaluate.report import token_sections
from lmtune.evaluate.spans import entity_scores
from lmtune.models.infer import infer_texts, word_hidden_step, word_logits_step
from lmtune.tasks import TASKS, components, encoder
from lmtune.tasks.contract import Predictor, TrainResult
from lmtune.tasks.encoder import Rows
from lmtune.train import fit

HEAD = {"kind": "token"}


@dataclass(kw_only=True)
class Prepared(encoder.Prepared):
    labels: list[str]  # O, then B-/I- of each entity type the training split has (ids are positions)


def tag_labels(sentences: list[list[str]]) -> list[str]:
    """O, then B-X and I-X for every entity type X in the tags: both prefixes even where the data shows
    only one, so any IOB2 prediction (and label_subwords: all) has an id."""
    types = sorted({tag[2:] for tags in sentences for tag in tags if tag != "O"})
    return ["O", *(f"{prefix}-{t}" for t in types for prefix in ("B", "I"))]


def tags_of(rows: Rows) -> list[list[str]]:
    return [json.loads(label) for label in rows.labels]


def prepare(config: RunConfig) -> Prepared:
    if config.data.weight_column:
        raise LmtuneError(
            "data.weight_column: not for task token_classify (its loss is the model's own, per word)"
        )
    setup = encoder.setup(config, "tokens")
    train, validation, test = setup.splits()
    labels = tag_labels(tags_of(train))
    if len(labels) < 3:
        source = setup.sources["train"]
        raise LmtuneError(f"{source.paths[0]}: no training sentence has an entity (every tag is O)")
    unseen = sorted({t for t in tag_labels(tags_of(test)) if t not in labels})
    if unseen:
        print(
            f"lmtune: warning: test tags never seen in training ({', '.join(unseen)}): their entities "
            "count as missed"
        )
    references = checks.read(config, setup.tokenizer)
    model = encoder.with_head(config, setup.model_path, labels, setup.tokenizer, **HEAD)
    return Prepared.of(setup, model, (train, validation, test), references, labels=labels)


def _aligned(rows: Rows, label2id: dict[str, int], every: bool):
    """The sub-word targets of the rows, as a function of their encoding (tokenized needs word ids); a
    tag the model does not know (a validation type unseen in training) is ignored in the loss."""
    sentences = tags_of(rows)

    ids = {tag: label2id.get(tag, IGNORE) for tags in sentences for tag in tags}
    ids.update(label2id)  # align's I- of a B- tag (label_subwords: all) is always among the labels

    def targets(encoded) -> list[list[int]]:
        return [align(encoded.word_ids(i), tags, ids, every) for i, tags in enumerate(sentences)]

    return targets


# ------------------------------------------------------------------------------- inference


def word_tags(logits: list[np.ndarray], rows: Rows, labels: list[str]) -> list[list[str]]:
    """The predicted tag of every word: argmax at its first sub-word; O for words truncation cut off."""
    out = []
    for scores, text in zip(logits, rows.texts, strict=True):
        n = text.count(" ") + 1
        tags = [labels[i] for i in np.asarray(scores).argmax(-1)] if len(scores) else []
        out.append(tags + ["O"] * (n - len(tags)))
    return out


def infer(config: RunConfig, model, tokenizer, rows: Rows, labels: list[str], desc: str) -> dict:
    """The model's predicted tags, one space-separated string per sentence."""
    logits = infer_texts(config, model, tokenizer, rows.inputs, word_logits_step, desc)
    return {"pred": [" ".join(tags) for tags in word_tags(logits, rows, labels)]}


def word_probe(config: RunConfig, model, prepared: Prepared) -> dict:
    """Logistic regression per word on the frozen body's standardised hidden state at the word's first
    sub-word, trained on whole training sentences up to token_classify.probe_words words (seeded)."""
    train, label2id = prepared.train, {label: i for i, label in enumerate(prepared.labels)}
    order = list(range(len(train)))
    random.Random(config.training.seed).shuffle(order)
    chosen, words = [], 0
    for i in order:
        if words >= config.token_classify.probe_words:
            break
        chosen.append(i)
        words += train.texts[i].count(" ") + 1
    subset = Rows([train.texts[i] for i in chosen], [train.labels[i] for i in chosen], [], words=True)
    tokenizer = prepared.tokenizer
    hidden = infer_texts(config, model, tokenizer, subset.inputs, word_hidden_step, "probe: embed train")
    x = np.concatenate([h for h in hidden if len(h)])
    y = np.concatenate(
        [[label2id[t] for t in tags[: len(h)]] for h, tags in zip(hidden, tags_of(subset), strict=True)]
    )
    probe = make_pipeline(
        StandardScaler(), LogisticRegression(max_iter=500, random_state=config.training.seed)
    )
    probe.fit(x, y)
    test_hidden = infer_texts(
        config, model, tokenizer, prepared.test.inputs, word_hidden_step, "probe: embed test"
    )
    labels = prepared.labels
    classes = probe.classes_
    logits = []
    for h in test_hidden:
        scores = np.full((len(h), len(labels)), -np.inf)
        if len(h):
            scores[:, classes] = probe.predict_proba(h)
        logits.append(scores)
    return {"pred": [" ".join(tags) for tags in word_tags(logits, prepared.test, labels)]}


def prediction_block(rows: Rows, outputs: dict[str, dict]) -> dict:
    """predictions.json's entities block: each sentence's gold tags and each model's predicted ones."""
    truth = {"gold": [" ".join(tags) for tags in tags_of(rows)], "text": list(rows.texts)}
    return predictions.kind_block(rows.where, truth, outputs)


def scores_of(config: RunConfig, block: dict) -> dict[str, dict]:
    """Every model's entity scores with 95% intervals (sentences resampled, seeded by the run), and
    its per-type precision, recall, F1 and support."""
    gold = [tags.split() for tags in block["truth"]["gold"]]
    results = {}
    for name, out in block["models"].items():
        result = score("entities", {**block["truth"], **out}, seed=config.training.seed)
        result["per_type"] = entity_scores(gold, [tags.split() for tags in out["pred"]])["per_type"]
        results[name] = result
    return results


def _compute_metrics(labels: list[str]):
    """Validation scores per word: the validation targets label each word's first sub-word only."""
    names = [m for m in TASKS["token_classify"].metrics if m != "loss"]

    def compute(eval_pred) -> dict:
        logits = (
            eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
        )
        predicted, gold = [], []
        for scores, ids in zip(np.asarray(logits), np.asarray(eval_pred.label_ids), strict=True):
            keep = ids != -100
            gold.append(" ".join(labels[i] for i in ids[keep]))
            predicted.append(" ".join(labels[i] for i in scores[keep].argmax(-1)))
        return {
            k: v
            for k, v in score("entities", {"gold": gold, "pred": predicted}, names, ci=False).items()
            if k in names
        }

    return compute


# --------------------------------------------------------------------------------- training


def train(
    config: RunConfig, prepared: Prepared, run_dir: Path, resume: bool = False, callbacks: tuple = ()
) -> TrainResult:
    """Baselines, fine-tune, test, save model + metrics + report into run_dir; return metrics."""
    encoder.begin(config, run_dir, prepared, resume)
    labels, tokenizer, model = prepared.labels, prepared.tokenizer, prepared.model
    label2id = {label: i for i, label in enumerate(labels)}
    outputs = encoder.baselines(
        config,
        base=lambda: infer(config, model, tokenizer, prepared.test, labels, "base: test"),
        probe=lambda: word_probe(config, model, prepared),
    )
    before = checks.measure(config, model, tokenizer, prepared.references)

    model, params = components.adapt(config, model)
    every = config.token_classify.label_subwords == "all"
    types = sorted({label[2:] for label in labels if label != "O"})
    trainer, truncated = encoder.trainer(
        config,
        run_dir,
        prepared,
        model,
        lambda rows: _aligned(rows, label2id, every),
        summary=f", {len(types)} entity types ({', '.join(types)})",
        compute_metrics=_compute_metrics(labels),
        loss=None,  # the model's own: cross-entropy over the labelled sub-words
        callbacks=callbacks,
        eval_targets=lambda rows: _aligned(rows, label2id, False),
        collator=DataCollatorForTokenClassification(tokenizer),
    )
    history = fit(trainer, run_dir, resume)
    model = trainer.model

    outputs["tuned"] = infer(config, model, tokenizer, prepared.test, labels, "tuned: test")
    audits = checks.compare(config, model, tokenizer, prepared.references, before)
    block = prediction_block(prepared.test, outputs)
    results = scores_of(config, block)
    predictions.save(run_dir, {"entities": block}, labels)
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
        sections=token_sections(results, block, config.evaluation.metrics),
        own={"labels": labels},
        facts={
            "tags": f"IOB2, {len(types)} entity types; sub-words labelled: {config.token_classify.label_subwords}"
        },
    )


# --------------------------------------------------------------------------- using a run


def load(run_dir: Path) -> Predictor:
    """A finished run's tagger (base + adapter, or full weights), tokenizer and tags."""
    labels = json.loads((run_dir / "model" / "labels.json").read_text())
    config, model, tokenizer, info = encoder.open_run(run_dir, labels, **HEAD)
    return Predictor("token_classify", config, model, tokenizer, info, labels=labels, run_dir=run_dir)


def evaluate(run_dir: Path, data: str | None = None, **reader: str | None) -> dict:
    """Score a finished run (with 95% intervals) on its own test split, or on any tagged file."""
    saved = predictions_on(run_dir, data, **reader)
    return scores_of(load_config(run_dir / "config.yaml"), saved["kinds"]["entities"])["tuned"]


def predictions_on(run_dir: Path, data: str | None = None, *, base: bool = False, **reader) -> dict:
    """The run's (and with `base`, the untuned base model's) predictions on its test split or a file,
    in predictions.json's form: what `lmtune compare --data` pairs between runs."""
    run = load(run_dir)
    config, tokenizer, labels = run.config, run.tokenizer, run.labels
    rows = encoder.rows_to_score(run_dir, config, tokenizer, data, "tokens", reader)
    outputs = {"tuned": infer(config, run.model, tokenizer, rows, labels, "eval")}
    if base:
        untuned = encoder.base_model(run.info, config, labels, tokenizer, **HEAD)
        outputs = {"base": infer(config, untuned, tokenizer, rows, labels, "base"), **outputs}
    return {"labels": labels, "kinds": {"entities": prediction_block(rows, outputs)}}


def predict(run_dir: Path, texts: list) -> list[dict]:
    """The entities of each text, with character offsets (the text is cut into words first)."""
    return predict_with(load(run_dir), texts)


def predict_with(run: Predictor, texts: list) -> list[dict]:
    results = []
    spans = [words_of(text) for text in texts]
    inputs = [[text[a:b] for a, b in offsets] or [text] for text, offsets in zip(texts, spans, strict=True)]
    logits = infer_texts(run.config, run.model, run.tokenizer, inputs, word_logits_step, "predict")
    for text, offsets, scores in zip(texts, spans, logits, strict=True):
        probs = (
            torch.softmax(torch.from_numpy(np.asarray(scores)), -1).numpy()
            if len(scores)
            else np.zeros((0, 1))
        )
        tags = [run.labels[i] for i in probs.argmax(-1)] + ["O"] * (len(offsets) - len(probs))
        found = []
        for kind, first, end in entities(tags):
            start, stop = offsets[first][0], offsets[end - 1][1]
            confidence = float(probs[first:end].max(-1).mean()) if end <= len(probs) else 0.0
            found.append(
                {"label": kind, "start": start, "end": stop, "text": text[start:stop], "score": confidence}
            )
        results.append({"text": text, "entities": found, "tags": tags[: len(offsets)]})
    return results
