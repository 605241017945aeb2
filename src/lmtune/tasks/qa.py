"""Extractive question answering: the answer to a question is a span of its context, found by start and
end heads over the sub-words (AutoModelForQuestionAnswering), as transformers' run_qa does.

A context longer than model.max_length is read in overlapping windows (qa.doc_stride sub-words shared):
each window holds the question and a piece of the context, and is trained on the first gold answer's
start and end when that answer lies inside it, else on the [CLS] position ("not here"). An answer is
found by pairing each window's qa.n_best start and end candidates (inside the context, end not before
start, at most qa.max_answer_length sub-words) and keeping the best-scoring span over every window of
the question; with unanswerable questions in the training data (SQuAD v2), the answer is "" when the
no-answer score ([CLS] start + end) beats the best span's by more than qa.null_threshold. Scores: exact
match and F1 against every gold answer (the official SQuAD normalisation), with 95% intervals.

Baselines on the same test split: the untuned base (pre-trained body, fresh seeded head) and a probe —
linear start and end heads trained on the frozen body's hidden states (qa.probe_windows windows).
"""

from __future__ import annotations

import copy
import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from transformers import DataCollatorWithPadding

from lmtune.config import RunConfig, load_config
from lmtune.errors import LmtuneError
from lmtune.evaluate import checks, predictions
from lmtune.evaluate.metrics import score
from lmtune.evaluate.report import qa_sections
from lmtune.models.infer import forward_encoded, hidden_step, span_logits_step
from lmtune.tasks import TASKS, components, encoder
from lmtune.tasks.contract import Predictor, TrainResult
from lmtune.tasks.encoder import Rows
from lmtune.train import build_trainer, fit

HEAD = {"kind": "qa"}
LABELS = ["start", "end"]


@dataclass(kw_only=True)
class Prepared(encoder.Prepared):
    unanswerable: bool  # the training data has unanswerable questions: the model may answer ""


@dataclass
class Windows:
    """The windows of some questions: their sub-word features, which question each is of, and each
    sub-word's [start, end) in the question's context (None outside the context)."""

    features: list[dict]  # input_ids, attention_mask (and token_type_ids) of each window
    example: list[int]
    offsets: list[list[tuple[int, int] | None]]
    cls: list[int]  # the [CLS] position of each window: its "no answer here" target

    def __len__(self) -> int:
        return len(self.features)


def prepare(config: RunConfig) -> Prepared:
    if config.data.weight_column:
        raise LmtuneError("data.weight_column: not for task qa (its loss is the model's own, per window)")
    if config.qa.doc_stride * 2 >= config.model.max_length:
        raise LmtuneError(
            f"qa.doc_stride = {config.qa.doc_stride}: must be below model.max_length / 2 "
            f"({config.model.max_length // 2}) to leave room for the question and new context"
        )
    setup = encoder.setup(config, "qa")
    train, validation, test = setup.splits()
    references = checks.read(config, setup.tokenizer)
    model = encoder.with_head(config, setup.model_path, LABELS, setup.tokenizer, **HEAD)
    unanswerable = any(label == "[]" for label in train.labels)
    return Prepared.of(setup, model, (train, validation, test), references, unanswerable=unanswerable)


def answers_of(rows: Rows) -> list[list[dict]]:
    """Each question's gold answers, [{text, start}] in its context ([] unanswerable)."""
    return [json.loads(label) for label in rows.labels]


# ----------------------------------------------------------------------------------- windows


def windows(config: RunConfig, tokenizer, questions: list[str], contexts: list[str]) -> Windows:
    """Every window of every question: the question first and the context second (the context first
    for a tokenizer that pads on the left, XLNet, as run_qa does), the context truncated and strided."""
    right = tokenizer.padding_side == "right"
    questions = [q.lstrip() for q in questions]  # leading blanks only waste window room
    encoded = tokenizer(
        questions if right else contexts,
        contexts if right else questions,
        truncation="only_second" if right else "only_first",
        max_length=config.model.max_length,
        stride=config.qa.doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )
    context_side = 1 if right else 0
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded]
    features, offsets, cls = [], [], []
    for i, ids in enumerate(encoded["input_ids"]):
        features.append({k: encoded[k][i] for k in keys})
        sides = encoded.sequence_ids(i)
        offsets.append(
            [
                tuple(o) if side == context_side else None
                for o, side in zip(encoded["offset_mapping"][i], sides, strict=True)
            ]
        )
        cls.append(ids.index(tokenizer.cls_token_id) if tokenizer.cls_token_id in ids else 0)
    return Windows(features, list(encoded["overflow_to_sample_mapping"]), offsets, cls)


