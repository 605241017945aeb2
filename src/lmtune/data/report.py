"""The data report: rows in/out at each step with reasons and seconds, bad rows, duplicates, private
data found, label and length distributions per split, leakage. Written as data_report.json, and shown as
sections of report.html (or a page of its own for `lmtune data prepare`)."""

from __future__ import annotations

import html
import json
import sys
from collections import Counter

import numpy as np
import pyarrow.compute as pc

from lmtune.config import RunConfig
from lmtune.data.formats import ROW_FIELDS, on_bad
from lmtune.data.rows import column, reason_kind
from lmtune.data.tags import entities
from lmtune.page import png, subplots, table


class DataReport:
    """Collects what each step did; `bad_row_policy` applies data.on_error to bad rows."""

    EXAMPLES = 20  # examples kept per finding
    LISTED = 1000  # bad rows listed by name (all are counted)

    def __init__(self, config: RunConfig):
        d = config.data
        self.on_error = d.on_error
        self.data: dict = {
            "on_error": d.on_error,
            "files": [],
            "steps": [],
            "bad_rows": {"count": 0, "by_kind": Counter(), "by_split": Counter(), "listed": []},
            "filtered": Counter(),
            "repaired": Counter(),  # what readers mended in kept rows (stray I- tags)
            "duplicates": {},
            "pii": {"action": d.pii.action, "types": d.pii.types, "hits": Counter(), "texts": 0},
            "splits": {},
            "leakage": None,
        }

    def bad_row_policy(self, split: str):
        bad = self.data["bad_rows"]

        def policy(where: str, reason: str) -> None:
            on_bad(self.on_error, where, reason)
            bad["count"] += 1
            bad["by_kind"][reason_kind(reason)] += 1
            bad["by_split"][split] += 1
            if len(bad["listed"]) < self.LISTED:
                bad["listed"].append({"where": where, "reason": reason, "split": split})

        return policy

    def step(
        self, step: str, rows_in: int, rows_out: int, seconds: float, split: str = "all", **details
    ) -> None:
        entry = {
            "step": step,
            "split": split,
            "rows_in": rows_in,
            "rows_out": rows_out,
            "seconds": round(seconds, 3),
        }
        self.data["steps"].append({**entry, **details})

    def read(self, split: str, tally, rows_out: int) -> None:
        """The streaming pass's sub-steps, from the tally it kept."""
        for src in tally.sources:
            self.data["files"].append(
                {
                    "split": split,
                    "path": str(src.path),
                    "kind": src.kind,
                    "encoding": "utf-8" if src.encoding == "utf-8-sig" else src.encoding,
                    "warning": src.warning,
                    "records": src.records,
                    "lines": _lines(src),
                }
            )
        rows = tally.records
        valid = rows - self.data["bad_rows"]["by_split"][split]
        self.step("read + validate", rows, valid, tally.seconds["read"], split)
        for name in ("clean", "pii", "length"):
            out = valid - tally.dropped[name]
            if name in tally.seconds or tally.dropped[name]:
                self.step(name, valid, out, tally.seconds[name], split)
            valid = out
        self.step("hash", valid, rows_out, tally.seconds["hash"], split)
        self.data["filtered"].update(tally.reasons)
        self.data["repaired"].update(tally.repairs)
        self.data["pii"]["hits"].update(tally.pii)
        self.data["pii"]["texts"] += tally.pii_texts

    def duplicates(self, split: str, kind: str, rows, pairs, removed: int, seconds: float) -> None:
        examples = []
        for kept, dropped, jaccard in list(pairs)[: self.EXAMPLES]:
            a, b = rows[int(kept)], rows[int(dropped)]
            examples.append(
                {
                    "kept": a["where"],
                    "dropped": b["where"],
                    "jaccard": round(float(jaccard), 4),
                    "text": (b["text"] or b["messages"] or "")[:300],
                }
            )
        self.data["duplicates"].setdefault(split, {})[kind] = {"removed": int(removed), "examples": examples}
        self.step(f"dedup {kind}", len(rows), len(rows) - int(removed), seconds, split)

    def leakage(
        self, findings: dict, validation_test: int, removed: int, train_rows: int, seconds: float
    ) -> None:
        leaks = removed == 0 and any(f["exact"] + f["near"] for f in findings.values())
        self.data["leakage"] = {
            "found": findings,
            "validation_test_exact": validation_test,
            "removed_from_train": removed,
            "leaks": leaks,  # overlaps found and left in train: test scores are inflated
        }
        self.step("leakage", train_rows, train_rows - removed, seconds, "train")
        if leaks:
            counts = ", ".join(f"{n}: {f['exact']} exact + {f['near']} near" for n, f in findings.items())
            print(
                f"lmtune: WARNING: held-out rows leak into train ({counts}); data.leakage.remove_from_train is off",
                file=sys.stderr,
            )

    def split_stats(self, name: str, stats: dict) -> None:
        self.data["splits"][name] = stats

    REMOVERS = {  # what a step that removes rows is called in a message
        "clean": "cleaning (data.clean)",
        "pii": "private-data removal (data.pii.action = drop)",
        "length": "the length filters (data.clean)",
        "dedup exact": "exact dedup",
        "dedup near": "near-duplicate removal (data.dedup.near)",
        "leakage": "leakage removal (data.leakage.remove_from_train)",
        "unknown labels": "unknown-label removal",
        "max_train_rows": "data.max_train_rows",
    }

    def emptied(self, split: str) -> str | None:
        """What took a split's rows, for an error about an empty (or too small) split: its files hold no
        data rows, every row is bad, or each step that removed rows ("exact dedup left 1 of 80 rows").
        None when nothing was removed: the split was that small to begin with."""
        files = [f for f in self.data["files"] if f["split"] == split]
        if files and not any(f["records"] for f in files):
            if len(files) == 1:
                return _no_data(files[0])
            return f"none of its {len(files)} files has a data row ({_no_data(files[0])}, …)"
        cut = next((s["cut"] for s in self.data["steps"] if s["step"] == "split"), {})
        if not files and split not in cut and not any(s["split"] == split for s in self.data["steps"]):
            return f"data.{split} names no file and data.split.{split} is 0"
        said = []
        for s in self.data["steps"]:
            rows_in = s["rows_in"]
            if s["step"] == "split" and split == "train" and s["rows"]["train"] < rows_in:
                moved = rows_in - s["rows"]["train"]
                said.append(
                    f"the split moved {moved} of {rows_in} rows to {' and '.join(s['cut']) or 'a fold'}"
                )
            if s["split"] != split or s["rows_out"] >= rows_in:
                continue
            if s["step"] == "read + validate":
                bad = rows_in - s["rows_out"]
                first = next((b for b in self.data["bad_rows"]["listed"] if b["split"] == split), None)
                if bad < rows_in or first is None:
                    said.append(f"{bad} of {rows_in} rows are bad")
                else:
                    said.append(
                        f"{_all(rows_in)} {'is' if rows_in == 1 else 'are'} bad (first: {first['where']}: {first['reason']})"
                    )
            elif s["step"] in self.REMOVERS:
                name = self.REMOVERS[s["step"]]
                out = s["rows_out"]
                said.append(
                    f"{name} left {out} of {rows_in} rows" if out else f"{name} removed {_all(rows_in)}"
                )
        return ", then ".join(said) or None

    def summary(self) -> str:
        return "; ".join(
            f"{s['step']} {s['split']}: {s['rows_in']} → {s['rows_out']}" for s in self.data["steps"]
        )

    def finish(self) -> dict:
        """A plain JSON-able dict."""
        return _plain(self.data)


