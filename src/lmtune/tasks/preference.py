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
import statistics
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from transformers import set_seed

from lmtune import assets, shims
from lmtune.config import RunConfig
from lmtune.data.batches import Encoded
from lmtune.data.pipeline import prepare_data
from lmtune.data.report import data_sections
from lmtune.errors import LmtuneError
from lmtune.evaluate import checks, metrics, predictions
from lmtune.evaluate.generation import EVAL_TOKENS, answer_prompts, heldout_loss
from lmtune.models import shared_prompt
from lmtune.models.chat_template import Stop, apply_template, end_of_turn, render
from lmtune.models.load import (
    device,
    load_generative,
    load_tokenizer,
    position_limit,
    set_attention,
    training_attention,
)
from lmtune.models.methods import load_options
from lmtune.models.precision import bf16_autocast, inference_precision
from lmtune.models.weights import merge
from lmtune.page import png, subplots, table
from lmtune.progress import progress
from lmtune.runs import MARKER, read_run
from lmtune.tasks import components, generative, preference_dpo, sft
from lmtune.tasks.contract import TrainResult
from lmtune.train import check_setup, fit, guarded_trainer, training_settings


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

    @property
    def unpaired(self) -> bool:
        return self.rejected_ids is None

    @property
    def length(self) -> int:
        """Prompt + the longer answer: the width TRL pads the pair to, what max_length and grouping read."""
        return len(self.prompt_ids) + max(len(self.chosen_ids), len(self.rejected_ids or []))


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
        desirable = None if row["completion"] is None else row["label"] == "true"
        pair = Pair(
            row["where"], prompt, prompt_ids, chosen_ids, rejected_ids, first, row["rejected"], desirable
        )
        if pair.length > limit:
            problem = f"prompt + answer is {pair.length} tokens after templating, longer than model.max_length = {limit}"
            generative.bad_record(config, row["where"], problem, report)
            continue
        out.append(pair)
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
    if config.data.weight_column:
        raise LmtuneError(
            f"data.weight_column = {config.data.weight_column!r}: the preference losses (TRL's trainers) "
            "take no per-row weights; remove it (kto: preference.desirable_weight / undesirable_weight)"
        )
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
    """Each pair's summed log-probability of its chosen and rejected answers and their token counts; for
    unpaired answers, each answer's ("logp", "tokens") and whether it is desirable. Each prompt is
    computed once for its answers where the model allows (models.shared_prompt), else each answer is
    scored as its own sequence."""
    answers = ("chosen",) if pairs[0].unpaired else ("chosen", "rejected")
    if config.preference.shared_prompt and shared_prompt.supported(model):
        out = _shared_log_probs(config, model, tokenizer.pad_token_id, pairs, answers, desc)
    else:
        out = {}
        for answer in answers:
            loss = heldout_loss(
                config, model, tokenizer.pad_token_id, _as_encoded(pairs, answer), f"{desc}: {answer}"
            )
            out[f"{answer}_logp"] = [-s for s in loss["per_example"]["loss_sum"]]
            out[f"{answer}_tokens"] = loss["per_example"]["tokens"]
    if len(answers) == 1:
        return {
            "logp": out["chosen_logp"],
            "tokens": out["chosen_tokens"],
            "desirable": [p.desirable for p in pairs],
        }
    return out


def _shared_log_probs(config: RunConfig, model, pad_id: int, pairs: list[Pair], answers, desc: str) -> dict:
    """log_probs with each prompt computed once: length-sorted batches of at most eval_batch_size pairs
    and EVAL_TOKENS padded answer tokens."""
    model.eval()
    model.to(device())
    autocast = bf16_autocast(inference_precision(config, model))
    order = sorted(range(len(pairs)), key=lambda i: pairs[i].length)
    out = {f"{a}_{kind}": [0] * len(pairs) for a in answers for kind in ("logp", "tokens")}
    batches, batch = [], []
    for i in order:  # ascending: the newest pair is the widest
        if batch and (
            len(batch) == config.training.eval_batch_size
            or (len(batch) + 1) * len(answers) * pairs[i].length > EVAL_TOKENS
        ):
            batches.append(batch)
            batch = []
        batch.append(i)
    batches += [batch] if batch else []
    with progress(len(pairs), desc=f"{desc}: log-probabilities", unit="pair") as bar:
        for rows in batches:
            ids = [getattr(pairs[i], f"{a}_ids") for i in rows for a in answers]
            with autocast, torch.inference_mode():
                sums, counts = shared_prompt.answer_log_probs(
                    model, [pairs[i].prompt_ids for i in rows], ids, pad_id
                )
            for j, (s, n) in enumerate(zip(sums.tolist(), counts.tolist(), strict=True)):
                i, answer = rows[j // len(answers)], answers[j % len(answers)]
                out[f"{answer}_logp"][i], out[f"{answer}_tokens"][i] = s, int(n)
            bar.update(len(rows))
    return out


def kind_of(pairs: list[Pair]) -> str:
    """The metrics registry's kind for these held-out rows (lmtune.tasks.preference_measures)."""
    return "unpaired_preference" if pairs[0].unpaired else "preference"


def score_pairs(
    config: RunConfig, model, tokenizer, stop: Stop, pairs: list[Pair], desc: str, reference=None
):
    """Preference metrics with intervals (`reference`: the starting model's log-probabilities, for the
    implicit rewards), and generated answers to the first held-out prompts: stop rate and length."""
    logp = log_probs(config, model, tokenizer, pairs, desc)
    inputs = dict(logp)
    if reference is not None:
        inputs.update({f"ref_{key}": value for key, value in reference.items() if key.endswith("logp")})
    kind = kind_of(pairs)
    result = metrics.score(kind, inputs, seed=config.training.seed, where=f"{desc}: held-out {kind}")
    chats = _as_encoded(pairs, "chosen")
    generated = answer_prompts(config, model, tokenizer, stop, chats, desc, ids=True)
    result["ci"].update({k: v for k, v in generated.get("ci", {}).items() if k in ("rougeL",)})
    for key in ("stop_rate", "prompts", "answers", "rougeL"):
        if key in generated:
            result[key] = generated[key]
    answers = generated.get("answers", [])
    result["answer_tokens"] = float(np.mean([a["new_tokens"] for a in answers])) if answers else None
    result["per_example"] = logp
    return result


def _next_token_log_probs(model, ids: list[int], prompt: int, autocast) -> torch.Tensor:
    """Log-probabilities over the vocabulary at each position after the prompt (answer token i's row)."""
    with autocast, torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids], device=device())).logits[0, prompt - 1 : -1]
    return logits.float().log_softmax(-1)


