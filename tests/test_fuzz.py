"""Fuzzing, CI-sized: a few hundred seeded hostile configs and data files (tests/fuzzing.py) through
config validation and the data pipeline. Every case must succeed or raise an LmtuneError of one short
line; any traceback, multi-line or over-long message, or runaway case fails the test, which then lists
each distinct failure once with its smallest reproducer. bench/fuzz.py runs the same generators at
10k+ configs and rows."""

from __future__ import annotations

import itertools

import fuzzing
import pytest

from lmtune.errors import LmtuneError

# examples per property: ~400 cases in all, well under a minute on 2 cores
CONFIG_EXAMPLES = 200
DATA_EXAMPLES = 50


def explore(strategy, run_case, examples: int, tmp_path) -> fuzzing.Tally:
    tally = fuzzing.Tally()
    numbers = itertools.count()
    fuzzing.explore(
        strategy, lambda case: run_case(tally, case, tmp_path / f"case-{next(numbers)}"), examples
    )  # derandomized: the same examples on every run
    return tally


def verdict(tally: fuzzing.Tally) -> str:
    return f"{tally.failures} failing cases\n{tally.summary()}\n\n{tally.details()}"


def test_fuzz_configs(tmp_path):
    tally = explore(fuzzing.config_cases(), fuzzing.run_config_case, CONFIG_EXAMPLES, tmp_path)
    assert tally.configs >= CONFIG_EXAMPLES
    assert not tally.findings, verdict(tally)


def test_fuzz_data(tmp_path):
    tally = explore(fuzzing.data_cases(), fuzzing.run_data_case, DATA_EXAMPLES, tmp_path)
    assert tally.rows > 0
    assert not tally.findings, verdict(tally)


# Inputs each of which broke the rule when bench/fuzz.py (or the issue) found it: explicit cases, so that a
# regression names itself. (name: YAML file bytes, --set overrides, file name)
KNOWN_CONFIGS = {
    "epochs .inf by --set": (b"", ["training.epochs=.inf"], "c.yaml"),
    "unclosed flow list by --set": (b"", ["training.epochs=[1"], "c.yaml"),
    "100k-deep flow nesting": (b"training: " + b"[" * 100_000 + b"]" * 100_000 + b"\n", [], "c.yaml"),
    "alias bomb": (fuzzing.alias_bomb(9, 6, "training.epochs").encode(), [], "c.yaml"),
    "recursive anchor": (b"training: &t {epochs: 1, again: *t}\n", [], "c.yaml"),
    "NUL in output.name": (b'output:\n  name: "a\\0b"\n', [], "c.yaml"),
    "raw NUL in the file": (b"training:\n  epochs: 1\x00\n", [], "c.yaml"),
    "4301-digit integer": (b"training:\n  seed: " + b"9" * 4301 + b"\n", [], "c.yaml"),
    "5000-digit integer by --set": (b"", ["training.seed=" + "9" * 5000], "c.yaml"),
    "!!map on a scalar": (b"model: !!map x\n", [], "c.yaml"),
    "!!timestamp on a non-date": (b"model: !!timestamp x\n", [], "c.yaml"),
    "!!int on a float": (b"training:\n  seed: !!int 0.5\n", [], "c.yaml"),
    "!!int on an empty string": (b"training:\n  seed: !!int ''\n", [], "c.yaml"),
    "!!bool on a word": (b"chat:\n  packing: !!bool maybe\n", [], "c.yaml"),
    "!!float on a word": (b"training:\n  epochs: !!float x\n", [], "c.yaml"),
    "config file named ..yaml": (b"", [], "..yaml"),
    "config file stem over 200 bytes": (b"", [], "x" * 240 + ".yaml"),
    "long unknown task": (b"task: " + b"x" * 3000 + b"\n", [], "c.yaml"),
    "newline in an unknown key": (b'training:\n  "a\\nb": 1\n', [], "c.yaml"),
    "newline in a --set key": (b"", ["training.a\nb=1"], "c.yaml"),
    "ESC in a --set key": (b"", ["\x1b[31m=1"], "c.yaml"),
}


@pytest.mark.parametrize("name", KNOWN_CONFIGS)
def test_known_hostile_configs(name, tmp_path):
    data, overrides, file_name = KNOWN_CONFIGS[name]
    case = fuzzing.ConfigCase(None, data, name=file_name, overrides=overrides, tags=(name,))
    tally = fuzzing.Tally()
    fuzzing.run_config_case(tally, case, tmp_path)
    assert not tally.findings, verdict(tally)


