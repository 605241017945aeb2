"""Config validation: every bad key or value is one line naming the key, the value and what is allowed."""

from __future__ import annotations

import pytest
import yaml

from lmtune.cli import main
from lmtune.config import RunConfig, apply_overrides, dump_config, load_config, validate
from lmtune.errors import LmtuneError


def write(tmp_path, raw) -> str:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw) if not isinstance(raw, str) else raw)
    return str(path)


def test_defaults_are_valid_and_name_comes_from_file(tmp_path):
    config = load_config(write(tmp_path, {}))
    assert isinstance(config, RunConfig)
    assert config.output.name == "run"
    assert config.method.name == "full" and config.training.precision == "auto"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"training": {"learning_rat": 1e-4}}, "unknown key 'training.learning_rat'"),
        ({"bogus": 1}, "unknown key 'bogus'"),
        ({"training": {"batch_size": "many"}}, "training.batch_size = 'many'"),
        (
            {"method": {"name": "lora", "lora": {"r": 0}}},
            "method.lora.r = 0: Input should be greater than or equal to 1",
        ),
        ({"data": {"split": {"test": 1.5}}}, "data.split.test = 1.5: Input should be less than 1"),
        ({"data": {"split": {"test": 0.6, "validation": 0.5}}}, "leaves no training rows"),
        (
            {"method": {"name": "magic"}},
            "method.name = 'magic': unknown method 'magic'; allowed: full, freeze, lora",
        ),
        (
            {"method": {"name": "full", "lora": {"r": 4}}},
            "method.lora is set, but method.name = 'full' does not read it (read by lora, dora, qlora)",
        ),
        (
            {"method": {"name": "qlora", "qlora": {"quant_type": "int3"}}},
            "method.qlora.quant_type = 'int3': Input should be 'nf4' or 'fp4'",
        ),
        ({"preference": {"beta": 0}}, "preference.beta = 0: Input should be greater than 0"),
        ({"task": "dance"}, "unknown task 'dance'; allowed: classify"),
        (
            {"training": {"scheduler": "zigzag"}},
            "training.scheduler = 'zigzag': Input should be 'linear', 'cosine'",
        ),
        ({"evaluation": {"metric": "auroc"}}, "evaluation.metric = 'auroc'"),
    ],
)
def test_bad_values_name_key_value_and_allowed(tmp_path, raw, expected):
    with pytest.raises(LmtuneError) as error:
        load_config(write(tmp_path, raw))
    message = str(error.value)
    assert expected in message
    assert "\n" not in message
    assert message.startswith(str(tmp_path / "run.yaml"))


def test_method_is_one_methods_settings_and_old_dumps_still_load(tmp_path):
    """`method:` holds the settings of the named method only (a union on `name`); a run's config.yaml
    written when every method's section was there (all at their defaults) still loads."""
    config = load_config(write(tmp_path, {"method": {"name": "qlora", "lora": {"r": 4}}}))
    assert config.method.lora.r == 4 and config.method.qlora.quant_type == "nf4"
    assert not hasattr(config.method, "adapter")
    old = {
        "name": "lora",
        "freeze": {"trainable_layers": 2},
        "lora": {"r": 16, "alpha": 32.0},
        "qlora": {"quant_type": "nf4", "double_quant": True, "compute_dtype": "bf16"},
        "ia3": {"target_modules": "auto"},
        "prompt_tuning": {"virtual_tokens": 20, "init_text": None},
        "prefix_tuning": {"virtual_tokens": 20, "init_text": None},
        "adapter": {"style": "pfeiffer", "reduction_factor": 16, "non_linearity": "relu"},
    }
    config = load_config(write(tmp_path, {"method": old}))
    assert config.method.lora.r == 16
    assert set(yaml.safe_load(dump_config(config))["method"]) == {"name", "lora"}
    assert load_config(write(tmp_path, {"method": {"lora": None}})).method.name == "full"


