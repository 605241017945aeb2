"""The `lmtune` command: verbs map to functions in the modules below; no logic of its own."""

from __future__ import annotations

import argparse
import json
import os
import sys
from importlib import resources
from pathlib import Path

# Nothing is ever downloaded at run time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# What the command line shows of transformers: errors only, no loading/saving bars (training and
# evaluation keep their own). Set by the entry point, never as a side effect of a library module;
# a user's own TRANSFORMERS_VERBOSITY=info still wins.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from lmtune.errors import Interrupted, LmtuneError, as_flags, machine_failure  # noqa: E402


def format_table(results: dict[str, dict], task: str) -> str:
    """The task's headline scores per model, each with its 95% bootstrap interval when it has one."""
    from lmtune.tasks import TASKS

    columns = [c for c in TASKS[task].columns if any(c in r for r in results.values())]

    def cell(result: dict, metric: str) -> str:
        if result.get(metric) is None:  # undefined for this model (the base has no implicit reward)
            return "—"
        low_high = result.get("ci", {}).get(metric)
        return f"{result[metric]:.4f}" + (f" [{low_high[0]:.3f}, {low_high[1]:.3f}]" if low_high else "")

    cells = {name: [cell(r, m) for m in columns] for name, r in results.items()}
    width = max(12, *(len(c) + 2 for c in columns), *(len(c) + 2 for row in cells.values() for c in row))
    name_width = max(8, *(len(name) + 2 for name in results))
    lines = [f"{'model':<{name_width}}" + "".join(f"{m:>{width}}" for m in columns)]
    lines += [f"{name:<{name_width}}" + "".join(f"{c:>{width}}" for c in row) for name, row in cells.items()]
    if any("ci" in r for r in results.values()):
        lines.append("[low, high]: 95% bootstrap confidence interval")
    return "\n".join(lines)


def cmd_train(args) -> int:
    from lmtune.config import load_config

    config = load_config(args.config, args.set)
    return _train(config, resume=args.resume, overwrite=args.overwrite)


def _train(config, *, resume: bool, overwrite: bool) -> int:
    from lmtune.runs import claim, final_dir, open_run
    from lmtune.tasks import recipe

    if config.training.cv_folds:
        from lmtune.cv import check_flags

        check_flags(config, resume)
    # the name is held, and every refusal made, before the data pipeline and the model load
    with claim(config, resume=resume, overwrite=overwrite):
        if config.training.cv_folds:  # k runs in one directory: folds/fold-N, cv_metrics.json, report.html
            from lmtune.cv import cross_validate, format_summary

            print("\n" + format_summary(cross_validate(config, resume=resume, overwrite=overwrite)))
            print(f"\nrun directory: {final_dir(config)}\nreport: {final_dir(config) / 'report.html'}")
            return 0
        task = recipe(config.task)
        prepared = task.prepare(config)
        with open_run(config, resume=resume, overwrite=overwrite) as run_dir:
            metrics = task.train(config, prepared, run_dir, resume=resume)
    print(f"\nTest split ({metrics['rows']['test']} examples):")
    print(
        format_table(metrics["test"], config.task)
        if metrics["test"]
        else "(no scores for this run's test split)"
    )
    print(f"\nrun directory: {final_dir(config)}\nreport: {final_dir(config) / 'report.html'}")
    return 0


