"""Preference tuning of decoder-only models on TRL's trainers: DPO and IPO (DPOTrainer), KTO (KTOTrainer),
SimPO and ORPO (TRL's experimental CPOTrainer and ORPOTrainer, through lmtune.shims), on the run's chat
template and end-of-turn.

The reference model is the policy's own base with the adapter switched off when the method is an
adapter (TRL does this when it gets a PEFT model and no reference: no second copy in memory); a full
fine-tune precomputes the reference log-probabilities once before training instead.

`model.name: runs/<sft run>` starts from a finished SFT run: its weights (an adapter is merged into
its base first), its chat template and its end-of-turn, so SFT → preference is two commands.

Scores on the held-out pairs, base (the starting model) vs tuned: preference accuracy (the chosen
answer's summed log-probability above the rejected one's) with its interval, the implicit-reward
accuracy (the tuned margin above the reference's), the mean margin and the per-token log-probabilities
of both answers; generated answers to the held-out prompts give the stop rate and the answer length.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from datasets import Dataset
from transformers import set_seed

from lmtune import assets
from lmtune.config import RunConfig
from lmtune.data.batches import Encoded
from lmtune.data.pipeline import prepare_data
from lmtune.data.report import data_sections
from lmtune.errors import LmtuneError
from lmtune.evaluate import checks, metrics, predictions
from lmtune.evaluate.generation import answer_prompts, heldout_loss
from lmtune.models.chat_template import Stop, apply_template, end_of_turn, render
from lmtune.models.load import load_generative, load_tokenizer, position_limit
from lmtune.models.methods import load_options
from lmtune.models.weights import merge
from lmtune.page import png, subplots, table
from lmtune.runs import MARKER, read_run
from lmtune.tasks import components, generative, sft
from lmtune.tasks.contract import TrainResult
from lmtune.train import check_setup, fit, preference_trainer


@dataclass
class Pair:
    """One preference record as token ids: the rendered prompt and each answer's continuation of it."""

    where: str
    prompt: list[dict]
    prompt_ids: list[int]
    chosen_ids: list[int]  # unpaired: the answer
    rejected_ids: list[int] | None
    chosen: str
    rejected: str | None
    desirable: bool | None = None  # unpaired only


@dataclass
class Prepared:
    model_path: Path | str
    tokenizer: object
    model: object
    stop: Stop
    template: str
    splits: dict[str, list[Pair]]
    report: dict  # the data report ("data"), records skipped at tokenisation, the audit references
    start: dict | None  # the SFT run this one starts from: its lmtune_model.json


