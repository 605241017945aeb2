"""SST-2 training speed: lmtune against a plain transformers Trainer, three ways, in one process.

All three fine-tune the bundled all-MiniLM-L6-v2 on the same seeded sample of SST-2 train rows
(same epochs, batch size, learning rate, seed, max length, no warmup, no weight decay) and score
the full dev set (872 rows):

- padded:     the Trainer as the official `run_glue.py` example sets it up by default: every text
              padded to max_length, `default_data_collator`, fp32, sdpa attention.
- hand-tuned: the same Trainer with the usual manual fix: dynamic padding (`DataCollatorWithPadding`)
              and length-grouped batches; otherwise defaults (fp32, sdpa, default optimizer).
- lmtune:     lmtune's own classify recipe (`prepare` + `train`) with whatever it picks on this
              hardware (precision, attention, optimizer, batching).

Training throughput is rows * epochs / train_runtime for all three, where train_runtime is the
Trainer's own (so the end-of-epoch dev evaluation inside the training loop counts for every way).
The figure to quote is the ratio between ways, not the seconds: absolute speed depends on the
machine (cores, AMX, load from other processes), while all three ways here share one machine,
one process and one data sample, so their ratio is what carries over.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
    default_data_collator,
    set_seed,
)

from lmtune.assets import resolve_model  # noqa: E402

WAYS = ("padded", "hand-tuned", "lmtune")
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/data/sst2"


def read_tsv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE)


def run_trainer(way: str, train: pd.DataFrame, dev: pd.DataFrame, args: argparse.Namespace) -> dict[str, Any]:
    """Ways 1 and 2: a plain transformers Trainer, padded to max_length or dynamically padded."""
    model_path = str(resolve_model(args.model))
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    padded = way == "padded"

    def encode(frame: pd.DataFrame) -> Dataset:
        dataset = Dataset.from_pandas(frame.reset_index(drop=True))
        padding = "max_length" if padded else False

        def tokenize(batch: dict[str, list]) -> dict[str, list]:
            out = tokenizer(batch["sentence"], padding=padding, max_length=args.max_length, truncation=True)
            if not padded:
                out["length"] = [len(ids) for ids in out["input_ids"]]
            return out

        return dataset.map(tokenize, batched=True, remove_columns=["sentence"])

    def accuracy(eval_pred: Any) -> dict[str, float]:
        logits, labels = eval_pred.predictions, eval_pred.label_ids
        return {"accuracy": float((np.argmax(logits, -1) == labels).mean())}

    set_seed(args.seed)
    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=2)
    with tempfile.TemporaryDirectory(prefix=f"sst2-{way}-") as tmp:
        extra: dict[str, Any] = {}
        if not padded:
            extra = {"train_sampling_strategy": "group_by_length", "length_column_name": "length"}
        training_args = TrainingArguments(
            output_dir=tmp,
            per_device_train_batch_size=args.batch_size,
            per_device_eval_batch_size=64,
            learning_rate=args.lr,
            num_train_epochs=args.epochs,
            seed=args.seed,
            report_to="none",
            save_strategy="no",
            eval_strategy="epoch",
            **extra,
        )
        trainer = Trainer(
            model=model,
            args=training_args,
            train_dataset=encode(train),
            eval_dataset=encode(dev),
            data_collator=default_data_collator if padded else DataCollatorWithPadding(tokenizer),
            processing_class=tokenizer,
            compute_metrics=accuracy,
        )
        runtime = trainer.train().metrics["train_runtime"]
        # The end-of-epoch evaluation already scored the final weights on dev; reuse it.
        evals = [h["eval_accuracy"] for h in trainer.state.log_history if "eval_accuracy" in h]
        dev_acc = evals[-1] if evals else trainer.evaluate()["eval_accuracy"]
    return {"train_s": runtime, "dev_acc": dev_acc}


def run_lmtune(train: pd.DataFrame, dev_path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Way 3: lmtune's classify recipe on the same rows, written to a temporary TSV."""
    from lmtune.config import apply_overrides, validate
    from lmtune.runs import open_run
    from lmtune.tasks.classify import prepare
    from lmtune.tasks.classify import train as lmtune_train

    with tempfile.TemporaryDirectory(prefix="sst2-lmtune-") as tmp:
        train_path = Path(tmp) / "train.tsv"
        with open(train_path, "w", encoding="utf-8") as out:
            out.write("sentence\tlabel\n")
            for sentence, label in zip(train["sentence"], train["label"], strict=True):
                out.write(f"{sentence}\t{label}\n")
        raw = {
            "task": "classify",
            "model": {"name": args.model, "max_length": args.max_length},
            "data": {
                "train": str(train_path),
                "validation": str(dev_path),
                "test": str(dev_path),
                "text_column": "sentence",
                "label_column": "label",
            },
            "method": {"name": "full"},
            "training": {
                "epochs": args.epochs,
                "batch_size": args.batch_size,
                "learning_rate": args.lr,
                "seed": args.seed,
                "warmup_ratio": 0.0,
                "weight_decay": 0.0,
                "early_stopping": {"patience": None},
            },
            "evaluation": {"baselines": []},
            "output": {"dir": str(Path(tmp) / "runs"), "name": "lmtune"},
        }
        config = validate(apply_overrides(raw, args.set), "bench")
        prepared = prepare(config)
        with open_run(config, overwrite=True) as run_dir:
            metrics = lmtune_train(config, prepared, run_dir)
    return {
        "train_s": metrics["train_runtime_s"],
        "dev_acc": metrics["test"]["tuned"]["accuracy"],
        "lmtune_reported_samples_per_s": metrics["train_samples_per_second"],
    }


