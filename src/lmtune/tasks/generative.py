"""What the generative recipes (sft, seq2seq) share: held-out loss and generation scores, saving and
loading a run's model, the metrics file, the report, and answering prompts with a finished run."""

from __future__ import annotations

import copy
import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from transformers import GenerationConfig, set_seed

from lmtune import assets
from lmtune.config import RunConfig, load_config
from lmtune.data.batches import Encoded, as_dataset, collate
from lmtune.data.formats import Example, on_bad
from lmtune.data.pipeline import prepare_data, read_file
from lmtune.data.report import data_sections
from lmtune.data.rows import to_example
from lmtune.errors import LmtuneError
from lmtune.evaluate import checks, predictions
from lmtune.evaluate.generation import score
from lmtune.evaluate.report import generation_sections
from lmtune.models.chat_template import Stop
from lmtune.models.generate import generate_answers
from lmtune.models.load import load_generative, load_tokenizer, set_attention, training_attention
from lmtune.models.loss import language_model_loss
from lmtune.models.methods import load_options
from lmtune.models.precision import inference_precision
from lmtune.models.weights import load_weights, save_weights
from lmtune.runs import model_meta
from lmtune.tasks import components
from lmtune.tasks.contract import Predictor, TrainResult
from lmtune.train import build_trainer, fit


def save_splits(splits: dict[str, list[Encoded]], folder: Path) -> None:
    """Where each example came from, so a run's data can be traced back to its files."""
    folder.mkdir(exist_ok=True)
    for name, items in splits.items():
        with open(folder / f"{name}.jsonl", "w", encoding="utf-8") as out:
            for e in items:
                row = {
                    "where": e.where,
                    "tokens": len(e.input_ids),
                    "prompt": e.prompt,
                    "reference": e.reference,
                    **({"weight": e.weight} if e.weight is not None else {}),
                }
                out.write(json.dumps(row, ensure_ascii=False) + "\n")


@dataclass
class Prepared:
    """Everything a generative run needs, read and validated before any run directory exists."""

    model_path: Path | str
    tokenizer: object
    model: object  # loaded here so that a broken model fails before a run directory exists
    stop: Stop
    splits: dict[str, list[Encoded]]
    report: dict  # skipped records, split documents, packing, forgetting references: for the report
    template: str | None
    format: str


# ---------------------------------------------------------------------------------- data


def with_system(messages: list[dict], system: str | None) -> list[dict]:
    if system and messages[0]["role"] != "system":
        return [{"role": "system", "content": system}, *messages]
    return messages


def read_examples(config: RunConfig, tokenizer=None) -> tuple[dict[str, list[Example]], str, dict]:
    """The train/validation/test examples after the data pipeline (missing splits cut from train) and the
    data report."""
    d = config.data
    if any(isinstance(p, str) and p.startswith(assets.PREFIX) for p in (d.train, d.validation, d.test)):
        raise LmtuneError(
            f"data.train = {d.train!r}: the bundled datasets are for classify; give a JSON/JSONL/CSV/Parquet/TXT file"
        )
    data = prepare_data(config, "generative", tokenizer)
    splits = {name: [to_example(row) for row in rows] for name, rows in data.splits.items()}
    return splits, data.format, data.report


def bad_record(config: RunConfig, where: str, problem: str, report: dict) -> None:
    """data.on_error: stop at the first bad record, or skip it and list it in the report."""
    on_bad(config.data.on_error, where, problem)
    report.setdefault("skipped", []).append((where, problem))


def encode_and_load(
    config: RunConfig, model_path, tokenizer, examples: dict, data_report: dict, encode_split
):
    """Token ids of every split (bad records under data.on_error) and the model, loaded last so that data
    errors come first; returns (splits, report, model)."""
    report: dict = {"skipped": [], "data": data_report}  # skipped: examples dropped at tokenisation
    splits = {name: encode_split(config, tokenizer, items, report) for name, items in examples.items()}
    for name in ("train", "test"):
        if not splits[name]:
            raise LmtuneError(
                f"data: no usable {name} examples left (see data.on_error and model.max_length)"
            )
    report["references"] = checks.read(config, tokenizer, encode_split)  # before the model
    set_seed(config.training.seed)
    model = load_generative(
        model_path,
        attn_implementation=config.model.attn_implementation,
        dropout=config.model.dropout,
        trust_remote_code=config.model.trust_remote_code,
        **load_options(config.method),
    )
    return splits, report, model


# ------------------------------------------------------------------------------ training


