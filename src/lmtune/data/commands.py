"""`lmtune data inspect FILE…` (what is in these files, nothing written unless asked) and
`lmtune data prepare CONFIG` (the run's data pipeline alone, its output written as JSONL + report)."""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

from lmtune import assets, faults
from lmtune.config import RunConfig, dump_config, validate
from lmtune.data.load import ReadOptions, iter_records
from lmtune.data.pipeline import PreparedData, plan, prepare_data
from lmtune.data.report import data_sections
from lmtune.data.rows import write_jsonl
from lmtune.errors import LmtuneError
from lmtune.models.load import load_tokenizer
from lmtune.page import write_page
from lmtune.runs import DATA_MARKER as MARKER
from lmtune.runs import building, hold, recover, remove_partial


def _kind(paths: list[Path], options: ReadOptions, label: str) -> str:
    """labelled when any of the first readable records has the label column (the others are then
    reported as missing it), else generative."""
    head = islice(iter_records(paths[0], options), 200)
    records = [record for record, _, problem in head if problem is None]
    return "labelled" if not records or any(label in record for record in records) else "generative"


def inspect(files: list[str], *, model: str | None, near: bool, **data) -> tuple[dict, str]:
    """The data report of files as they are: all bad rows listed (on_error skip), no split, no leakage.
    A bundled dataset (`bundled:tweets`) is read with its own settings."""
    bundled = len(files) == 1 and files[0].startswith(assets.PREFIX)
    train = files[0] if bundled else files
    raw = {"data": {**{k: v for k, v in data.items() if v is not None}, "train": train, "on_error": "skip"}}
    raw["data"]["split"] = {"validation": 0.0, "test": 0.0}
    raw["data"]["leakage"] = {"check": False}
    raw["data"]["dedup"] = {"near": near}
    config = validate(raw, "lmtune data inspect")
    inputs = plan(config)
    source = inputs["train"]
    kind = _kind(source.paths, source.options, source.label_column)
    tokenizer = load_tokenizer(assets.resolve_model(model)) if model else None
    result = prepare_data(config, kind, tokenizer, inputs, require_test=False, allow_empty=True)
    return result.report, kind


