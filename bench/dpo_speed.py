"""DPO speed: lmtune's preference recipe against TRL's DPOTrainer with its defaults, side by side in one run.

Both train LoRA (r 16, alpha 32, dropout 0 on q/k/v/o/gate/up/down) on the bundled SmolLM2-135M-Instruct
with DPO (sigmoid loss, the same beta) on the same seeded Anthropic HH harmless pairs, the tokenizer's
own chat template, and the same max length, seed, learning rate, batch size, steps, warmup and linear
schedule (weight decay 0). Everything else stays each side's own default, which is the point; both use
the base with the adapter disabled (TRL: a frozen copy of the fresh adapter) as the reference.

- trl:    DPOTrainer(model=<path>, peft_config=LoraConfig(...)) on conversational prompt/chosen/rejected
          records; use_cpu is set (TRL's default bf16=True fails validation on a CPU without it).
- lmtune: `python -m lmtune.cli train CONFIG` (task preference) on the same pairs, no validation split.
- trl-no-gc: TRL with gradient checkpointing off: a diagnostic, NOT TRL's default.
- lmtune-no-group: lmtune with training.group_by_length off: a diagnostic that splits what grouping
  pairs by length gives (speed) and costs (its longest batch comes first: the peak) from the rest.
- lmtune-no-share: lmtune with preference.shared_prompt off (TRL's own loss step, each prompt computed
  for each answer): a diagnostic that splits what prompt sharing gives from the rest. Tokens/s counts
  the same pair tokens on every side (the prompt twice, as TRL feeds it), so a side that computes each
  prompt once is credited with the tokens it did not have to compute: the rate at which the training
  data goes through.

Each side runs in its own subprocess (bench/sides.py: its own peak RSS, and how many cores other
processes kept busy). Tokens/s = the real tokens of the training pairs consumed (prompt + chosen and
prompt + rejected, as TRL tokenizes them) / the trainer's own train_runtime. Held-out preference
accuracy: one function here scores every saved adapter, and the untuned base, on the held-out pairs
(the chosen answer's summed log-probability above the rejected one's), with a 95% bootstrap interval.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import yaml  # noqa: E402
from sft_speed import TARGETS  # noqa: E402
from sides import lmtune_side, trl_side, verdicts  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from lmtune.assets import resolve_model  # noqa: E402
from lmtune.data import preference  # noqa: E402
from lmtune.evaluate import stats  # noqa: E402

MODEL = "bundled:smollm2-135m-instruct"
DEFAULT_DATA = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "data"
    / "preference"
    / "hh_rlhf_harmless_base_test.jsonl.gz"
)
LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "target_modules": TARGETS}  # peft names
SIDES = ("trl", "lmtune", "trl-no-gc", "lmtune-no-group", "lmtune-no-share")


def encode(tokenizer, pair: dict) -> tuple[list[int], list[int], list[int]]:
    """(prompt, chosen, rejected) ids as TRL 1.16 cuts them: the rendered prompt, and what each rendered
    prompt + answer adds to it."""
    render = tokenizer.apply_chat_template
    prompt = list(
        render(pair["prompt"], add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    )
    full = [
        list(render(pair["prompt"] + pair[key], tokenize=True, return_dict=True)["input_ids"])
        for key in ("chosen", "rejected")
    ]

    def shared(ids: list[int]) -> int:
        return next(
            (i for i, (a, b) in enumerate(zip(prompt, ids, strict=False)) if a != b),
            min(len(prompt), len(ids)),
        )

    cut = min(shared(ids) for ids in full)
    return prompt[:cut], full[0][cut:], full[1][cut:]


def sample_pairs(args: argparse.Namespace, tokenizer) -> tuple[list[dict], list[dict], int]:
    """Seeded, disjoint train and held-out pairs among the well-formed ones that fit max_length."""
    with gzip.open(args.data, "rt", encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    usable = []
    for record in records:
        try:
            p = preference.read("hh", record)
        except preference.Bad:
            continue
        pair = {
            "prompt": p.prompt,
            "chosen": [{"role": "assistant", "content": p.chosen}],
            "rejected": [{"role": "assistant", "content": p.rejected}],
        }
        prompt, chosen, rejected = encode(tokenizer, pair)
        if len(prompt) + max(len(chosen), len(rejected)) <= args.max_length:
            usable.append(pair)
    picked = random.Random(args.seed).sample(usable, min(len(usable), args.pairs + args.heldout))
    return picked[: args.pairs], picked[args.pairs :], len(records) - len(usable)


def as_jsonl(pairs: list[dict], path: Path) -> None:
    """The pairs as lmtune reads them (prompt messages + chosen + rejected answers)."""
    path.write_text(
        "".join(
            json.dumps(
                {
                    "prompt": p["prompt"],
                    "chosen": p["chosen"][0]["content"],
                    "rejected": p["rejected"][0]["content"],
                }
            )
            + "\n"
            for p in pairs
        )
    )


# ------------------------------------------------------------------------------------------ sides


def lmtune_command(
    args: argparse.Namespace, work: Path, steps: int, side: str = "lmtune"
) -> tuple[list[str], Path]:
    config = {
        "task": "preference",
        "model": {"name": MODEL, "max_length": args.max_length, "attn_implementation": args.attention},
        "data": {
            "train": str(work / "train.jsonl"),
            "test": str(work / "test.jsonl"),
            "split": {"validation": 0.0},
            "dedup": {"exact": False},  # the sample is already unique; nothing may differ from TRL's rows
            "leakage": {"check": False},
        },
        "method": {
            "name": "lora",
            "lora": {"r": LORA["r"], "alpha": LORA["lora_alpha"], "dropout": 0.0, "target_modules": TARGETS},
        },
        "preference": {"loss": "dpo", "beta": args.beta, "shared_prompt": side != "lmtune-no-share"},
        "training": {
            "epochs": 1,
            "max_steps": steps,
            "batch_size": args.batch_size,
            "learning_rate": args.lr,
            "warmup_ratio": args.warmup,
            "scheduler": "linear",
            "weight_decay": 0.0,
            "seed": args.seed,
            # lmtune-no-group: the diagnostic that splits the speed (and peak) of grouping from the rest
            "group_by_length": side != "lmtune-no-group",
        },
        "evaluation": {"baselines": [], "generation": {"prompts": 0}},
        "output": {"dir": str(work / "runs"), "name": side},
    }
    path = work / f"{side}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return [sys.executable, "-m", "lmtune.cli", "train", str(path), "--overwrite"], work / "runs" / side


def trl_worker(spec_path: Path) -> None:
    """The TRL side, in its own process: DPOTrainer with its defaults plus the aligned settings."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    spec = json.loads(spec_path.read_text())
    pairs = json.loads(Path(spec["train"]).read_text())
    trainer = DPOTrainer(
        model=spec["model_path"],
        args=DPOConfig(output_dir=spec["out"], **spec["dpo"]),
        train_dataset=Dataset.from_list(pairs),
        peft_config=LoraConfig(task_type="CAUSAL_LM", **spec["lora"]),
    )
    runtime = trainer.train().metrics["train_runtime"]
    trainer.save_model(spec["adapter"])
    result = {"train_runtime_s": runtime, "steps": trainer.state.global_step}
    Path(spec["result"]).write_text(json.dumps(result))