def test_a_search_over_methods_gives_each_trial_its_methods_settings():
    from lmtune.tune.space import apply

    base = load_config(None, ["method.name=lora"]).model_dump(mode="json", exclude={"search"})
    trial = apply(base, {"method.name": "full", "method.lora.r": 4})
    assert trial["method"] == {"name": "full"}
    assert validate(trial, "trial").method.name == "full"
    assert validate(apply(base, {"method.name": "dora", "method.lora.r": 4}), "t").method.lora.r == 4


def test_a_search_checks_method_settings_against_the_methods_it_tries():
    from lmtune.tune.space import parse_space

    lora_r = {"type": "categorical", "choices": [4, 8]}
    full = load_config(None, ["search.trials=2"])
    full.search.space = {"method.lora.r": lora_r}
    with pytest.raises(LmtuneError) as caught:
        parse_space(full, "s.yaml")
    assert str(caught.value) == (
        "s.yaml: search.space['method.lora.r']: no method this search tries reads method.lora (method.name: "
        "full; read by lora, dora, qlora); set method.name or search it"
    )
    full.search.space = {
        "method.name": {"type": "categorical", "choices": ["full", "dora"]},
        "method.lora.r": lora_r,
    }
    assert set(parse_space(full, "s.yaml")) == {"method.name", "method.lora.r"}
    full.search.space = {
        "method.name": {"type": "categorical", "choices": ["lora"]},
        "method.lora.rank": lora_r,
    }
    with pytest.raises(LmtuneError, match=r"unknown key 'method.lora.rank'"):
        parse_space(full, "s.yaml")


def test_a_tasks_own_section_comes_from_its_module():
    """preference: is declared beside its recipe (Task.config) and gathered into the run config."""
    from lmtune.tasks import TASKS, section
    from lmtune.tasks.preference_config import PreferenceConfig

    assert TASKS["preference"].config.startswith("lmtune.tasks.preference_config:")
    assert section("preference") is PreferenceConfig and section("classify") is None
    assert RunConfig.model_fields["preference"].annotation is PreferenceConfig
    assert load_config(None, ["task=preference", "preference.loss=kto"]).preference.loss == "kto"


def test_evaluation_metrics_are_checked_against_the_tasks_kinds(tmp_path):
    """classify takes classification metrics; sft takes generation and language-model ones."""
    assert load_config(write(tmp_path, {})).evaluation.metrics is None
    chosen = load_config(write(tmp_path, {"evaluation": {"metrics": ["mcc", "roc_auc"]}}))
    assert chosen.evaluation.metrics == ["mcc", "roc_auc"]
    sft = {"task": "sft", "evaluation": {"metrics": ["chrf", "perplexity"]}}
    assert load_config(write(tmp_path, sft)).evaluation.metrics == ["chrf", "perplexity"]
    for raw, bad in (({"metrics": ["f1_macro", "f2"]}, "f2"), ({"metrics": ["bleu"]}, "bleu")):
        with pytest.raises(LmtuneError) as error:
            load_config(write(tmp_path, {"evaluation": raw}))
        message = str(error.value)
        assert f"evaluation.metrics: unknown metric '{bad}'; allowed: accuracy, precision_macro" in message
        assert "mcc" in message and "\n" not in message
    with pytest.raises(LmtuneError, match="unknown metric 'accuracy'; allowed: rouge1, .*perplexity$"):
        load_config(write(tmp_path, {"task": "sft", "evaluation": {"metrics": ["accuracy"]}}))


def test_overrides_apply_with_yaml_types(tmp_path):
    config = load_config(
        write(tmp_path, {}),
        [
            "training.learning_rate=3e-5",
            "method.name=lora",
            "method.lora.target_modules=[query, value]",
            "data.max_train_rows=100",
        ],
    )
    assert config.training.learning_rate == pytest.approx(3e-5)
    assert config.method.name == "lora"
    assert config.method.lora.target_modules == ["query", "value"]
    assert config.data.max_train_rows == 100