def train(
    config: RunConfig, prepared: Prepared, run_dir: Path, resume: bool, train_rows, callbacks: tuple = ()
) -> TrainResult:
    """Base scores, fine-tune, tuned scores; save model, metrics, generations and the report.

    `train_rows(config, prepared, model)` gives the recipe's training rows and a packing note."""
    components.begin(config, run_dir, resume)
    save_splits(prepared.splits, run_dir / "data")
    tokenizer, model, splits, stop = prepared.tokenizer, prepared.model, prepared.splits, prepared.stop
    results: dict[str, dict] = {}
    if "base" in config.evaluation.baselines:
        results["base"] = score(config, model, tokenizer, stop, splits["test"], "base")
    before = checks.measure(config, model, tokenizer, prepared.report["references"])  # the untuned model

    model, params = components.adapt(config, model)
    rows, prepared.report["packing"] = train_rows(config, prepared, model)
    print(
        f"data: {len(splits['train'])} train / {len(splits['validation'])} validation / {len(splits['test'])} test "
        f"examples ({prepared.format}); {prepared.report['data']['bad_rows']['count'] + len(prepared.report['skipped'])} "
        "records skipped; "
        f"packing: {prepared.report['packing']}"
    )
    kernel = training_attention(config.model.attn_implementation, statistics.median(rows["length"]))
    if kernel:
        set_attention(model, kernel)
    model.config.use_cache = False  # training never reuses keys/values, and packed rows need it off
    trainer = build_trainer(
        config,
        run_dir,
        model=model,
        tokenizer=tokenizer,
        train_dataset=rows,
        eval_dataset=as_dataset(splits["validation"]) if splits["validation"] else None,
        collator=collate(tokenizer.pad_token_id),
        compute_metrics=None,
        loss=language_model_loss,
        callbacks=callbacks,
    )
    history = fit(trainer, run_dir, resume)
    model = trainer.model
    model.config.use_cache = True

    results["tuned"] = score(config, model, tokenizer, stop, splits["test"], "tuned")
    prepared.report["audits"] = checks.compare(
        config, model, tokenizer, prepared.report["references"], before
    )
    predictions.save(run_dir, prediction_kinds(splits["test"], results))
    info = {"template": prepared.template, "stop": prepared.stop.__dict__}
    save_model(config, prepared.model_path, model, tokenizer, stop, info, run_dir / "model")
    return finish(config, run_dir, trainer, history, results, prepared.report, splits, params)


# ------------------------------------------------------------------------------- saving


def save_model(config: RunConfig, base_path, model, tokenizer, stop: Stop, info: dict, folder: Path) -> None:
    """The trained weights (or adapter), the tokenizer with the run's chat template, and a generation
    config whose EOS ids are the end-of-turn marker: a plain transformers `generate` stops there."""
    save_weights(model, folder)
    tokenizer.save_pretrained(folder)
    generation = copy.deepcopy(getattr(model, "generation_config", None) or GenerationConfig())
    generation.update(  # keeps what the architecture needs, e.g. T5's decoder_start_token_id
        eos_token_id=stop.token_ids or None,
        pad_token_id=tokenizer.pad_token_id,
        stop_strings=stop.strings or None,
        max_new_tokens=config.evaluation.generation.max_new_tokens,
        do_sample=config.evaluation.generation.do_sample,
        repetition_penalty=config.evaluation.generation.repetition_penalty,
    )
    generation.save_pretrained(folder)
    meta = model_meta(config, base_path, folder, **info)
    (folder / "lmtune_model.json").write_text(json.dumps(meta, indent=2))


def finish(
    config: RunConfig, run_dir: Path, trainer, history, results, data_report, splits, params
) -> TrainResult:
    """generations.jsonl (every answer, base and tuned), then metrics.json and report.html."""
    answers = {name: r.pop("answers", []) for name, r in results.items()}
    with open(run_dir / "generations.jsonl", "w", encoding="utf-8") as out:
        chats = [e for e in splits["test"] if e.prompt_ids is not None]
        for i, e in enumerate(
            chats[: max(len(a) for a in answers.values())] if any(answers.values()) else []
        ):
            row = {"where": e.where, "prompt": e.prompt, "reference": e.reference}
            row.update({name: a[i] for name, a in answers.items() if i < len(a)})
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    rows = {name: len(items) for name, items in splits.items()}
    audits = data_report.get("audits", {})
    metrics = components.result(trainer, history, results, params, rows, audits)
    metrics.update(
        train_tokens=sum(len(e.input_ids) for e in splits["train"]),
        skipped_records=data_report["data"]["bad_rows"]["count"] + len(data_report["skipped"]),
        documents_split=data_report.get("documents_split", 0),
        packing=data_report.get("packing"),
    )
    epochs = trainer.state.epoch or 0
    if metrics["train_runtime_s"]:
        metrics["train_tokens_per_second"] = metrics["train_tokens"] * epochs / metrics["train_runtime_s"]
    return components.finish(
        config,
        run_dir,
        metrics,
        data_report["data"],
        facts={
            "task": config.task,
            "model": config.model.name,
            "method": f"{config.method.name} ({params[0]:,} / {params[1]:,} trainable)",
            "examples (train / validation / test)": " / ".join(str(v) for v in rows.values()),
            "records skipped": metrics["skipped_records"],
            "packing": metrics["packing"],
            "steps": metrics["steps"],
            "train tokens/s": f"{metrics.get('train_tokens_per_second') or 0:.0f}",
        },
        sections=generation_sections(results, answers, splits["test"], data_report, config)
        + checks.sections(audits)
        + data_sections(data_report["data"]),
        history=history,
        metric="loss",
    )


