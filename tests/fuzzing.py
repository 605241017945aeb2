"""Fuzzing lmtune's inputs: hostile run configs (YAML files, `--set` overrides, raw mappings) and hostile
data files (every format the loader reads), with one rule for every case: it succeeds, or it raises an
`LmtuneError` whose message is one short line. Anything else is a finding ("traceback", a multi-line or
over-long message, a case that takes absurd time or memory).

Shared by tests/test_fuzz.py (a few hundred seeded examples, in the normal suite) and bench/fuzz.py (the
full run: 10k+ configs and 10k+ data rows). Generators are hypothesis strategies: seeded, and driven by
the real schema (`RunConfig.model_fields` walked recursively), so a new config key is fuzzed without
touching this file.

A case never stops the run: `Tally.run` classifies its outcome and keeps, per distinct failure
signature (exception type + the innermost lmtune frame + the innermost frame overall), a count and the
smallest reproducer seen.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import json
import math
import random
import re
import resource
import shutil
import signal
import time
import traceback
import types
import typing
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import annotated_types
import yaml
from hypothesis import strategies as st
from pydantic import BaseModel

import lmtune
from lmtune.config import RunConfig
from lmtune.errors import LmtuneError

MAX_MESSAGE = 2000  # characters an error line may have
LMTUNE_DIR = str(Path(lmtune.__file__).resolve().parent)
# seconds: a case slower than SLOW is a finding; ABORT stops it (SIGALRM) so that one case cannot
# stall the run. Generous: the machine has 2 cores shared with other work.
CONFIG_SLOW, CONFIG_ABORT = 5.0, 30.0
DATA_SLOW, DATA_ABORT = 20.0, 60.0
MEMORY_LIMIT_MB = 2048  # growth of the peak RSS one case may cause

# ======================================================================================= outcomes


class Accepted(Exception):
    """A hostile value the code under test accepted where it must refuse it (`what` names the check,
    the message the key and value)."""

    def __init__(self, what: str, detail: str):
        super().__init__(detail)
        self.what = what


class CaseTimeout(BaseException):
    """Raised by SIGALRM inside a case that ran past its abort limit (BaseException: no `except
    Exception` in the code under test swallows it)."""


@contextlib.contextmanager
def alarm(seconds: float):
    """Abort the block after `seconds` (main thread only; elsewhere nothing is enforced)."""

    def fire(signum, frame):
        raise CaseTimeout(f"aborted after {seconds:g} s")

    try:
        previous = signal.signal(signal.SIGALRM, fire)
    except ValueError:  # not the main thread
        yield
        return
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def message_problem(message: str) -> str | None:
    """What makes an LmtuneError message break the one-line rule, or None."""
    if "\n" in message or "\r" in message:
        return "multi-line message"
    if len(message) > MAX_MESSAGE:
        return "over-long message"
    if not message.strip():
        return "empty message"
    if len(message.splitlines()) > 1:  # \x0b \x0c \x1c-\x1e \x85 \u2028 \u2029
        return "line-break character in message"
    if re.search("[\x00-\x08\x0e-\x1f\x7f]", message):
        return "raw control character in message"
    return None


def _frames(exc: BaseException) -> tuple[list[str], str]:
    """(lmtune frames outermost first as 'lmtune/file.py:LINE function', the innermost frame overall)."""
    tb = traceback.extract_tb(exc.__traceback__)
    ours = [
        f"lmtune/{Path(f.filename).resolve().relative_to(LMTUNE_DIR)}:{f.lineno} {f.name}"
        for f in tb
        if str(Path(f.filename).resolve()).startswith(LMTUNE_DIR)
    ]
    inner = tb[-1] if tb else None
    innermost = ""
    if inner is not None and str(Path(inner.filename).resolve()).startswith(LMTUNE_DIR):
        innermost = ours[-1]
    elif inner is not None:
        parts = Path(inner.filename).parts
        short = (
            "/".join(parts[-2:])
            if "site-packages" not in parts
            else "/".join(parts[parts.index("site-packages") + 1 :])
        )
        innermost = f"{short}:{inner.lineno} {inner.name}"
    return ours, innermost


def _where(frame: str) -> str:
    """A frame without its line number (lines move while src/ is edited; the function does not)."""
    path, _, rest = frame.partition(":")
    return f"{path}:{rest.partition(' ')[2]}"


@dataclass
class Finding:
    signature: str
    kind: str  # traceback, multi-line message, over-long message, ..., slow, timeout, memory, note
    exc_type: str
    message: str
    frames: list[str]
    innermost: str
    count: int = 0
    categories: Counter = field(default_factory=Counter)
    reproducer: str = ""
    size: int = 1 << 62
    variants: Counter = field(default_factory=Counter)  # message heads seen

    def text(self) -> str:
        lines = [f"[{self.count}x] {self.signature}"]
        lines.append(f"    categories: {', '.join(f'{c} {n}' for c, n in self.categories.most_common())}")
        lines.append(f"    {self.exc_type}: {self.message}")
        if self.frames:
            lines.append("    lmtune frames (innermost last): " + " → ".join(self.frames[-4:]))
        if self.innermost:
            lines.append(f"    raised in: {self.innermost}")
        if len(self.variants) > 1:
            lines.append(f"    {len(self.variants)} message variants, e.g.:")
            lines += [f"      {n}x {v}" for v, n in self.variants.most_common(6)]
        lines += ["    reproducer: " + line for line in self.reproducer.splitlines()]
        return "\n".join(lines)


@dataclass
class Case:
    """Something to run: `describe()` is the reproducer shown for a failure, `size` ranks reproducers."""

    category: str
    fn: Callable[[], Any]
    describe: Callable[[], str]
    size: int
    slow: float
    abort: float
    tags: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()  # file paths the harness made: hostile names are the harness's doing


class Tally:
    """Outcomes of many cases: counts per category, and each distinct failure once with its count."""

    def __init__(self):
        self.cases: Counter = Counter()
        self.ok: Counter = Counter()
        self.errors: Counter = Counter()
        self.failed: Counter = Counter()
        self.findings: dict[str, Finding] = {}
        self.notes: dict[str, Finding] = {}
        self.configs = 0
        self.rows = 0
        self.files = 0
        self.seconds: Counter = Counter()  # per category
        self.slowest: list[tuple[float, str, tuple]] = []
        self.started = time.perf_counter()

    @property
    def failures(self) -> int:
        return sum(f.count for f in self.findings.values())

    def run(self, case: Case) -> str:
        """Run one case; returns ok, error (a proper LmtuneError) or failed."""
        self.cases[case.category] += 1
        rss = _peak_rss_mb()
        start = time.perf_counter()
        status = "ok"
        notes = None
        try:
            with alarm(case.abort), contextlib.redirect_stderr(io.StringIO()):
                notes = case.fn()
        except Accepted as exc:
            self._record("accepted", case, exc, signature=f"accepted: {exc.what}")
            status = "failed"
        except LmtuneError as exc:
            message = str(exc)
            problem = message_problem(message)
            if problem:
                stripped = message
                for path in case.paths:
                    stripped = stripped.replace(path, "<path>")
                signature = None
                if stripped != message and message_problem(stripped) is None:
                    signature = f"{problem} (only through a hostile file name)"
                self._record(problem, case, exc, signature=signature)
                status = "failed"
            else:
                status = "error"
        except CaseTimeout as exc:
            self._record("timeout", case, exc)
            status = "failed"
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - every other exception is the finding
            self._record("traceback", case, exc)
            status = "failed"
        seconds = time.perf_counter() - start
        self.seconds[case.category] += seconds
        self.slowest.append((seconds, case.category, case.tags))
        self.slowest = sorted(self.slowest, reverse=True)[:5]
        if status != "failed" and seconds > case.slow:
            self._record("slow", case, None, f"took {seconds:.1f} s (limit {case.slow:g} s)")
            status = "failed"
        grown = _peak_rss_mb() - rss
        if status != "failed" and grown > MEMORY_LIMIT_MB:
            self._record("memory", case, None, f"peak RSS grew by {grown:.0f} MB")
            status = "failed"
        {"ok": self.ok, "error": self.errors, "failed": self.failed}[status][case.category] += 1
        for note in notes if isinstance(notes, list) else ():
            self._record("note", case, None, note, into=self.notes, signature=f"note: {note}")
        return status

    def _record(
        self, kind: str, case: Case, exc, message: str | None = None, into=None, signature: str | None = None
    ) -> None:
        frames, innermost = _frames(exc) if exc is not None else ([], "")
        exc_type = type(exc).__qualname__ if exc is not None else kind
        if exc is not None and type(exc).__module__ not in ("builtins", "lmtune.errors"):
            exc_type = f"{type(exc).__module__}.{exc_type}"
        if message is None:
            message = str(exc)
        head = message[:300].replace("\n", "\\n") + (
            f"… ({len(message):,} chars)" if len(message) > 300 else ""
        )
        if signature is not None:
            pass
        elif kind in ("slow", "memory", "timeout"):
            family = case.category.split("-")[0]
            signature = f"{kind}: {family}" + (f" [{case.tags[0]}]" if case.tags else "")
            if kind == "timeout" and frames:
                signature += f" (interrupted in {_where(frames[-1])})"
        else:
            where = _where(frames[-1]) if frames else "(no lmtune frame)"
            signature = f"{kind}: {exc_type} @ {where}"
            if kind == "traceback" and innermost and not innermost.startswith("lmtune/"):
                signature += f" ← {_where(innermost)}"
        into = self.findings if into is None else into
        found = into.setdefault(signature, Finding(signature, kind, exc_type, head, frames, innermost))
        found.count += 1
        found.categories[case.category] += 1
        if len(found.variants) < 200 or head[:100] in found.variants:
            found.variants[head[:100]] += 1
        if case.size < found.size:
            found.size, found.message, found.frames, found.innermost = case.size, head, frames, innermost
            try:
                found.reproducer = case.describe()
            except Exception as error:  # noqa: BLE001
                found.reproducer = f"(cannot describe: {error!r})"

    def summary(self) -> str:
        seconds = time.perf_counter() - self.started
        lines = [
            f"generated: {self.configs:,} configs, {self.rows:,} data rows in {self.files:,} data files",
            f"{'category':<24}{'cases':>8}{'ok':>8}{'LmtuneError':>13}{'failed':>8}{'seconds':>9}",
        ]
        for category in sorted(self.cases):
            lines.append(
                f"{category:<24}{self.cases[category]:>8}{self.ok[category]:>8}"
                f"{self.errors[category]:>13}{self.failed[category]:>8}{self.seconds[category]:>9.1f}"
            )
        total = sum(self.cases.values())
        lines.append(
            f"{'total':<24}{total:>8}{sum(self.ok.values()):>8}{sum(self.errors.values()):>13}"
            f"{sum(self.failed.values()):>8}"
        )
        kinds: Counter = Counter()
        for f in self.findings.values():
            kinds[f.kind] += f.count
        lines.append("failures by kind: " + (", ".join(f"{k} {n}" for k, n in kinds.most_common()) or "none"))
        by_type: Counter = Counter()
        for f in self.findings.values():
            if f.kind == "traceback":
                by_type[f.exc_type] += f.count
        if by_type:
            lines.append(
                "tracebacks by exception type: " + ", ".join(f"{k} {n}" for k, n in by_type.most_common())
            )
        lines.append(
            "slowest cases: " + "; ".join(f"{s:.1f} s {c} ({', '.join(t[:3])})" for s, c, t in self.slowest)
        )
        lines.append(f"distinct failure signatures: {len(self.findings)}; wall time {seconds:.1f} s")
        return "\n".join(lines)

    def details(self) -> str:
        parts = [f.text() for f in sorted(self.findings.values(), key=lambda f: (f.kind, -f.count))]
        if self.notes:
            parts.append("notes (not failures):")
            parts += [f.text() for f in self.notes.values()]
        return "\n\n".join(parts)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def show_bytes(data: bytes, limit: int = 600) -> str:
    """A reproducer's file content: repr, with the middle of a long one cut out."""
    if len(data) <= limit:
        return repr(data)
    return f"{data[: limit // 2]!r} … {data[-limit // 4 :]!r} ({len(data):,} bytes)"