def test_override_errors():
    with pytest.raises(LmtuneError, match="expected key=value"):
        apply_overrides({}, ["training.learning_rate"])
    with pytest.raises(LmtuneError, match="'task' is a value, not a section"):
        apply_overrides({"task": "classify"}, ["task.x=1"])


def test_yaml_syntax_error_names_line(tmp_path):
    path = write(tmp_path, "training:\n  epochs: 2\n  batch_size: [1, 2\n")
    with pytest.raises(LmtuneError, match=r"run\.yaml:\d+: not valid YAML"):
        load_config(path)


def test_cli_reports_config_error_in_one_line_and_exits_2(tmp_path, capsys):
    path = write(tmp_path, {"method": {"name": "lora", "lora": {"r": 0}}})
    assert main(["train", path, "--set", f"output.dir={tmp_path / 'runs'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "method.lora.r = 0" in err
    assert not (tmp_path / "runs").exists()


def test_missing_config_file(tmp_path, capsys):
    assert main(["train", str(tmp_path / "nope.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_help_lists_every_verb(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for verb in ("train", "eval", "predict", "quickstart"):
        assert verb in out


def test_every_example_config_is_valid():
    from pathlib import Path

    examples = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.yaml"))
    assert examples
    for path in examples:
        assert load_config(path).output.name == path.stem


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "../up", ".hidden"])
def test_output_name_must_be_one_plain_folder(tmp_path, name):
    with pytest.raises(LmtuneError, match="output.name = .*must be one plain folder name"):
        load_config(write(tmp_path, {"output": {"name": name}}))


def test_numeric_output_name_from_set_is_a_name(tmp_path):
    assert load_config(write(tmp_path, {}), ["output.name=2024"]).output.name == "2024"


@pytest.mark.parametrize(("value", "expected"), [("tab", "\t"), ("\\t", "\t"), (";", ";")])
def test_separator_accepts_one_character_or_tab(tmp_path, value, expected):
    assert load_config(write(tmp_path, {"data": {"separator": value}})).data.separator == expected


def test_separator_of_several_characters_is_an_error(tmp_path):
    with pytest.raises(LmtuneError, match=r"data.separator = '\|\|': must be one character"):
        load_config(write(tmp_path, {"data": {"separator": "||"}}))


def test_empty_sections_and_non_mapping_configs(tmp_path):
    path = write(tmp_path, "training:\n  # epochs: 3\nmethod:\n")
    assert load_config(path).training.epochs == 3.0
    assert load_config(path, ["training.epochs=1"]).training.epochs == 1.0
    listing = write(tmp_path, "- a\n- b\n")
    with pytest.raises(LmtuneError, match="expected a mapping of sections"):
        load_config(listing, ["training.epochs=1"])


BLOCKED = ("torch", "transformers", "peft", "trl", "datasets", "accelerate", "bitsandbytes", "optuna")


def test_config_validation_imports_no_torch(tmp_path):
    """`import lmtune.config` and validating any config (every example, every task, method, metric list
    and a search section) work where torch and the model libraries cannot be imported at all."""
    import subprocess
    import sys
    from pathlib import Path

    examples = sorted(str(p) for p in (Path(__file__).parents[1] / "examples").glob("*.yaml"))
    script = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
from lmtune.config import load_config
from lmtune.models.methods import METHODS
from lmtune.tasks import TASKS
for path in {examples!r}:
    load_config(path)
for task, spec in TASKS.items():
    for method in METHODS:
        load_config(None, [f"task={{task}}", f"method.name={{method}}", f"evaluation.metric={{spec.metrics[0]}}",
                           "evaluation.metrics=[" + spec.columns[0] + "]"])
print("ok", sorted(m for m in sys.modules if m.split(".")[0] in {BLOCKED!r}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[0] == "ok []"
    assert len(examples) >= 10
