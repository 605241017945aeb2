"""SFT speed: lmtune's sft recipe against TRL's SFTTrainer with its defaults, side by side in one run.

Both train LoRA (r 16, alpha 32, dropout 0.05 on q/k/v/o/gate/up/down) on the bundled SmolLM2-135M-
Instruct with the same seeded alpaca_1k rows, the tokenizer's own chat template, loss on the responses
only, and the same max length, seed, learning rate, batch size, steps, warmup and linear schedule
(weight decay 0). Everything else stays each side's own default, which is the point.

- trl:    SFTTrainer(model=<path>, peft_config=LoraConfig(...)) on conversational prompt/completion
          records; use_cpu is set (TRL's default bf16=True fails validation on a CPU without it).
- lmtune: `python -m lmtune.cli train CONFIG` on the same rows as an alpaca file, no validation split.
- trl-no-gc (ask with --only): TRL with gradient checkpointing off: a diagnostic, NOT TRL's default.

Each side runs in its own subprocess, in a fixed order, so its peak RSS (os.wait4) is its own (load,
data preparation, training, saving). Tokens/s = real (non-padding) tokens of the training examples
consumed / the trainer's own train_runtime (no loading or data preparation). The samplers order the
examples differently, but each consumes every example once per epoch: for whole epochs (default: 256
rows / batch 8 = 32 steps) the count is exact and equal for both, for partial epochs it is the
expected value (total x epochs); TRL's own num_tokens log is printed as a check. Rows longer than
max_length are left out beforehand, so no side truncates or skips. Eval loss: one function here scores
both saved adapters (fp32, base + adapter via peft, mean over response tokens) on held-out rows.
Quote ratios from a quiet machine only: a busy neighbour on 2 cores slows a side several-fold, so the
table shows how many cores other processes kept busy during each side, and warns above 0.15.
"""

from __future__ import annotations

import argparse
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

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import yaml  # noqa: E402
from sides import lmtune_side, trl_side, verdicts  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from lmtune.assets import resolve_model  # noqa: E402

MODEL = "bundled:smollm2-135m-instruct"
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "alpaca_1k" / "alpaca_data_1k.json"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": TARGETS}  # peft names
SIDES = ("trl", "lmtune", "trl-no-gc")
TRL_DEFAULTS = (
    "gradient_checkpointing=True, bf16=True (CPU autocast), model loaded in float32 with sdpa attention, "
    "padding_free=False, packing=False, completion_only_loss=None (on for prompt/completion data), "
    "train_sampling_strategy='random', optim adamw_torch_fused, max_grad_norm=1.0, logging_steps=10, "
    "save_steps=500 (no checkpoint in the run), report_to=[]"
)

Encoded = tuple[list[int], list[int]]  # (input_ids, labels with -100 where no loss)


def chat(row: dict) -> tuple[list[dict], list[dict]]:
    """Prompt and completion messages: the user turn as lmtune's alpaca reader builds it."""
    extra = row.get("input") or ""
    user = f"{row['instruction']}\n\n{extra}" if extra.strip() else row["instruction"]
    return [{"role": "user", "content": user}], [{"role": "assistant", "content": row["output"]}]


