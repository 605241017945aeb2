"""Read a run's log history for the usual ways training goes wrong, and say what to change.

Pure functions over the Trainer's log history (history.json): training logs carry `loss` and
`grad_norm`, evaluations `eval_loss` and `eval_<metric>`. Each rule compares smoothed values or
running medians against the thresholds below, so one noisy log or evaluation never decides alone;
a check that passes is reported with its numbers too, so a clean report is evidence, not silence.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from statistics import mean, median

from lmtune.tasks import load_measures

# overfitting: one worse evaluation is noise; the last two evaluations, both after the minimum, make a trend
OVERFIT_EVALS_AFTER_MIN = 2
# ... and each of them must sit this far above the minimum (relative): jitter of a few % is normal
OVERFIT_RISE = 0.10
# ... while training loss keeps falling (relative, smoothed): if it rose too, the cause is not overfitting
TRAIN_STILL_FALLING = 0.05
# a large gap alone also counts: final validation loss at least this many times the training loss ...
GAP_RATIO = 3.0
# ... and this many nats above it (ratios of near-zero losses are noise)
GAP_MIN = 0.3
# training loss at the end of a run (or up to a step) is the mean of this many logs, not one batch
SMOOTH = 5
# underfitting: training loss at the end fell less than this (relative) from its start (both smoothed)
UNDERFIT_MIN_DROP = 0.10
# ... or, for classification, ends above this fraction of log(n_classes), the loss of uniform guessing
CHANCE_FRACTION = 0.9
# spikes are measured against the median of the previous logs (a median ignores earlier spikes)
SPIKE_WINDOW = 10
SPIKE_MIN_BEFORE = 3  # fewer previous logs give no baseline worth comparing against
# a loss spike: this many times the running median ...
SPIKE_FACTOR = 3.0
# ... and this many nats above it, so that near-zero losses wobbling do not count
SPIKE_MIN_RISE = 0.5
# a gradient-norm spike: this many times the running median, and above the run's median norm (late,
# near-zero norms jumping tenfold are still small)
GRAD_SPIKE_FACTOR = 10.0
MIN_TRAIN_LOGS = 4  # fewer training logs and a trend is not judged


@dataclass(frozen=True)
class Finding:
    kind: str  # overfitting, underfitting, instability, diverged, or a registered rule's (RULES)
    evidence: str  # steps and values
    suggestion: str  # settings to change


@dataclass
class Diagnosis:
    findings: list[Finding] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)  # checks that passed (or could not run), with numbers


def fmt(value: float) -> str:
    return f"{value:.4g}" if abs(value) >= 1 else f"{value:.3g}"


def _steps(points: list[tuple[int, float]]) -> str:
    return f"step {points[0][0]}" if len(points) == 1 else f"steps {points[0][0]}–{points[-1][0]}"


def series(history: list[dict], key: str) -> list[tuple[int, float]]:
    return [(h["step"], float(h[key])) for h in history if key in h and h.get(key) is not None]


def finite(points: list[tuple[int, float]]) -> list[tuple[int, float]]:
    return [(s, v) for s, v in points if math.isfinite(v)]


def tail_mean(points: list[tuple[int, float]], up_to: int | None = None) -> float:
    """Mean of the last SMOOTH values (at or before step `up_to`)."""
    values = [v for s, v in points if up_to is None or s <= up_to]
    return mean(values[-SMOOTH:]) if values else math.nan


# ----------------------------------------------------------------------------------- the rules


def _diverged(train, evals, grads) -> tuple[Finding | None, str]:
    for name, points in (("training loss", train), ("validation loss", evals)):
        bad = next(((s, v) for s, v in points if not math.isfinite(v)), None)
        if bad:
            good = [(s, v) for s, v in points if s < bad[0] and math.isfinite(v)]
            last = f" (last finite: {fmt(good[-1][1])} at step {good[-1][0]})" if good else ""
            return Finding(
                "diverged",
                f"{name} = {bad[1]} at step {bad[0]}{last}",
                "lower training.learning_rate (e.g. ÷10), keep training.max_grad_norm set (1.0), lengthen "
                "training.warmup_ratio, or use training.precision fp32",
            ), ""
    skipped = sum(not math.isfinite(v) for _, v in grads)
    note = f"; {skipped} non-finite gradient norms with finite losses (fp16 loss scaling skips those steps)"
    return None, "no divergence: every logged loss is finite" + (note if skipped else "")


def _overfitting(train, evals, metric: str, greater_is_better: bool, history) -> tuple[Finding | None, str]:
    if len(evals) < OVERFIT_EVALS_AFTER_MIN + 1:
        return None, (
            f"overfitting not checked: {len(evals)} evaluation(s), needs ≥ {OVERFIT_EVALS_AFTER_MIN + 1} "
            "(a validation split and training.eval_every)"
        )
    low = min(range(len(evals)), key=lambda i: evals[i][1])
    low_step, low_loss = evals[low]
    last_step, last_loss = evals[-1]
    tail = evals[-OVERFIT_EVALS_AFTER_MIN:]
    rises = len(evals) - 1 - low >= OVERFIT_EVALS_AFTER_MIN and all(
        v >= low_loss * (1 + OVERFIT_RISE) for _, v in tail
    )
    train_at_low, train_end = tail_mean(train, low_step), tail_mean(train, last_step)
    falling = train_end <= train_at_low * (1 - TRAIN_STILL_FALLING)
    gap = last_loss >= GAP_RATIO * train_end and last_loss - train_end >= GAP_MIN
    change = (last_loss - low_loss) / low_loss if low_loss > 0 else 0.0
    evidence = []
    if rises and falling:
        evidence.append(
            f"validation loss {fmt(low_loss)} at step {low_step} → {fmt(last_loss)} at step {last_step} "
            f"({change:+.0%}) while training loss fell {fmt(train_at_low)} → {fmt(train_end)}"
        )
    if gap:
        evidence.append(
            f"at step {last_step} validation loss {fmt(last_loss)} is {last_loss / train_end:.1f}× the training "
            f"loss {fmt(train_end)}"
        )
    if not evidence:
        where = (
            f"at its minimum ({fmt(low_loss)}) at the last evaluation (step {last_step})"
            if low == len(evals) - 1
            else f"{fmt(last_loss)} at the last evaluation (step {last_step}), {change:+.0%} over its minimum "
            f"{fmt(low_loss)} at step {low_step}"
        )
        note = ""
        if rises and not falling:
            note = f"; it rose while training loss did not fall ({fmt(train_at_low)} → {fmt(train_end)})"
        ratio = f"{last_loss / train_end:.1f}×" if train_end > 0 else "n/a"
        return None, f"no overfitting: validation loss {where}{note}; validation/training loss ratio {ratio}"
    best = _best_metric(history, metric, greater_is_better)
    if best:
        evidence.append(best)
    return Finding(
        "overfitting",
        "; ".join(evidence),
        "stop earlier: training.early_stopping.patience 1–2 (the best checkpoint is kept) or fewer "
        "training.epochs; regularise: more training.weight_decay (e.g. 0.1) or model.dropout (e.g. 0.2); "
        "more training rows help most",
    ), ""


def _best_metric(history: list[dict], metric: str, greater_is_better: bool) -> str:
    if metric == "loss":
        return ""
    points = finite(series(history, f"eval_{metric}"))
    if len(points) < 2:
        return ""
    pick = max if greater_is_better else min
    step, value = pick(points, key=lambda p: p[1])
    return (
        f"validation {metric} best {fmt(value)} at step {step}, {fmt(points[-1][1])} at the last evaluation"
    )


def _underfitting(train, n_classes: int | None) -> tuple[Finding | None, str]:
    if len(train) < MIN_TRAIN_LOGS:
        return None, f"underfitting not checked: {len(train)} training log(s), needs ≥ {MIN_TRAIN_LOGS}"
    k = min(SMOOTH, max(1, len(train) // 4))
    head, tail = train[:k], train[-k:]
    start, end = mean(v for _, v in head), mean(v for _, v in tail)
    drop = (start - end) / start if start > 0 else 0.0
    chance = math.log(n_classes) if n_classes and n_classes >= 2 else None
    flat = drop < UNDERFIT_MIN_DROP
    at_chance = chance is not None and end >= CHANCE_FRACTION * chance
    fell = f"training loss {fmt(start)} ({_steps(head)}) → {fmt(end)} ({_steps(tail)}, {-drop:+.0%})"
    chance_text = f"chance level log({n_classes}) = {fmt(chance)}" if chance is not None else ""
    if not (flat or at_chance):
        return None, f"no underfitting: {fell}" + (f", below {chance_text}" if chance_text else "")
    evidence = fell
    if at_chance:
        evidence += f", {end / chance:.0%} of {chance_text}"
    check_also = (
        "check that the labels can be learned from the text"
        if chance is not None
        else "a base model already fluent in this text (continued pre-training) only improves slowly"
    )
    return Finding(
        "underfitting",
        evidence,
        "a higher training.learning_rate (e.g. ×3) or more training.epochs; with LoRA a larger "
        f"method.lora.r, or method.name: full; {check_also}",
    ), ""


def _spikes(points, factor: float, min_rise: float, floor: float) -> list[tuple[int, float, float]]:
    """(step, value, running median) where value ≥ factor × median, ≥ median + min_rise and ≥ floor."""
    found = []
    for i in range(SPIKE_MIN_BEFORE, len(points)):
        step, value = points[i]
        base = median(v for _, v in points[max(0, i - SPIKE_WINDOW) : i])
        if value >= factor * base and value - base >= min_rise and value >= floor:
            found.append((step, value, base))
    return found


def _ratio(value: float, base: float) -> float:
    """value / base; a loss of exactly 0 before (an overfit classifier) makes any rise infinite."""
    return value / base if base > 0 else (math.inf if value > 0 else 1.0)


def _largest_ratio(points) -> float:
    ratios = [
        _ratio(v, median(u for _, u in points[max(0, i - SPIKE_WINDOW) : i]))
        for i, (_, v) in enumerate(points)
        if i >= SPIKE_MIN_BEFORE
    ]
    return max((r for r in ratios if math.isfinite(r)), default=1.0)


def _instability(train, grads) -> tuple[Finding | None, str]:
    train, grads = finite(train), [(s, v) for s, v in finite(grads) if v > 0]
    losses = _spikes(train, SPIKE_FACTOR, SPIKE_MIN_RISE, 0.0)
    norms = _spikes(grads, GRAD_SPIKE_FACTOR, 0.0, median(v for _, v in grads)) if grads else []
    if not losses and not norms:
        if len(train) <= SPIKE_MIN_BEFORE:
            return None, f"instability not checked: {len(train)} training log(s), needs > {SPIKE_MIN_BEFORE}"
        text = f"no instability: largest training loss {_largest_ratio(train):.1f}× its running median"
        if len(grads) > SPIKE_MIN_BEFORE:
            text += f", largest gradient norm {_largest_ratio(grads):.1f}× its running median"
        return None, text
    evidence = [
        f"training loss {fmt(v)} at step {s}, {_ratio(v, m):.1f}× the median {fmt(m)} of the logs before"
        for s, v, m in losses[:3]
    ]
    evidence += [
        f"gradient norm {fmt(v)} at step {s}, {v / m:.0f}× its running median {fmt(m)}"
        for s, v, m in norms[:3]
    ]
    more = len(losses) + len(norms) - len(evidence)
    return Finding(
        "instability",
        "; ".join(evidence) + (f" (and {more} more)" if more > 0 else ""),
        "lower training.learning_rate (e.g. ÷3), a longer training.warmup_ratio (e.g. 0.1), keep "
        "training.max_grad_norm at 1.0 or lower it; a larger training.batch_size smooths the updates",
    ), ""


# ------------------------------------------------------------------------------------- public


# A rule of a task's own (registered from the task's measures module): (smoothed finite training losses,
# the history) -> (a finding, or None and the note that says it passed; "" when it does not apply)
Rule = Callable[[list, list[dict]], tuple[Finding | None, str]]
RULES: list[Rule] = []


def register(rule: Rule) -> None:
    RULES.append(rule)


def check(
    history: list[dict], *, metric: str, greater_is_better: bool, n_classes: int | None = None
) -> Diagnosis:
    """Every check, with what it found or, when it passed, the numbers that say so."""
    train, evals, grads = (
        series(history, "loss"),
        series(history, "eval_loss"),
        series(history, "grad_norm"),
    )
    diagnosis = Diagnosis()
    diverged, note = _diverged(train, evals, grads)
    results = [(diverged, note)]
    if diverged is None:  # after a divergence the other trends mean nothing
        train_ok, evals_ok = finite(train), finite(evals)
        results += [
            _overfitting(train_ok, evals_ok, metric, greater_is_better, history),
            _underfitting(train_ok, n_classes),
            _instability(train, grads),
        ]
        load_measures()  # the rules tasks register
        results += [rule(train_ok, history) for rule in RULES]
    for finding, note in results:
        if finding is not None:
            diagnosis.findings.append(finding)
        elif note:
            diagnosis.passed.append(note)
    return diagnosis


def diagnose(
    history: list[dict], *, metric: str, greater_is_better: bool, n_classes: int | None = None
) -> list[Finding]:
    """What went wrong in a run, from its log history: overfitting, underfitting, instability, divergence."""
    return check(history, metric=metric, greater_is_better=greater_is_better, n_classes=n_classes).findings