def show(value: Any, limit: int = 600) -> str:
    text = repr(value) if not isinstance(value, str) else value
    return (
        text if len(text) <= limit else f"{text[: limit // 2]} … {text[-limit // 4 :]} ({len(text):,} chars)"
    )


# ======================================================================================= drawing
# Strategies are built once (module level); the generators below are plain functions of `draw`: building
# hypothesis strategies inside every draw cost more than running the cases.


class Draw:
    """What the generators draw from: a `random.Random` that hypothesis seeds once per example. Every
    choice is the generator's own (uniform, fast, and diverse from one example to the next: hypothesis'
    own choices lean towards small values and mutate earlier examples into near-copies); hypothesis
    provides the seeds, their reproducibility (derandomize, @seed) and the settings."""

    def __init__(self, rng: random.Random):
        self.rng = rng

    def __call__(self, generator: Callable[[Draw], Any]) -> Any:
        return generator(self)

    def index(self, n: int) -> int:
        return self.rng.randrange(n)


RANDOMS = st.randoms(use_true_random=True)


def drawer(draw) -> Draw:
    return Draw(draw(RANDOMS))


def pick(draw: Draw, options: Sequence) -> Any:
    """One of `options` (a fresh copy of a list or dict: generated configs are mutated)."""
    value = options[draw.index(len(options))]
    return copy.deepcopy(value) if isinstance(value, list | dict) else value


def chance(draw: Draw, percent: int) -> bool:
    return draw.index(100) < percent


def weighted(draw, choices: Sequence[tuple[int, Any]]) -> Any:
    """One of `choices` (weight, value | generator: a function of draw) by weight."""
    total = sum(w for w, _ in choices)
    number = draw.index(total)
    for w, choice in choices:
        if number < w:
            return choice(draw) if callable(choice) else choice
        number -= w
    raise AssertionError


# characters by kind: printable ASCII, controls, BMP (no surrogates), astral, the troublemakers
CHAR_KINDS = [
    (50, (0x20, 0x7E)),
    (12, (0x00, 0x1F)),
    (15, (0xA0, 0xD7FF)),
    (8, (0x10000, 0x10FFFF)),
    (5, (0x7F, 0x9F)),
]
TROUBLE = "\u2028\u2029\ufeff\u200b\u202e\u0301\ufffd\uffff\x85\xa0\u3000\t\n\r\\\"'"


def text(draw: Draw, max_size: int) -> str:
    """Unicode text of up to max_size characters, every kind of character likely."""
    chars = []
    for _ in range(draw.index(max_size + 1)):
        if chance(draw, 10):
            chars.append(pick(draw, TROUBLE))
        else:
            low, high = weighted(draw, CHAR_KINDS)
            chars.append(chr(draw.rng.randint(low, high)))
    return "".join(chars)


def texts(max_size: int) -> Callable[[Draw], str]:
    return lambda draw: text(draw, max_size)


EDGE_FLOATS = [
    0.0,
    -0.0,
    1.0,
    -1.0,
    0.5,
    1e-300,
    5e-324,
    1e308,
    -1e308,
    2.0**53,
    math.nan,
    math.inf,
    -math.inf,
]
EDGE_INTS = [
    0,
    1,
    -1,
    2,
    255,
    256,
    2**31 - 1,
    2**31,
    2**32,
    2**53 + 1,
    2**63 - 1,
    2**63,
    2**64,
    -(2**63),
    -(2**64),
]


def any_int(draw: Draw) -> int:
    if chance(draw, 40):
        return pick(draw, EDGE_INTS)
    return draw.rng.randint(-(2 ** draw.index(70)), 2 ** draw.index(70))


def any_float(draw: Draw) -> float:
    if chance(draw, 40):
        return pick(draw, EDGE_FLOATS)
    return draw.rng.uniform(-1, 1) * 10.0 ** draw.rng.randint(-320, 308)


# ======================================================================================= the schema


@dataclass(frozen=True)
class Key:
    """A leaf of the config schema: its dotted path ('[]' marks an item of a list of sections)."""

    path: tuple[str, ...]
    annotation: Any
    metadata: tuple

    @property
    def dotted(self) -> str:
        return ".".join(self.path)


def _submodels(annotation) -> list[tuple[type[BaseModel], bool]]:
    """(model, is a list of them) for each section a field may hold: every member of a union (the
    `method:` section is one method's settings, picked by name)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [(annotation, False)]
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        return _submodels(get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [found for arg in get_args(annotation) for found in _submodels(arg)]
    if origin is list:
        (arg,) = get_args(annotation)
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return [(arg, True)]
    return []


def walk_schema(model: type[BaseModel] = RunConfig, prefix: tuple[str, ...] = ()):
    """(leaves, sections) of the schema: every dotted key with its annotation, every section path."""
    leaves: list[Key] = []
    sections: list[tuple[str, ...]] = []
    for name, info in model.model_fields.items():
        path = (*prefix, name)
        subs = _submodels(info.annotation)
        if not subs:
            leaves.append(Key(path, info.annotation, tuple(info.metadata)))
            continue
        sections.append(path)
        for sub, many in subs:
            more_leaves, more_sections = walk_schema(sub, (*path, "[]") if many else path)
            leaves += [leaf for leaf in more_leaves if leaf.path not in {k.path for k in leaves}]
            sections += [s for s in more_sections if s not in sections]
    return leaves, sections


LEAVES, SECTIONS = walk_schema()
NUMERIC_LEAVES = [k for k in LEAVES if k.annotation in (int, float, int | None, float | None)]


def _registries() -> dict[str, list]:
    from lmtune.evaluate.metrics import names_for_task
    from lmtune.models.methods import METHODS
    from lmtune.tasks import TASKS

    metrics = sorted({m for task in TASKS for m in (*TASKS[task].metrics, *names_for_task(task))})
    return {"task": list(TASKS), "method.name": list(METHODS), "metric": metrics}


REGISTRIES = _registries()
PLAUSIBLE: dict[str, list[str]] = {
    "task": REGISTRIES["task"],
    "method.name": REGISTRIES["method.name"],
    "model.name": ["bundled:minilm", "bundled:smollm2-135m-instruct", "bundled:nope", "/no/such/model"],
    "metric": REGISTRIES["metric"],
    "metrics": REGISTRIES["metric"],
    "train": ["bundled:drug-reviews", "bundled:tweets", "train.csv", "data/*.jsonl"],
    "validation": ["bundled:tweets", "val.csv"],
    "test": ["test.csv"],
    "data": ["bundled:tweets", "ref.jsonl"],
    "separator": [",", "tab", "\\t", ";", "|", "\t"],
    "encoding": ["auto", "utf-8", "latin-1", "cp1252", "utf-16", "bogus"],
    "dir": ["runs", "/tmp/lmtune-fuzz-runs", "runs/sub"],
    "name": ["run", "my-run", "2024", "run.1"],
    "storage": ["sqlite:///study.db", "postgresql://u@h/db"],
    "lexicon": ["syn.json", "syn.tsv"],
    "forward": ["bundled:x", "/m/fwd"],
    "backward": ["bundled:y", "/m/bwd"],
    "model": ["bundled:smollm2-135m-instruct"],
    "system": ["You are helpful."],
    "init_text": ["Classify:"],
    "target_modules": ["q_proj", "v_proj", "query"],
    "boilerplate": ["^#", "(?i)copyright", "("],
    "types": ["email", "phone", "person", "nope"],
    "phone_regions": ["US", "GB", "XX", "us"],
    "columns": ["text", "label", "group"],
    "labels": ["pos", "neg"],
}


def _bounds(metadata: tuple) -> tuple:
    low = high = None
    low_open = high_open = False
    for m in metadata:
        if isinstance(m, annotated_types.Ge):
            low = m.ge
        elif isinstance(m, annotated_types.Gt):
            low, low_open = m.gt, True
        elif isinstance(m, annotated_types.Le):
            high = m.le
        elif isinstance(m, annotated_types.Lt):
            high, high_open = m.lt, True
    return low, low_open, high, high_open


def _number(draw: Draw, kind: type, metadata: tuple):
    """A number inside the field's bounds: often a bound itself (or just inside an open one)."""
    low, low_open, high, high_open = _bounds(metadata)
    if kind is int:
        low = -3 if low is None else low + low_open
        high = low + 200 if high is None else high - high_open
        return pick(draw, [low, high]) if chance(draw, 30) else draw.rng.randint(low, high)
    low = -1.0 if low is None else float(low)
    high = 100.0 if high is None else float(high)
    if chance(draw, 30):
        edge = pick(draw, [low, high])
        if (edge == low and low_open) or (edge == high and high_open):
            edge = math.nextafter(edge, high if edge == low else low)
        return edge
    value = draw.rng.uniform(low, high)
    return math.nextafter(value, high) if value == low and low_open else value