@contextmanager
def _reference_scorer(config: RunConfig, model, prepared: Prepared, autocast):
    """_next_token_log_probs of the model tuning started from: an adapter's base is the tuned model with
    the adapter off; after a full fine-tune the starting weights are loaded again (a second copy, only
    while the measure runs)."""
    if hasattr(model, "disable_adapter"):

        def score(ids: list[int], prompt: int) -> torch.Tensor:
            with model.disable_adapter():
                return _next_token_log_probs(model, ids, prompt, autocast)

        yield score
        return
    reference = _load_start(config, prepared.model_path, prepared.start).to(device()).eval()
    yield lambda ids, prompt: _next_token_log_probs(reference, ids, prompt, autocast)


def kl_to_reference(
    config: RunConfig, model, prepared: Prepared, prompts: list[list[int]], answers: list[dict], desc: str
) -> dict:
    """KL(tuned ‖ reference) along the tuned model's own answers to held-out prompts: at each answer
    token the exact KL of the two next-token distributions over the whole vocabulary, summed per answer
    (no sampling estimate at any position: the answers are what the tuned model said, and the divergence
    at each of their positions is computed in full). policy_kl metrics, with intervals over the answers."""
    autocast = bf16_autocast(inference_precision(config, model))
    kept = [(p, a["ids"]) for p, a in zip(prompts, answers, strict=True) if a["ids"]]
    if not kept:
        return {}
    model.eval()
    kl_sum = []
    with (
        _reference_scorer(config, model, prepared, autocast) as reference,
        progress(len(kept), desc=f"{desc}: KL to reference", unit="answer") as bar,
    ):
        for p, ids in kept:
            policy = _next_token_log_probs(model, p + ids, len(p), autocast)
            kl_sum.append(float((policy.exp() * (policy - reference(p + ids, len(p)))).sum()))
            bar.update(1)
    inputs = {"kl_sum": kl_sum, "tokens": [len(ids) for _, ids in kept]}
    return metrics.score("policy_kl", inputs, seed=config.training.seed, where=f"{desc}: KL to reference")


# ------------------------------------------------------------------------------ training


