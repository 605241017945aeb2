"""The checks registry: audits that measure the model before and after tuning and report the change.

Every check has one shape — read its references (in `prepare`, so a bad one fails before any run
directory exists) → measure the untuned model → measure the tuned one and compare → a report section,
its results in metrics.json under its name, and a verdict. Forgetting is the first entry; the bias and
privacy audits join with one module and one line in CHECKS.

A check module provides:
  read(config, tokenizer, encode_split=None) -> state     (None or empty: nothing to check)
  measure(config, model, tokenizer, state) -> before
  compare(config, model, tokenizer, state, before) -> results (JSON rows, each with its verdict)
  sections(results) -> [(heading, html)]

Configured under `audit:` (`audit.checks`: which run, default every check whose own settings are
given; `audit.<check>`: its settings). This table is torch-free: validating a config reads it.
"""

from __future__ import annotations

import importlib

CHECKS: dict[str, str] = {
    "forgetting": "lmtune.evaluate.forgetting",
}


def _module(name: str):
    return importlib.import_module(CHECKS[name])


def active(config) -> list[str]:
    """The checks this run makes: audit.checks, or by default those whose settings are given."""
    if config.audit.checks is not None:
        return list(config.audit.checks)
    return [name for name in CHECKS if configured(config, name)]


def configured(config, name: str) -> bool:
    if name == "forgetting":  # evaluation.forgetting: its older place, kept working
        return bool(config.audit.forgetting or config.evaluation.forgetting)
    return bool(getattr(config.audit, name, None))


def read(config, tokenizer, encode_split=None) -> dict:
    """Every active check's references, read and checked up front: {name: state}."""
    return {name: _module(name).read(config, tokenizer, encode_split) for name in active(config)}


def measure(config, model, tokenizer, states: dict) -> dict:
    """The untuned model's scores for every check: {name: before}."""
    return {name: _module(name).measure(config, model, tokenizer, state) for name, state in states.items()}


def compare(config, model, tokenizer, states: dict, before: dict) -> dict:
    """The tuned model's scores compared with `before`: {name: results} (metrics.json keys)."""
    return {
        name: _module(name).compare(config, model, tokenizer, state, before[name])
        for name, state in states.items()
    }


def sections(results: dict) -> list[tuple[str, str]]:
    return [section for name, rows in results.items() for section in _module(name).sections(rows)]
