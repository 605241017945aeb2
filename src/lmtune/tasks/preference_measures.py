"""What the preference task measures, torch-free, registered with the metrics registry and the diagnosis
rules by this module alone (it is named in the task's `TASKS` entry):

    preference           held-out pairs: {"chosen_logp", "rejected_logp", "chosen_tokens",
                         "rejected_tokens"} summed log-probabilities and token counts per pair, and
                         optionally the reference's {"ref_chosen_logp", "ref_rejected_logp"}
    unpaired_preference  held-out answers labelled desirable or not (KTO): {"logp", "tokens",
                         "desirable"} per answer, optionally the reference's {"ref_logp"}
    policy_kl            the tuned model's own answers to held-out prompts: {"kl_sum", "tokens"}, the
                         exact KL(tuned ‖ reference) over the vocabulary summed along each answer
"""

from __future__ import annotations

from functools import partial
from statistics import mean as average

import numpy as np

from lmtune.evaluate import diagnose, stats
from lmtune.evaluate.metrics import Kind, Metric, auc, mean, register, require

# ---------------------------------------------------------------------------------------- pairs


def _prepare_pairs(inputs: dict, names: list[str], labels, where: str) -> dict:
    """Per pair: the summed log-probabilities of its chosen and rejected answers and their token counts
    (and, for implicit_reward_accuracy, the reference model's log-probabilities)."""
    keys = ("chosen_logp", "rejected_logp", "chosen_tokens", "rejected_tokens")
    n = require(inputs, keys, "preference", where)
    c, r, ct, rt = (np.asarray(inputs[key], float) for key in keys)
    columns = {
        "correct": (c > r).astype(float)[:, None],
        "margin": (c - r)[:, None],
        "chosen": np.column_stack([c, ct]),
        "rejected": np.column_stack([r, rt]),
    }
    if inputs.get("ref_chosen_logp") is not None and inputs.get("ref_rejected_logp") is not None:
        ref_c, ref_r = (np.asarray(inputs[k], float) for k in ("ref_chosen_logp", "ref_rejected_logp"))
        columns["implicit"] = ((c - ref_c) > (r - ref_r)).astype(float)[:, None]
    return {"n": n, "columns": columns}


def _per_token(name: str, agg: dict) -> np.ndarray:
    sums = agg["sums"][name]
    return sums[:, 0] / np.maximum(sums[:, 1], 1)


def _implicit_accuracy(agg: dict) -> np.ndarray:
    if "implicit" not in agg["sums"]:
        return np.full(len(agg["sums"]["correct"]), np.nan)
    return agg["sums"]["implicit"][:, 0] / agg["n"]


def _preferred(data: dict) -> np.ndarray:
    return data["columns"]["correct"][:, 0] > 0.5


PAIRS = [
    Metric(
        "preference_accuracy",
        "preference",
        True,
        "share of pairs whose chosen answer has the higher summed log-probability",
        partial(mean, "correct"),
        _preferred,
    ),
    Metric(
        "implicit_reward_accuracy",
        "preference",
        True,
        "share of pairs whose log-probability margin exceeds the reference model's (DPO's implicit "
        "reward); needs the reference's log-probabilities",
        _implicit_accuracy,
    ),
    Metric(
        "reward_margin",
        "preference",
        True,
        "mean summed log-probability of the chosen answer minus the rejected one's",
        partial(mean, "margin"),
    ),
    Metric(
        "chosen_logp_per_token",
        "preference",
        True,
        "log-probability per token of the chosen answers",
        partial(_per_token, "chosen"),
    ),
    Metric(
        "rejected_logp_per_token",
        "preference",
        False,
        "log-probability per token of the rejected answers",
        partial(_per_token, "rejected"),
    ),
]

# ------------------------------------------------------------------------------ unpaired answers


def _prepare_unpaired(inputs: dict, names: list[str], labels, where: str) -> dict:
    n = require(inputs, ("logp", "tokens", "desirable"), "unpaired_preference", where)
    logp, tokens = np.asarray(inputs["logp"], float), np.asarray(inputs["tokens"], float)
    desirable = np.asarray(inputs["desirable"], bool)
    data = {
        "n": n,
        "desirable": desirable,
        "per_token": logp / np.maximum(tokens, 1),
        "reward": None,
        "columns": {
            "good": np.column_stack([logp * desirable, tokens * desirable]),
            "bad": np.column_stack([logp * ~desirable, tokens * ~desirable]),
        },
    }
    if inputs.get("ref_logp") is not None:
        data["reward"] = logp - np.asarray(inputs["ref_logp"], float)  # KTO's implicit reward (x beta)
    return data