def encode(tokenizer, row: dict) -> Encoded:
    """Token ids and labels the way TRL builds them for conversational prompt/completion records."""
    prompt, completion = chat(row)
    render = tokenizer.apply_chat_template
    prompt_ids = list(
        render(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    )
    full_ids = list(render(prompt + completion, tokenize=True, return_dict=True)["input_ids"])
    n = len(prompt_ids)
    if full_ids[:n] != prompt_ids:
        raise SystemExit("the chat template renders the prompt differently alone than before an answer")
    return full_ids, [-100] * n + full_ids[n:]


def sample_rows(args: argparse.Namespace, tokenizer) -> tuple[list[dict], list[dict], int]:
    """Seeded, disjoint train and held-out rows among those that are complete and fit max_length."""
    rows = json.loads(args.data.read_text(encoding="utf-8"))
    usable = [
        r
        for r in rows
        if r["instruction"].strip()
        and r["output"].strip()
        and len(encode(tokenizer, r)[0]) <= args.max_length
    ]
    picked = random.Random(args.seed).sample(usable, min(len(usable), args.rows + args.heldout))
    return picked[: args.rows], picked[args.rows :], len(rows) - len(usable)


# ------------------------------------------------------------------------------------------ sides


def lmtune_command(args: argparse.Namespace, work: Path, steps: int) -> tuple[list[str], Path]:
    """The run config (lmtune defaults except the aligned settings) and the CLI command that trains it."""
    config = {
        "task": "sft",
        "model": {"name": MODEL, "max_length": args.max_length},
        # no validation split (no evaluation while training); an 8-row test file keeps the scoring after it short
        "data": {
            "train": str(work / "train.json"),
            "test": str(work / "test.json"),
            "format": "alpaca",
            "split": {"validation": 0.0},
        },
        "method": {"name": "lora", "lora": {"r": LORA["r"], "alpha": LORA["lora_alpha"]}},
        "training": {
            "epochs": 1,
            "max_steps": steps,
            "batch_size": args.batch_size,
            "learning_rate": args.lr,
            "warmup_ratio": args.warmup,
            "scheduler": "linear",
            "weight_decay": 0.0,
            "seed": args.seed,
        },
        "evaluation": {"baselines": [], "generation": {"prompts": 0}},
        "output": {"dir": str(work / "runs"), "name": "lmtune"},
    }
    config["method"]["lora"] |= {"dropout": LORA["lora_dropout"], "target_modules": TARGETS}
    path = work / "lmtune.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    cmd = [sys.executable, "-m", "lmtune.cli", "train", str(path), "--overwrite"]
    return cmd + [f"--set={item}" for item in args.set], work / "runs" / "lmtune"


def trl_worker(spec_path: Path) -> None:
    """The TRL side, in its own process: SFTTrainer with its defaults plus the aligned settings."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    spec = json.loads(spec_path.read_text())
    rows = json.loads(Path(spec["train"]).read_text())
    records = [dict(zip(("prompt", "completion"), chat(row), strict=True)) for row in rows]
    config = SFTConfig(output_dir=spec["out"], **spec["sft"])
    lora = LoraConfig(task_type="CAUSAL_LM", **spec["lora"])
    trainer = SFTTrainer(
        model=spec["model_path"], args=config, train_dataset=Dataset.from_list(records), peft_config=lora
    )
    data = trainer.train_dataset
    runtime = trainer.train().metrics["train_runtime"]
    trainer.save_model(spec["adapter"])
    logged = [h["num_tokens"] for h in trainer.state.log_history if "num_tokens" in h]
    result = {
        "train_runtime_s": runtime,
        "steps": trainer.state.global_step,
        "trl_num_tokens": logged[-1] if logged else None,
        "encoded": [
            [list(ids), list(labels)] for ids, labels in zip(data["input_ids"], data["labels"], strict=True)
        ],
    }
    Path(spec["result"]).write_text(json.dumps(result))


def trl_settings(args: argparse.Namespace, steps: int, no_gc: bool = False) -> dict[str, Any]:
    """The SFTConfig arguments set explicitly: the aligned ones; everything else is TRL's default."""
    settings = {
        "max_steps": steps,
        "per_device_train_batch_size": args.batch_size,
        "learning_rate": args.lr,
        "warmup_steps": args.warmup,  # < 1: a ratio of the total steps (transformers 5)
        "lr_scheduler_type": "linear",
        "weight_decay": 0.0,
        "seed": args.seed,
        "max_length": args.max_length,
        "use_cpu": not torch.cuda.is_available(),  # else the default bf16=True fails validation on a CPU
    }
    return settings | ({"gradient_checkpointing": False} if no_gc else {})


def run_side(side: str, args: argparse.Namespace, work: Path, model_path: str, steps: int) -> dict[str, Any]:
    if side == "lmtune":
        cmd, run_dir = lmtune_command(args, work, steps)
        out, metrics = lmtune_side(work / side, cmd, run_dir)
        return out | {
            "train_runtime_s": metrics["train_runtime_s"],
            "steps": metrics["steps"],
            "lmtune_train_tokens": metrics["train_tokens"],
        }
    spec = {
        "model_path": model_path,
        "train": str(work / "train.json"),
        "sft": trl_settings(args, steps, no_gc=side == "trl-no-gc"),
        "lora": LORA,
    }
    return trl_side(side, work / side, Path(__file__).resolve(), spec)


# ------------------------------------------------------------------------------- comparing


def check_tokens(work: Path, tokenizer, reference: list[Encoded], results: dict[str, dict]) -> None:
    """Print whether lmtune's own encoding (its alpaca reader and template code) gives the same ids and
    labels as TRL's prepared dataset, example by example."""
    from lmtune.data.formats import load_examples
    from lmtune.models.chat_template import encode_conversation

    items = load_examples(str(work / "train.json"), format="alpaca", fields={}, on_error="fail").items
    ours = [encode_conversation(tokenizer, e.messages, "responses") for e in items]
    same = sum(a == b for a, b in zip(ours, reference, strict=True))
    print(f"ids + labels, lmtune's encoding vs the TRL-style rendering here: {same}/{len(ours)} identical")
    for side, r in results.items():
        if "encoded" in r:
            trl = [tuple(e) for e in r.pop("encoded")]
            same = sum(a == b for a, b in zip(ours, trl, strict=True))
            print(
                f"  {side}: vs TRL's own prepared dataset: {same}/{len(ours)} identical; TRL num_tokens log: "
                f"{r['trl_num_tokens']}"
            )
        else:
            print(f"  {side}: metrics.json train_tokens = {r['lmtune_train_tokens']} (one epoch)")


def heldout_loss(model_path: str, adapter: str | None, encoded: list[Encoded], pad: int) -> float:
    """Mean cross-entropy over the response tokens of `encoded`: fp32, base model plus optional adapter."""
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    order, total, count = sorted(encoded, key=lambda e: len(e[0])), 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(order), 8):
            rows = order[start : start + 8]
            width = max(len(ids) for ids, _ in rows)
            ids = torch.tensor([i + [pad] * (width - len(i)) for i, _ in rows])
            mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in rows])
            labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])[:, 1:]
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            total += F.cross_entropy(
                logits.transpose(1, 2), labels, ignore_index=-100, reduction="sum"
            ).item()
            count += int(labels.ne(-100).sum())
    return total / count