def quiet_optuna() -> None:
    """Optuna's per-trial INFO lines duplicate lmtune's own; the search's entry points call this."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def cmd_tune(args) -> int:
    from lmtune.config import load_config
    from lmtune.tune import tune

    quiet_optuna()
    config = load_config(args.config, args.set)
    return tune(config, args.config, workers=args.workers, overwrite=args.overwrite)


def cmd_quickstart(args) -> int:
    """The bundled demo. Its default name never replaces a run: a taken name becomes quickstart-2, -3, …;
    a name the user chose (--set output.name=…) is refused like `train` does, unless --overwrite."""
    from lmtune.config import load_config
    from lmtune.runs import final_dir, partial_dir

    with resources.as_file(resources.files("lmtune") / "quickstart.yaml") as path:
        config = load_config(path, args.set)
    named = any(item.split("=", 1)[0].strip() == "output.name" for item in args.set)
    if not named and not args.overwrite:
        base, n = config.output.name, 1
        while final_dir(config).exists() or partial_dir(config).exists():
            n += 1
            config.output.name = f"{base}-{n}"
        if n > 1:
            print(f"{Path(config.output.dir) / base} exists: this run goes to {final_dir(config)}")
    return _train(config, resume=False, overwrite=args.overwrite)


def _task_of(run_dir: Path) -> tuple[str, object]:
    """(task name, recipe module) of a finished run."""
    from lmtune.runs import read_run
    from lmtune.tasks import recipe

    name = read_run(run_dir)["task"]
    return name, recipe(name)


def _reader(args) -> dict:
    """How to read --data: the reader flags, as the data.* keys they stand for."""
    return {
        "text_column": args.text_column,
        "label_column": args.label_column,
        "separator": args.separator,
        "encoding": args.encoding,
        "columns": [c.strip() for c in args.columns.split(",")] if args.columns else None,
    }


def cmd_eval(args) -> int:
    run_dir = Path(args.run_dir)
    name, task = _task_of(run_dir)
    with as_flags(READER_FLAGS, "eval --data options"):
        metrics = task.evaluate(run_dir, args.data, **_reader(args))
    print(format_table({"tuned": metrics}, name))
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(metrics, indent=2))
    return 0


def cmd_compare(args) -> int:
    from lmtune.evaluate import compare, predictions

    run_dirs = [Path(p) for p in args.run_dirs]
    tasks = {run_dir: _task_of(run_dir)[1] for run_dir in run_dirs}  # each must be a finished run
    reader = _reader(args)

    def scorer(run_dir: Path, with_base: bool) -> dict:
        if args.data is None:
            return predictions.load(run_dir)
        with as_flags(READER_FLAGS, "eval --data options"):
            return tasks[run_dir].predictions_on(run_dir, args.data, base=with_base, **reader)

    names = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    entries = compare.gather(run_dirs, scorer, base=not args.no_base)
    result = compare.compare(entries, names, args.reference)
    print(compare.summary(result))
    out = (
        Path(args.out)
        if args.out
        else run_dirs[0].parent / ("compare-" + "-vs-".join(r.name for r in run_dirs))
    )
    print(f"\nreport: {compare.write(result, out)}")
    return 0


def cmd_predict(args) -> int:
    from lmtune.tasks.contract import Predictor

    run_dir = Path(args.run_dir)
    _task_of(run_dir)  # a damaged or unfinished run directory is refused before the texts are read
    texts = list(args.texts)
    if args.file:
        path = Path(args.file)
        if not path.is_file():
            raise LmtuneError(f"--file: '{path}' does not exist")
        try:
            lines = path.read_text(encoding="utf-8").split("\n")
        except UnicodeDecodeError as exc:
            raise LmtuneError(f"--file {path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x})") from None
        texts += [line.strip() for line in lines if line.strip()]
    if not texts:
        raise LmtuneError("predict: give texts as arguments or --file FILE (one text per line)")
    if args.context is not None:  # a qa run: every question is asked about this context
        context = args.context
        if context.startswith("@"):
            path = Path(context[1:])
            if not path.is_file():
                raise LmtuneError(f"--context: '{path}' does not exist")
            context = path.read_text(encoding="utf-8")
        texts = [(text, context) for text in texts]
    for result in Predictor.open(run_dir).predict(texts):
        if args.json:
            print(json.dumps(result, ensure_ascii=False))
        elif "question" in result:  # qa: the answer, its place in the context and score, then the question
            where = f"{result['start']}:{result['end']}" if result["answer"] else "-"
            print(
                f"{result['answer'] or '(no answer)'}\t{result['score']:.3f}\t{where}\t{result['question']}"
            )
        elif "entities" in result:  # token classification: the text, then each entity on its own line
            print(result["text"])
            for entity in result["entities"]:
                span = f"{entity['start']}:{entity['end']}"
                print(f"  {entity['label']}\t{entity['score']:.3f}\t{span}\t{entity['text']}")
        elif "answer" in result:  # generative runs
            print(
                result["answer"] + ("" if result["stopped"] else "  [no end-of-turn: max_new_tokens reached]")
            )
        else:  # a label and its probability, the labels of a multi-label run, or a number; then the input
            shown = result["text"] + (f"\t{result['text_pair']}" if "text_pair" in result else "")
            if "labels" in result:  # multi-label: every label above its threshold
                head = ",".join(result["labels"]) or "(none)"
            elif "label" in result:
                head = f"{result['label']}\t{result['score']:.3f}"
            else:
                head = f"{result['score']:.4g}"
            print(f"{head}\t{shown}")
    return 0


def cmd_chat(args) -> int:
    from lmtune.chat import chat

    return chat(Path(args.run_dir), max_new_tokens=args.max_new_tokens)


def cmd_export(args) -> int:
    from lmtune.export import export

    if bool(args.merge) == bool(args.adapter):
        raise LmtuneError(
            "export: give exactly one of --merge OUT (full model) or --adapter OUT (adapter only)"
        )
    out = Path(args.merge or args.adapter)
    export(Path(args.run_dir), out, merged=bool(args.merge), dtype=args.dtype, overwrite=args.overwrite)
    print(f"exported {'merged model' if args.merge else 'adapter'} ({args.dtype}) to {out}")
    return 0


def cmd_data_inspect(args) -> int:
    from lmtune.data import commands

    columns = [c.strip() for c in args.columns.split(",")] if args.columns else None
    report, kind = commands.inspect(
        args.files,
        model=args.model,
        near=args.near,
        separator=args.separator,
        columns=columns,
        text_column=args.text_column,
        label_column=args.label_column,
        encoding=args.encoding,
        format=args.format,
    )
    print(json.dumps(report, indent=2, ensure_ascii=False) if args.json else commands.summary(report, kind))
    if args.report:
        out = Path(args.report)
        if out.exists() and not out.is_dir():
            raise LmtuneError(f"--report '{out}' is a file; give a folder")
        out.mkdir(parents=True, exist_ok=True)
        (out / "data_report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
        from lmtune.config import validate

        commands.write_html(out / "data_report.html", report, "lmtune data inspect", validate({}, "defaults"))
        print(f"report: {out / 'data_report.html'}")
    return 0


def cmd_data_prepare(args) -> int:
    from lmtune.config import load_config
    from lmtune.data import commands
    from lmtune.tasks import describe

    config = load_config(args.config, args.set)
    out = Path(args.out) if args.out else Path(config.output.dir) / f"{config.output.name}-data"
    kind = describe(config).rows
    result = commands.prepare(config, kind, out, args.overwrite)
    print(commands.summary(result.report, kind))
    print(f"\nprepared data: {out} (train/validation/test.jsonl, data_report.json, data_report.html)")
    return 0


# the flags that stand for data.* keys when a command reads a file named on its command line
READER_FLAGS = {
    "data.text_column": "--text-column",
    "data.label_column": "--label-column",
    "data.separator": "--separator",
    "data.encoding": "--encoding",
    "data.columns": "--columns",
}


def _reader_arguments(parser: argparse.ArgumentParser, columns: bool = True) -> None:
    """How to read a data file named on the command line (the data.* keys of a config)."""
    parser.add_argument("--text-column")
    parser.add_argument("--label-column")
    parser.add_argument("--separator", help="column separator, e.g. ';' or tab (default from the suffix)")
    parser.add_argument("--encoding", help="default auto: UTF-8, else cp1252/latin-1 with a warning")
    if columns:
        parser.add_argument("--columns", help="column names of a file without a header, e.g. text,label")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lmtune",
        description="Fine-tune language models end to end, offline: data → method → training → evaluation → report.",
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    overrides = {
        "action": "append",
        "default": [],
        "metavar": "KEY=VALUE",
        "help": "override a config key, e.g. training.learning_rate=3e-5",
    }

    train = verbs.add_parser("train", help="fine-tune as a YAML run config says")
    train.add_argument("config", help="run config (YAML)")
    train.add_argument("--set", **overrides)
    train.add_argument(
        "--resume", action="store_true", help="continue an interrupted run from its last checkpoint"
    )
    train.add_argument("--overwrite", action="store_true", help="replace an existing run of the same name")
    train.set_defaults(func=cmd_train)

    evaluate = verbs.add_parser("eval", help="score a finished run on its test split or on --data FILE")
    evaluate.add_argument("run_dir")
    evaluate.add_argument("--data", help="labelled file (CSV/TSV/JSON/JSONL); default: the run's test split")
    _reader_arguments(evaluate)
    evaluate.add_argument("--output", help="also write the metrics to this JSON file")
    evaluate.set_defaults(func=cmd_eval)

    compare = verbs.add_parser(
        "compare", help="runs (and the untuned base) side by side: scores with 95%% CIs, paired tests, plots"
    )
    compare.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    compare.add_argument(
        "--data", help="score every run on this file now (default: their saved test predictions)"
    )
    _reader_arguments(compare)
    compare.add_argument(
        "--metrics", help="comma-separated metric names (default: accuracy,f1_macro / perplexity,rougeL)"
    )
    compare.add_argument(
        "--reference", help="the model every other is tested against (default: the first run)"
    )
    compare.add_argument("--no-base", action="store_true", help="leave out the first run's untuned base")
    compare.add_argument("--out", help="folder for compare.html/json (default: beside the first run)")
    compare.set_defaults(func=cmd_compare)

    predict = verbs.add_parser(
        "predict",
        help="label texts (classify), score them (regress), find their entities with character offsets "
        "(token_classify) or answer prompts (sft, seq2seq); a sentence-pair run takes each text as "
        "'first<TAB>second'",
    )
    predict.add_argument("run_dir")
    predict.add_argument("texts", nargs="*", metavar="TEXT")
    predict.add_argument("--file", help="one text (or prompt, or tab-separated pair) per line")
    predict.add_argument(
        "--json", action="store_true", help="one JSON object per text, with all class scores"
    )
    predict.add_argument(
        "--context",
        help="qa runs: the context every question is asked about (text, or @FILE); without it each "
        "text is 'question<TAB>context'",
    )
    predict.set_defaults(func=cmd_predict)

    chat = verbs.add_parser("chat", help="talk to a finished generative run (sft, seq2seq)")
    chat.add_argument("run_dir")
    chat.add_argument("--max-new-tokens", type=int, help="default: the run's evaluation.generation")
    chat.set_defaults(func=cmd_chat)

    export = verbs.add_parser("export", help="write a run's model as a plain HF directory (safetensors)")
    export.add_argument("run_dir")
    export.add_argument("--merge", metavar="OUT", help="adapters merged into the base weights")
    export.add_argument("--adapter", metavar="OUT", help="the adapter alone (needs its base model)")
    export.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32")
    export.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    export.set_defaults(func=cmd_export)

    data = verbs.add_parser("data", help="inspect data files, or run a config's data pipeline alone")
    data_verbs = data.add_subparsers(dest="data_verb", required=True, metavar="ACTION")
    inspect = data_verbs.add_parser("inspect", help="report what is in data files: bad rows, duplicates, …")
    inspect.add_argument(
        "files", nargs="+", metavar="FILE", help="files, folders saved by datasets, or globs"
    )
    _reader_arguments(inspect)
    inspect.add_argument("--format", help="generative record format (default: detected)")
    inspect.add_argument("--model", help="count tokens with this model's tokenizer, e.g. bundled:minilm")
    inspect.add_argument("--near", action="store_true", help="also find near-duplicates (MinHash)")
    inspect.add_argument("--json", action="store_true", help="print the whole report as JSON")
    inspect.add_argument("--report", metavar="DIR", help="also write data_report.json/.html into DIR")
    inspect.set_defaults(func=cmd_data_inspect)
    prepare = data_verbs.add_parser("prepare", help="run a config's data pipeline; write the prepared splits")
    prepare.add_argument("config", help="run config (YAML)")
    prepare.add_argument("--set", **overrides)
    prepare.add_argument("--out", help="output folder (default: <output.dir>/<output.name>-data)")
    prepare.add_argument("--overwrite", action="store_true", help="replace the output folder if it exists")
    prepare.set_defaults(func=cmd_data_prepare)

    quickstart = verbs.add_parser(
        "quickstart", help="fine-tune bundled MiniLM on bundled tweets (2 CPU cores, ~2.5 min)"
    )
    quickstart.add_argument("--set", **overrides)
    quickstart.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run of that name (default: a taken name becomes quickstart-2, -3, …)",
    )
    quickstart.set_defaults(func=cmd_quickstart)

    tune = verbs.add_parser(
        "tune", help="hyper-parameter search (Optuna) over the keys its search: section names"
    )
    tune.add_argument("config", help="run config (YAML) with a search: section")
    tune.add_argument("--set", **overrides)
    tune.add_argument(
        "--workers", type=int, default=1, help="worker processes sharing the study (each cores // N threads)"
    )
    tune.add_argument(
        "--overwrite", action="store_true", help="discard an existing search of the same name and start again"
    )
    tune.set_defaults(func=cmd_tune)
    return parser


def quiet_transformers() -> None:
    """The environment above quiets transformers when it is imported after this module; a process that
    imported it first (a test, a script calling main) gets the same settings here."""
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        if "TRANSFORMERS_VERBOSITY" not in os.environ or os.environ["TRANSFORMERS_VERBOSITY"] == "error":
            hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_transformers()
    try:
        return args.func(args)
    except LmtuneError as error:
        print(f"lmtune: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:  # before any run directory existed (reading data, loading the model)
        print(f"lmtune: error: {Interrupted('interrupted; nothing was written')}", file=sys.stderr)
        return Interrupted.exit_code
    except Exception as error:  # the machine, not the input: a full disk, a lost permission
        line = machine_failure(error)
        if line is None:
            raise
        print(f"lmtune: error: {line}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