SPACE_KEYS = ["training.learning_rate", "training.epochs", "method.lora.r", "nope"]


def _space(draw: Draw) -> dict:
    space = {}
    for _ in range(draw.index(3)):
        dim: dict = {"type": pick(draw, ["float", "int", "categorical", "bogus"])}
        if chance(draw, 70):
            dim["low"], dim["high"] = draw.rng.uniform(-1, 1), draw.rng.uniform(-1, 10)
        if chance(draw, 30):
            dim["log"] = chance(draw, 50)
        if chance(draw, 30):
            dim["choices"] = [draw.rng.randint(1, 4) for _ in range(draw.index(4))]
        space[pick(draw, SPACE_KEYS)] = dim
    return space


def valid_value(draw: Draw, key: Key) -> Any:
    """A value the key's annotation accepts (mostly): validation then reaches the cross-field checks."""
    return _valid(draw, key.annotation, key.metadata, key.path)


def _valid(draw: Draw, annotation, metadata: tuple, path: tuple[str, ...]) -> Any:
    origin = get_origin(annotation)
    if annotation is type(None):
        return None
    if origin is Literal:
        return pick(draw, get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return _valid(draw, pick(draw, get_args(annotation)), metadata, path)
    if annotation is bool:
        return chance(draw, 50)
    if annotation in (int, float):
        return _number(draw, annotation, metadata)
    if annotation is str:
        names = PLAUSIBLE.get(".".join(path[-2:])) or PLAUSIBLE.get(path[-1])
        return pick(draw, names) if names else text(draw, 12)
    if origin is list:
        (arg,) = get_args(annotation)
        if arg is str and path[-1] in PLAUSIBLE:
            return [pick(draw, PLAUSIBLE[path[-1]]) for _ in range(draw.index(4))]
        return [_valid(draw, arg, (), path) for _ in range(draw.index(4))]
    if origin is dict:
        if path[-1] == "space":
            return _space(draw)
        return {text(draw, 6): text(draw, 6) for _ in range(draw.index(4))}
    return hostile_scalar(draw)


# ======================================================================================= hostile values

HOSTILE_NUMBERS = [
    0, -1, 1, -0.0, 0.5, 2**31, 2**53 + 1, 2**63, 2**64, -(2**63) - 1, 10**30, -(10**30), 10**400,
    1e308, -1e308, 5e-324, 1e-300, 0.9999999999, 1.0000000001, math.nan, math.inf, -math.inf, True, False,
]  # fmt: skip
HOSTILE_STRINGS = [
    "", " ", "\t", "\n", "\r\n", "\x00", "a\x00b", "\x1b[31mred\x1b[0m", "\x7f", "\u0085", "\u2028", "\ufeff",
    "\u200b", "\u202eevil", "\ud800", "x\ud800y", "../../../etc/passwd", "..", ".", "/", "//", "\\", "C:\\x",
    "~", "~/x", "/dev/null", "/dev/zero", "/proc/self/mem", "bundled:", "bundled:..", "bundled:../../x",
    "bundled:minilm/../x", "${HOME}", "$(rm -rf /)", "%s%n%x", "{0}{name}", "'\"", '"', "'", "<script>",
    "null", "None", "true", "yes", "no", "off", "on", ".inf", "-.inf", ".nan", "NaN", "inf", "1e999",
    "-0", "0x10", "0o17", "0b11", "1_000", "1:30", "2024-01-01", "3e-5", "1e5", "5", "-5", "tab", "\\t",
    "é", "ｔｒａｉｎｉｎｇ", "😀" * 10, "x\u0301", "*", "**/*", "[", "]", "{", "?", "#", "&a", "*a", "!!str",
    "- a", "a: b", "a=b", "=", "--set", "-h", "x" * 300, "é" * 150, "a b c", "Classify", "LoRA", "nope",
]  # fmt: skip
UNKNOWN_KEYS = [
    "", " ", "lerning_rate", "epoch", "Training", "training ", " training", "ｔｒａｉｎｉｎｇ", "train\u200bing",
    "x" * 300, "\x00", "a.b", "a..b", "__class__", "model_config", "model_fields", "__dict__", "<<", "?", "-",
    "*", "&", "\ud800", "é", 0, 1, -1, 1.5, True, False, None,
]  # fmt: skip
SHARED_CONTAINERS = [[], [None], [[]], [{}], {}, {"a": 1}, {"x": {"y": {"z": 1}}}, [1, "a", None]]

LONG_CHUNKS = ["x", "é", "\x00", "😀", "a b ", "\\", "'", "\n", "."]


def long_string(draw: Draw) -> str:
    return pick(draw, LONG_CHUNKS) * pick(draw, [1000, 10_000, 100_000])


def hostile_scalar(draw: Draw) -> Any:
    return weighted(
        draw,
        [
            (3, lambda d: pick(d, HOSTILE_NUMBERS)),
            (4, lambda d: pick(d, HOSTILE_STRINGS)),
            (2, texts(20)),
            (1, any_int),
            (1, any_float),
            (1, None),
        ],
    )


HOSTILE_BOOLS = ["yes", "no", "on", "off", "true", "True", "1", "0", 2, -1, 0.5, "", None]
HOSTILE_LISTS = [[""], ["\x00"], [None], [[]], [{}], ["a"] * 10_000, [1.5], ["x" * 10_000]]


def typed_hostile(draw: Draw, key: Key) -> Any:
    """A hostile value of about the right type for the key (what slips past a type check): NaN,
    infinity, huge or negative numbers for a number; control characters, paths, huge text for a
    string; near-booleans; odd lists."""
    annotation = str(key.annotation)
    if "float" in annotation or "int" in annotation:
        return pick(draw, HOSTILE_NUMBERS) if chance(draw, 80) else hostile_scalar(draw)
    if "bool" in annotation:
        return pick(draw, HOSTILE_BOOLS)
    if "list" in annotation and chance(draw, 50):
        return pick(draw, HOSTILE_LISTS)
    if "str" in annotation or "Literal" in annotation:
        return pick(draw, HOSTILE_STRINGS) if chance(draw, 80) else text(draw, 30)
    return hostile_value(draw)


def _container(draw: Draw, depth: int) -> Any:
    if depth == 0 or chance(draw, 40):
        return hostile_scalar(draw)
    if chance(draw, 50):
        return [_container(draw, depth - 1) for _ in range(draw.index(4))]
    return {text(draw, 4): _container(draw, depth - 1) for _ in range(draw.index(4))}


def hostile_value(draw: Draw) -> Any:
    """A value where a schema key's value belongs: wrong type, out of range, hostile text, a list where
    a scalar belongs and vice versa, a mapping where a scalar belongs."""
    return weighted(
        draw,
        [
            (50, hostile_scalar),
            (30, lambda d: _container(d, 3)),
            (15, lambda d: pick(d, SHARED_CONTAINERS)),
            (5, long_string),
        ],
    )


# ======================================================================================= raw configs


def _put(raw: dict, path: tuple[str, ...], value: Any) -> None:
    """Set a schema path in a raw config, creating sections ('[]': the first item of a list section)."""
    node: Any = raw
    i = 0
    while i < len(path) - 1:
        part = path[i]
        if i + 2 < len(path) and path[i + 1] == "[]":
            items = node.get(part)
            if not (isinstance(items, list) and items and isinstance(items[0], dict)):
                items = node[part] = [{}]
            node, i = items[0], i + 2
            continue
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            return  # a mutation made it a value already
        node, i = child, i + 1
    node[path[-1]] = value


def _sections_present(raw: dict) -> list[dict]:
    found = [raw]
    for value in raw.values():
        if isinstance(value, dict):
            found += _sections_present(value)
        elif isinstance(value, list):
            found += [d for item in value if isinstance(item, dict) for d in _sections_present(item)]
    return found


MUTATIONS = ["unknown", "scalar section", "mapping value", "misplaced", "null"]
PYTHON_ONLY = ["tuple", "set", "bytes", "deep", "cycle", "huge int", "object", "int keys", "complex"]


def raw_config(draw, python_only: bool = False) -> tuple[Any, tuple[str, ...]]:
    """(raw config, tags): schema keys with valid or hostile values, then structural mutations
    (unknown keys, a section given a value, a value given a mapping, keys in the wrong section)."""
    raw: dict = {}
    tags: list[str] = []
    valid_only = not python_only and chance(draw, 25)  # the success path needs exercise too
    if valid_only:
        tags.append("valid values")
    for _ in range(draw.index(9)):
        key = pick(draw, LEAVES)
        if valid_only or chance(draw, 60):
            value = valid_value(draw, key)
        else:
            value = hostile_value(draw)
            tags.append("hostile value")
        _put(raw, key.path, value)
    if valid_only:
        _repair(raw)
    if valid_only and chance(draw, 60):  # one hostile value in an otherwise valid config: that key alone
        key = pick(draw, LEAVES)
        _put(raw, key.path, typed_hostile(draw, key))
        tags.append(f"one hostile value at {key.dotted}")
    for _ in range(0 if valid_only else draw.index(4)):
        mutation = pick(draw, MUTATIONS)
        tags.append(mutation)
        if mutation == "unknown":
            sections = _sections_present(raw)
            node = sections[draw.index(len(sections))]
            node[pick(draw, UNKNOWN_KEYS)] = hostile_value(draw)
        elif mutation == "scalar section":
            _put(raw, pick(draw, SECTIONS), hostile_value(draw))
        elif mutation == "mapping value":
            key = pick(draw, LEAVES)
            inner = hostile_value(draw) if chance(draw, 50) else valid_value(draw, key)
            _put(raw, key.path, {key.path[-1]: inner})
        elif mutation == "misplaced":
            key = pick(draw, LEAVES)
            where = () if chance(draw, 20) else pick(draw, SECTIONS)
            _put(raw, (*where, key.path[-1]), valid_value(draw, key))
        else:
            _put(raw, pick(draw, SECTIONS), None)
    if python_only:  # what only a caller of validate() can hand over, never YAML
        extra = pick(draw, PYTHON_ONLY)
        tags.append(extra)
        _put(raw, pick(draw, LEAVES).path, _python_value(extra, pick(draw, [10, 1000, 100_000])))
    if not valid_only and chance(draw, 4):
        tags.append("bare top level")
        return hostile_value(draw), tuple(tags)
    return raw, tuple(tags)


CROSS_CHECKED = [("evaluation", "metric"), ("evaluation", "baselines"), ("evaluation", "metrics"),
                 ("data", "split", "fold"), ("training", "cv_folds")]  # fmt: skip


def _repair(raw: dict) -> None:
    """Make a config of valid values valid as a whole: required keys of optional sections, split
    fractions that leave training rows, no keys whose validity depends on others."""
    for section in raw.get("evaluation", {}).get("forgetting", []) or []:
        section.setdefault("data", "ref.jsonl")
    translation = raw.get("data", {}).get("augment", {}).get("back_translation")
    if isinstance(translation, dict):
        translation.setdefault("forward", "/m/fwd")
        translation.setdefault("backward", "/m/bwd")
    split = raw.get("data", {}).get("split", {})
    if split.get("validation", 0.1) + split.get("test", 0.2) >= 1:
        split["validation"], split["test"] = 0.1, 0.2
    for *path, leaf in CROSS_CHECKED:
        node = raw
        for part in path:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(leaf, None)


def _python_value(kind: str, n: int) -> Any:
    if kind == "tuple":
        return ("a", 1)
    if kind == "set":
        return {"a", "b"}
    if kind == "bytes":
        return b"\xff\xfe\x00bytes"
    if kind == "deep":
        value: Any = "leaf"
        for _ in range(n):
            value = {"a": value}
        return value
    if kind == "cycle":
        cycle: list = []
        cycle.append(cycle)
        return cycle
    if kind == "huge int":
        return 10**5000
    if kind == "object":
        return object()
    if kind == "int keys":
        return {1: "a", None: "b"}
    return 1 + 2j


# ======================================================================================= YAML text


def dump_yaml(raw: Any, draw) -> str:
    try:
        return yaml.safe_dump(
            raw,
            allow_unicode=chance(draw, 50),
            default_flow_style=pick(draw, [False, None, True]),
            sort_keys=False,
            width=pick(draw, [80, 1_000_000]),
        )
    except (yaml.YAMLError, ValueError, TypeError, RecursionError):
        return json.dumps(raw, default=repr)  # JSON is YAML (mostly)


TEXT_INSERTS = [
    "\x00", "\x1b", "\x7f", "\x85", "\u2028", "\ufeff", "\t", ":", "- ", "[", "{", "'", '"', "&a ", "*a", "*b ",
    "!", "|", ">", "%", "@", "`", "#", "? ", ": ", "\\", "\x0c", "<<: *a\n", "\ud800",
]  # fmt: skip
TAGS = [
    "!!python/object:os.system ", "!!python/object/apply:os.system ['true'] ", "!!python/name:os.system ",
    "!!python/tuple ", "!!binary ", "!!set ", "!!omap ", "!custom ", "!!str ", "!!int ", "!!float ",
    "!!timestamp ", "!!null ", "!!bool ", "!!map ", "!!seq ", "!<tag:x> ", "!!merge ",
]  # fmt: skip
TEXT_DAMAGE = [
    "tab", "duplicate", "duplicate block", "crlf", "cr", "strip", "directive", "documents", "truncate",
    "insert", "anchor", "tag",
]  # fmt: skip
DIRECTIVES = [
    "%YAML 1.1\n---\n", "%YAML 2.0\n---\n", "%TAG ! tag:x,2000:\n---\n", "--- |\n", "---\n", "--- !!map\n",
    "%FOO bar\n---\n",
]  # fmt: skip
KEY_LINE = re.compile(r"^\s*[^\s\-#{\[][^:]*:( |$)")


def mutate_text(text: str, draw) -> tuple[str, list[str]]:
    """Text-level damage to a dumped config: tabs, duplicate keys, line endings, directives, several
    documents, truncation, stray characters, anchors and aliases, tags."""
    tags = []
    for _ in range(1 + draw.index(3)):
        lines = text.split("\n")
        i = draw.index(len(lines))
        what = pick(draw, TEXT_DAMAGE)
        tags.append(what)
        if what == "tab":
            lines[i] = "\t" + lines[i].lstrip(" ")
            text = "\n".join(lines)
        elif what == "duplicate":
            if KEY_LINE.match(lines[i]):
                tags.append("duplicate key")
            lines.insert(i, lines[i])
            text = "\n".join(lines)
        elif what == "duplicate block":
            if KEY_LINE.match(text) and not text[0].isspace():
                tags.append("duplicate key")
            text = text + ("" if text.endswith("\n") else "\n") + text
        elif what == "crlf":
            text = text.replace("\n", "\r\n")
        elif what == "cr":
            text = text.replace("\n", "\r")
        elif what == "strip":
            text = text.rstrip()
        elif what == "directive":
            text = pick(draw, DIRECTIVES) + text
        elif what == "documents":
            text += pick(draw, ["\n---\n", "\n---\ntraining: {epochs: 1}\n", "\n...\n", "\n--- x\n"])
        elif what == "truncate":
            text = text[: draw.index(len(text) + 1)]
        elif what == "insert":
            at = draw.index(len(text) + 1)
            text = text[:at] + pick(draw, TEXT_INSERTS) + text[at:]
        else:  # an anchor and an alias, or a tag, on the first "key: value" line
            j = next((k for k, line in enumerate(lines) if ": " in line), None)
            if j is not None:
                key, _, value = lines[j].partition(": ")
                if what == "anchor":
                    lines[j] = f"{key}: &a {value}"
                    lines.append(pick(draw, ["copy: *a", "training: *a", "data: *a", "x: *undefined"]))
                else:
                    lines[j] = f"{key}: {pick(draw, TAGS)}{value}"
            text = "\n".join(lines)
    return text, tags


def alias_bomb(fanout: int, depth: int, key: str) -> str:
    lines = ["a0: &a0 [x, y]"]
    for i in range(1, depth + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * fanout) + "]")
    section, _, leaf = key.rpartition(".")
    lines.append(f"{section}:\n  {leaf}: *a{depth}" if section else f"{leaf}: *a{depth}")
    return "\n".join(lines) + "\n"