def trainer_for(
    config: RunConfig, run_dir: Path, *, model, tokenizer, train_dataset, eval_dataset, callbacks: tuple = ()
):
    """TRL's DPOTrainer (preference.loss dpo, ipo) or KTOTrainer (kto) with lmtune's Guards, callbacks and
    training settings. The reference: an adapter's base (TRL keeps a frozen copy of the fresh adapter,
    no second model) or, for methods that change the model's own weights, log-probabilities precomputed
    once before training. No gradient checkpointing unless asked (TRL's default is on; it costs ~40%)."""
    from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer

    p = config.preference
    has_validation, settings = training_settings(config, run_dir, model, train_dataset, eval_dataset)
    settings.update(
        gradient_checkpointing=False,
        max_length=config.model.max_length,
        beta=p.beta,
        disable_dropout=True,
        # at the default eval batch (64 pairs: 128 sequences of up to 512 tokens at once) TRL's validation
        # of 110 HH pairs took 370 s; as wide as training's batches, 156-175 s (measured beside other work)
        per_device_eval_batch_size=min(config.training.eval_batch_size, config.training.batch_size),
        dataset_num_proc=None,
        # True: TRL otherwise reruns every validation batch through the plain forward for vocabulary-sized
        # logits nothing reads, and the Trainer gathers them all (gigabytes on a few hundred pairs)
        prediction_loss_only=True,
        # training.group_by_length reads the `length` the recipe gives each pair; TRL's collator reads only
        # its own keys, so the column may stay
        remove_unused_columns=False,
    )
    reference = {"ref_model": None}  # dpo, ipo, kto: see above; simpo and orpo need no reference
    if p.loss in ("dpo", "ipo", "kto"):
        settings["precompute_ref_log_probs"] = not hasattr(model, "peft_config")
    if p.loss == "kto":  # its KL term pairs each answer with its neighbours in a fixed-order batch
        settings["train_sampling_strategy"] = "sequential"
        weights = {"desirable_weight": p.desirable_weight, "undesirable_weight": p.undesirable_weight}
        args, kind = KTOConfig(**settings, **weights), KTOTrainer
    elif p.loss == "simpo":  # CPO with the SimPO loss and no behaviour-cloning term
        make_args, kind = shims.trl_experimental("cpo")
        args, reference = (
            make_args(**settings, loss_type="simpo", cpo_alpha=0.0, simpo_gamma=p.simpo_gamma),
            {},
        )
    elif p.loss == "orpo":
        make_args, kind = shims.trl_experimental("orpo")
        args, reference = make_args(**settings), {}
    else:
        # TRL's sigmoid loss ignores label_smoothing; its robust loss is DPO with flipped-label smoothing
        loss_type = {"dpo": "robust" if p.label_smoothing else "sigmoid", "ipo": "ipo"}[p.loss]
        losses = {loss_type: 1.0, **({"sft": p.sft_weight} if p.sft_weight else {})}
        args = DPOConfig(
            **settings,
            loss_type=list(losses),
            loss_weights=list(losses.values()),
            label_smoothing=p.label_smoothing,
        )
        shared = p.shared_prompt and preference_dpo.usable(model, list(losses))
        kind = preference_dpo.trainer_class() if shared else DPOTrainer
    return guarded_trainer(
        kind,
        config,
        run_dir,
        has_validation=has_validation,
        eval_dataset=eval_dataset,
        callbacks=callbacks,
        model=model,
        **reference,
        args=args,
        train_dataset=train_dataset,
        processing_class=tokenizer,
    )


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
            "length": [p.length for p in pairs],
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
    test = splits["test"]
    results = {}
    if "base" in config.evaluation.baselines:  # a search's trials skip it; then no implicit rewards either
        results["base"] = score_pairs(config, model, tokenizer, stop, test, "base")
    before = checks.measure(config, model, tokenizer, prepared.report["references"])

    model, params = components.adapt(config, model)
    # the kernel SFT picks for rows this long (models.load.training_attention: sdpa above 256 tokens)
    widest = statistics.median(p.length for p in splits["train"])
    if kernel := training_attention(config.model.attn_implementation, widest):
        set_attention(model, kernel)
    print(
        f"data: {len(splits['train'])} train / {len(splits['validation'])} validation / {len(test)} "
        f"test {'answers' if unpaired else 'pairs'}; {len(prepared.report['skipped'])} skipped at tokenisation"
    )
    trainer = trainer_for(
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
    reference = results["base"]["per_example"] if results else None
    tuned = score_pairs(config, model, tokenizer, stop, test, "tuned", reference=reference)
    generated = tuned.get("answers", [])
    prompts = [p.prompt_ids for p in test[: len(generated)]]  # the first held-out prompts were answered
    drift = kl_to_reference(config, model, prepared, prompts, generated, "tuned")
    tuned["ci"].update(drift.pop("ci", {}))
    tuned.update({k: v for k, v in drift.items() if k != "n"})
    results["tuned"] = tuned
    audits = checks.compare(config, model, tokenizer, prepared.report["references"], before)
    scored = {name: r.pop("per_example") for name, r in results.items()}
    predictions.save(run_dir, {kind_of(test): predictions.kind_block([p.where for p in test], {}, scored)})
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
            f"{'answers' if unpaired else 'pairs'} (train / validation / test)": " / ".join(
                str(v) for v in rows.values()
            ),
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


SHOWN = (  # the report's table; a row no model has (pairs or unpaired answers) is left out
    "preference_accuracy",
    "implicit_reward_accuracy",
    "reward_margin",
    "chosen_logp_per_token",
    "rejected_logp_per_token",
    "desirable_auc",
    "implicit_reward_auc",
    "desirable_logp_per_token",
    "undesirable_logp_per_token",
    "kl_to_reference",
    "kl_per_answer",
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
    header = ["score", *results]
    rows = []
    for name in SHOWN:
        if all(name not in r for r in results.values()):
            continue
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
        (
            f"Held-out {'answers' if test[0].unpaired else 'pairs'}: before and after",
            table(header, rows),
        ),
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
    [(kind, block)] = saved["kinds"].items()
    return metrics.score(kind, block["models"]["tuned"], seed=run.config.training.seed, where="eval")


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
        "kinds": {kind_of(pairs): predictions.kind_block([p.where for p in pairs], {}, models)},
    }