def _separation(key: str, agg: dict) -> np.ndarray:
    """ROC-AUC of a per-answer score separating desirable from undesirable answers (0.5: no preference),
    on each resample (rows of how often each answer was drawn); NaN where a side is missing."""
    data, idx = agg["data"], agg["idx"]
    n = data["n"]
    weights = np.ones((1, n)) if idx is None else stats.counts(np.arange(n), n, idx).astype(float)
    if data[key] is None:
        return np.full(len(weights), np.nan)
    return auc(data[key], data["desirable"], weights)


UNPAIRED = [
    Metric(
        "desirable_auc",
        "unpaired_preference",
        True,
        "ROC-AUC of the answers' log-probability per token separating desirable from undesirable ones "
        "(0.5: no preference between them)",
        partial(_separation, "per_token"),
    ),
    Metric(
        "implicit_reward_auc",
        "unpaired_preference",
        True,
        "ROC-AUC of KTO's implicit reward (summed log-probability minus the reference's) separating "
        "desirable from undesirable answers; needs the reference's log-probabilities",
        partial(_separation, "reward"),
    ),
    Metric(
        "desirable_logp_per_token",
        "unpaired_preference",
        True,
        "log-probability per token of the desirable answers",
        partial(_per_token, "good"),
    ),
    Metric(
        "undesirable_logp_per_token",
        "unpaired_preference",
        False,
        "log-probability per token of the undesirable answers",
        partial(_per_token, "bad"),
    ),
]

# ------------------------------------------------------------------------------------ policy KL


def _prepare_kl(inputs: dict, names: list[str], labels, where: str) -> dict:
    n = require(inputs, ("kl_sum", "tokens"), "policy_kl", where)
    kl, tokens = np.asarray(inputs["kl_sum"], float), np.asarray(inputs["tokens"], float)
    return {"n": n, "columns": {"kl": np.column_stack([kl, tokens])}}


KL = [
    Metric(
        "kl_to_reference",
        "policy_kl",
        False,
        "KL(tuned ‖ reference) per token, exact over the vocabulary along the tuned model's own answers "
        "to held-out prompts (nats; 0: unchanged)",
        partial(_per_token, "kl"),
    ),
    Metric(
        "kl_per_answer",
        "policy_kl",
        False,
        "KL(tuned ‖ reference) summed over each answer, averaged over answers (nats)",
        lambda agg: agg["sums"]["kl"][:, 0] / agg["n"],
    ),
]

register("preference", Kind(_prepare_pairs, ("preference_accuracy", "reward_margin")), PAIRS)
register("unpaired_preference", Kind(_prepare_unpaired, ("desirable_auc",), truth="desirable"), UNPAIRED)
register("policy_kl", Kind(_prepare_kl, ("kl_to_reference",)), KL)

# ------------------------------------------------------------------------------------ diagnosis

# TRL's logs/chosen and rewards/margins: the chosen answers' log-probability falling by more than this
# (nats per answer, smoothed) while the margin grows is likelihood displacement: the policy pushes both
# answers down, the rejected one faster (a known DPO failure at high learning rates)
DISPLACEMENT_NATS = 5.0
# ... and a training loss below this (smoothed) means the pairs are separated with a huge margin: the
# loss gives no more signal and the policy drifts (also a sign of too high a learning rate)
COLLAPSED_LOSS = 0.01


def likelihood_displacement(train: list, history: list[dict]) -> tuple[diagnose.Finding | None, str]:
    """Likelihood displacement and a collapsed loss, from TRL's preference logs; nothing otherwise."""
    chosen = diagnose.finite(diagnose.series(history, "logps/chosen"))
    margins = diagnose.finite(diagnose.series(history, "rewards/margins"))
    if len(chosen) < diagnose.MIN_TRAIN_LOGS or len(margins) < diagnose.MIN_TRAIN_LOGS:
        return None, ""
    smooth, f = diagnose.SMOOTH, diagnose.fmt
    start, end = average(v for _, v in chosen[:smooth]), diagnose.tail_mean(chosen)
    m_start, m_end = average(v for _, v in margins[:smooth]), diagnose.tail_mean(margins)
    fix = "lower training.learning_rate (e.g. 5x) or raise preference.beta"
    if start - end > DISPLACEMENT_NATS and m_end > m_start:
        evidence = (
            f"the chosen answers' log-probability fell from {f(start)} to {f(end)} while the margin grew "
            f"from {f(m_start)} to {f(m_end)}: both answers are pushed down (likelihood displacement)"
        )
        return diagnose.Finding("preference", evidence, fix), ""
    if len(train) >= diagnose.MIN_TRAIN_LOGS and (loss := diagnose.tail_mean(train)) < COLLAPSED_LOSS:
        evidence = f"training loss collapsed to {f(loss)}: every pair is separated, no signal left"
        return diagnose.Finding("preference", evidence, fix), ""
    return None, (
        f"preference: chosen log-probability {f(start)} → {f(end)}, margin {f(m_start)} → {f(m_end)} "
        f"(no displacement beyond {DISPLACEMENT_NATS:g} nats, loss not collapsed)"
    )


diagnose.register(likelihood_displacement)
