"""`search.space`: dotted config keys → Optuna distributions, each checked against the config up front.

A dimension is checked by applying its bounds (or each choice) to the base config and validating:
a key that does not exist or a value the config rejects fails before any trial runs, in one line.
Only combinations of valid values can still fail; such a trial is recorded as FAIL.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmtune.config import RunConfig, method_readers, method_reads, set_key, validate
from lmtune.errors import LmtuneError
from lmtune.tasks import TASKS

TYPES = {
    "float": ("low", "high", "log", "step"),
    "int": ("low", "high", "log", "step"),
    "categorical": ("choices",),
}
# the layout of the search (output.*), the search itself and the objective are fixed per study
FIXED = ("task", "output", "search", "evaluation.metric")


@dataclass(frozen=True)
class Dimension:
    key: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple = ()

    def suggest(self, trial) -> Any:
        if self.type == "categorical":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.type == "int":
            return trial.suggest_int(self.key, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def grid(self) -> list | None:
        """Every value of a finite dimension; None for a continuous one."""
        if self.type == "categorical":
            return list(self.choices)
        if self.type == "int":
            return list(range(self.low, self.high + 1, self.step or 1))
        if self.step is None:
            return None
        count = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
        return [round(self.low + i * self.step, 12) for i in range(count)]

    def probes(self) -> dict[str, Any]:
        """Values checked against the config: the bounds and an interior point (or every choice)."""
        if self.type == "categorical":
            return {f"choice {c!r}": c for c in self.choices}
        if self.type == "int":
            return {"low": self.low, "high": self.high}
        inside = math.sqrt(self.low * self.high) if self.log else self.low + 0.37 * (self.high - self.low)
        return {"low": self.low, "high": self.high, f"a value between ({inside:.4g})": inside}

    def describe(self) -> str:
        if self.type == "categorical":
            return f"one of {list(self.choices)}"
        scale = ", log" if self.log else (f", step {self.step}" if self.step else "")
        return f"{self.type} {self.low}..{self.high}{scale}"


def base_raw(config: RunConfig) -> dict:
    """The config as a plain mapping, without its search section: what every trial starts from."""
    return config.model_dump(mode="json", exclude={"search"})


def apply(raw: dict, values: dict[str, Any]) -> dict:
    """A copy of raw with each dotted key set; sections left null are created. A sampled method does
    not get the settings of the others (method.lora.r in a trial of method full)."""
    raw = copy.deepcopy(raw)
    for key, value in values.items():
        set_key(raw, key, value, f"search.space[{key!r}]")
    if isinstance(raw.get("method"), dict) and any(key.startswith("method.") for key in values):
        raw["method"] = method_reads(raw["method"])
    return raw


def trial_raw(base: dict, values: dict[str, Any], trials_dir: Path, number: int) -> dict:
    """A trial's config: the base with its values, into trials/trial-NNNN, without the costly extras
    (baselines, forgetting checks, generated answers) that do not change the validation score."""
    extras: dict[str, Any] = {"evaluation.baselines": [], "audit.checks": []}
    if TASKS[base.get("task", "classify")].generative:
        extras["evaluation.generation.prompts"] = 0
    raw = apply(apply(base, extras), values)
    raw["output"] = {"dir": str(trials_dir), "name": f"trial-{number:04d}"}
    return raw


def _number(value: Any, where: str, field: str, integer: bool) -> float | int:
    if isinstance(value, str) and not integer:  # YAML 1.1 reads 1e-5 (no dot) as a string
        with contextlib.suppress(ValueError):
            value = float(value)
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok:
        kind = "an integer" if integer else "a number"
        raise LmtuneError(f"{where}: {field} = {value!r} must be {kind}")
    return value if integer else float(value)


def _dimension(key: str, spec: Any, where: str) -> Dimension:
    if not isinstance(spec, dict):
        raise LmtuneError(
            f"{where}: expected a mapping such as {{type: float, low: 1.0e-5, high: 1.0e-3, log: true}} "
            f"or {{type: categorical, choices: [8, 16]}}, got {spec!r}"
        )
    kind = spec.get("type")
    if kind not in TYPES:
        raise LmtuneError(f"{where}: type = {kind!r}; allowed: {', '.join(TYPES)}")
    for field in spec:
        if field != "type" and field not in TYPES[kind]:
            raise LmtuneError(
                f"{where}: unknown field '{field}'; allowed for {kind}: {', '.join(TYPES[kind])}"
            )
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise LmtuneError(f"{where}: choices must be a non-empty list, got {choices!r}")
        for choice in choices:
            if choice is not None and not isinstance(choice, str | int | float | bool):
                raise LmtuneError(
                    f"{where}: choice {choice!r}: allowed are plain values (text, numbers, true/false, null)"
                )
        if len({json.dumps(c) for c in choices}) < len(choices):
            raise LmtuneError(f"{where}: choices {choices} repeat a value")
        return Dimension(key, kind, choices=tuple(choices))
    for field in ("low", "high"):
        if field not in spec:
            raise LmtuneError(f"{where}: missing '{field}'; a {kind} dimension needs low and high")
    integer = kind == "int"
    low, high = (_number(spec[f], where, f, integer) for f in ("low", "high"))
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise LmtuneError(f"{where}: log = {log!r} must be true or false")
    step = spec.get("step")
    if step is not None:
        step = _number(step, where, "step", integer)
        if step <= 0:
            raise LmtuneError(f"{where}: step = {step!r} must be > 0")
        if log:
            raise LmtuneError(f"{where}: log and step cannot be combined (Optuna); drop one")
    if low >= high:
        raise LmtuneError(f"{where}: empty range low={low!r} >= high={high!r}")
    if log and low <= 0:
        raise LmtuneError(f"{where}: log scale needs low > 0, got low={low!r}")
    return Dimension(key, kind, low, high, log, step)


def _flat_keys(raw: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in raw.items():
        keys.append(prefix + key)
        if isinstance(value, dict):
            keys += _flat_keys(value, f"{prefix}{key}.")
    return keys


def _check_key(key: str, base: dict, where: str) -> None:
    """The key must name a config value: walk the full config (defaults included)."""
    for fixed in FIXED:
        if key == fixed or key.startswith(fixed + "."):
            raise LmtuneError(f"{where}: {fixed} is fixed for a search and cannot be searched")
    parts = key.split(".")
    if parts[0] == "method" and len(parts) > 2 and method_readers(parts[1]):
        return  # another method's settings: checked against the methods the search tries (parse_space)
    node: Any = base
    for i, part in enumerate(key.split(".")):
        if node is None:  # an optional section left null: validation decides
            return
        if not isinstance(node, dict) or part not in node:
            close = difflib.get_close_matches(key, _flat_keys(base), n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            where_known = ".".join(key.split(".")[:i]) or "the top level"
            raise LmtuneError(f"{where}: unknown config key (no '{part}' in {where_known}){hint}")
        node = node[part]
    if isinstance(node, dict):
        raise LmtuneError(
            f"{where}: '{key}' is a section; search one of its keys, e.g. {key}.{next(iter(node), '…')}"
        )


def parse_space(config: RunConfig, source: str) -> dict[str, Dimension]:
    """search.space as checked dimensions; each key must exist and accept its bounds or choices."""
    search = config.search
    if not search.space:
        raise LmtuneError(
            f"{source}: search.space is empty; give dotted config keys, e.g. "
            "training.learning_rate: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}"
        )
    base = base_raw(config)
    space = {}
    for key, spec in search.space.items():
        where = f"{source}: search.space[{key!r}]"
        _check_key(key, base, where)
        dimension = _dimension(key, spec, where)
        reader = _method_reading(key, base, search.space, where)
        for name, value in dimension.probes().items():
            validate(apply(base, {**reader, key: value}), f"{where}: {name}")
        if search.sampler == "grid" and dimension.grid() is None:
            raise LmtuneError(
                f"{where}: sampler grid needs finite dimensions; make it type: categorical with choices, "
                "or give a step"
            )
        space[key] = dimension
    return space


def _method_reading(key: str, base: dict, space: dict, where: str) -> dict:
    """For a key of a method's settings (method.lora.r): {"method.name": a method this search tries that
    reads it}, to check the key's values against; an error when no method it tries reads it."""
    parts = key.split(".")
    if parts[0] != "method" or len(parts) < 3 or not (readers := method_readers(parts[1])):
        return {}
    spec = space.get("method.name")
    choices = spec.get("choices") if isinstance(spec, dict) else None
    tried = choices if isinstance(choices, list) and choices else [base["method"]["name"]]
    reading = [name for name in tried if name in readers]
    if not reading:
        raise LmtuneError(
            f"{where}: no method this search tries reads method.{parts[1]} (method.name: "
            f"{', '.join(map(str, tried))}; read by {', '.join(readers)}); set method.name or search it"
        )
    return {"method.name": reading[0]}