def report(results: dict[str, dict[str, Any]], base_loss: float) -> str:
    head = f"{'side':<10} | {'train s':>8} | {'tokens/s':>8} | {'peak RSS MiB':>12} | {'eval loss':>9} | others' cores"
    lines = [head, "-" * (len(head) + 10)]
    for side, r in results.items():
        lines.append(
            f"{side:<10} | {r['train_runtime_s']:>8.1f} | {r['tokens_per_s']:>8.1f} | {r['peak_rss_mib']:>12.0f} | "
            f"{r['eval_loss']:>9.4f} | {r['others_cores']:.2f}"
        )
    lines.append(
        f"{'base':<10} | {'':>8} | {'':>8} | {'':>12} | {base_loss:>9.4f} | (untuned, for reference)"
    )
    lines += verdicts(results, "eval loss", "eval_loss", 4)
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="alpaca JSON file")
    parser.add_argument("--rows", type=int, default=256, help="training examples")
    parser.add_argument("--heldout", type=int, default=64, help="held-out examples for the eval loss")
    parser.add_argument("--steps", type=int, help="optimizer steps (default: one epoch)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--warmup", type=float, default=0.1, help="warmup, as a ratio of the steps")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--only", default="trl,lmtune", help=f"comma list of: {', '.join(SIDES)}")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (runs, adapters, logs)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="lmtune override")
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
    train, held, dropped = sample_rows(args, tokenizer)
    steps_per_epoch = math.ceil(len(train) / args.batch_size)
    steps = args.steps or steps_per_epoch
    reference = [encode(tokenizer, row) for row in train]
    tokens = sum(len(ids) for ids, _ in reference) * steps / steps_per_epoch
    work = Path(tempfile.mkdtemp(prefix="sft-speed-"))
    (work / "train.json").write_text(json.dumps(train))
    (work / "test.json").write_text(json.dumps(held[:8]))  # for lmtune's own scoring after training
    print(
        f"{len(train)} train / {len(held)} held-out rows ({dropped} too long or empty left out); {steps} steps "
        f"x {args.batch_size} = {steps / steps_per_epoch:g} epoch(s), {tokens:.0f} real tokens consumed"
    )
    print(f"TRL settings aligned: SFTConfig({trl_settings(args, steps)}), LoraConfig({LORA})")
    print(f"TRL defaults kept: {TRL_DEFAULTS}", flush=True)

    results: dict[str, dict[str, Any]] = {}
    for side in (s for s in SIDES if s in args.sides):
        print(f"=== {side} (1-min load {os.getloadavg()[0]:.2f})", flush=True)
        results[side] = run_side(side, args, work, model_path, steps)
        results[side]["tokens_per_s"] = tokens / results[side]["train_runtime_s"]
    check_tokens(work, tokenizer, reference, results)
    held_encoded = [encode(tokenizer, row) for row in held]
    for r in results.values():
        r["eval_loss"] = heldout_loss(model_path, r["adapter"], held_encoded, tokenizer.pad_token_id)
    base_loss = heldout_loss(model_path, None, held_encoded, tokenizer.pad_token_id)

    print("\n" + report(results, base_loss))
    if args.json:
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "json"}
        payload = {"settings": settings, "steps": steps, "tokens": tokens, "base_eval_loss": base_loss}
        args.json.write_text(json.dumps(payload | {"results": results}, indent=2))
    if args.keep:
        print(f"work folder kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