# ------------------------------------------------------------------------------------ data


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def encode(tokenizer, prompt: list[dict], answer: str) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids): the rendered prompt with its generation prompt, and what the rendered
    prompt + answer adds to it (the end-of-turn included), cut where the two diverge as TRL cuts them."""
    prompt_ids = tokenizer.encode(render(tokenizer, prompt, generation_prompt=True), add_special_tokens=False)
    full = tokenizer.encode(
        render(tokenizer, [*prompt, {"role": "assistant", "content": answer}]), add_special_tokens=False
    )
    cut = _common_prefix(prompt_ids, full)
    return prompt_ids[:cut], full[cut:]


def encode_split(config: RunConfig, tokenizer, rows, report: dict) -> list[Pair]:
    """Token ids of every pair; a pair longer than model.max_length after templating is a bad record."""
    limit, out = config.model.max_length, []
    for row in rows:
        prompt = generative.with_system(json.loads(row["messages"]), config.chat.system)
        first = row["chosen"] if row["chosen"] is not None else row["completion"]
        prompt_ids, chosen_ids = encode(tokenizer, prompt, first)
        rejected_ids = encode(tokenizer, prompt, row["rejected"])[1] if row["rejected"] is not None else None
        longest = len(prompt_ids) + max(len(chosen_ids), len(rejected_ids or []))
        if longest > limit:
            problem = f"prompt + answer is {longest} tokens after templating, longer than model.max_length = {limit}"
            generative.bad_record(config, row["where"], problem, report)
            continue
        desirable = None if row["completion"] is None else row["label"] == "true"
        out.append(
            Pair(
                row["where"], prompt, prompt_ids, chosen_ids, rejected_ids, first, row["rejected"], desirable
            )
        )
    return out


def _start(config: RunConfig) -> tuple[Path | str, dict | None]:
    """The weights to start from: a model, or a finished SFT run (its model/ folder and settings)."""
    name = config.model.name
    candidate = Path(name)
    if candidate.is_dir() and (candidate / MARKER).is_file():
        task = read_run(candidate)["task"]
        if task != "sft":
            raise LmtuneError(
                f"model.name: '{name}' is a {task} run; preference tuning starts from an sft run"
            )
        return candidate, json.loads((candidate / "model" / "lmtune_model.json").read_text())
    return assets.resolve_model(name), None


def prepare(config: RunConfig) -> Prepared:
    check_setup(config)
    path, start = _start(config)
    trusted = config.model.trust_remote_code
    tokenizer = load_tokenizer(path / "model" if start else path, trusted)
    if tokenizer.eos_token is None:
        raise LmtuneError(f"model.name: the tokenizer of '{path}' has no EOS token; a causal LM needs one")
    # an adapter run's folder holds no model config: its base has it
    architecture = assets.resolve_base(start["base_model"], start.get("base_path")) if start else path
    limit = position_limit(architecture, tokenizer, trusted)
    if limit is not None and config.model.max_length > limit:
        raise LmtuneError(
            f"model.max_length = {config.model.max_length}: the model reads at most {limit} tokens; allowed: 4..{limit}"
        )
    # an SFT run's tokenizer carries the template it trained with; keep it (and its end-of-turn)
    template = "tokenizer" if start else apply_template(tokenizer, config.chat.template)
    stop = Stop(**start["stop"]) if start else end_of_turn(tokenizer)
    data = prepare_data(config, "preference", tokenizer)
    unpaired = config.preference.loss == "kto"
    for rows in data.splits.values():
        if len(rows) and (rows[0]["completion"] is not None) != unpaired:
            kind = "unpaired answers (prompt, completion, label)" if not unpaired else "pairs"
            raise LmtuneError(
                f"{rows[0]['where']}: preference.loss = {config.preference.loss!r} cannot train on {kind}; "
                + (
                    "use preference.loss: kto"
                    if not unpaired
                    else "use preference.loss: dpo, ipo, simpo, orpo"
                )
            )
    report: dict = {"skipped": [], "data": data.report}
    splits = {name: encode_split(config, tokenizer, rows, report) for name, rows in data.splits.items()}
    for name in ("train", "test"):
        if not splits[name]:
            raise LmtuneError(f"data: no usable {name} pairs left (see data.on_error and model.max_length)")
    report["references"] = checks.read(config, tokenizer, sft.encode_split)
    set_seed(config.training.seed)
    model = _load_start(config, path, start)
    return Prepared(path, tokenizer, model, stop, template, splits, report, start)


def _load_start(config: RunConfig, path, start: dict | None):
    trusted = config.model.trust_remote_code
    if start is None:
        return load_generative(
            path,
            attn_implementation=config.model.attn_implementation,
            dropout=config.model.dropout,
            trust_remote_code=trusted,
            **load_options(config.method),
        )
    sft_run = generative.load(path)  # base + adapter, or the full weights
    model = merge(sft_run.model) if start["adapter"] else sft_run.model
    if config.method.name == "qlora":
        raise LmtuneError(
            "method.name = 'qlora' from an SFT run: export it merged and start from that folder"
        )
    return model


# ------------------------------------------------------------------------------- scoring


def _as_encoded(pairs: list[Pair], answer: str) -> list[Encoded]:
    out = []
    for p in pairs:
        ids = p.chosen_ids if answer == "chosen" else p.rejected_ids
        out.append(
            Encoded(
                p.prompt_ids + ids,
                [-100] * len(p.prompt_ids) + ids,
                p.where,
                prompt_ids=p.prompt_ids,
                prompt=p.prompt[-1]["content"],
                reference=p.chosen if answer == "chosen" else p.rejected,
            )
        )
    return out


def log_probs(config: RunConfig, model, tokenizer, pairs: list[Pair], desc: str) -> dict:
    """Each pair's summed log-probability of its chosen and rejected answers and their token counts."""
    out = {}
    for answer in ("chosen", "rejected"):
        loss = heldout_loss(
            config, model, tokenizer.pad_token_id, _as_encoded(pairs, answer), f"{desc}: {answer}"
        )
        out[f"{answer}_logp"] = [-s for s in loss["per_example"]["loss_sum"]]
        out[f"{answer}_tokens"] = loss["per_example"]["tokens"]
    return out