def trl_settings(args: argparse.Namespace, steps: int, no_gc: bool = False) -> dict[str, Any]:
    """The DPOConfig arguments set explicitly: the aligned ones; everything else is TRL's default."""
    settings = {
        "max_steps": steps,
        "per_device_train_batch_size": args.batch_size,
        "learning_rate": args.lr,
        "warmup_steps": args.warmup,
        "lr_scheduler_type": "linear",
        "weight_decay": 0.0,
        "seed": args.seed,
        "max_length": args.max_length,
        "beta": args.beta,
        "use_cpu": not torch.cuda.is_available(),
    }
    return settings | ({"gradient_checkpointing": False} if no_gc else {})


def run_side(side: str, args: argparse.Namespace, work: Path, model_path: str, steps: int) -> dict[str, Any]:
    if side.startswith("lmtune"):
        cmd, run_dir = lmtune_command(args, work, steps, side)
        out, metrics = lmtune_side(work / side, cmd, run_dir)
        return out | {"train_runtime_s": metrics["train_runtime_s"], "steps": metrics["steps"]}
    spec = {
        "model_path": model_path,
        "train": str(work / "train.json"),
        "dpo": trl_settings(args, steps, no_gc=side == "trl-no-gc"),
        "lora": LORA,
    }
    return trl_side(side, work / side, Path(__file__).resolve(), spec)


# ------------------------------------------------------------------------------- comparing


def summed_logp(model, prompt: list[int], answer: list[int]) -> float:
    ids = torch.tensor([prompt + answer])
    logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()
    return float(-F.cross_entropy(logits, torch.tensor(answer), reduction="sum"))