# --------------------------------------------------------------------------- using a run


def load(run_dir: Path) -> Predictor:
    """A finished run's model (base + adapter, or full weights), tokenizer and stop markers."""
    config = load_config(run_dir / "config.yaml")
    folder = run_dir / "model"
    info = json.loads((folder / "lmtune_model.json").read_text())
    trusted = config.model.trust_remote_code
    tokenizer = load_tokenizer(folder, trusted)
    if info["adapter"]:
        model = load_weights(base_model(info, config), folder)
    else:
        attn = info["attn_implementation"]
        model = load_generative(folder, attn_implementation=attn, trust_remote_code=trusted)
    return Predictor(config.task, config, model, tokenizer, info, stop=Stop(**info["stop"]), run_dir=run_dir)


def base_model(info: dict, config: RunConfig):
    """The untuned base model a run started from (an adapter run's saved weights are loaded onto it)."""
    return load_generative(
        assets.resolve_base(info["base_model"], info.get("base_path")),
        attn_implementation=info["attn_implementation"],
        trust_remote_code=config.model.trust_remote_code,
        **load_options(config.method),
    )


def answer(run: Predictor, prompts: list[list[int]], texts: list[str], streamer=None) -> list[dict]:
    answers = generate_answers(
        run.model,
        run.tokenizer,
        prompts,
        run.stop,
        run.config.evaluation.generation,
        precision=inference_precision(run.config, run.model),
        attention=run.info["attn_implementation"],
        desc="predict",
        streamer=streamer,
    )
    return [{"prompt": text, **a} for text, a in zip(texts, answers, strict=True)]


def prediction_kinds(test: list, results: dict[str, dict]) -> dict:
    """predictions.json's blocks for a generative run: each model's loss per test example ("lm"), and
    its answers to the test prompts ("generate"). Takes the per-example columns out of `results`."""
    losses = {name: r.pop("per_example") for name, r in results.items()}
    kinds = {"lm": predictions.kind_block([e.where for e in test], {}, losses)}
    answers = {name: [a["answer"] for a in r.get("answers", [])] for name, r in results.items()}
    n = min(len(a) for a in answers.values())
    if n:
        chats = [e for e in test if e.prompt_ids is not None][:n]
        kinds["generate"] = predictions.kind_block(
            [e.where for e in chats],
            {"references": [e.reference for e in chats]},
            {name: {"predictions": a[:n]} for name, a in answers.items()},
        )
    return kinds


def _test_examples(
    run: Predictor, data: str | None, read_examples, encode_split, reader: dict
) -> list[Encoded]:
    if data is None:  # same files and seed: the same test split
        items = read_examples(run.config, run.tokenizer)[0]["test"]
    else:
        rows = read_file(run.config, data, "generative", run.tokenizer, reader)
        items = [to_example(row) for row in rows]
    return encode_split(run.config, run.tokenizer, items, {})


def evaluate_run(run_dir: Path, data: str | None, read_examples, encode_split, reader: dict) -> dict:
    """Loss, perplexity and generation scores (with 95% intervals) of a finished run on its test split
    or a file."""
    run = load(run_dir)
    encoded = _test_examples(run, data, read_examples, encode_split, reader)
    result = score(run.config, run.model, run.tokenizer, run.stop, encoded, "eval")
    result.pop("answers", None)
    result.pop("per_example", None)
    return result


def predictions_on(
    run_dir: Path, data: str | None, read_examples, encode_split, reader: dict, *, base: bool = False
) -> dict:
    """The run's (and with `base`, the untuned base model's) per-example losses and answers on its test
    split or a file, in predictions.json's form: what `lmtune compare --data` pairs between runs."""
    run = load(run_dir)
    encoded = _test_examples(run, data, read_examples, encode_split, reader)
    results = {}
    if base:
        model = base_model(run.info, run.config)
        results["base"] = score(run.config, model, run.tokenizer, run.stop, encoded, "base")
    results["tuned"] = score(run.config, run.model, run.tokenizer, run.stop, encoded, "eval")
    return {"labels": None, "kinds": prediction_kinds(encoded, results)}
