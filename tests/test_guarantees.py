"""What lmtune guarantees (README "What lmtune guarantees"), one test per defect a hostile-user probe found:
nothing it did not make is deleted, no folder's code runs, no pickle loads, every bad input is one line."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import synthetic_rows, tiny_config, write_csv
from faultcases import tree_hash

from lmtune import cli, runs
from lmtune.cli import main
from lmtune.config import validate


def config_file(folder: Path, raw: dict, name: str = "run.yaml") -> str:
    path = folder / name
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("lmtune: error: ") and "\n" not in err, err
    return err


@pytest.fixture(scope="module")
def finished(tiny_model_dir, tmp_path_factory):
    """A finished tiny classify run: (run directory, data file, raw config)."""
    tmp = tmp_path_factory.mktemp("guarantees")
    data = write_csv(tmp / "reviews.csv", synthetic_rows(120))
    raw = tiny_config(tiny_model_dir("bert"), data, tmp / "runs", training={"epochs": 1})
    assert main(["train", config_file(tmp, raw)]) == 0
    return tmp / "runs" / "run", data, raw


# ----------------------------------------------------------------------------------- 1. export


def test_export_never_replaces_a_folder_it_did_not_make(finished, tmp_path, capsys, monkeypatch):
    run_dir, _, _ = finished
    runs_dir = run_dir.parent
    before = tree_hash(runs_dir)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    monkeypatch.chdir(tmp_path)
    for target, says in [
        (mine, "is not an lmtune export"),
        (run_dir, "is the run being exported or holds it"),
        (runs_dir, "is the run being exported or holds it"),
        (Path("."), "is the current folder or holds it"),
        (run_dir / "model", "is inside the run directory"),
    ]:
        assert main(["export", str(run_dir), "--merge", str(target), "--overwrite"]) == 2, target
        assert says in one_line_error(capsys)
    assert (mine / "notes.txt").read_text() == "keep me"
    assert tree_hash(runs_dir) == before


def test_export_replaces_its_own_export_readable_by_others(finished, tmp_path, capsys):
    run_dir, _, _ = finished
    out = tmp_path / "exported"
    umask = os.umask(0o022)
    try:
        assert main(["export", str(run_dir), "--merge", str(out)]) == 0
        assert main(["export", str(run_dir), "--merge", str(out)]) == 2
        assert "exists; pass --overwrite" in one_line_error(capsys)
        assert main(["export", str(run_dir), "--merge", str(out), "--overwrite"]) == 0
    finally:
        os.umask(umask)
    assert json.loads((out / "lmtune_export.json").read_text())["merged"] is True
    assert out.stat().st_mode & 0o777 == 0o755  # not the 0700 of a temporary folder
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no scratch, no lock file


def test_export_refuses_a_folder_holding_a_run(finished, tmp_path, capsys):
    run_dir, _, _ = finished
    out = tmp_path / "exported"
    assert main(["export", str(run_dir), "--merge", str(out)]) == 0
    shutil.copytree(run_dir, out / "a-run")  # someone put a run inside an old export
    assert main(["export", str(run_dir), "--merge", str(out), "--overwrite"]) == 2
    assert "holds the run directory" in one_line_error(capsys)
    assert (out / "a-run" / "lmtune_run.json").is_file()


# ------------------------------------------------------------------------------ 2. remote code

CUSTOM_CODE = """
from pathlib import Path
Path({sentinel!r}).write_text("this folder's code ran")
from transformers import BertConfig
class CustomConfig(BertConfig):
    model_type = "custom-bert"