def of_rows(config: RunConfig, tokenizer, rows: Rows) -> Windows:
    return windows(config, tokenizer, rows.pairs or [], rows.texts)


def targets(w: Windows, golds: list[list[dict]]) -> tuple[list[int], list[int]]:
    """The start and end sub-word of the first gold answer in each window, or its [CLS] position when
    the answer is not wholly inside (or the question has none)."""
    starts, ends = [], []
    for i, example in enumerate(w.example):
        span = None
        if golds[example]:
            answer = golds[example][0]
            a, b = answer["start"], answer["start"] + len(answer["text"])
            inside = [k for k, o in enumerate(w.offsets[i]) if o is not None]
            if inside and w.offsets[i][inside[0]][0] <= a and b <= w.offsets[i][inside[-1]][1]:
                first = max(k for k in inside if w.offsets[i][k][0] <= a)
                last = min(k for k in inside if w.offsets[i][k][1] >= b)
                span = (first, last)
        starts.append(span[0] if span else w.cls[i])
        ends.append(span[1] if span else w.cls[i])
    return starts, ends


def dataset(w: Windows, golds: list[list[dict]]) -> Dataset:
    starts, ends = targets(w, golds)
    columns = {k: [f[k] for f in w.features] for k in w.features[0]} if len(w) else {}
    return Dataset.from_dict({**columns, "start_positions": starts, "end_positions": ends})


def _right_padded(tokenizer):
    if tokenizer.padding_side == "right":
        return tokenizer
    padded = copy.copy(tokenizer)
    padded.padding_side = "right"
    return padded


# ----------------------------------------------------------------------------------- answers


def best_answers(
    config: RunConfig, w: Windows, logits: list[np.ndarray], contexts: list[str], unanswerable: bool
) -> list[tuple[str, float, int, int]]:
    """(answer, score, start, end in the context) per question: the best span over its windows, or ""
    (score of no answer, -1, -1) when unanswerable questions are possible and no answer scores best."""
    q = config.qa
    best: dict[int, tuple[float, int, int]] = {}
    null: dict[int, float] = {}
    for i, example in enumerate(w.example):
        scores, offsets = logits[i], w.offsets[i]
        start_logits, end_logits = scores[: len(offsets), 0], scores[: len(offsets), 1]
        null[example] = min(null.get(example, np.inf), float(start_logits[w.cls[i]] + end_logits[w.cls[i]]))
        starts = np.argsort(start_logits)[::-1][: q.n_best]
        ends = np.argsort(end_logits)[::-1][: q.n_best]
        for a in starts:
            if offsets[a] is None:
                continue
            for b in ends:
                if offsets[b] is None or b < a or b - a + 1 > q.max_answer_length:
                    continue
                value = float(start_logits[a] + end_logits[b])
                if example not in best or value > best[example][0]:
                    best[example] = (value, offsets[a][0], offsets[b][1])
    out = []
    for example, context in enumerate(contexts):
        found = best.get(example)
        no_answer = null.get(example, np.inf)
        if found is None or (unanswerable and no_answer > found[0] + q.null_threshold):
            out.append(("", no_answer if np.isfinite(no_answer) else 0.0, -1, -1))
        else:
            out.append((context[found[1] : found[2]], found[0], found[1], found[2]))
    return out


def infer(config: RunConfig, model, tokenizer, rows: Rows, w: Windows, unanswerable: bool, desc: str) -> dict:
    """The model's answer to each question of `rows`, read in its windows `w` (of_rows: made once per
    split, whichever models answer)."""
    logits = forward_encoded(config, model, tokenizer, w.features, span_logits_step, desc)
    return {"answer": [a for a, _, _, _ in best_answers(config, w, logits, rows.texts, unanswerable)]}