def grid_of(space: dict[str, Dimension]) -> dict[str, list]:
    return {key: dimension.grid() for key, dimension in space.items()}


def grid_size(space: dict[str, Dimension]) -> int:
    return math.prod(len(values) for values in grid_of(space).values())


def fingerprint(config: RunConfig) -> tuple[str, dict]:
    """What makes two invocations the same study: the base config (output aside), sampler and space.

    Budget, timeout, seed, pruning and storage may change between invocations of one study."""
    identity = {k: v for k, v in base_raw(config).items() if k != "output"}
    identity["search"] = {"sampler": config.search.sampler, "space": config.search.space}
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16], json.loads(text)


def changed_keys(before: dict, after: dict) -> list[str]:
    """Dotted keys whose values differ between two identities (to name them in an error)."""
    flat_before, flat_after = _flatten(before), _flatten(after)
    return sorted(
        k for k in flat_before.keys() | flat_after.keys() if flat_before.get(k) != flat_after.get(k)
    )


def _flatten(raw: Any, prefix: str = "") -> dict:
    if prefix == "search.space.":  # one entry per dimension: its key holds dots itself
        return {f"search.space[{key!r}]": value for key, value in raw.items()}
    if not isinstance(raw, dict) or not raw:
        return {prefix.rstrip("."): raw}
    out = {}
    for key, value in raw.items():
        out.update(_flatten(value, f"{prefix}{key}."))
    return out