def score_pairs(
    config: RunConfig, model, tokenizer, stop: Stop, pairs: list[Pair], desc: str, reference=None
):
    """Preference metrics with intervals (`reference`: the starting model's log-probabilities, for the
    implicit-reward accuracy), and generated answers to the first held-out prompts: stop rate and length."""
    logp = log_probs(config, model, tokenizer, pairs, desc)
    inputs = dict(logp)
    if reference is not None:
        inputs.update(ref_chosen_logp=reference["chosen_logp"], ref_rejected_logp=reference["rejected_logp"])
    result = metrics.score("preference", inputs, seed=config.training.seed, where=f"{desc}: pairs")
    generated = answer_prompts(config, model, tokenizer, stop, _as_encoded(pairs, "chosen"), desc)
    result["ci"].update({k: v for k, v in generated.get("ci", {}).items() if k in ("rougeL",)})
    for key in ("stop_rate", "prompts", "answers", "rougeL"):
        if key in generated:
            result[key] = generated[key]
    answers = generated.get("answers", [])
    result["answer_tokens"] = float(np.mean([a["new_tokens"] for a in answers])) if answers else None
    result["per_example"] = logp
    return result


# ------------------------------------------------------------------------------ training


def _rows(pairs: list[Pair], unpaired: bool) -> Dataset:
    """What TRL's trainers read: conversational prompt and answers (they apply the run's template)."""
    prompts = [p.prompt for p in pairs]
    if unpaired:
        return Dataset.from_dict(
            {
                "prompt": prompts,
                "completion": [[{"role": "assistant", "content": p.chosen}] for p in pairs],
                "label": [bool(p.desirable) for p in pairs],
            }
        )
    return Dataset.from_dict(
        {
            "prompt": prompts,
            "chosen": [[{"role": "assistant", "content": p.chosen}] for p in pairs],
            "rejected": [[{"role": "assistant", "content": p.rejected}] for p in pairs],
            # the padded length of the pair in a batch: what grouping batches by length reads
            "length": [len(p.prompt_ids) + max(len(p.chosen_ids), len(p.rejected_ids)) for p in pairs],
        }
    )


def train(
    config: RunConfig, prepared: Prepared, run_dir: Path, resume: bool = False, callbacks: tuple = ()
) -> TrainResult:
    """Base scores on the held-out pairs, preference tuning, tuned scores; model, metrics, report."""
    components.begin(config, run_dir, resume)
    _save_splits(prepared.splits, run_dir / "data")
    tokenizer, model, splits, stop = prepared.tokenizer, prepared.model, prepared.splits, prepared.stop
    unpaired = config.preference.loss == "kto"
    results: dict[str, dict] = {}
    base = None
    if not unpaired:
        results["base"] = score_pairs(config, model, tokenizer, stop, splits["test"], "base")
        base = results["base"]["per_example"]
    before = checks.measure(config, model, tokenizer, prepared.report["references"])

    model, params = components.adapt(config, model)
    print(
        f"data: {len(splits['train'])} train / {len(splits['validation'])} validation / {len(splits['test'])} "
        f"test {'answers' if unpaired else 'pairs'}; {len(prepared.report['skipped'])} skipped at tokenisation"
    )
    trainer = preference_trainer(
        config,
        run_dir,
        model=model,
        tokenizer=tokenizer,
        train_dataset=_rows(splits["train"], unpaired),
        eval_dataset=_rows(splits["validation"], unpaired) if splits["validation"] else None,
        callbacks=callbacks,
    )
    history = fit(trainer, run_dir, resume)
    model = trainer.model
    if not unpaired:
        results["tuned"] = score_pairs(
            config, model, tokenizer, stop, splits["test"], "tuned", reference=base
        )
    audits = checks.compare(config, model, tokenizer, prepared.report["references"], before)
    kinds = (
        {
            "preference": predictions.kind_block(
                [p.where for p in splits["test"]], {}, {n: r.pop("per_example") for n, r in results.items()}
            )
        }
        if results
        else {}
    )
    if kinds:
        predictions.save(run_dir, kinds)
    info = {"template": prepared.template, "stop": stop.__dict__, "started_from": str(prepared.model_path)}
    generative.save_model(config, prepared.model_path, model, tokenizer, stop, info, run_dir / "model")
    answers = {name: r.pop("answers", []) for name, r in results.items()}
    rows = {name: len(items) for name, items in splits.items()}
    out = components.result(trainer, history, results, params, rows, audits)
    out.update(skipped_records=len(prepared.report["skipped"]), loss=config.preference.loss)
    return components.finish(
        config,
        run_dir,
        out,
        prepared.report["data"],
        facts={
            "task": "preference",
            "loss": f"{config.preference.loss} (beta {config.preference.beta})",
            "model": config.model.name,
            "method": f"{config.method.name} ({params[0]:,} / {params[1]:,} trainable)",
            "reference": _reference(config),
            "pairs (train / validation / test)": " / ".join(str(v) for v in rows.values()),
            "steps": out["steps"],
        },
        sections=sections(results, answers, splits["test"], history)
        + checks.sections(audits)
        + data_sections(prepared.report["data"]),
        history=history,
        metric="loss",
    )


