"""A finished SFT run used from outside: `predict`, `chat`, and `export` to a plain transformers directory."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from conftest import capital_records, tiny_sft_config
from safetensors.torch import load_file

from lmtune.cli import main

PROMPTS = ["What is the capital of Japan?", "What is the capital of Peru?", "What is the capital of Italy?"]

# Runs with no lmtune importable: only transformers, the exported folder and the tokenizer's own template.
PLAIN_GENERATE = """
import json, sys
sys.modules["lmtune"] = None  # any import of lmtune now fails
from transformers import AutoModelForCausalLM, AutoTokenizer
folder, prompts = sys.argv[1], json.loads(sys.argv[2])
tokenizer = AutoTokenizer.from_pretrained(folder)
model = AutoModelForCausalLM.from_pretrained(folder).eval()
answers = []
for prompt in prompts:
    ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    answers.append(tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip())
print(json.dumps(answers))
"""


@pytest.fixture(scope="module")
def trained_runs(tiny_generative_dir, tmp_path_factory):
    """Two finished runs on the capitals data: full fine-tuning and LoRA."""
    root = tmp_path_factory.mktemp("export")
    data = root / "capitals.json"
    data.write_text(json.dumps(capital_records(200)))
    runs = {}
    for name, method in {
        "full": {"name": "full"},
        "lora": {"name": "lora", "lora": {"r": 16, "alpha": 32, "dropout": 0.0}},
    }.items():
        raw = tiny_sft_config(tiny_generative_dir("llama"), data, root / "runs", method=method)
        raw["output"]["name"] = name
        if name == "lora":  # compared with its own merged export only: it need not learn much
            raw["training"].update(learning_rate=0.02, max_steps=40)
        config = root / f"{name}.yaml"
        config.write_text(yaml.safe_dump(raw))
        assert main(["train", str(config)]) == 0
        runs[name] = root / "runs" / name
    return runs


def test_predict_answers_and_reports_stopping(trained_runs, capsys):
    assert main(["predict", str(trained_runs["full"]), *PROMPTS[:2]]) == 0
    assert capsys.readouterr().out.split() == ["Tokyo", "Lima"]
    assert main(["predict", "--json", str(trained_runs["full"]), PROMPTS[2]]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["answer"] == "Rome" and result["stopped"] is True


def test_merged_export_reproduces_the_adapter_model_in_plain_transformers(trained_runs, tmp_path, capsys):
    from lmtune.tasks import sft

    expected = [a["answer"] for a in sft.predict(trained_runs["lora"], PROMPTS)]
    out = tmp_path / "merged"
    assert main(["export", str(trained_runs["lora"]), "--merge", str(out)]) == 0
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    assert not any(".." in key or "lora" in key for key in load_file(out / "model.safetensors"))
    plain = subprocess.run(
        [sys.executable, "-c", PLAIN_GENERATE, str(out), json.dumps(PROMPTS)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(plain.stdout.strip().splitlines()[-1]) == expected
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [2]  # stops at <|im_end|> in plain transformers too


def test_adapter_export_in_bf16_and_refusals(trained_runs, tmp_path, capsys):
    out = tmp_path / "adapter"
    assert main(["export", str(trained_runs["lora"]), "--adapter", str(out), "--dtype", "bf16"]) == 0
    tensors = load_file(out / "adapter_model.safetensors")
    assert tensors and all(
        t.dtype.is_floating_point and str(t.dtype) == "torch.bfloat16" for t in tensors.values()
    )
    assert json.loads((out / "lmtune_model.json").read_text())["method"] == "lora"
    capsys.readouterr()
    assert main(["export", str(trained_runs["lora"]), "--adapter", str(out)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert main(["export", str(trained_runs["full"]), "--adapter", str(tmp_path / "x")]) == 2
    assert "trained every weight (no adapter); export it with --merge" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".x.export-*"))
    assert main(["export", str(trained_runs["full"])]) == 2
    assert "exactly one of --merge OUT" in capsys.readouterr().err


def test_chat_keeps_the_conversation_and_resets(trained_runs):
    session = subprocess.run(
        [sys.executable, "-m", "lmtune.cli", "chat", str(trained_runs["full"])],
        input=f"{PROMPTS[0]}\n/reset\n{PROMPTS[1]}\n/exit\n",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert session.returncode == 0, session.stderr
    out = session.stdout
    assert "Tokyo" in out and "Lima" in out and "(new conversation)" in out
    assert out.index("Tokyo") < out.index("(new conversation)") < out.index("Lima")