def preference_accuracy(model_path: str, adapter: str | None, encoded: list, seed: int) -> tuple[float, list]:
    """Share of held-out pairs whose chosen answer the model finds likelier, with a bootstrap interval."""
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    with torch.inference_mode():
        right = np.array([summed_logp(model, p, c) > summed_logp(model, p, r) for p, c, r in encoded], float)
    samples = stats.bootstrap(len(right), 1000, seed, lambda idx: right[idx].mean(1)[:, None])
    return float(right.mean()), stats.percentile_ci(samples[:, 0])


def report(results: dict[str, dict[str, Any]], base: tuple[float, list]) -> str:
    head = f"{'side':<10} | {'train s':>8} | {'tokens/s':>8} | {'peak RSS MiB':>12} | {'pref. accuracy':>22} | others' cores"
    lines = [head, "-" * (len(head) + 10)]
    for side, r in results.items():
        accuracy = f"{r['accuracy']:.3f} [{r['accuracy_ci'][0]:.3f}, {r['accuracy_ci'][1]:.3f}]"
        lines.append(
            f"{side:<10} | {r['train_runtime_s']:>8.1f} | {r['tokens_per_s']:>8.1f} | {r['peak_rss_mib']:>12.0f} | "
            f"{accuracy:>22} | {r['others_cores']:.2f}"
        )
    lines.append(
        f"{'base':<10} | {'':>8} | {'':>8} | {'':>12} | {base[0]:>10.3f} [{base[1][0]:.3f}, {base[1][1]:.3f}] | (untuned)"
    )
    lines += verdicts(results, "preference accuracy", "accuracy", 3)
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="an HH-RLHF .jsonl.gz file")
    parser.add_argument("--pairs", type=int, default=128, help="training pairs")
    parser.add_argument("--heldout", type=int, default=100, help="held-out pairs for the accuracy")
    parser.add_argument("--steps", type=int, help="optimizer steps (default: one epoch)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--warmup", type=float, default=0.1, help="warmup, as a ratio of the steps")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--max-length", type=int, default=384)
    parser.add_argument(
        "--attention",
        default="auto",
        help="model.attn_implementation of the lmtune sides (auto: lmtune's choice)",
    )
    parser.add_argument("--only", default=",".join(SIDES), help=f"comma list of: {', '.join(SIDES)}")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--trl-worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.sides = [s.strip() for s in args.only.split(",") if s.strip()]
    if unknown := sorted(set(args.sides) - set(SIDES)):
        parser.error(f"--only: unknown side(s) {', '.join(unknown)}; allowed: {', '.join(SIDES)}")
    return args


def main() -> None:
    args = parse_args()
    if args.trl_worker:
        return trl_worker(args.trl_worker)
    model_path = str(resolve_model(MODEL))
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    train, held, dropped = sample_pairs(args, tokenizer)
    steps_per_epoch = math.ceil(len(train) / args.batch_size)
    steps = args.steps or steps_per_epoch
    encoded = [encode(tokenizer, pair) for pair in train]
    tokens = sum(2 * len(p) + len(c) + len(r) for p, c, r in encoded) * steps / steps_per_epoch
    work = Path(tempfile.mkdtemp(prefix="dpo-speed-"))
    (work / "train.json").write_text(json.dumps(train))
    as_jsonl(train, work / "train.jsonl")
    as_jsonl(held[:8], work / "test.jsonl")  # lmtune scores its own test split after training: keep it short
    print(
        f"{len(train)} train / {len(held)} held-out pairs ({dropped} malformed or longer than {args.max_length} "
        f"left out); {steps} steps x {args.batch_size} = {steps / steps_per_epoch:g} epoch(s), {tokens:.0f} real tokens"
    )
    print(f"TRL settings aligned: DPOConfig({trl_settings(args, steps)}), LoraConfig({LORA})", flush=True)
    results: dict[str, dict[str, Any]] = {}
    for side in (s for s in SIDES if s in args.sides):
        print(f"=== {side} (1-min load {os.getloadavg()[0]:.2f})", flush=True)
        results[side] = run_side(side, args, work, model_path, steps)
        results[side]["tokens_per_s"] = tokens / results[side]["train_runtime_s"]
    held_encoded = [encode(tokenizer, pair) for pair in held]
    for r in results.values():
        r["accuracy"], r["accuracy_ci"] = preference_accuracy(
            model_path, r["adapter"], held_encoded, args.seed
        )
    base = preference_accuracy(model_path, None, held_encoded, args.seed)
    print("\n" + report(results, base))
    if args.json:
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "json"}
        args.json.write_text(
            json.dumps(
                {"settings": settings, "steps": steps, "tokens": tokens, "base": base, "results": results},
                indent=2,
            )
        )
    if args.keep:
        print(f"work folder kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