def _nest(path: tuple[str, ...], value: str) -> str:
    parts = [p for p in path[:-1] if p != "[]"]
    text = "".join("  " * depth + f"{part}:\n" for depth, part in enumerate(parts))
    return text + "  " * len(parts) + f"{path[-1]}: {value}\n"


EDGE_KINDS = [  # the slow ones to parse (big files) less often: each costs seconds
    *["empty", "bare scalar", "deep flow", "alias bomb", "recursive alias", "merge", "tag", "documents"] * 3,
    *["complex key", "numbers", "unicode keys", "digits"] * 3,
    *["huge", "long line", "deep block"],
]
EDGE_TEXTS = {
    "empty": ["", "\n", "# only a comment\n", "---\n", "...\n", "~\n", "null\n", "--- \n..."],
    "bare scalar": [
        "42", "hello", "[1, 2]", "- a\n- b\n", "!!binary aGVsbG8=", "'q'", "true", ".inf", "{}", "[]", "''",
        "|\n  block\n", "? a", "!!set {a, b}",
    ],
    "recursive alias": [
        "a: &a [*a]\n", "training: &t {epochs: 1, again: *t}\n", "data: &d\n  train: x\n  self: *d\n",
        "x: &x\n  - *x\n  - *x\ntraining: {epochs: *x}\n", "&top {a: *top}\n",
    ],
    "merge": [
        "base: &b {epochs: 1}\ntraining:\n  <<: *b\n", "training:\n  <<: [{epochs: 1}, {epochs: 2}]\n",
        "training:\n  <<: 5\n", "training:\n  <<: *nope\n", "training: {<<: {<<: {epochs: 2}}}\n",
        "b: &b [1]\ntraining:\n  <<: *b\n",
    ],
    "complex key": ["? [a, b]\n: 1\n", "? {a: 1}\n: x\n", "training:\n  ? [epochs]\n  : 1\n", "[1]: x\n", "{a: 1}: x\n"],
    "unicode keys": [
        "ｔｒａｉｎｉｎｇ:\n  epochs: 1\n", "train\u200bing:\n  epochs: 1\n", "\u202etraining: {}\n",
        "training:\n  épochs: 1\n", "\ufefftraining: {}\n", "training:\n  epochs\u00a0: 1\n",
    ],
}  # fmt: skip
NUMBER_TEXTS = [
    "1e400", "1.0e+400", "-1.0e+400", "0x1F", "0o17", "0b101", "1_000", "+.inf", "-.inf", ".NaN", "1:30:00",
    "190:20:30", "2001-12-14", "2001-12-14t21:59:43.10-05:00", "0.", ".5", "+1", "1e-400", "0",
]  # fmt: skip


def yaml_edge_case(draw) -> tuple[str, str]:
    """(YAML text, what it is): the documents a config loader must survive."""
    what = pick(draw, EDGE_KINDS)
    if what in EDGE_TEXTS:
        return pick(draw, EDGE_TEXTS[what]), what
    if what == "deep flow":
        n = pick(draw, [10, 40, 1000, 10_000, 100_000])
        opening, closing = pick(draw, [("[", "]"), ("{a: ", "}")])
        return "training: " + opening * n + "1" + closing * n + "\n", f"{what} {n}"
    if what == "deep block":
        n = pick(draw, [10, 40, 200, 1000])
        return "".join(" " * i + "a:\n" for i in range(n)) + " " * n + "b: 1\n", f"{what} {n}"
    if what == "alias bomb":
        fanout, depth = 2 + draw.index(9), 1 + draw.index(7)
        while fanout**depth > 5_000_000:
            depth -= 1
        key = pick(draw, ["training.epochs", "data.train", "data.clean.label_map", "search.space", "junk"])
        return alias_bomb(fanout, depth, key), f"{what} {fanout}^{depth}"
    if what == "tag":
        tag = pick(draw, TAGS)
        return f"model:\n  name: {tag}x\ntraining: {tag}{{epochs: 1}}\n", what
    if what == "huge":
        n = pick(draw, [1000, 30_000, 120_000])
        head = pick(draw, ["", "training:\n  epochs: 2\n"])
        return head + "".join(f"key{i}: value{i}\n" for i in range(n)), f"{what} {n} keys"
    if what == "documents":
        return "---\ntraining: {epochs: 1}\n" * (2 + draw.index(500)), what
    if what == "long line":
        return "model:\n  name: " + "x" * pick(draw, [10_000, 900_000, 1_100_000]) + "\n", what
    if what == "numbers":
        value, key = pick(draw, NUMBER_TEXTS), pick(draw, NUMERIC_LEAVES)
        return _nest(key.path, value), f"{what} {key.dotted}={value}"
    n = pick(draw, [20, 4300, 4301, 10_000])  # digits
    key = pick(draw, ["training.seed", "training.epochs", "data.split.seed", "output.name"])
    return _nest(tuple(key.split(".")), "9" * n), f"{what} {n}"