ROWS = b"text,label\n" + b"".join(f"text {i},{'ab'[i % 2]}\n".encode() for i in range(20))
NO_SPLITS = {"split": {"validation": 0.0, "test": 0.0}}


def _parquet_damaged_at(where: float) -> bytes:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(pa.table({"text": [f"some text {i}" for i in range(50)], "label": ["pos"] * 50}), sink)
    data = sink.getvalue()
    at = int(len(data) * where)
    return data[:at] + b"\x00\xff" * 8 + data[at + 16 :]


# name: files (name → bytes; a second file is the test split), data.* keys, layout
KNOWN_DATA = {
    "data.train: [] (generative)": ({"a.csv": ROWS}, {}, "empty list"),
    "split.seed -1, stratified": (
        {"a.csv": ROWS},
        {"split": {"method": "stratified", "seed": -1, "validation": 0.0, "test": 0.2}},
        "train",
    ),
    "split.seed 2**63, stratified": (
        {"a.csv": ROWS},
        {"split": {"method": "stratified", "seed": 2**63, "validation": 0.0, "test": 0.2}},
        "train",
    ),
    "split.seed -1 with max_train_rows": (
        {"a.csv": ROWS},
        {"split": {"seed": -1, "validation": 0.0, "test": 0.0}, "max_train_rows": 3},
        "train",
    ),
    "lone surrogate in JSON": (
        {"a.jsonl": b'{"text": "\\ud800", "label": "a"}\n' + b'{"text": "b", "label": "b"}\n'},
        NO_SPLITS,
        "train",
    ),
    "200k-deep JSON line": (
        {
            "a.jsonl": b'{"text": '
            + b"[" * 200_000
            + b"]" * 200_000
            + b', "label": "a"}\n{"text": "b", "label": "b"}\n'
        },
        NO_SPLITS,
        "train",
    ),
    "200k-deep JSON array": ({"a.json": b"[" * 200_000 + b"]" * 200_000}, NO_SPLITS, "train"),
    "4301-digit integer in JSON": (
        {"a.jsonl": b'{"text": "a", "label": ' + b"9" * 4301 + b'}\n{"text": "b", "label": "b"}\n'},
        NO_SPLITS,
        "train",
    ),
    "Parquet with a damaged data page": ({"a.parquet": _parquet_damaged_at(0.02)}, NO_SPLITS, "train"),
    "Parquet with damaged metadata": ({"a.parquet": _parquet_damaged_at(0.5)}, NO_SPLITS, "train"),
    "a 3000-char training label in an unknown-label message": (
        {"a.csv": b"text,label\na," + b"x" * 3000 + b"\nb,pos\n", "t.csv": b"text,label\nc,neg\n"},
        NO_SPLITS,
        "train+test",
    ),
    "ESC in a CSV header": ({"a.csv": b"te\x1bxt,label\na,pos\n"}, NO_SPLITS, "train"),
}


@pytest.mark.parametrize("name", KNOWN_DATA)
def test_known_hostile_data(name, tmp_path):
    files, keys, layout = KNOWN_DATA[name]
    case = fuzzing.DataCase(
        [fuzzing.DataFile(file_name, data, data.count(b"\n")) for file_name, data in files.items()],
        layout,
        keys,
        near=False,
        require_test=False,
        allow_empty=True,
        html=False,
        tags=(name,),
    )
    tally = fuzzing.Tally()
    fuzzing.run_data_case(tally, case, tmp_path)
    assert not tally.findings, verdict(tally)


def test_checks_catch_what_they_should():
    """The harness itself: a traceback, a two-line message and an over-long one are findings."""
    tally = fuzzing.Tally()

    def case(fn):
        return fuzzing.Case("self-test", fn, lambda: "self-test", 1, 5.0, 10.0)

    def boom():
        raise KeyError("x")

    class Unguarded(LmtuneError):  # LmtuneError itself escapes line breaks and caps its length
        def __str__(self) -> str:
            return Exception.__str__(self)

    def two_lines():
        raise Unguarded("a\nb")

    def long():
        raise Unguarded("x" * (fuzzing.MAX_MESSAGE + 1))

    def fine():
        raise LmtuneError("config.yaml: training.epochs = -1: must be > 0")

    assert [tally.run(case(f)) for f in (boom, two_lines, long, fine, lambda: None)] == [
        "failed",
        "failed",
        "failed",
        "error",
        "ok",
    ]
    assert {f.kind for f in tally.findings.values()} == {
        "traceback",
        "multi-line message",
        "over-long message",
    }