def linear_probe(config: RunConfig, model, prepared: Prepared, w: Windows, golds, test: Windows) -> dict:
    """Linear start and end heads trained (Adam, cross-entropy over each window's positions) on the frozen
    body's hidden states of qa.probe_windows training windows, then used as the head of a copy of the
    body: its test answers."""
    rng = random.Random(config.training.seed)
    chosen = sorted(rng.sample(range(len(w)), min(config.qa.probe_windows, len(w))))
    starts, ends = targets(w, golds)
    tokenizer = prepared.tokenizer
    hidden = forward_encoded(
        config, model, tokenizer, [w.features[i] for i in chosen], hidden_step, "probe: embed train"
    )
    torch.manual_seed(config.training.seed)
    head = torch.nn.Linear(hidden[0].shape[-1], 2)
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-3)
    order = list(range(len(chosen)))
    for _ in range(10):
        rng.shuffle(order)
        for start in range(0, len(order), 32):
            loss = torch.zeros(())
            for j in order[start : start + 32]:
                logits = head(torch.from_numpy(hidden[j]))
                target = torch.tensor([starts[chosen[j]], ends[chosen[j]]])
                loss = loss + torch.nn.functional.cross_entropy(logits.T, target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    probe = copy.deepcopy(model)
    with torch.no_grad():
        probe.qa_outputs.weight.copy_(head.weight)
        probe.qa_outputs.bias.copy_(head.bias)
    return infer(config, probe, tokenizer, prepared.test, test, prepared.unanswerable, "probe: test")


def prediction_block(rows: Rows, outputs: dict[str, dict]) -> dict:
    """predictions.json's qa block: each question's gold answer texts (and question) and each model's answer."""
    truth = {
        "answers": [json.dumps([a["text"] for a in gold], ensure_ascii=False) for gold in answers_of(rows)],
        "question": list(rows.pairs or []),
    }
    return predictions.kind_block(rows.where, truth, outputs)


def scores_of(config: RunConfig, block: dict) -> dict[str, dict]:
    """Every model's exact match and F1 with 95% intervals (seeded by the run)."""
    return {
        name: score("qa", {**block["truth"], **out}, seed=config.training.seed)
        for name, out in block["models"].items()
    }


def _compute_metrics(config: RunConfig, w: Windows, contexts: list[str], golds, unanswerable: bool):
    """Validation exact match and F1 from the windows' logits (the evaluation runs the windows in order)."""
    names = [m for m in TASKS["qa"].metrics if m != "loss"]
    truth = [json.dumps([a["text"] for a in gold]) for gold in golds]

    def compute(eval_pred) -> dict:
        start, end = eval_pred.predictions[:2]
        logits = [np.stack([start[i], end[i]], -1) for i in range(len(start))]
        found = best_answers(config, w, logits, contexts, unanswerable)
        scored = score("qa", {"answers": truth, "answer": [a for a, _, _, _ in found]}, names, ci=False)
        return {name: scored[name] for name in names}

    return compute


# --------------------------------------------------------------------------------- training


def train(
    config: RunConfig, prepared: Prepared, run_dir: Path, resume: bool = False, callbacks: tuple = ()
) -> TrainResult:
    """Baselines, fine-tune, test, save model + metrics + report into run_dir; return metrics."""
    encoder.begin(config, run_dir, prepared, resume)
    tokenizer, model, unanswerable = prepared.tokenizer, prepared.model, prepared.unanswerable
    train_golds, validation_golds = answers_of(prepared.train), answers_of(prepared.validation)
    train_windows = of_rows(config, tokenizer, prepared.train)
    validation_windows = of_rows(config, tokenizer, prepared.validation)
    test, test_windows = prepared.test, of_rows(config, tokenizer, prepared.test)
    outputs = encoder.baselines(
        config,
        base=lambda: infer(config, model, tokenizer, test, test_windows, unanswerable, "base: test"),
        probe=lambda: linear_probe(config, model, prepared, train_windows, train_golds, test_windows),
    )
    before = checks.measure(config, model, tokenizer, prepared.references)

    model, params = components.adapt(config, model)
    split = len(train_windows) - len(prepared.train)
    rows = f"{len(prepared.train)} train / {len(prepared.validation)} validation / {len(prepared.test)} test questions"
    print(
        f"data: {rows}; {len(train_windows)} training windows of model.max_length={config.model.max_length} "
        f"(qa.doc_stride {config.qa.doc_stride}: {split} more than one per question)"
        + (
            "; unanswerable questions in the training data: the model may answer nothing"
            if unanswerable
            else ""
        )
    )
    trainer = build_trainer(
        config,
        run_dir,
        model=model,
        tokenizer=tokenizer,
        train_dataset=dataset(train_windows, train_golds),
        eval_dataset=dataset(validation_windows, validation_golds) if len(prepared.validation) else None,
        # padded on the right whatever the tokenizer does (XLNet pads left): the evaluation's logits then
        # start at each window's first sub-word, where its offsets do
        collator=DataCollatorWithPadding(_right_padded(tokenizer)),
        compute_metrics=_compute_metrics(
            config, validation_windows, prepared.validation.texts, validation_golds, unanswerable
        ),
        callbacks=callbacks,
        eval_in_order=True,  # the validation windows are put back together by position
    )
    history = fit(trainer, run_dir, resume)
    model = trainer.model

    outputs["tuned"] = infer(config, model, tokenizer, test, test_windows, unanswerable, "tuned: test")
    audits = checks.compare(config, model, tokenizer, prepared.references, before)
    block = prediction_block(prepared.test, outputs)
    results = scores_of(config, block)
    predictions.save(run_dir, {"qa": block})
    encoder.save_model(
        config, prepared.model_path, model, tokenizer, run_dir / "model", unanswerable=unanswerable
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
        0,  # a long context is read in windows: no training text loses tokens
        sections=qa_sections(results, block, config.evaluation.metrics),
        own={"training_windows": len(train_windows), "unanswerable": unanswerable},
        facts={
            "windows": f"{len(train_windows)} training windows (qa.doc_stride {config.qa.doc_stride}); "
            f"answers up to {config.qa.max_answer_length} sub-words"
            + ("; may answer nothing" if unanswerable else "")
        },
    )


# --------------------------------------------------------------------------- using a run


def load(run_dir: Path) -> Predictor:
    """A finished run's reader (base + adapter, or full weights) and tokenizer."""
    config, model, tokenizer, info = encoder.open_run(run_dir, LABELS, **HEAD)
    return Predictor("qa", config, model, tokenizer, info, run_dir=run_dir)


def evaluate(run_dir: Path, data: str | None = None, **reader: str | None) -> dict:
    """Score a finished run (with 95% intervals) on its own test split, or on any QA file."""
    saved = predictions_on(run_dir, data, **reader)
    return scores_of(load_config(run_dir / "config.yaml"), saved["kinds"]["qa"])["tuned"]


def predictions_on(run_dir: Path, data: str | None = None, *, base: bool = False, **reader) -> dict:
    """The run's (and with `base`, the untuned base model's) answers on its test split or a file, in
    predictions.json's form: what `lmtune compare --data` pairs between runs."""
    run = load(run_dir)
    config, tokenizer, unanswerable = run.config, run.tokenizer, bool(run.info.get("unanswerable"))
    rows = encoder.rows_to_score(run_dir, config, tokenizer, data, "qa", reader)
    w = of_rows(config, tokenizer, rows)
    outputs = {"tuned": infer(config, run.model, tokenizer, rows, w, unanswerable, "eval")}
    if base:
        untuned = encoder.base_model(run.info, config, LABELS, tokenizer, **HEAD)
        outputs = {"base": infer(config, untuned, tokenizer, rows, w, unanswerable, "base"), **outputs}
    return {"labels": None, "kinds": {"qa": prediction_block(rows, outputs)}}


def predict(run_dir: Path, texts: list) -> list[dict]:
    """The answer to each question about its context: each a (question, context) pair or
    'question<TAB>context'."""
    return predict_with(load(run_dir), texts)


def predict_with(run: Predictor, texts: list) -> list[dict]:
    how = "a qa run answers a question about a context: give 'question<TAB>context' (or --context)"
    pairs = encoder.pairs_of(texts, how)
    questions, contexts = [q for q, _ in pairs], [c for _, c in pairs]
    w = windows(run.config, run.tokenizer, questions, contexts)
    logits = forward_encoded(run.config, run.model, run.tokenizer, w.features, span_logits_step, "predict")
    found = best_answers(run.config, w, logits, contexts, bool(run.info.get("unanswerable")))
    return [
        {"question": q, "answer": answer, "start": start, "end": end, "score": value}
        for q, (answer, value, start, end) in zip(questions, found, strict=True)
    ]