ENCODINGS = ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-32", "latin-1", "cp1252"]
BAD_BYTES = [
    b"\xff",
    b"\xfe",
    b"\xc3",
    b"\x80",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\xc0\xaf",
    b"\xe2\x82",
]


def encode(text: str, draw) -> tuple[bytes, list[str]]:
    tags = []
    encoding = "utf-8" if chance(draw, 85) else pick(draw, ENCODINGS)
    if encoding != "utf-8":
        tags.append(encoding)
    data = text.encode(encoding, errors="surrogatepass" if encoding.startswith("utf") else "replace")
    if chance(draw, 6):
        at = draw.index(len(data) + 1)
        data = data[:at] + pick(draw, BAD_BYTES) + data[at:]
        tags.append("bad bytes")
    return data, tags


# ======================================================================================= config cases

FILE_NAMES = [
    "c.yml", ".yaml", "..yaml", ".hidden.yaml", "a b.yaml", "ü.yaml", "x" * 200 + ".yaml", "x" * 240 + ".yaml",
    "é" * 110 + ".yaml", "c", "c.txt", "-c.yaml", "c\n.yaml", "c\t.yaml", "[a].yaml", "*.yaml", "c.yaml.yaml",
    "NUL.yaml", "c:.yaml", "\u202ec.yaml", "\x1b[31m.yaml",
]  # fmt: skip
OVERRIDE_KEYS = [
    "", " ", "a..b", ".a", "a.", "training..epochs", "training.epochs.deeper", "training", "model.name.x",
    "unknown.key", "x" * 1000, "ｔｒａｉｎｉｎｇ.epochs", "training .epochs", " training.epochs ", "training.epochs\x00",
    "__class__", "evaluation.forgetting.0.data", "evaluation.forgetting", "search.space.lr.type", "data.train.x",
    "output.name", "output.dir", "data", "search", "\ud800", "training.\n", "=",
]  # fmt: skip
OVERRIDE_VALUES = [
    "[1", "{a:", ".inf", "-.inf", ".nan", "1e999", "1.0e+400", "x" * 100_000, "\x00", "a\x00b",
    "!!python/object:os.system", "!!python/object/apply:os.system ['true']", "*a", "&a [*a]", "---\n---",
    "a: b: c", "'unterminated", '"bad \\q escape"', "%", "@", "`", "| block", "> folded", "- item", "? x",
    "2001-12-14", "~", "", " ", "=", "==", "a=b", "9" * 5000, "[" * 10_000, "{a: 1}", "[1, 2]", "\t", "\ud800",
    "\ufeff1", "1\n2", "1:30", "0x1F", "true", "no", "..", "/", "../x", "\x1b[2J", "\u2028",
]  # fmt: skip
SPECIAL_PATHS = ["folder", "missing", "symlink loop", "/dev/null", "path through a file"]
PLAIN_CONFIGS = ["", "training:\n  epochs: 1\n", "data: {train: x.csv}\n", "training: 5\n"]


def dump_scalar(value: Any) -> str:
    try:
        return yaml.safe_dump(value, default_flow_style=True, width=1_000_000).removesuffix("\n...\n").strip()
    except (yaml.YAMLError, ValueError, TypeError):
        return str(value)


HOSTILE_NUMBER_TEXTS = [
    ".inf", "-.inf", ".nan", ".NaN", "+.inf", "1e999", "1.0e+400", "-1e999", "0", "-1", "-0.0", "1e308",
    "5e-324", "18446744073709551616", "-9223372036854775809", "0x7fffffffffffffff", "true", "1_000", "1:30",
]  # fmt: skip


def override_list(draw) -> list[str]:
    items = []
    for _ in range(draw.index(5)):
        key = weighted(
            draw,
            [
                (6, lambda d: pick(d, LEAVES).dotted.replace(".[]", ".0")),
                (3, lambda d: pick(d, OVERRIDE_KEYS)),
                (1, texts(10)),
            ],
        )
        if chance(draw, 10):
            items.append(key)  # no '='
            continue
        if chance(draw, 15):  # a number key given a hostile number
            key = pick(draw, NUMERIC_LEAVES).dotted
            value = pick(draw, HOSTILE_NUMBER_TEXTS)
        elif chance(draw, 40):
            value = dump_scalar(valid_value(draw, pick(draw, LEAVES)))
        else:
            value = weighted(
                draw,
                [
                    (6, lambda d: pick(d, OVERRIDE_VALUES)),
                    (2, texts(20)),
                    (1, lambda d: dump_scalar(hostile_scalar(d))),
                ],
            )
        items.append(f"{key}={value}")
    return items


@dataclass
class ConfigCase:
    raw: Any  # what validate() gets (None with data: the case is a YAML text only)
    data: bytes | None  # the YAML file's bytes (None: a special path)
    name: str = "config.yaml"
    special: str | None = None  # validate only, folder, missing, symlink loop, /dev/null, …
    overrides: list[str] = field(default_factory=list)
    tags: tuple[str, ...] = ()

    def describe(self, with_raw: bool = False) -> str:
        lines = []
        if with_raw:
            try:
                shown = show(self.raw)
            except (RecursionError, ValueError) as exc:
                shown = f"<{type(self.raw).__name__} that repr() cannot show: {type(exc).__name__}>"
            lines.append(f"validate({shown}, 'fuzz')")
        else:
            where = self.special or f"file {self.name!r}"
            lines.append(f"{where}: {show_bytes(self.data)}" if self.data is not None else where)
            if self.overrides:
                lines.append(f"--set {[show(o, 200) for o in self.overrides]}")
        if self.tags:
            lines.append(f"(generated as: {', '.join(self.tags)})")
        return "\n".join(lines)


CONFIG_KINDS = [(56, "dumped"), (25, "edge"), (10, "overrides only"), (5, "special path"), (4, "python")]


@st.composite
def config_cases(draw) -> ConfigCase:
    """A YAML file (dumped from a schema-driven raw config, maybe damaged, or a YAML edge case), its
    name, and --set overrides; or a raw mapping for validate() alone."""
    draw = drawer(draw)
    tags: list[str] = []
    raw = None
    kind = weighted(draw, CONFIG_KINDS)
    if kind == "python":  # validate() alone, with values only Python callers can hand over
        raw, raw_tags = raw_config(draw, python_only=True)
        return ConfigCase(raw, None, special="validate only", tags=raw_tags)
    if kind == "special path":
        special = pick(draw, SPECIAL_PATHS)
        return ConfigCase(None, None, special=special, overrides=override_list(draw), tags=(special,))
    if kind == "dumped":
        raw, raw_tags = raw_config(draw)
        tags += raw_tags
        text = dump_yaml(raw, draw)
        if chance(draw, 35):
            text, more = mutate_text(text, draw)
            tags += more
    elif kind == "edge":
        text, what = yaml_edge_case(draw)
        tags.append(what)
    else:
        text = pick(draw, PLAIN_CONFIGS)
    data, more = encode(text, draw)
    tags += more
    name = "config.yaml" if chance(draw, 90) else pick(draw, FILE_NAMES)
    if name != "config.yaml":
        tags.append("file name")
    items = override_list(draw) if kind == "overrides only" or chance(draw, 45) else []
    if items:
        tags.append("--set")
    return ConfigCase(raw, data, name, None, items, tuple(tags))


def _repr_size(value: Any) -> int:
    try:
        return len(repr(value))
    except (RecursionError, ValueError):
        return 1 << 40


def config_runs(case: ConfigCase, folder: Path) -> list[Case]:
    """The cases one generated config makes: validate(raw) and load_config(file, overrides)."""
    from lmtune.config import dump_config, load_config, validate

    runs = []
    if case.raw is not None or case.special == "validate only":
        runs.append(
            Case(
                "config-validate-python" if case.special == "validate only" else "config-validate",
                lambda: check_accepted(validate(case.raw, "fuzz")),
                lambda: case.describe(with_raw=True),
                _repr_size(case.raw),
                CONFIG_SLOW,
                CONFIG_ABORT,
                case.tags,
            )
        )
    if case.special == "validate only":
        return runs

    def load():
        config = load_config(_config_path(case, folder), case.overrides)
        check_accepted(config)
        # a config that loads must survive its own dump (a run writes config.yaml and reads it back)
        validate(yaml.safe_load(dump_config(config)), "dumped config")
        if "duplicate key" in case.tags:
            return ["a YAML file with a duplicate key loads (the last value silently wins)"]
        return None

    size = (len(case.data) if case.data is not None else 0) + sum(len(o) for o in case.overrides)
    category = "config-load+set" if case.overrides else "config-load"
    paths = (str(folder / case.name),) if case.special is None else ()
    runs.append(Case(category, load, case.describe, size, CONFIG_SLOW, CONFIG_ABORT, case.tags, paths))
    return runs


def check_accepted(config) -> None:
    """What a loaded config must never hold, whatever the file said: NaN or infinity, a NUL character,
    an output.name that is not one plain folder name."""

    def walk(value, key):
        if isinstance(value, float) and not math.isfinite(value):
            raise Accepted("a non-finite number", f"{key} = {value!r}")
        if isinstance(value, str) and "\x00" in value:
            raise Accepted("a NUL character", f"{key} = {show(value, 80)}")
        if isinstance(value, dict):
            for k, v in value.items():
                walk(k, f"{key} (a key)")
                walk(v, f"{key}.{k}")
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{key}[{i}]")

    for section, value in config.model_dump().items():
        walk(value, section)
    name = config.output.name
    if name is not None and (name in ("", ".", "..") or "/" in name or re.search("[\x00-\x1f\x7f]", name)):
        raise Accepted("an output.name that is not a plain folder name", f"output.name = {name!r}")