def summary(report: dict, kind: str) -> str:
    """A terminal page: files, steps, bad rows, duplicates, private data, labels, lengths."""
    lines = [f"{f['path']}: read as {f['kind']}, encoding {f['encoding'] or '-'}" for f in report["files"]]
    lines += [f"warning: {f['warning']}" for f in report["files"] if f["warning"]]
    for f in report["files"]:  # multi-line records: say where every line went, and the longest one
        n = f.get("lines")
        if n and n["continuation"]:
            longest = n["longest_record"]
            lines.append(
                f"{f['path']}: {n['physical']} lines = {n['header']} header + {n['blank']} blank + "
                f"{n['records']} records + {n['continuation']} continuation lines of {n['multiline_records']} "
                f"multi-line quoted fields (longest: {longest['lines']} lines at {longest['where']})"
            )
    taken = {
        "labelled": "text + label rows",
        "multilabel": "text + label-set rows",
        "numeric": "text + number rows",
    }.get(kind, "generative examples")
    lines.append(f"records taken as: {taken}")
    lines.append("")
    lines.append(f"{'step':<18}{'split':<8}{'rows in':>10}{'rows out':>10}{'seconds':>9}")
    for s in report["steps"]:
        lines.append(
            f"{s['step']:<18}{s['split']:<8}{s['rows_in']:>10}{s['rows_out']:>10}{s['seconds']:>9.2f}"
        )
    bad = report["bad_rows"]
    if bad["count"]:
        lines.append(
            f"\n{bad['count']} bad rows: " + ", ".join(f"{k} {n}" for k, n in bad["by_kind"].items())
        )
        lines += [f"  {b['where']}: {b['reason']}" for b in bad["listed"][:10]]
        if bad["count"] > 10:
            lines.append(f"  … {bad['count'] - 10} more (all listed in the JSON report, up to 1000)")
    if report["filtered"]:
        lines.append("filtered: " + ", ".join(f"{k} {n}" for k, n in report["filtered"].items()))
    if report.get("repaired"):
        lines.append("repaired: " + ", ".join(f"{k} {n}" for k, n in report["repaired"].items()))
    for split, kinds in report["duplicates"].items():
        for name, d in kinds.items():
            lines.append(f"{name} duplicates removed ({split}): {d['removed']}")
    leak = report.get("leakage")
    if leak:
        found = ", ".join(f"{n} {f['exact']} exact + {f['near']} near" for n, f in leak["found"].items())
        lines.append(
            f"held-out rows with a copy in train: {found or 'none'}; {leak['removed_from_train']} removed from train"
        )
        if leak["leaks"]:
            lines.append("WARNING: the leaking copies stay in train (data.leakage.remove_from_train is off)")
    pii = report["pii"]
    if pii["action"] != "off":
        hits = ", ".join(f"{t} {n}" for t, n in pii["hits"].items()) or "none"
        lines.append(f"private data ({pii['action']}): {pii['texts']} texts; hits: {hits}")
    for name, s in report["splits"].items():
        if not s["rows"]:
            continue
        lines.append(f"\n{name}: {s['rows']} rows")
        if s.get("labels"):
            lines.append("  labels: " + ", ".join(f"{k} {v}" for k, v in s["labels"].items()))
        for unit in ("chars", "tokens"):
            if unit in s:
                h = s[unit]
                lines.append(f"  {unit}: mean {h['mean']}, p50 {h['p50']}, p95 {h['p95']}, max {h['max']}")
    return "\n".join(lines)


def write_html(path: Path, report: dict, title: str, config: RunConfig) -> None:
    write_page(
        path,
        title=title,
        facts={"rows out": " / ".join(f"{n} {s['rows']}" for n, s in report["splits"].items())},
        sections=data_sections(report),
        config_text=dump_config(config),
    )


def check_output(out: Path, overwrite: bool) -> Path:
    """Refuse what must not be replaced, before any work: a file, a folder lmtune did not write."""
    out = out.resolve()
    if out.exists() and not out.is_dir():
        raise LmtuneError(f"--out '{out}' is a file; give a folder")
    if out.exists() and not overwrite:
        raise LmtuneError(f"'{out}' exists; pass --overwrite to replace it")
    if out.exists() and not (out / MARKER).is_file():
        raise LmtuneError(f"'{out}' exists and is not an lmtune data folder; lmtune will not replace it")
    return out


def prepare(config: RunConfig, kind: str, out: Path, overwrite: bool) -> PreparedData:
    """Run the pipeline and write train/validation/test.jsonl, data_report.json and data_report.html into
    `out`, built beside it and renamed in, so a failure leaves an earlier output untouched."""
    out = check_output(out, overwrite)
    partial = out.with_name(out.name + ".partial")
    out.parent.mkdir(parents=True, exist_ok=True)
    with hold(out):
        recover(out, partial)
        check_output(out, overwrite)
        remove_partial(partial, "pass another --out")  # only one a killed `data prepare` left
        tokenizer = load_tokenizer(assets.resolve_model(config.model.name), config.model.trust_remote_code)
        result = prepare_data(config, kind, tokenizer)
        with building(partial, out):
            for name, rows in result.splits.items():
                write_jsonl(rows, partial / f"{name}.jsonl")
                faults.point("prepare.write")
            (partial / "data_report.json").write_text(json.dumps(result.report, indent=2, ensure_ascii=False))
            write_html(
                partial / "data_report.html", result.report, f"lmtune data: {config.output.name}", config
            )
            (partial / MARKER).write_text(json.dumps({"task": config.task, "name": config.output.name}))
    return result