def _all(rows: int) -> str:
    return "the only row" if rows == 1 else f"all {rows} rows"


def _no_data(entry: dict) -> str:
    """A file entry that gave no record, in words."""
    lines = entry.get("lines") or {}
    if lines.get("header"):
        return f"{entry['path']} has a header but no data rows"
    if lines.get("blank"):
        return f"{entry['path']} holds only blank lines"
    return f"{entry['path']} holds no records"


def _lines(src) -> dict | None:
    """Where a line-oriented file's lines went: physical = header + blank + records + continuation
    (continuation: the further lines of records whose quoted fields span lines). None for JSON arrays,
    Parquet and saved datasets, whose records are not lines."""
    lines = src.lines
    if lines is None:
        return None
    longest = lines.longest
    return {
        "physical": lines.physical,
        "header": lines.header,
        "blank": lines.blank,
        "records": lines.records,
        "continuation": lines.continuation,
        "multiline_records": lines.multiline,
        "longest_record": None
        if longest is None
        else {"where": f"{src.path}:{longest[0]}", "lines": longest[1]},
    }


def _plain(value):
    if isinstance(value, Counter | dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def _histogram(values) -> dict:
    data = np.asarray(values, dtype=np.int64)
    counts, edges = np.histogram(data, bins=20)
    return {
        "mean": round(float(data.mean()), 1),
        "p50": int(np.percentile(data, 50)),
        "p95": int(np.percentile(data, 95)),
        "max": int(data.max()),
        "counts": counts.tolist(),
        "edges": [round(float(e), 1) for e in edges],
    }


def _counts(values) -> dict:
    """Value → count of an Arrow column, without a Python object per row."""
    return {item["values"].as_py(): item["counts"].as_py() for item in pc.value_counts(values)}


NO_LABEL = "(none)"  # a multi-label row with no label


def split_stats(rows, kind: str) -> dict:
    """Row count, labels, origins, the per-row fields (the 20 commonest values of sensitive, domain and
    task; weight's min, mean and max) and length histograms (characters, and tokens when counted)."""
    stats: dict = {"rows": len(rows)}
    if not len(rows):
        return stats
    arrow = rows.with_format("arrow")
    if kind == "labelled":
        stats["labels"] = dict(sorted(_counts(arrow["label"]).items()))
    elif kind == "multilabel":  # rows carrying each label (a row counts once per label), and rows with none
        sets = Counter()
        for text, count in _counts(arrow["label"]).items():
            sets.update({label: count for label in json.loads(text)} or {NO_LABEL: count})
        stats["labels"] = dict(sorted(sets.items()))
    elif kind == "tokens":  # entities by type (IOB2 chunks), sentences with none, and tokens
        found: Counter = Counter()
        n_tokens = 0
        for text, count in _counts(arrow["label"]).items():
            tags = json.loads(text)
            n_tokens += len(tags) * count
            types = Counter(t for t, _, _ in entities(tags))
            found.update({t: n * count for t, n in types.items()} or {NO_LABEL: count})
        stats["labels"] = dict(sorted(found.items()))
        stats["tagged_tokens"] = n_tokens
    elif kind == "qa":  # questions with an answer in their context, and unanswerable ones
        answered = Counter()
        for text, count in _counts(arrow["label"]).items():
            answered["answerable" if json.loads(text) else "unanswerable"] += count
        stats["labels"] = dict(sorted(answered.items()))
        stats["contexts"] = len(pc.unique(arrow["leak"]))
    elif kind == "numeric":  # a regression target, stored as its decimal text
        target = np.asarray(arrow["label"].to_pylist(), dtype=np.float64)
        counts, edges = np.histogram(target, bins=20)
        stats["target"] = {
            **{name: round(float(fn(target)), 6) for name, fn in (("min", np.min), ("mean", np.mean))},
            "std": round(float(target.std()), 6),
            "max": round(float(target.max()), 6),
            "counts": counts.tolist(),
            "edges": [round(float(e), 6) for e in edges],
        }
    origins: Counter = Counter()
    for origin, count in _counts(arrow["origin"]).items():  # augmented rows name their source row
        origins[origin.split(":")[0]] += count
    stats["origins"] = dict(origins)
    for name in (f for f in ROW_FIELDS if f != "weight"):  # per-row fields (data.*_column), where given
        if arrow[name].null_count < len(rows):
            stats[name] = dict(Counter(_counts(arrow[name])).most_common(20))
    if arrow["weight"].null_count < len(rows):
        weights = arrow["weight"].to_numpy(zero_copy_only=False)
        weights = weights[~np.isnan(weights)]
        stats["weight"] = {
            "min": round(float(weights.min()), 6),
            "mean": round(float(weights.mean()), 6),
            "max": round(float(weights.max()), 6),
        }
    stats["chars"] = _histogram(column(rows, "chars"))
    tokens = column(rows, "tokens")
    if (tokens >= 0).any():
        stats["tokens"] = _histogram(tokens[tokens >= 0])
    return stats


# --------------------------------------------------------------------------------- HTML


def _length_plot(splits: dict, unit: str) -> str | None:
    present = {name: s[unit] for name, s in splits.items() if unit in s}
    if not present:
        return None
    fig, ax = subplots(figsize=(7, 3))
    for name, h in present.items():
        ax.stairs(h["counts"], h["edges"], label=f"{name} (p50 {h['p50']}, p95 {h['p95']})")
    ax.set_xlabel(unit)
    ax.set_ylabel("rows")
    ax.set_title(f"length in {unit}")
    ax.legend()
    return png(fig)


def _label_plot(splits: dict) -> str | None:
    labelled = {name: s["labels"] for name, s in splits.items() if s.get("labels")}
    if not labelled:
        return None
    labels = sorted({label for counts in labelled.values() for label in counts})
    fig, ax = subplots(figsize=(max(5, 0.5 * len(labels) + 3), 3))
    width = 0.8 / len(labelled)
    for k, (name, counts) in enumerate(labelled.items()):
        total = sum(counts.values())
        ax.bar(
            [i + k * width for i in range(len(labels))],
            [counts.get(x, 0) / total for x in labels],
            width,
            label=name,
        )
    ax.set_xticks(
        [i + width * (len(labelled) - 1) / 2 for i in range(len(labels))], labels, rotation=30, ha="right"
    )
    ax.set_ylabel("share of rows")
    ax.set_title("label distribution per split")
    ax.legend()
    return png(fig)


def _target_plot(splits: dict) -> str | None:
    present = {name: s["target"] for name, s in splits.items() if s.get("target")}
    if not present:
        return None
    fig, ax = subplots(figsize=(7, 3))
    for name, t in present.items():
        shares = np.asarray(t["counts"]) / max(1, sum(t["counts"]))
        ax.stairs(shares, t["edges"], label=f"{name} (mean {t['mean']:.3g}, sd {t['std']:.3g})")
    ax.set_xlabel("target")
    ax.set_ylabel("share of rows")
    ax.set_title("regression target per split")
    ax.legend()
    return png(fig)


def _targets(s: dict) -> str:
    """A split's labels (counts), or its regression target's range and mean."""
    if t := s.get("target"):
        return f"{t['min']:g} … {t['max']:g} (mean {t['mean']:.4g}, sd {t['std']:.4g})"
    return ", ".join(f"{k}: {v}" for k, v in s.get("labels", {}).items())


def data_sections(report: dict) -> list[tuple[str, str]]:
    """report.html sections: leakage banner first when test scores cannot be trusted."""
    sections = []
    leak = report.get("leakage") or {}
    banner = ""
    if leak.get("leaks"):
        counts = "; ".join(f"{n}: {f['exact']} exact, {f['near']} near" for n, f in leak["found"].items())
        banner = (
            "<p style='background:#fdd;border:2px solid #c00;padding:1em;font-weight:bold'>"
            f"LEAKAGE: held-out rows also appear in train ({html.escape(counts)}). Test scores are inflated; "
            "set data.leakage.remove_from_train: true.</p>"
        )
    warnings = "".join(
        f"<p>warning: {html.escape(f['warning'])}</p>" for f in report.get("files", []) if f.get("warning")
    )
    steps = [
        [
            s["step"],
            s["split"],
            s["rows_in"],
            s["rows_out"],
            s["rows_in"] - s["rows_out"],
            f"{s['seconds']:.2f}",
        ]
        for s in report["steps"]
    ]
    sections.append(
        (
            "Data: steps",
            banner + warnings + table(["step", "split", "rows in", "rows out", "removed", "seconds"], steps),
        )
    )
    if repaired := report.get("repaired"):
        sections.append(("Data: repaired", table(["what", "count"], [[k, n] for k, n in repaired.items()])))
    bad = report["bad_rows"]
    if bad["count"] or report["filtered"]:
        body = f"<p>{bad['count']} bad rows (data.on_error = {report['on_error']}).</p>"
        kinds = [[k, n] for k, n in bad["by_kind"].items()] + [[k, n] for k, n in report["filtered"].items()]
        body += table(["reason", "rows"], kinds)
        body += table(
            ["row", "split", "reason"], [[b["where"], b["split"], b["reason"]] for b in bad["listed"][:100]]
        )
        sections.append(("Data: bad and filtered rows", body))
    dups = [
        [split, kind, d["removed"]]
        for split, kinds in report["duplicates"].items()
        for kind, d in kinds.items()
    ]
    if dups:
        examples = [
            [e["kept"], e["dropped"], e["jaccard"], e["text"]]
            for kinds in report["duplicates"].values()
            for d in kinds.values()
            for e in d["examples"][:5]
        ]
        body = table(["split", "kind", "removed"], dups) + table(
            ["kept", "dropped", "Jaccard", "text"], examples
        )
        sections.append(("Data: duplicates", body))
    pii = report["pii"]
    if pii["action"] != "off":
        hits = [[t, pii["hits"].get(t, 0)] for t in pii["types"]]
        held = f"{pii['texts']} texts (rows, or turns of a conversation) held private data"
        body = f"<p>{held} (action: {pii['action']}).</p>" + table(["type", "hits"], hits)
        sections.append(("Data: private data", body))
    splits = report["splits"]
    fields = [f for f in ROW_FIELDS if any(f in s for s in splits.values())]
    rows = [
        [
            name,
            s["rows"],
            _targets(s),
            *(
                ", ".join(f"{k}: {v:g}" if f == "weight" else f"{k}: {v}" for k, v in s.get(f, {}).items())
                for f in fields
            ),
        ]
        for name, s in splits.items()
    ]
    plots = "".join(
        p
        for p in (
            _label_plot(splits),
            _target_plot(splits),
            _length_plot(splits, "chars"),
            _length_plot(splits, "tokens"),
        )
        if p
    )
    sections.append(
        (
            "Data: splits",
            table(["split", "rows", "labels", *fields], rows) + f"<div class='grid'>{plots}</div>",
        )
    )
    if leak.get("found") is not None:
        found = [[n, f["exact"], f["near"]] for n, f in leak["found"].items()]
        examples = [
            [e["train"], e["other"], e["jaccard"], e["other_text"]]
            for f in leak["found"].values()
            for e in f["examples"][:5]
        ]
        body = banner + table(["split", "exact copies in train", "near-duplicates in train"], found)
        body += f"<p>{leak['removed_from_train']} training rows removed; validation/test exact overlap: {leak['validation_test_exact']}.</p>"
        body += table(["train row", "held-out row", "Jaccard", "held-out text"], examples) if examples else ""
        sections.append(("Data: leakage", body))
    if report.get("augmentation"):
        aug = report["augmentation"]
        sections.append(("Data: augmentation", table(["origin", "rows added"], list(aug["added"].items()))))
    return sections