"""


def _folder_with_code(model_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "with-code"
    shutil.copytree(model_dir, folder)
    sentinel = tmp_path / "SENTINEL"
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "custom.CustomConfig"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "custom.py").write_text(CUSTOM_CODE.format(sentinel=str(sentinel)))
    return folder, sentinel


def test_a_folder_that_ships_code_is_refused_even_when_stdin_says_yes(tiny_model_dir, tmp_path):
    folder, sentinel = _folder_with_code(tiny_model_dir("bert"), tmp_path)
    data = write_csv(tmp_path / "train.csv", synthetic_rows(40))
    path = config_file(tmp_path, tiny_config(folder, data, tmp_path / "runs"))
    done = subprocess.run(
        [sys.executable, "-m", "lmtune.cli", "train", path],
        input=b"y\n" * 100,  # `yes y | lmtune train …`
        capture_output=True,
        timeout=300,
    )
    err = done.stderr.decode().strip()
    assert done.returncode == 2, err
    assert "ships its own Python code (auto_map in config.json)" in err and "\n" not in err
    assert "model.trust_remote_code: true" in err
    assert not sentinel.exists()
    assert "Do you wish to run the custom code" not in done.stdout.decode() + err


def test_trust_remote_code_is_the_one_key_that_runs_it(tiny_model_dir, tmp_path):
    from lmtune.models.load import _read_config

    folder, sentinel = _folder_with_code(tiny_model_dir("bert"), tmp_path)
    assert validate({}, "defaults").model.trust_remote_code is False
    _read_config(folder, trust_remote_code=True)
    assert sentinel.read_text() == "this folder's code ran"


def test_transformers_refuses_remote_code_without_asking(tiny_model_dir, tmp_path, monkeypatch):
    """Tripwire: lmtune relies on transformers raising, never prompting, when trust_remote_code=False."""
    from transformers import AutoConfig

    folder, sentinel = _folder_with_code(tiny_model_dir("bert"), tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "custom-bert"  # no local class: only the folder's code could load it
    (folder / "config.json").write_text(json.dumps(config))

    def no_prompt(*_):
        raise AssertionError("transformers asked on stdin")

    monkeypatch.setattr("builtins.input", no_prompt)
    with pytest.raises(ValueError):
        AutoConfig.from_pretrained(str(folder), trust_remote_code=False)
    assert not sentinel.exists()


def test_tokenizer_config_with_code_is_refused_too(tiny_model_dir, tmp_path):
    from lmtune.errors import LmtuneError
    from lmtune.models.load import load_tokenizer

    folder = tmp_path / "tok"
    shutil.copytree(tiny_model_dir("bert"), folder)
    settings = json.loads((folder / "tokenizer_config.json").read_text())
    settings["auto_map"] = {"AutoTokenizer": ["custom.Tok", None]}
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))
    with pytest.raises(LmtuneError, match="auto_map in tokenizer_config.json"):
        load_tokenizer(folder)


# ---------------------------------------------------------------------- 3. partials and markers


def test_data_prepare_never_removes_a_partial_it_did_not_make(tiny_model_dir, tmp_path, capsys):
    data = write_csv(tmp_path / "train.csv", synthetic_rows(40))
    path = config_file(tmp_path, tiny_config(tiny_model_dir("bert"), data, tmp_path / "runs"))
    out = tmp_path / "prepared"
    foreign = tmp_path / "prepared.partial"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("not lmtune's")
    assert main(["data", "prepare", path, "--out", str(out)]) == 2
    assert "lmtune did not make it" in one_line_error(capsys)
    assert (foreign / "mine.txt").read_text() == "not lmtune's" and not out.exists()
    shutil.rmtree(foreign)
    (foreign / "sub").mkdir(parents=True)  # one a killed `data prepare` left: removed
    (foreign / runs.PARTIAL_MARKER).write_text("{}")
    assert main(["data", "prepare", path, "--out", str(out)]) == 0
    assert not foreign.exists() and (out / "lmtune_data.json").is_file()
    before = (out / "train.jsonl").read_text()
    write_csv(data, synthetic_rows(50))  # a failing re-run (no test rows) keeps the old output
    assert (
        main(["data", "prepare", path, "--out", str(out), "--overwrite", "--set", "data.split.test=0"]) == 2
    )
    assert (out / "train.jsonl").read_text() == before and not foreign.exists()


def test_train_never_removes_a_partial_it_did_not_make(tiny_model_dir, labelled_csv, tmp_path, capsys):
    raw = tiny_config(tiny_model_dir("bert"), labelled_csv, tmp_path / "runs")
    path = config_file(tmp_path, raw)
    foreign = tmp_path / "runs" / "run.partial"
    foreign.mkdir(parents=True)
    (foreign / "mine.txt").write_text("not lmtune's")
    assert main(["train", path, "--overwrite"]) == 2
    assert "lmtune did not make it" in one_line_error(capsys)
    assert (foreign / "mine.txt").read_text() == "not lmtune's"
    # lmtune's own leftover, killed before any checkpoint: --resume has nothing to resume, and says so
    shutil.rmtree(foreign)
    foreign.mkdir()
    (foreign / runs.PARTIAL_MARKER).write_text("{}")
    assert main(["train", path]) == 2
    err = one_line_error(capsys)
    assert "pass --overwrite to start again" in err and "--resume" not in err
    assert main(["train", path, "--resume"]) == 2
    assert "stopped before its first checkpoint, so there is nothing to resume" in one_line_error(capsys)


# -------------------------------------------------------------------------------- 6. quickstart


def test_quickstart_writes_to_a_fresh_name_and_refuses_a_chosen_one(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    taken = tmp_path / "runs" / "quickstart"
    taken.mkdir(parents=True)
    (taken / "lmtune_run.json").write_text('{"task": "classify"}')
    (tmp_path / "runs" / "quickstart-2.partial").mkdir()
    seen = []
    real = cli._train
    monkeypatch.setattr(cli, "_train", lambda config, **flags: seen.append((config.output.name, flags)) or 0)
    assert main(["quickstart"]) == 0
    assert seen == [("quickstart-3", {"resume": False, "overwrite": False})]
    assert "runs/quickstart exists: this run goes to runs/quickstart-3" in capsys.readouterr().out
    monkeypatch.setattr(cli, "_train", real)
    assert main(["quickstart", "--set", "output.name=quickstart"]) == 2  # a name the user chose
    assert "run directory 'runs/quickstart' exists; pass --overwrite" in one_line_error(capsys)
    assert (taken / "lmtune_run.json").is_file()


# --------------------------------------------------------------------- 7, 8, 9: one-line errors


BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8)
)


@pytest.mark.parametrize(
    ("yaml_text", "overrides", "says"),
    [
        ("training: {epochs: 1}\n", ["training.epochs=.inf"], "--set training.epochs: training.epochs = inf"),
        ("training: {epochs: 1}\n", ["training.epochs=[1"], "--set training.epochs: not valid YAML"),
        ("training: {epochs: 1}\n", ["=5"], "--set '=5': no key before '='"),
        (
            "training: {epochs: 1}\n",
            ["training.batch_size=0"],
            "--set training.batch_size: training.batch_size",
        ),
        ("a: " + "[" * 100_000 + "]" * 100_000 + "\n", [], "nested more than 32 levels deep"),
        (BOMB + "training: {epochs: *i}\n", [], "expands to more than 100,000 values through its aliases"),
        ("a: &x [*x]\n", [], "refers to itself through an alias"),
        ('output: {name: "run\\0x"}\n', [], "output.name: contains a NUL character"),
        ("training:\n  epochs: 1\n  epochs: 2\n", [], ":3: not valid YAML (key 'epochs' is given twice)"),
        ("output: {dir: /proc/lmtune}\n", [], "output.dir = '/proc/lmtune': cannot make the folder"),
        ("output: {name: .hidden}\n", [], "output.name = '.hidden': must be one plain folder name"),
    ],
)
def test_bad_configs_are_one_short_line(tiny_model_dir, tmp_path, capsys, yaml_text, overrides, says):
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text)
    assert main(["train", str(path), *[a for item in overrides for a in ("--set", item)]]) == 2
    err = one_line_error(capsys)
    assert says in err and len(err) < 400, err


def test_config_paths_that_are_not_config_files(tmp_path, capsys):
    loop = tmp_path / "loop.yaml"
    loop.symlink_to(loop)
    for path, says in [
        (tmp_path, "is a folder; give the YAML file inside it"),
        (loop, "cannot be read (Too many levels of symbolic links)"),
        (Path("/dev/zero"), "more than 256 KB; a run config is a few KB"),
        (tmp_path / "missing.yaml", "does not exist"),
    ]:
        assert main(["train", str(path)]) == 2
        assert says in one_line_error(capsys)


def test_output_dir_that_is_a_file(labelled_csv, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump({"data": {"train": str(labelled_csv)}, "output": {"dir": str(tmp_path / "afile")}})
    )
    assert main(["train", str(path)]) == 2
    assert "is a file; give a folder" in one_line_error(capsys)


def test_an_existing_run_is_refused_before_the_data_pipeline(finished, tmp_path, capsys):
    run_dir, _, raw = finished
    raw = json.loads(json.dumps(raw))
    raw["data"]["train"] = str(tmp_path / "never-read.csv")  # would fail, if the data were read first
    assert main(["train", config_file(tmp_path, raw)]) == 2
    assert f"run directory '{run_dir}' exists; pass --overwrite" in one_line_error(capsys)


def test_weights_only_as_a_pickle_are_refused_by_name(tiny_model_dir, labelled_csv, tmp_path, capsys):
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir("bert"), folder)
    from safetensors.torch import load_file

    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    assert main(["train", config_file(tmp_path, tiny_config(folder, labelled_csv, tmp_path / "runs"))]) == 2
    err = one_line_error(capsys)
    assert "holds its weights only as pytorch_model.bin (a pickle" in err and "safetensors only" in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (lambda run: (run / "model" / "labels.json").write_text("[not json"), "labels.json: unreadable"),
        (
            lambda run: (run / "model" / "model.safetensors").write_bytes(
                (run / "model" / "model.safetensors").read_bytes()[:5000]
            ),
            "model.safetensors: unreadable weights",
        ),
        (
            lambda run: (run / "model" / "lmtune_model.json").write_text(
                json.dumps(
                    {
                        k: v
                        for k, v in json.loads((run / "model" / "lmtune_model.json").read_text()).items()
                        if k != "method"
                    }
                )
            ),
            "lmtune_model.json: missing key 'method'",
        ),
        (lambda run: (run / "data" / "test.jsonl").unlink(), "test.jsonl: missing or unreadable"),
    ],
)
def test_damaged_runs_are_one_line(finished, tmp_path, capsys, damage, says):
    run_dir, _, _ = finished
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    damage(copy)
    assert main(["eval", str(copy)]) == 2
    err = one_line_error(capsys)
    assert says in err and "damaged" in err
    if "test.jsonl" not in says:  # predict needs no test split
        assert main(["predict", str(copy), "some text"]) == 2
        assert says in one_line_error(capsys)


def test_eval_names_its_own_flags_and_reads_headerless_files(finished, tmp_path, capsys):
    run_dir, _, _ = finished
    headerless = tmp_path / "plain.csv"
    headerless.write_text("".join(f"{text},{label}\n" for text, label in synthetic_rows(20, seed=4)))
    assert main(["eval", str(run_dir), "--data", str(headerless), "--columns", "text,label"]) == 0
    capsys.readouterr()
    other = write_csv(tmp_path / "other.csv", synthetic_rows(5), header=("body", "y"))
    assert main(["eval", str(run_dir), "--data", str(other), "--text-column", "body"]) == 2
    err = one_line_error(capsys)
    assert "--label-column" in err and "data.label_column" not in err


def test_ctrl_c_in_the_data_pipeline_is_one_line_and_leaves_nothing(tiny_model_dir, tmp_path):
    big = write_csv(tmp_path / "big.csv", synthetic_rows(400_000))
    path = config_file(tmp_path, tiny_config(tiny_model_dir("bert"), big, tmp_path / "runs"))
    process = subprocess.Popen(
        [sys.executable, "-m", "lmtune.cli", "train", path],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    scratch = f"lmtune-data-{socket.gethostname()}-{process.pid}-*"
    deadline = time.time() + 120
    while not list(Path(tempfile.gettempdir()).glob(scratch)):
        assert process.poll() is None and time.time() < deadline, process.stderr.read().decode()
        time.sleep(0.02)
    time.sleep(0.5)  # inside the pass over the rows
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130
    assert err.decode().strip() == "lmtune: error: interrupted; nothing was written"
    assert not list(Path(tempfile.gettempdir()).glob(scratch))
    assert not (tmp_path / "runs").exists()


def test_scratch_of_a_killed_process_is_removed_by_the_next_run(tmp_path):
    from lmtune.data.pipeline import scratch_folder

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host, tmp = socket.gethostname(), Path(tempfile.gettempdir())
    stale = tmp / f"lmtune-data-{host}-{dead.pid}-abc123"
    live = tmp / f"lmtune-data-{host}-{os.getppid()}-abc123"  # a live process (pytest's parent)
    for folder in (stale, live):
        (folder / "take-1.arrow").parent.mkdir()
        (folder / "take-1.arrow").write_bytes(b"x" * 1000)
    try:
        with scratch_folder() as scratch:
            assert scratch.folder.name.startswith(f"lmtune-data-{host}-{os.getpid()}-")
        assert not stale.exists() and live.exists()
    finally:
        shutil.rmtree(stale, ignore_errors=True)
        shutil.rmtree(live, ignore_errors=True)


# ----------------------------------------------------------------------------- 10. one writer


def test_two_runs_of_one_name_never_run_at_once(tiny_model_dir, labelled_csv, tmp_path, capsys):
    raw = tiny_config(tiny_model_dir("bert"), labelled_csv, tmp_path / "runs")
    path = config_file(tmp_path, raw)
    final = tmp_path / "runs" / "run"
    with runs.hold(final):  # another `lmtune train` of this name
        assert main(["train", path]) == 2
        err = one_line_error(capsys)
        assert f"'{final}' is being written by process {os.getpid()}" in err
    with runs.hold(
        final, shared=True
    ):  # an `lmtune tune` of this name: a train waits, another search may join
        assert main(["train", path]) == 2
        assert "is being written by process" in one_line_error(capsys)
        with runs.hold(final, shared=True):
            pass
    assert not runs.lock_path(final).exists()  # the last holder removes the lock file


def test_a_killed_holder_never_leaves_a_stale_lock(tmp_path):
    from lmtune.errors import LmtuneError

    target = tmp_path / "runs" / "run"
    code = (
        "import sys, time; from pathlib import Path; from lmtune.runs import hold\n"
        f"with hold(Path({str(target)!r})):\n    print('held', flush=True); time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert holder.stdout.readline().strip() == b"held"
    with pytest.raises(LmtuneError, match=f"being written by process {holder.pid} "), runs.hold(target):
        pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with runs.hold(target):  # the kernel released the dead process's lock
        pass


# ------------------------------------------------------------------------------ 11. small debts


def test_a_finished_run_keeps_one_copy_of_its_weights(finished, tiny_model_dir, tmp_path):
    run_dir, data, _ = finished
    assert not (run_dir / "checkpoints").exists() and (run_dir / "model" / "model.safetensors").is_file()
    raw = tiny_config(
        tiny_model_dir("bert"), data, tmp_path / "runs", training={"epochs": 1, "keep_checkpoints": True}
    )
    assert main(["train", config_file(tmp_path, raw)]) == 0
    metrics = json.loads((tmp_path / "runs" / "run" / "metrics.json").read_text())
    kept = [p.name for p in (tmp_path / "runs" / "run" / "checkpoints").iterdir()]
    assert kept == [metrics["best_checkpoint"]]


def test_progress_without_a_terminal_is_plain_lines(capsys):
    from lmtune.progress import PlainProgress, progress

    assert isinstance(progress(10, desc="base: test", unit="ex"), PlainProgress)  # pytest's stderr is no TTY
    with PlainProgress(100, "base: test", "ex", every=0) as bar:
        for _ in range(4):
            bar.update(25)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert "\r" not in err and len(lines) == 5
    assert lines[0].startswith("base: test: 25/100 ex · ") and "ETA" in lines[0]
    assert lines[-1].startswith("base: test: 100/100 ex · ") and "done in" in lines[-1]


def test_the_yaml_limits_leave_ordinary_anchors_and_merges_alone():
    from lmtune import yamlfile

    text = "base: &base {epochs: 1, batch_size: 4}\ntraining:\n  <<: *base\n  batch_size: 8\nlist: [*base, *base]\n"
    value = yamlfile.loads(text, "x.yaml")
    assert value["training"] == {"epochs": 1, "batch_size": 8} and value["list"][1]["epochs"] == 1


def test_an_error_message_is_one_line_whatever_it_quotes():
    from lmtune.errors import MAX_MESSAGE, LmtuneError

    quoted = "a label\nwith a line break, \x1b[31mcolour\x1b[0m, \u2028 and é"
    text = str(LmtuneError(f"data.csv:3: unknown label {quoted}"))
    assert (
        text
        == "data.csv:3: unknown label a label\\nwith a line break, \\x1b[31mcolour\\x1b[0m, \\u2028 and é"
    )
    long = str(LmtuneError("x" * 5000))
    assert len(long) <= MAX_MESSAGE and long.endswith("characters more]")
