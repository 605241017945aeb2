"""Every private internal of a third-party library that lmtune still touches, each behind one named
function, so an upstream rename breaks here, loudly, and nowhere else. tests/test_shims.py holds a
tripwire per shim: it fails when the upstream internal changes shape.

Kept to what has no public equivalent; where one exists lmtune uses it (optuna's storage API for
trial ids and heartbeats, `mlflow.set_tracking_uri`).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager


@contextmanager
def bitsandbytes_exact_cpu_path():
    """4-bit layers created inside this block keep bitsandbytes' (0.50) standard, exact CPU path.

    On an AVX512-BF16 CPU, a 4-bit layer repacks its weight in place on its first eval-mode forward
    for an inference-only kernel with no backward. Training after any evaluation (the base-model
    baseline, periodic validation) then gets wrong gradients in every layer below the top (measured:
    10-85% relative error), and layers whose input size is not a multiple of 64 crash. A layer reads
    the CPU probe once, when created (`Linear4bit.__init__`), so the probe is switched off only while
    the model loads and restored afterwards: nothing else in the process sees the change."""
    import bitsandbytes.nn.modules as bnb_modules

    probe = bnb_modules.has_avx512bf16
    bnb_modules.has_avx512bf16 = lambda: False
    try:
        yield
    finally:
        bnb_modules.has_avx512bf16 = probe


def trl_experimental(name: str):
    """(Config, Trainer) of one of TRL's experimental trainers: "cpo" (SimPO is its loss_type "simpo")
    or "orpo". They live under trl.experimental in TRL 1.16 and may move or change: this is the one
    place that imports them."""
    if name == "cpo":
        from trl.experimental.cpo import CPOConfig, CPOTrainer

        return CPOConfig, CPOTrainer
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    return ORPOConfig, ORPOTrainer


def trl_metrics(trainer) -> dict:
    """The series a TRL trainer averages into each log line ({"train"|"eval": {name: [values]}}): TRL
    1.16 keeps them in the private `_metrics`, which lmtune's own DPO loss step (tasks/preference_dpo.py)
    appends to so that its curves reach the logs under TRL's names."""
    return trainer._metrics


def sacrebleu_sentence_statistics(scorer, predictions: Sequence[str], references: Sequence[str]) -> list:
    """Per-sentence sufficient statistics (n-gram matches and totals, lengths) of a sacrebleu BLEU or
    CHRF scorer: what its corpus score sums, and what its own paired bootstrap resamples. sacrebleu
    keeps both halves private (no public API gives statistics)."""
    return scorer._extract_corpus_statistics(predictions, [references])


def sacrebleu_score_from_statistics(scorer, statistics: list[int]) -> float:
    """The scorer's corpus score (0..100) from summed sentence statistics."""
    return scorer._compute_score_from_stats(statistics).score


def in_order_eval_sampler(trainer_class: type) -> type:
    """A subclass of `trainer_class` whose evaluation reads its dataset in order. transformers 5 gives
    evaluation the training's length-grouped sampler (`Trainer._get_eval_sampler`, a shuffle of
    megabatches) when train_sampling_strategy is group_by_length: predictions come back permuted, which
    scores that only need each prediction beside its own labels never notice — but extractive QA's
    windows are put back together by position, so its evaluation must keep the dataset's order."""
    from torch.utils.data import SequentialSampler

    class InOrder(trainer_class):
        def _get_eval_sampler(self, eval_dataset):
            return None if eval_dataset is None else SequentialSampler(eval_dataset)

    InOrder.__name__ = f"InOrder{trainer_class.__name__}"
    return InOrder