def _reference(config: RunConfig) -> str:
    if config.preference.loss in ("simpo", "orpo"):
        return "none (this loss needs no reference model)"
    if config.method.name in ("full", "freeze", "adapter"):
        return "the starting model's log-probabilities, precomputed before training"
    return "the starting model: the adapter disabled"


def _save_splits(splits: dict[str, list[Pair]], folder: Path) -> None:
    folder.mkdir(exist_ok=True)
    for name, pairs in splits.items():
        with open(folder / f"{name}.jsonl", "w", encoding="utf-8") as out:
            for p in pairs:
                row = {"where": p.where, "prompt": p.prompt, "chosen": p.chosen}
                row.update({"rejected": p.rejected} if p.rejected is not None else {"label": p.desirable})
                out.write(json.dumps(row, ensure_ascii=False) + "\n")


SHOWN = (
    "preference_accuracy",
    "implicit_reward_accuracy",
    "reward_margin",
    "chosen_logp_per_token",
    "rejected_logp_per_token",
    "stop_rate",
    "answer_tokens",
)


CURVES = {  # TRL's training logs: what the policy did to each answer, and the margin between them
    "rewards/margins": "reward margin",
    "rewards/accuracies": "reward accuracy",
    "logps/chosen": "log-prob chosen",
    "logps/rejected": "log-prob rejected",
}


def curves(history: list[dict]) -> str | None:
    """The preference logs over training steps, one panel each (TensorBoard has them too)."""
    shown = {key: [(h["step"], h[key]) for h in history if key in h] for key in CURVES}
    shown = {key: points for key, points in shown.items() if points}
    if not shown:
        return None
    fig, axes = subplots(1, len(shown), figsize=(3.2 * len(shown), 2.8), squeeze=False)
    for ax, (key, points) in zip(axes[0], shown.items(), strict=True):
        ax.plot(*zip(*points, strict=True), "-", color="tab:purple")
        ax.set_title(CURVES[key], fontsize=9)
        ax.set_xlabel("step")
    fig.tight_layout()
    return png(fig)


def sections(results: dict, answers: dict, test: list[Pair], history: list[dict]) -> list[tuple[str, str]]:
    plot = curves(history)
    training = [("Preference training curves", plot)] if plot else []
    if not results:
        return training
    header = ["score", *results]
    rows = []
    for name in SHOWN:
        cells = []
        for r in results.values():
            value, ci = r.get(name), r.get("ci", {}).get(name)
            cells.append(
                "—" if value is None else f"{value:.4f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
            )
        rows.append([name, *cells])
    samples = []
    for i, pair in enumerate(test[: max((len(a) for a in answers.values()), default=0)][:8]):
        cells = [pair.prompt[-1]["content"][:400], pair.chosen[:400]]
        cells += [a[i]["answer"][:400] if i < len(a) else "" for a in answers.values()]
        samples.append(cells)
    return [
        ("Held-out pairs: before and after", table(header, rows)),
        *training,
        ("Sample answers", table(["prompt", "chosen", *answers], samples)),
    ]


# --------------------------------------------------------------------------- using a run


load, answer, prompt_ids = generative.load, generative.answer, sft.prompt_ids


def predict(run_dir: Path, texts: list[str]) -> list[dict]:
    return predict_with(load(run_dir), texts)


def predict_with(run, texts: list[str]) -> list[dict]:
    return answer(run, [prompt_ids(run, text) for text in texts], texts)


def evaluate(run_dir: Path, data: str | None = None, **reader) -> dict:
    """Preference scores of a finished run on its own held-out pairs (data/test.jsonl) or a file."""
    saved = predictions_on(run_dir, data, **reader)
    run = load(run_dir)
    block = saved["kinds"]["preference"]["models"]["tuned"]
    return metrics.score("preference", block, seed=run.config.training.seed, where="eval")


def predictions_on(run_dir: Path, data: str | None = None, *, base: bool = False, **reader) -> dict:
    from lmtune.config import with_reader
    from lmtune.data.pipeline import read_file

    run = load(run_dir)
    config = with_reader(run.config, reader)
    if data is None:
        path = run_dir / "data" / "test.jsonl"
        data = str(path)
    rows = read_file(config, data, "preference", run.tokenizer)
    pairs = encode_split(config, run.tokenizer, rows, {})
    models = {"tuned": log_probs(config, run.model, run.tokenizer, pairs, "eval")}
    if base:
        models = {
            "base": log_probs(config, generative.base_model(run.info, config), run.tokenizer, pairs, "base"),
            **models,
        }
    return {
        "labels": None,
        "kinds": {"preference": predictions.kind_block([p.where for p in pairs], {}, models)},
    }
