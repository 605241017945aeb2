"""Shared-prompt scoring (lmtune.models.shared_prompt) gives what scoring each prompt + answer as its own
sequence gives, values and gradients; the DPO trainer built on it computes TRL's losses and curves."""

from __future__ import annotations

import json

import pytest
import torch
from test_preference import capital_pairs, preference_config

from lmtune.config import validate
from lmtune.models.load import load_generative
from lmtune.models.methods import apply_method
from lmtune.models.shared_prompt import answer_log_probs, supported

PROMPTS = [[5, 9, 14, 3, 7], [11, 4], [8, 8, 21, 30]]
ANSWERS = [[40, 41, 2], [42, 2], [50, 2], [51, 52, 53, 54, 2], [60, 61], [62]]  # two per prompt


def separate(model, prompts, answers):
    """Each prompt + answer as its own unpadded sequence: the plain way, written independently."""
    out = []
    for i, answer in enumerate(answers):
        prompt = prompts[i // (len(answers) // len(prompts))]
        logits = model(input_ids=torch.tensor([prompt + answer])).logits[0, len(prompt) - 1 : -1]
        out.append(logits.float().log_softmax(-1).gather(1, torch.tensor(answer)[:, None]).sum())
    return torch.stack(out)


def lora(model):
    from lmtune.config import method_config

    torch.manual_seed(0)
    model = apply_method(model, method_config({"name": "lora", "lora": {"r": 4, "dropout": 0.0}}))
    for name, parameter in model.named_parameters():  # lora_B starts at zero: move it so the adapter acts
        if "lora_B" in name:
            parameter.data.normal_(0, 0.05)
    return model


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2"])
def test_shared_prompt_log_probs_and_gradients_match_separate_sequences(tiny_generative_dir, arch):
    model = lora(load_generative(tiny_generative_dir(arch), attn_implementation="eager")).eval()
    assert supported(model)
    shared, tokens = answer_log_probs(model, PROMPTS, ANSWERS, pad_id=0)
    plain = separate(model, PROMPTS, ANSWERS)
    assert tokens.tolist() == [len(a) for a in ANSWERS]
    assert torch.allclose(shared, plain, atol=1e-4), (shared, plain)
    trained = [p for p in model.parameters() if p.requires_grad]
    weights = torch.linspace(0.5, 1.5, len(ANSWERS))
    grads_shared = torch.autograd.grad((shared * weights).sum(), trained)
    grads_plain = torch.autograd.grad((plain * weights).sum(), trained)
    for a, b in zip(grads_shared, grads_plain, strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-3)
    with torch.no_grad():  # one answer per prompt (unpaired scoring) works as well
        single, _ = answer_log_probs(model, PROMPTS, ANSWERS[0::2], pad_id=0)
    assert torch.allclose(single, plain[0::2], atol=1e-4)


def test_unsupported_models_are_left_to_the_plain_path(tiny_generative_dir):
    from lmtune.config import method_config

    t5 = load_generative(tiny_generative_dir("t5"))
    assert not supported(t5)
    prompt = apply_method(
        load_generative(tiny_generative_dir("llama")),
        method_config({"name": "prompt_tuning", "prompt_tuning": {"virtual_tokens": 4}}),
    )
    assert not supported(prompt)  # virtual tokens rewrite the input: the wrapper's own forward must run
    with pytest.raises(ValueError, match="expected k non-empty per prompt"):
        answer_log_probs(load_generative(tiny_generative_dir("llama")), PROMPTS, ANSWERS[:5], pad_id=0)


@pytest.mark.parametrize(
    ("preference_settings", "types"),
    [
        ({"loss": "dpo", "sft_weight": 0.5}, ["sigmoid", "sft"]),
        ({"loss": "dpo", "label_smoothing": 0.2}, ["robust"]),
        ({"loss": "ipo", "beta": 0.5}, ["ipo"]),
    ],
)
def test_the_shared_prompt_trainer_computes_trls_loss_and_curves(
    tiny_generative_dir, tmp_path, preference_settings, types
):
    """The same batch through TRL's own loss step and through lmtune's shared-prompt one."""
    from trl import DPOTrainer

    from lmtune import shims
    from lmtune.tasks import preference
    from lmtune.tasks.preference import trainer_for
    from lmtune.tasks.preference_dpo import trainer_class

    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in capital_pairs(40)))
    raw = preference_config(tiny_generative_dir("llama"), path, tmp_path / "runs")
    raw["method"] = {"name": "lora", "lora": {"r": 4, "dropout": 0.0}}
    raw["preference"].update(preference_settings)
    config = validate(raw, "test")
    prepared = preference.prepare(config)
    model = lora(prepared.model)
    rows = preference._rows(prepared.splits["train"], unpaired=False)
    trainer = trainer_for(
        config,
        tmp_path / "run",
        model=model,
        tokenizer=prepared.tokenizer,
        train_dataset=rows,
        eval_dataset=None,
    )
    assert trainer_class() in type(trainer).__mro__  # lmtune's guards around the shared-prompt step
    assert trainer.args.loss_type == types
    batch = next(iter(trainer.get_train_dataloader()))
    model.train()
    ours = trainer.compute_loss(model, batch)
    logged = {k: v[-1] for k, v in shims.trl_metrics(trainer)["train"].items()}
    shims.trl_metrics(trainer)["train"].clear()
    theirs = DPOTrainer.compute_loss(trainer, model, batch)
    reference = {k: v[-1] for k, v in shims.trl_metrics(trainer)["train"].items()}
    assert float(ours) == pytest.approx(float(theirs), rel=1e-4, abs=1e-5)
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected"):
        assert logged[key] == pytest.approx(reference[key], rel=1e-4, abs=1e-5), key
    assert logged["rewards/accuracies"] == reference["rewards/accuracies"]
    trained = [p for p in model.parameters() if p.requires_grad]
    ours_grad = torch.autograd.grad(trainer.compute_loss(model, batch), trained)
    theirs_grad = torch.autograd.grad(DPOTrainer.compute_loss(trainer, model, batch), trained)
    for a, b in zip(ours_grad, theirs_grad, strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-3)


def test_held_out_scoring_with_shared_prompts_gives_the_separate_scores(tiny_generative_dir, tmp_path):
    from lmtune.tasks import preference

    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in capital_pairs(40)))
    raw = preference_config(tiny_generative_dir("llama"), path, tmp_path / "runs")
    config = validate(raw, "test")
    prepared = preference.prepare(config)
    pairs = prepared.splits["test"]
    shared = preference.log_probs(config, prepared.model, prepared.tokenizer, pairs, "shared")
    config.preference.shared_prompt = False
    separate_scores = preference.log_probs(config, prepared.model, prepared.tokenizer, pairs, "separate")
    assert shared.keys() == separate_scores.keys() and len(shared["chosen_logp"]) == len(pairs)
    for key, values in shared.items():
        assert values == pytest.approx(separate_scores[key], abs=2e-3), key