def report(results: dict[str, dict[str, Any]]) -> str:
    lines = [f"{'way':<12} | {'samples/s':>9} | {'train s':>8} | {'dev acc':>7}", "-" * 46]
    for way, r in results.items():
        lines.append(f"{way:<12} | {r['samples_per_s']:>9.1f} | {r['train_s']:>8.1f} | {r['dev_acc']:>7.4f}")
    lines.append("")
    for a, b in (("lmtune", "hand-tuned"), ("lmtune", "padded"), ("hand-tuned", "padded")):
        if a in results and b in results:
            ratio = results[a]["samples_per_s"] / results[b]["samples_per_s"]
            lines.append(f"ratio {a} / {b} = {ratio:.2f}x")
    if "lmtune" in results and "hand-tuned" in results:
        delta = 100 * (results["lmtune"]["dev_acc"] - results["hand-tuned"]["dev_acc"])
        lines.append(f"dev accuracy delta lmtune - hand-tuned = {delta:+.2f} points")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--model", default="bundled:minilm", help="bundled name or local HF directory")
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--epochs", type=float, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--only", default=",".join(WAYS), help=f"comma list of: {', '.join(WAYS)}")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override lmtune's config"
    )
    args = parser.parse_args()
    ways = [w.strip() for w in args.only.split(",") if w.strip()]
    if unknown := sorted(set(ways) - set(WAYS)):
        parser.error(f"--only: unknown way(s) {', '.join(unknown)}; allowed: {', '.join(WAYS)}")

    dev_path = args.data_dir / "dev.tsv"
    full = read_tsv(args.data_dir / "train.tsv")
    train = full.sample(n=min(args.rows, len(full)), random_state=args.seed)
    dev = read_tsv(dev_path)
    rows = len(train)

    started = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    for way in WAYS:
        if way not in ways:
            continue
        print(f"=== {way}: {rows} rows x {args.epochs:g} epoch(s), dev {len(dev)} rows", flush=True)
        r = run_lmtune(train, dev_path, args) if way == "lmtune" else run_trainer(way, train, dev, args)
        r["samples_per_s"] = rows * args.epochs / r["train_s"]
        results[way] = r
    wall = time.perf_counter() - started

    print("\n" + report(results))
    print(f"wall time {wall:.0f} s (loading, tokenizing, training and scoring; all ways)")
    if args.json:
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "json"}
        payload = {
            "settings": settings,
            "rows": rows,
            "dev_rows": len(dev),
            "wall_s": wall,
            "results": results,
        }
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