def _config_path(case: ConfigCase, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if case.special == "folder":
        (folder / "cfg.yaml").mkdir(exist_ok=True)
        return folder / "cfg.yaml"
    if case.special == "missing":
        return folder / "missing.yaml"
    if case.special == "symlink loop":
        link = folder / "loop.yaml"
        if not link.is_symlink():
            link.symlink_to(link)
        return link
    if case.special == "/dev/null":
        return Path("/dev/null")
    if case.special == "path through a file":
        (folder / "file").write_text("x")
        return folder / "file" / "c.yaml"
    path = folder / case.name
    path.write_bytes(case.data or b"")
    return path


def run_config_case(tally: Tally, case: ConfigCase, folder: Path) -> None:
    tally.configs += 1
    try:
        for run in config_runs(case, folder):
            tally.run(run)
    finally:
        clean_folder(folder)


# ======================================================================================= data rows

WORDS = ["the", "movie", "was", "really", "good", "bad", "awful", "great", "food", "service", "day", "very"]
HOSTILE_TEXT = [
    '"', '""', "'", 'say "hi"', 'a "stray quote', '"quoted, with comma"', "a,b", "a;b", "a|b", "a\tb", "a\nb",
    "a\r\nb", "a\rb", "\n", "\x00", "a\x00b", "\x1b[31m", "\x7f", "\x0b\x0c", "\u2028", "\u0085", "\ufeff",
    "\u200b", "\u202e", "é", "e\u0301", "ﬁ", "ｔｅｘｔ", "😀", "中文", "עברית", "", " ", "   ", "\t",
    "bob@example.com", "+1 415 555 0123", "4111 1111 1111 1111", "DE89 3704 0044 0532 0130 00", "10.0.0.1",
    "123-45-6789", "https://bob:s3cret@host/x", "<script>x</script>", "&amp;&lt;", "<b>b</b>", "<!-- c -->",
    "\\", "\\n", "\\t", "\\u0000", "null", "None", "NaN", "true", "0", "-1", "1e999", "#comment", "=1+1",
    "\ud800",
]  # fmt: skip
HUGE_CHUNKS = ["x", "é", "word ", "\x00", '"', ",", "1", "a@b.", "<b>", "\t", "😀"]
LABELS = ["pos", "neg", "neutral"]
ODD_LABELS = [
    "", " ", "POS ", " pos", "Pos", "pos\n", "p\x00s", "\u202epos", "😀", "x" * 500, 1, 0, 1.5, math.nan,
    math.inf, True, None, ["pos"], {"a": 1}, -1, 2**64, "null", "é",
]  # fmt: skip


def word_text(draw: Draw) -> str:
    return " ".join(pick(draw, WORDS) for _ in range(1 + draw.index(8)))


def huge_text(draw: Draw) -> str:
    """Big fields, sparingly: up to ~1 MB (the PII scanner's slowest inputs stay out: see the note in bench)."""
    chunk = pick(draw, HUGE_CHUNKS)
    return chunk * max(1, pick(draw, [5_000, 100_000, 1_000_000]) // len(chunk))


def non_string(draw: Draw) -> Any:
    return weighted(
        draw,
        [
            (3, any_int),
            (3, any_float),
            (2, lambda d: chance(d, 50)),
            (2, None),
            (1, lambda d: [pick(d, WORDS) for _ in range(d.index(4))]),
            (1, lambda d: {pick(d, ["a", "text", "type"]): pick(d, WORDS) for _ in range(d.index(3))}),
            (1, 2**70),
        ],
    )


def _mixed_text(draw) -> str:
    return f"{pick(draw, WORDS)} {pick(draw, HOSTILE_TEXT)} {pick(draw, WORDS)}"


TEXT_CHOICES = [
    (55, word_text),
    (14, lambda d: pick(d, HOSTILE_TEXT)),
    (8, texts(30)),
    (8, _mixed_text),
    (1, huge_text),
    (14, non_string),
]


def text_value(draw) -> Any:
    return weighted(draw, TEXT_CHOICES)


def label_value(draw) -> Any:
    return pick(draw, LABELS) if chance(draw, 80) else pick(draw, ODD_LABELS)


TURN_DAMAGE = ["no role", "role type", "parts", "bad parts", "not dict", "null content", "both keys"]
BAD_PARTS = [
    [{"type": "image", "url": "x"}],
    ["plain"],
    [{"type": "text"}],
    [{"type": None, "text": 1}],
    [[]],
    {},
]


def _turn(draw, roles: list[str], role_key: str, content_key: str) -> Any:
    turn: Any = {role_key: pick(draw, roles), content_key: text_value(draw)}
    if chance(draw, 85):
        return turn
    damage = pick(draw, TURN_DAMAGE)
    if damage == "no role":
        del turn[role_key]
    elif damage == "role type":
        turn[role_key] = pick(draw, [1, None, ["user"], {"a": 1}, "USER", "", "robot"])
    elif damage == "parts":
        turn[content_key] = [{"type": "text", "text": text_value(draw)}, {"text": "more"}]
    elif damage == "bad parts":
        turn[content_key] = pick(draw, BAD_PARTS)
    elif damage == "not dict":
        turn = pick(draw, ["user: hi", 1, None, [], ["user", "hi"]])
    elif damage == "null content":
        turn[content_key] = None
    else:
        turn["role" if role_key == "from" else "from"] = "user"
    return turn


GENERATIVE_FORMATS = ["alpaca", "messages", "sharegpt", "prompt_completion", "text"]
MESSAGE_ROLES = ["system", "user", "assistant", "tool", "function"]
SHAREGPT_ROLES = ["human", "gpt", "system", "user", "assistant", "observation", "model"]
HISTORIES = [[["q", "a"]], [["q"]], '[["q", "a"]]', "not json", [[1, 2]], [], [["", "a"]], {"a": 1}]
TOOLS = ['[{"name": "f"}]', "[]", 5, [{"name": "f"}], {"a": 1}, "", True]


def generative_record(draw) -> dict:
    fmt = pick(draw, GENERATIVE_FORMATS)
    if fmt == "alpaca":
        record = {"instruction": text_value(draw), "output": text_value(draw)}
        if chance(draw, 50):
            record["input"] = text_value(draw)
        if chance(draw, 15):
            record["system"] = text_value(draw)
        if chance(draw, 15):
            record["history"] = pick(draw, HISTORIES)
        return record
    if fmt in ("messages", "sharegpt"):
        roles = MESSAGE_ROLES if fmt == "messages" else SHAREGPT_ROLES
        role_key, content_key = ("role", "content") if fmt == "messages" else ("from", "value")
        if chance(draw, 60):  # a well-formed conversation most of the time
            turns = [
                {role_key: roles[1], content_key: text_value(draw)},
                {role_key: roles[2], content_key: text_value(draw)},
            ]
        else:
            turns = [_turn(draw, roles, role_key, content_key) for _ in range(draw.index(6))]
        key = "messages" if fmt == "messages" else "conversations"
        odd = [json.dumps(turns), "not json", 5, None, {"role": "user"}, "[]"]
        record = {key: turns if chance(draw, 92) else pick(draw, odd)}
        if chance(draw, 15):
            record["system"] = text_value(draw)
        if chance(draw, 10):
            record["tools"] = pick(draw, TOOLS)
        return record
    if fmt == "prompt_completion":
        return {"prompt": text_value(draw), "completion": text_value(draw)}
    return {"text": text_value(draw)}


GROUPS = ["g1", "g2", "g3", "", None, 1, ["g"], "g\x00"]
EXTRA_COLUMNS = ["extra", "", " text", "TEXT", "label ", "id", "é", "a,b", '"q"']


def labelled_record(draw) -> dict:
    record = {}
    if chance(draw, 95):
        record["text"] = text_value(draw)
    if chance(draw, 95):
        record["label"] = label_value(draw)
    if chance(draw, 15):
        record["group"] = pick(draw, GROUPS)
    return record


def record(draw, flavour: str) -> dict:
    if flavour == "labelled" or (flavour == "mixed" and chance(draw, 50)):
        row = labelled_record(draw)
    else:
        row = generative_record(draw)
    if chance(draw, 10):  # an extra column
        row[pick(draw, EXTRA_COLUMNS)] = text_value(draw)
    return row


# ======================================================================================= data files


@dataclass
class DataFile:
    name: str
    data: bytes
    rows: int
    tags: tuple[str, ...] = ()


def _cell(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)


TABLE_LAYOUTS = [
    (".csv", ","),
    (".tsv", "\t"),
    (".csv", ";"),
    (".txt", "|"),
    (".csv", "|"),
    (".tsv", ","),
    (".txt", "\t"),
]
ODD_SEPARATORS = ["tab", "\\t", '"', "'", "\n", "\r", "\x00", " ", "a", "é", "\\", "#", "\u2028", "="]
ODD_COLUMNS = [["text"], ["text", "label", "x"], [], ["", ""], ["text", "text"]]


def table_file(draw, rows: list[dict]) -> tuple[str, str, dict, list[str]]:
    """(suffix, text, data keys, tags) of a delimited file: csv-module quoting or naive joins (stray
    quotes, separators inside fields), line endings, odd headers, missing or extra fields."""
    keys: dict = {}
    suffix, separator = pick(draw, TABLE_LAYOUTS)
    if separator != {".csv": ",", ".tsv": "\t"}.get(suffix) or chance(draw, 10):
        # usually told; sometimes not (a mismatch), sometimes told something hostile
        told = weighted(draw, [(70, separator), (15, None), (15, lambda d: pick(d, ODD_SEPARATORS))])
        if told is not None:
            keys["separator"] = told
    if chance(draw, 20):
        keys["quoting"] = pick(draw, ["csv", "none", "auto"])
    columns = list(dict.fromkeys(k for row in rows for k in row)) or ["text", "label"]
    style = weighted(draw, [(60, "csv"), (25, "naive"), (15, "csv-all")])
    eol = weighted(draw, [(70, "\n"), (20, "\r\n"), (10, "\r")])
    tags = [style, repr(separator), repr(eol)]
    out = io.StringIO()
    writer = csv.writer(
        out,
        delimiter=separator,
        quoting=csv.QUOTE_ALL if style == "csv-all" else csv.QUOTE_MINIMAL,
        lineterminator=eol,
    )

    def write(cells):
        if style != "naive":
            with contextlib.suppress(csv.Error):
                writer.writerow(cells)
                return
        out.write(separator.join(cells) + eol)

    if chance(draw, 10):
        keys["columns"] = columns if chance(draw, 70) else pick(draw, ODD_COLUMNS)
        tags.append("no header")
    else:
        header = columns
        if chance(draw, 10):
            header = pick(
                draw,
                [
                    [f" {c} " for c in columns],
                    [str(c).upper() for c in columns],
                    [*columns, columns[0]],
                    columns[:-1],
                    ["\ufeff" + str(columns[0]), *columns[1:]],
                    [""] * len(columns),
                ],
            )
            tags.append("odd header")
        write([str(c) for c in header])
    for row in rows:
        cells = [_cell(row.get(c)) for c in columns]
        if chance(draw, 8):
            cells = cells[:-1] if chance(draw, 50) else [*cells, "extra"]
        write(cells)
    text = out.getvalue()
    if chance(draw, 10):
        text = text.rstrip("\r\n")
        tags.append("no final newline")
    if chance(draw, 5):
        text = text.replace(eol, eol + eol)  # blank lines
        tags.append("blank lines")
    return suffix, text, keys, tags


LINE_DAMAGE = [
    "truncate", "array", "string", "null", "deep", "huge int", "raw newline", "single quotes", "trailing", "bom",
    "nan", "dup key", "number",
]  # fmt: skip


def _jsonl_line(draw, row: dict) -> str:
    line = json.dumps(row, ensure_ascii=chance(draw, 50), allow_nan=True)
    if chance(draw, 92):
        return line
    damage = pick(draw, LINE_DAMAGE)
    if damage == "truncate":
        return line[: draw.index(len(line) + 1)]
    if damage == "array":
        return json.dumps([row])
    if damage == "string":
        return json.dumps("just a string")
    if damage == "null":
        return "null"
    if damage == "deep":
        n = pick(draw, [100, 10_000, 200_000])
        return '{"text": ' + "[" * n + "]" * n + ', "label": "pos"}'
    if damage == "huge int":
        return '{"text": "a", "label": ' + "9" * pick(draw, [4300, 4301, 20_000]) + "}"
    if damage == "raw newline":
        return line.replace("\\n", "\n").replace(" ", "\n", 1)
    if damage == "single quotes":
        return line.replace('"', "'")
    if damage == "trailing":
        return line + pick(draw, [",", " x", "}", "\x00"])
    if damage == "bom":
        return "\ufeff" + line
    if damage == "nan":
        return '{"text": NaN, "label": Infinity}'
    if damage == "dup key":
        return '{"text": "a", "text": "b", "label": "pos", "label": 1}'
    return "12345"


JSON_SHAPES = ["wrapped", "two lists", "scalar", "object", "deep", "huge int", "truncated", "empty array"]


def json_file(draw, rows: list[dict]) -> tuple[str, str, list[str]]:
    shape = weighted(draw, [(55, "jsonl"), (30, "array"), (15, lambda d: pick(d, JSON_SHAPES))])
    if shape == "jsonl":
        suffix = weighted(draw, [(70, ".jsonl"), (15, ".ndjson"), (15, ".json")])
        eol = "\n" if chance(draw, 80) else "\r\n"
        lines = [_jsonl_line(draw, row) for row in rows]
        if chance(draw, 10):
            lines.insert(draw.index(len(lines) + 1), pick(draw, ["", "   ", "\t"]))
        return suffix, eol.join(lines) + ("" if chance(draw, 10) else eol), [shape, suffix]
    if shape == "array":
        text = json.dumps(rows, ensure_ascii=chance(draw, 50), indent=pick(draw, [None, 2]))
    elif shape == "wrapped":
        text = json.dumps({"data": rows, "meta": 1}, ensure_ascii=chance(draw, 50))
    elif shape == "two lists":
        text = json.dumps({"a": rows or [{}], "b": rows or [{}]})
    elif shape == "scalar":
        text = pick(draw, ["5", "null", '"x"', "true", "[]", "[1, 2]", "[null]", "[[]]"])
    elif shape == "object":
        text = json.dumps(rows[0] if rows else {})
    elif shape == "deep":
        n = pick(draw, [100, 10_000, 200_000])
        text = "[" * n + "]" * n
    elif shape == "huge int":
        text = '[{"text": "a", "label": ' + "9" * pick(draw, [4301, 20_000]) + "}]"
    elif shape == "truncated":
        full = json.dumps(rows)
        text = full[: draw.index(len(full) + 1)]
    else:
        text = "[]"
    return ".json", text, [shape]


ODD_ARROW = [
    "binary",
    "timestamp",
    "decimal",
    "dictionary",
    "large_string",
    "struct",
    "list<struct>",
    "null",
    "float16",
]


def parquet_file(draw, rows: list[dict]) -> tuple[bytes, list[str]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    tags = []
    arrays = {}
    for column in list(dict.fromkeys(k for row in rows for k in row)):
        values = [row.get(column) for row in rows]
        try:
            arrays[str(column)] = pa.array(values)
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            arrays[str(column)] = pa.array(
                [None if v is None else _utf8(_cell(v)) for v in values], type=pa.string()
            )
            tags.append("stringified")
    if rows and chance(draw, 20):  # odd column types
        kind = pick(draw, ODD_ARROW)
        tags.append(kind)
        arrays[pick(draw, ["text", "label", "messages", "extra"])] = _odd_array(kind, len(rows))
    try:
        table = pa.table(arrays) if arrays else pa.table({"text": pa.array([], type=pa.string())})
        sink = io.BytesIO()
        pq.write_table(table, sink)
    except (pa.ArrowException, ValueError, TypeError):
        return b"PAR1garbagePAR1", ["unwritable"]
    data = sink.getvalue()
    if chance(draw, 6):
        at = draw.index(len(data) + 1)
        data = data[:at] if chance(draw, 50) else data[:at] + b"\x00\xff" * 8 + data[at + 16 :]
        tags.append("damaged")
    return data, tags


def _utf8(text: str) -> str:
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def _odd_array(kind: str, n: int):
    import datetime
    import decimal

    import numpy as np
    import pyarrow as pa

    if kind == "binary":
        return pa.array([b"\xff\xfe bytes"] * n, type=pa.binary())
    if kind == "timestamp":
        return pa.array([datetime.datetime(2024, 1, 1)] * n)
    if kind == "decimal":
        return pa.array([decimal.Decimal("1.5")] * n)
    if kind == "dictionary":
        return pa.array((["pos", "neg"] * n)[:n]).dictionary_encode()
    if kind == "large_string":
        return pa.array(["big"] * n, type=pa.large_string())
    if kind == "struct":
        return pa.array([{"role": "user", "content": "hi"}] * n)
    if kind == "list<struct>":
        return pa.array([[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]] * n)
    if kind == "null":
        return pa.array([None] * n, type=pa.null())
    return pa.array(np.ones(n, dtype=np.float16))


DATA_NAMES = ["train", "with space", "ü", "[x]", ".hidden", "a*b", "x" * 200, "-dash", "\u202e"]
WHOLE_FILES = {
    "empty": b"",
    "blank": b"\n\n  \n",
    "bom only": b"\xef\xbb\xbf",
    "header only": b"text,label\n",
    "unknown suffix": b"text,label\na,pos\n",
    "no suffix": b"text,label\na,pos\n",
    "nul bytes": b"text,label\n\x00\x00,pos\na\x00b,neg\n",
    "binary": b"",
}
ODD_ENCODINGS = [
    "auto", "utf-8", "latin-1", "utf-16", "ascii", "utf-7", "unicode_escape", "raw_unicode_escape", "idna",
    "punycode", "undefined", "rot13", "base64", "zlib", "hex", "uu", "bz2", "mbcs", "utf-32", "cp037",
    "shift_jis", "", " ", "UTF8", "bogus", "utf_8_sig", "utf-16-be", "charmap",
]  # fmt: skip
FILE_FORMATS = [(35, "table"), (40, "json"), (8, "txt"), (12, "parquet"), (5, "whole file")]


def data_file(draw, flavour: str, stem: str = "train") -> tuple[DataFile, dict]:
    """One data file (bytes) and the data.* keys it needs to be read as meant."""
    n = draw.index(31)
    rows = [record(draw, flavour) for _ in range(n)]
    keys: dict = {}
    tags: list[str] = [flavour]
    fmt = weighted(draw, FILE_FORMATS)
    if fmt == "table":
        suffix, text, keys, more = table_file(draw, rows)
    elif fmt == "json":
        suffix, text, more = json_file(draw, rows)
    elif fmt == "txt":
        suffix, more = ".txt", ["txt"]
        eol = pick(draw, ["\n", "\r\n", "\r"])
        text = eol.join(_cell(row.get("text", row.get("instruction"))).replace("\n", " ") for row in rows)
    elif fmt == "parquet":
        data, more = parquet_file(draw, rows)
        return DataFile(f"{stem}.parquet", data, n, (*tags, "parquet", *more)), keys
    else:
        what = pick(draw, list(WHOLE_FILES))
        data = WHOLE_FILES[what] or draw.rng.randbytes(1 + draw.index(200))
        suffix = {"unknown suffix": ".xlsx", "no suffix": ""}.get(
            what, pick(draw, [".csv", ".jsonl", ".json", ".txt", ".tsv", ".parquet"])
        )
        return DataFile(f"{stem}{suffix}", data, 0, (*tags, what)), keys
    tags += more
    data, more = encode(text, draw)
    tags += more
    if more and more[0] != "bad bytes" and chance(draw, 60):
        keys["encoding"] = more[0]  # told the encoding it was written in
    if chance(draw, 8):
        keys["encoding"] = pick(draw, ODD_ENCODINGS)
        tags.append(f"encoding {keys['encoding']!r}")
    return DataFile(f"{stem}{suffix}", data, n, tuple(tags)), keys


LEXICONS = [
    b'{"good": ["fine", "nice"], "bad": ["poor"]}', b"good\tfine,nice\n", b"[1, 2]", b"{not json",
    b'{"good": "fine"}', b'{"good": [1]}', b"\xff\xfe", b"", b"good,\n,\n\t\n",
]  # fmt: skip


@dataclass
class DataCase:
    files: list[DataFile]  # the first is train; the second per `layout`
    layout: str  # train, train+validation, train+test, two train files, glob, empty list, missing, folder
    keys: dict  # data.* keys except the file names
    near: bool
    require_test: bool
    allow_empty: bool
    html: bool
    lexicon: bytes = b""
    tags: tuple[str, ...] = ()

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    @property
    def size(self) -> int:
        return sum(len(f.data) for f in self.files) + len(repr(self.keys))

    def describe(self, run: str = "") -> str:
        lines = [f"{run} layout={self.layout} data keys={show(self.keys, 400)}".strip()]
        lines += [
            f"{f.name!r}: {show_bytes(f.data)}  (generated as: {', '.join(f.tags)})" for f in self.files
        ]
        return "\n".join(lines)


LAYOUTS = [
    (70, "train"), (8, "train+validation"), (8, "train+test"), (6, "two train files"), (4, "glob"),
    (2, "empty list"), (1, "missing"), (1, "folder"),
]  # fmt: skip


@st.composite
def data_cases(draw) -> DataCase:
    draw = drawer(draw)
    flavour = pick(draw, ["labelled", "generative", "mixed"])
    layout = weighted(draw, LAYOUTS)
    first, keys = data_file(draw, flavour, "train" if chance(draw, 92) else pick(draw, DATA_NAMES))
    files = [first]
    if layout in ("train+validation", "train+test", "two train files", "glob"):
        second, more = data_file(draw, flavour, "other")
        files.append(second)
        keys = {**more, **keys}
    keys.update(data_keys(draw, flavour))
    return DataCase(
        files,
        layout,
        keys,
        near=chance(draw, 15),
        require_test=chance(draw, 30),
        allow_empty=chance(draw, 50),
        html=chance(draw, 3),
        lexicon=pick(draw, LEXICONS),
        tags=(flavour,),
    )


CLEAN_OPTIONS = [
    ("unicode", ["NFKC", "NFC", "none"]),
    ("control", [True, False]),
    ("html", [True, False]),
    ("whitespace", [True, False]),
    ("min_chars", [0, 1, 5]),
    ("max_chars", [None, 10, 1000]),
    ("boilerplate", [[], ["^#"], ["("], ["a{1,2}"], ["$"], [""]]),
    ("label_case", ["keep", "lower"]),
    ("label_map", [{}, {"pos": "positive"}, {"pos": "neg"}, {"": "x"}]),
    ("min_tokens", [None, None, None, 1]),
]
FIELDS = [
    {"output": "answer"},
    {"bogus": "x"},
    {"text": "instruction"},
    {"messages": "conversations"},
    {"instruction": ""},
]


def data_keys(draw, flavour: str) -> dict:
    """The data.* keys around the files: small split fractions, PII on or off, and the rest mostly
    default, sometimes odd (still a valid config, so that the pipeline runs)."""
    split: dict = {"validation": pick(draw, [0.0, 0.0, 0.1, 0.2]), "test": pick(draw, [0.0, 0.1, 0.2, 0.3])}
    keys: dict = {"split": split, "pii": {"action": pick(draw, ["replace", "off", "drop"])}}
    if chance(draw, 20):
        split["method"] = "stratified"
    if chance(draw, 8):
        split["folds"] = pick(draw, [2, 3])
        if chance(draw, 40):
            split["fold"] = pick(draw, [0, 1])
    if chance(draw, 10):
        split["seed"] = pick(draw, [0, -1, 2**63, 7])
    if chance(draw, 12):
        keys["text_column"] = pick(draw, ["", " text", "TEXT", "missing", "label", "instruction", "é"])
    if chance(draw, 10):
        keys["label_column"] = pick(draw, ["", "text", "LABEL", "missing", "group"])
    if chance(draw, 10):
        keys["group_column"] = pick(draw, ["group", "text", "missing", "label"])
    if chance(draw, 10):
        keys["labels"] = pick(draw, [["pos", "neg"], ["pos"], [], ["pos", "neg", "neutral", "é"]])
    if chance(draw, 25):
        keys["clean"] = {key: pick(draw, values) for key, values in CLEAN_OPTIONS if chance(draw, 30)}
    if chance(draw, 20):
        keys["dedup"] = {
            "exact": chance(draw, 50),
            "near": chance(draw, 30),
            "threshold": pick(draw, [0.5, 0.8, 1.0]),
            "ngram": pick(draw, [1, 3, 10]),
        }
    if chance(draw, 15):
        keys["leakage"] = {
            "check": chance(draw, 50),
            "near": chance(draw, 50),
            "remove_from_train": chance(draw, 50),
        }
    if chance(draw, 12):
        keys["augment"] = {
            "ops": pick(draw, [["deletion"], ["swap", "synonym"], ["deletion", "swap", "synonym"]]),
            "copies": pick(draw, [1, 3]),
            "p": pick(draw, [0.1, 0.9]),
            "balance": pick(draw, ["none", "oversample", "weights"]),
            "max_rows": pick(draw, [None, 1, 5]),
        }
        if chance(draw, 30):
            keys["augment"]["lexicon"] = "LEXICON"  # written beside the data by the runner
    if flavour != "labelled" and chance(draw, 20):
        keys["format"] = pick(draw, GENERATIVE_FORMATS)
    if chance(draw, 6):
        keys["fields"] = pick(draw, FIELDS)
    if chance(draw, 6):
        keys["max_train_rows"] = pick(draw, [1, 3, 10])
    return keys


def data_runs(case: DataCase, folder: Path) -> list[Case]:
    """The cases one generated data case makes: prepare_data for both kinds and both on_error values
    (what `lmtune data prepare` then writes: the report as JSON, the splits as JSONL), and `lmtune data
    inspect` over the same files (its summary and JSON)."""
    from lmtune.config import validate
    from lmtune.data import commands
    from lmtune.data.pipeline import prepare_data
    from lmtune.data.rows import write_jsonl

    paths = _write_data(case, folder)
    shown = tuple(map(str, paths))
    train, others = _train_spec(case, paths, folder)
    slow = DATA_SLOW + 10 * case.size / 1e6
    abort = max(DATA_ABORT, 2 * slow)
    runs = []
    for kind in ("labelled", "generative"):
        for on_error in ("skip", "fail"):

            def prepare(kind=kind, on_error=on_error):
                data = {**_resolve_keys(case.keys, folder), "train": train, "on_error": on_error, **others}
                config = validate({"task": "classify" if kind == "labelled" else "sft", "data": data}, "fuzz")
                result = prepare_data(
                    config, kind, None, require_test=case.require_test, allow_empty=case.allow_empty
                )
                json.dumps(result.report, ensure_ascii=False)
                out = folder / "out"
                out.mkdir(exist_ok=True)
                for name, rows in result.splits.items():
                    write_jsonl(rows, out / f"{name}.jsonl")
                if case.html:
                    commands.write_html(out / "data_report.html", result.report, "fuzz", config)

            def describe(kind=kind, on_error=on_error):
                return case.describe(f"prepare_data kind={kind} on_error={on_error}")

            runs.append(
                Case(f"data-{kind}-{on_error}", prepare, describe, case.size, slow, abort, case.tags, shown)
            )

    def inspect():
        reader = {k: case.keys[k] for k in READER_KEYS if k in case.keys}
        report, kind = commands.inspect(
            train if isinstance(train, list) else [train], model=None, near=case.near, **reader
        )
        json.dumps(report, ensure_ascii=False)
        commands.summary(report, kind)
        if case.html:
            commands.write_html(
                folder / "inspect.html", report, "lmtune data inspect", validate({}, "defaults")
            )

    if case.layout != "empty list":  # the command takes one file or more
        describe = lambda: case.describe(f"inspect near={case.near}")  # noqa: E731
        runs.append(Case("data-inspect", inspect, describe, case.size, slow, abort, case.tags, shown))
    return runs


READER_KEYS = ("separator", "columns", "text_column", "label_column", "encoding", "format")


def _write_data(case: DataCase, folder: Path) -> list[Path]:
    paths = []
    for i, f in enumerate(case.files):
        sub = folder / f"f{i}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f.name).write_bytes(f.data)
        paths.append(sub / f.name)
    (folder / "lexicon.json").write_bytes(case.lexicon)
    return paths


def _resolve_keys(keys: dict, folder: Path) -> dict:
    keys = copy.deepcopy(keys)  # a fresh copy per run
    if keys.get("augment", {}).get("lexicon") == "LEXICON":
        keys["augment"]["lexicon"] = str(folder / "lexicon.json")
    return keys


def _train_spec(case: DataCase, paths: list[Path], folder: Path) -> tuple[Any, dict]:
    layout = case.layout
    if layout == "train+validation":
        return str(paths[0]), {"validation": str(paths[1])}
    if layout == "train+test":
        return str(paths[0]), {"test": str(paths[1])}
    if layout == "two train files":
        return [str(p) for p in paths], {}
    if layout == "glob":
        return str(folder / "f*" / "*"), {}
    if layout == "empty list":
        return [], {}
    if layout == "missing":
        return str(folder / "nothing.csv"), {}
    if layout == "folder":
        return str(folder), {}
    return str(paths[0]), {}


def run_data_case(tally: Tally, case: DataCase, folder: Path) -> None:
    tally.files += len(case.files)
    tally.rows += case.rows
    try:
        for run in data_runs(case, folder):
            tally.run(run)
    finally:
        clean_folder(folder)


def clean_folder(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


# ======================================================================================= running


class Enough(Exception):
    """Raised by a body to end a hypothesis run early (the target count is reached)."""


def explore(strategy, body: Callable[[Any], None], examples: int, seed: int | None = None) -> None:
    """Run `body` on `examples` values of `strategy`: generation only (no shrinking: `body` records
    outcomes instead of failing), no example database; `seed` None derandomizes (the same examples on
    every run, as in CI). A body may raise Enough to stop."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as with_seed
    from hypothesis.errors import HypothesisWarning

    config = settings(
        max_examples=examples,
        database=None,
        deadline=None,
        derandomize=seed is None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
        report_multiple_bugs=False,
    )
    test = given(strategy)(body)
    test = config(test if seed is None else with_seed(seed)(test))
    with contextlib.suppress(Enough), warnings.catch_warnings():
        warnings.simplefilter("ignore", HypothesisWarning)  # the replayed Enough example's repr
        test()
