"""Tripwires for lmtune.shims: each fails when the upstream internal a shim relies on changes shape."""

from __future__ import annotations

import importlib.util

import pytest
import sacrebleu

from lmtune import shims


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="bitsandbytes not installed")
def test_bitsandbytes_layers_read_the_cpu_probe_when_created_and_the_switch_is_scoped():
    import bitsandbytes.nn.modules as bnb_modules

    probe = bnb_modules.has_avx512bf16
    with shims.bitsandbytes_exact_cpu_path():
        inside = bnb_modules.Linear4bit(64, 64)
    assert inside.support_avx512bf16_for_cpu is False  # the layer took the flag at creation
    assert bnb_modules.has_avx512bf16 is probe  # and nothing outside the block sees the switch
    outside = bnb_modules.Linear4bit(64, 64)
    assert outside.support_avx512bf16_for_cpu == bool(probe())


@pytest.mark.parametrize("scorer", [sacrebleu.BLEU(), sacrebleu.CHRF()], ids=["bleu", "chrf"])
def test_sacrebleu_corpus_score_is_the_score_of_summed_sentence_statistics(scorer):
    predictions = ["the cat sat on the mat", "a dog barked", "hello there world"]
    references = ["the cat sat on a mat", "the dog barked loudly", "hello world"]
    rows = shims.sacrebleu_sentence_statistics(scorer, predictions, references)
    assert len(rows) == 3 and all(isinstance(v, int | float) for row in rows for v in row)
    summed = [int(sum(column)) for column in zip(*rows, strict=True)]
    corpus = scorer.corpus_score(predictions, [references]).score
    assert shims.sacrebleu_score_from_statistics(scorer, summed) == pytest.approx(corpus, abs=1e-9)


def test_trl_experimental_trainers_are_where_the_shim_imports_them():
    """SimPO (CPOTrainer, loss_type "simpo", cpo_alpha) and ORPO live under trl.experimental in TRL 1.16."""
    import dataclasses

    for name in ("cpo", "orpo"):
        config, trainer = shims.trl_experimental(name)
        fields = {f.name for f in dataclasses.fields(config)}
        assert {"beta", "max_length", "disable_dropout"} <= fields and callable(trainer)
    cpo, _ = shims.trl_experimental("cpo")
    assert {"loss_type", "cpo_alpha", "simpo_gamma"} <= {f.name for f in dataclasses.fields(cpo)}


def test_trl_keeps_the_series_it_logs_where_the_shim_reads_them():
    """DPOTrainer.log averages trainer._metrics[mode][name] into each log line, then clears it: the
    shared-prompt DPO step (tasks/preference_dpo.py) appends its curves there."""
    import inspect

    from trl import DPOTrainer

    source = inspect.getsource(DPOTrainer.log)
    assert "self._metrics[mode].items()" in source and "self._metrics[mode].clear()" in source

    class Fake:
        _metrics = {"train": {"rewards/margins": [0.5]}}

    assert shims.trl_metrics(Fake())["train"]["rewards/margins"] == [0.5]


def test_transformers_evaluation_shuffles_with_group_by_length_and_the_shim_keeps_order(tmp_path):
    """The tripwire of shims.in_order_eval_sampler: with train_sampling_strategy group_by_length,
    Trainer._get_eval_sampler hands evaluation a length-grouped shuffle; the shim's subclass reads in order."""
    import torch
    from datasets import Dataset
    from torch.utils.data import SequentialSampler
    from transformers import Trainer, TrainingArguments
    from transformers.trainer_pt_utils import LengthGroupedSampler

    data = Dataset.from_dict({"input_ids": [[1] * (i % 7 + 1) for i in range(40)]})
    args = TrainingArguments(
        str(tmp_path), train_sampling_strategy="group_by_length", report_to=[], use_cpu=True
    )
    model = torch.nn.Linear(1, 1)
    assert isinstance(Trainer(model=model, args=args)._get_eval_sampler(data), LengthGroupedSampler)
    in_order = shims.in_order_eval_sampler(Trainer)(model=model, args=args)._get_eval_sampler(data)
    assert isinstance(in_order, SequentialSampler) and list(in_order) == list(range(40))
