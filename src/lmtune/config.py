"""The run config: one YAML file = one run, validated by pydantic; every key has a CPU-friendly default.

Errors come out as one line per problem: the dotted key, the value given and what is allowed.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BeforeValidator,
    Field,
    TypeAdapter,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from lmtune import tasks, yamlfile
from lmtune.errors import SHOWN, LmtuneError, shorten
from lmtune.models.methods import METHODS, MethodSettings
from lmtune.sections import SEED, Section, registered, registered_error
from lmtune.tasks import TASKS


class ModelConfig(Section):
    name: str = Field(
        "bundled:minilm", description="bundled:<name>, a local HF directory, or a cached hub id"
    )
    max_length: int = Field(256, ge=4, le=8192, description="tokens per example; longer ones are truncated")
    dropout: float | None = Field(None, ge=0.0, lt=1.0, description="override the model's dropout rates")
    attn_implementation: Literal["auto", "eager", "sdpa"] = Field(
        "auto",
        description="auto: on CPU eager for rows up to 256 tokens, sdpa above (both measured); sdpa on GPU",
    )
    trust_remote_code: bool = Field(
        False,
        description="DANGEROUS: run the Python files a model folder ships (auto_map in its config.json or "
        "tokenizer_config.json) with your user's rights. Off: such folders are refused. Applies to every "
        "model the run loads (augmentation models too); only for folders whose code you have read",
    )


class SplitConfig(Section):
    validation: float = Field(0.1, ge=0.0, lt=1.0, description="fraction held out for validation")
    test: float = Field(0.2, ge=0.0, lt=1.0, description="fraction held out for test (when no test file)")
    seed: int = Field(42, **SEED)
    method: Literal["hash", "stratified"] = Field(
        "hash",
        description="hash: each row's split follows from a hash of its group (or text) and the seed, so "
        "adding rows never moves existing ones and copies stay together; stratified: exact per-label "
        "proportions (seeded shuffle, rows move when rows are added)",
    )
    folds: int | None = Field(
        None, ge=2, le=100, description="also assign training rows to k folds (hash-stable, group-aware)"
    )
    fold: int | None = Field(
        None,
        ge=0,
        description="validate on fold i (0..folds-1) of the training rows, train on the other folds; "
        "split.validation is then not cut (training.cv_folds sets this per fold)",
    )

    @model_validator(mode="after")
    def _fractions_leave_training_rows(self) -> SplitConfig:
        if self.validation + self.test >= 1.0:
            raise ValueError(
                f"split.validation + split.test = {self.validation + self.test:g} leaves no training rows; "
                "must be < 1"
            )
        return self


class CleanConfig(Section):
    unicode: Literal["NFKC", "NFC", "none"] = Field("NFKC", description="Unicode normalisation form")
    control: bool = Field(True, description="drop control characters, byte-order marks, zero-width spaces")
    html: bool = Field(False, description="strip HTML/XML tags and decode entities")
    whitespace: bool = Field(
        True, description="collapse blanks inside lines, strip line ends and runs of blank lines"
    )
    boilerplate: list[str] = Field([], description="regexes; lines matching one are removed")
    min_chars: int = Field(1, ge=0, description="rows shorter than this after cleaning are dropped")
    max_chars: int | None = Field(None, ge=1)
    min_tokens: int | None = Field(None, ge=0, description="token filters use the run's tokenizer")
    max_tokens: int | None = Field(None, ge=1)
    label_case: Literal["keep", "lower"] = Field(
        "keep", description="lower: 'Positive ' and 'positive' match"
    )
    label_map: dict[str, str] = Field({}, description="rename or merge labels, e.g. {pos: positive}")


class DedupConfig(Section):
    exact: bool = Field(True, description="drop later copies of a text (case and whitespace ignored)")
    near: bool = Field(False, description="drop near-duplicates too (MinHash LSH, verified Jaccard)")
    threshold: float = Field(0.8, gt=0.0, le=1.0, description="Jaccard similarity of word n-gram sets")
    ngram: int = Field(3, ge=1, le=10, description="word n-grams compared by near-duplicate detection")


class PiiConfig(Section):
    action: Literal["replace", "drop", "off"] = Field(
        "replace", description="replace each hit by a typed placeholder (<EMAIL>, …), drop the row, or off"
    )
    types: list[str] = Field(
        ["email", "phone", "card", "iban", "ip", "ssn", "url_credentials"],
        description="also: person, which needs a spaCy English model installed (Presidio optional)",
    )
    phone_regions: list[str] = Field(
        ["US", "GB", "DE", "FR", "IN"],
        description="countries whose national phone formats count; numbers written with + always do",
    )

    @field_validator("action", mode="before")
    @classmethod
    def _yaml_off(cls, value):
        return "off" if value is False else value  # YAML reads a bare `off` as false


class LeakageConfig(Section):
    check: bool = Field(True, description="look for validation/test rows that are also in train")
    near: bool = Field(True, description="near-duplicates count as leaks too (data.dedup.threshold)")
    remove_from_train: bool = Field(True, description="drop the leaking copies from the training split")


class BackTranslationConfig(Section):
    forward: str = Field(description="seq2seq model directory translating into the pivot language")
    backward: str = Field(description="seq2seq model directory translating back")


class ParaphraseConfig(Section):
    model: str = Field("bundled:smollm2-135m-instruct", description="a generative (instruct) model")
    copies: int = Field(1, ge=1, le=10)


class AugmentConfig(Section):
    ops: list[Literal["deletion", "swap", "synonym"]] = Field(
        [], description="simple text operations on training rows"
    )
    copies: int = Field(1, ge=1, le=20, description="augmented rows per training row and operation")
    p: float = Field(0.1, gt=0, lt=1, description="share of words each operation touches")
    lexicon: str | None = Field(None, description="synonym file: JSON {word: [synonyms]} or TSV")
    back_translation: BackTranslationConfig | None = None
    paraphrase: ParaphraseConfig | None = None
    max_rows: int | None = Field(None, ge=1, description="augment at most this many training rows")
    balance: Literal["none", "oversample", "weights"] = Field(
        "none", description="classify: repeat rows of small classes, or weight the loss per row"
    )
    seed: int = Field(42, **SEED)


class DataConfig(Section):
    train: str | list[str] = Field(
        "bundled:drug-reviews",
        description="bundled:<name>, a file, a folder saved by datasets, a glob, or a list of them",
    )
    validation: str | list[str] | None = None
    test: str | list[str] | None = None
    text_column: str | list[str] | None = Field(
        None,
        description="the text's column, or several: joined with data.text_separator, or with data.text_pair "
        "a sentence pair (two columns, e.g. [sentence1, sentence2]); default: the bundled dataset's, else 'text'",
    )
    text_separator: str = Field(
        " ", description="joins several text columns (an empty one is left out); not with data.text_pair"
    )
    text_pair: bool = Field(
        False,
        description="the two text columns are a sentence pair, encoded as the tokenizer's pair (its "
        "separator token and segment ids; truncation longest_first, counted in the report)",
    )
    label_column: str | None = Field(
        None,
        description="the label's (regress: the number's) column; default: the bundled dataset's, else 'label'",
    )
    group_column: str | None = Field(
        None, description="rows sharing this column's value (a user, a document) never straddle splits"
    )
    weight_column: str | None = Field(
        None,
        description="a number ≥ 0 per row: its weight in the training loss (classify, sft, seq2seq; an "
        "importance weight, e.g. from instance weighting); missing or negative is a bad row",
    )
    sensitive_column: str | None = Field(
        None,
        description="a demographic attribute per row (for fairness audits; unlike group_column it does "
        "not keep rows together in splits); counted per split in the data report",
    )
    domain_column: str | None = Field(None, description="the domain a row comes from; counted per split")
    task_column: str | None = Field(None, description="the task a row belongs to; counted per split")
    labels: list[str] | None = Field(None, description="the allowed labels; any other is a bad row")
    multi_label: bool = Field(
        False,
        description="classify: each row has a set of labels (a JSON list, or a string split at "
        "data.label_separator; empty = none of them): sigmoid outputs, per-label thresholds tuned on validation",
    )
    label_separator: str = Field(",", min_length=1, description="data.multi_label: splits a label string")
    columns: list[str] | None = Field(
        None, description="column names of a delimited file without a header (or of a CoNLL file's columns)"
    )
    tag_column: int | str = Field(
        -1,
        description="token_classify, CoNLL files: the tag column, by index (negative counts from the end; "
        "the token is column 0) or by a name in data.columns",
    )
    tag_scheme: Literal["IOB1", "IOB2", "BIOES"] = Field(
        "IOB2",
        description="token_classify: the scheme of the tags as given; every scheme is brought to IOB2 "
        "(the entities unchanged), and an IOB2 I- that continues no chunk is read as B-, as seqeval does",
    )
    separator: str | None = Field(None, description="one character, or 'tab'; default from the file suffix")
    quoting: Literal["auto", "csv", "none"] = Field(
        "auto", description="auto: csv quoting for .csv, none for .tsv (GLUE style)"
    )
    encoding: str = Field(
        "auto", description="auto: UTF-8, or cp1252/latin-1 with a warning for a file that is not UTF-8"
    )
    max_train_rows: int | None = Field(None, ge=1, description="subsample of the training split")
    split: SplitConfig = SplitConfig()
    format: str = Field(
        "auto",
        description="generative and preference tasks: record format; auto detects it from the fields "
        "(sft, seq2seq: alpaca, messages, sharegpt, prompt_completion, text; preference: pairs, implicit, "
        "hh, sharegpt_ranking, openai, unpaired; token_classify: conll — a .txt file read as CoNLL columns —, "
        "tokens, spans); checked against the task's reader (lmtune.data.rows.READERS)",
    )
    fields: dict[str, str] = Field(
        {}, description="generative tasks: rename record fields to the format's names, e.g. {output: answer}"
    )
    on_error: Literal["fail", "skip"] = Field(
        "fail", description="a bad row stops the run (fail) or is skipped, counted and listed (skip)"
    )
    clean: CleanConfig = CleanConfig()
    dedup: DedupConfig = DedupConfig()
    pii: PiiConfig = PiiConfig()
    leakage: LeakageConfig = LeakageConfig()
    augment: AugmentConfig = AugmentConfig()

    @field_validator("train", "validation", "test")
    @classmethod
    def _some_file(cls, value: str | list[str] | None) -> str | list[str] | None:
        if value is not None and (value in ("", []) or (isinstance(value, list) and "" in value)):
            raise ValueError("must name a file, a glob or a list of them (not empty)")
        return value

    @field_validator("separator")
    @classmethod
    def _one_character(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = {"tab": "\t", "\\t": "\t"}.get(value, value)
        if len(value) != 1:
            raise ValueError("must be one character (e.g. ',', ';', '|') or 'tab'")
        return value

    @field_validator("text_column")
    @classmethod
    def _columns_named(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list):
            if not value or any(not name for name in value):
                raise ValueError("must name one column or a list of columns (none empty)")
            if len(set(value)) < len(value):
                raise ValueError("names a column twice")
            if len(value) == 1:
                return value[0]
        return value


def _method_section(raw: Any) -> Any:
    """`method:` before validation: the name defaults to full and must be registered; the settings of
    other methods are dropped when at their defaults (a run's config.yaml from before methods were a
    union holds every method's section) and refused when set, since this method would not read them."""
    if not isinstance(raw, dict):
        return raw
    raw = {"name": "full", **raw}
    name = raw["name"]
    if not isinstance(name, str) or name not in METHODS:
        raise ValueError(f"method.name = {shorten(name)}: {registered_error(name, METHODS, 'method')}")
    reads = METHODS[name].settings.model_fields
    for key in [k for k in raw if k not in reads and k in _METHOD_SECTIONS]:
        default = _METHOD_SECTIONS[key]().model_dump(mode="json")
        if raw[key] not in (None, {}) and not _defaults_of(raw[key], default):
            readers = method_readers(key)
            raise ValueError(
                f"method.{key} is set, but method.name = {name!r} does not read it (read by "
                f"{', '.join(readers)}); remove method.{key} or change method.name"
            )
        del raw[key]
    return raw


def method_readers(section: str) -> list[str]:
    """The methods whose settings hold `method.<section>` (lora: lora, dora, qlora)."""
    return [name for name, method in METHODS.items() if section in method.settings.model_fields]


def _defaults_of(given: Any, default: dict) -> bool:
    """Whether a section given as a mapping holds only default values (False for anything else)."""
    return isinstance(given, dict) and all(k in default and default[k] == v for k, v in given.items())


def _method_config():
    """The `method:` annotation (a union of every method's settings, tagged by name), and each settings
    sub-section (lora, qlora, …) with its class."""
    members = tuple(method.settings for method in METHODS.values())
    sections: dict[str, type] = {}
    for member in members:
        for key, info in member.model_fields.items():
            if key != "name":
                sections.setdefault(key, info.annotation)
    return (
        Annotated[Union[members], Field(discriminator="name"), BeforeValidator(_method_section)],  # noqa: UP007
        sections,
    )


# `method:` is one method's settings, picked by name (lmtune.models.methods: one module per method)
MethodConfig, _METHOD_SECTIONS = _method_config()
_METHOD = TypeAdapter(MethodConfig)


def method_config(raw: dict) -> MethodSettings:
    """A `method:` section from a mapping, validated as in a run config."""
    return _METHOD.validate_python(raw)


def method_reads(raw_method: dict) -> dict:
    """A raw `method:` mapping without the sections its method does not read (a search that samples
    method.name and method.lora.r sets lora.r for every trial; a full trial does not read it)."""
    name = raw_method.get("name", "full")
    if name not in METHODS:
        return raw_method
    reads = METHODS[name].settings.model_fields
    return {key: value for key, value in raw_method.items() if key in reads}


class EarlyStoppingConfig(Section):
    patience: int | None = Field(3, ge=1, description="evaluations without improvement; null disables")
    threshold: float = Field(0.0, ge=0.0)


class TrainingConfig(Section):
    epochs: float = Field(3.0, gt=0)
    max_steps: int | None = Field(None, ge=1, description="overrides epochs when set")
    batch_size: int = Field(16, ge=1)
    eval_batch_size: int = Field(64, ge=1)
    gradient_accumulation: int = Field(1, ge=1)
    learning_rate: float = Field(5e-5, gt=0, lt=1)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    scheduler: Literal["linear", "cosine", "constant", "step"] = "linear"
    step_size: int = Field(100, ge=1, description="scheduler=step: optimizer steps between decays")
    step_gamma: float = Field(0.5, gt=0, le=1, description="scheduler=step: decay factor")
    max_grad_norm: float = Field(1.0, gt=0)
    seed: int = Field(42, **SEED)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="auto: bf16 autocast where the hardware has it (AMX/AVX512-BF16 CPUs, recent GPUs)",
    )
    group_by_length: bool = Field(True, description="batch texts of similar length to cut padding")
    eval_every: int | None = Field(None, ge=1, description="evaluate every N steps; null = once per epoch")
    logging_steps: int = Field(10, ge=1)
    save_total_limit: int = Field(
        2, ge=1, description="checkpoints kept while training (the best is always kept)"
    )
    keep_checkpoints: bool = Field(
        False,
        description="keep the best checkpoint (weights only) in the finished run; off: model/ is the one "
        "copy of the trained weights (a finished run is never resumed)",
    )
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    report_to: list[Literal["tensorboard", "mlflow", "wandb"]] = Field(
        ["tensorboard"],
        description="experiment trackers: tensorboard (<run>/tb); mlflow (file:<run>/mlruns unless "
        "MLFLOW_TRACKING_URI is set); wandb (offline unless WANDB_MODE is set); [] for none",
    )
    cv_folds: int | None = Field(
        None,
        ge=2,
        le=20,
        description="cross-validation: k models, each validated on one fold of the training rows (the test "
        "split stays the same); reports mean ± std; the run holds folds/fold-1 … fold-k",
    )

    @field_validator("report_to")
    @classmethod
    def _trackers_once(cls, value: list[str]) -> list[str]:
        return list(
            dict.fromkeys(value)
        )  # that they are installed is checked when a run starts (train.check_setup)


class GenerationConfig(Section):
    max_new_tokens: int = Field(128, ge=1, le=8192)
    do_sample: bool = Field(False, description="false: greedy decoding (reproducible)")
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    repetition_penalty: float = Field(
        1.0,
        ge=1.0,
        le=2.0,
        description="> 1 discourages the loops small models fall into under greedy decoding",
    )
    prompts: int = Field(64, ge=0, description="held-out prompts answered by base and tuned for ROUGE/BLEU")
    samples_in_report: int = Field(8, ge=0, description="answers shown side by side in the report")
    batch_size: int = Field(16, ge=1)


class ReferenceConfig(Section):
    """A dataset of an ability the model had before tuning, scored before and after (forgetting check)."""

    data: str | list[str] = Field(
        description="bundled:<name>, a file, a folder saved by datasets, a glob, or a list of them"
    )
    kind: Literal["auto", "perplexity", "probe"] = Field(
        "auto",
        description="perplexity: language-model perplexity (sft, seq2seq); probe: cross-validated logistic "
        "regression on the frozen body's mean-pooled embeddings, needs labels (classify, sft); "
        "auto: probe for classify, perplexity otherwise",
    )
    name: str | None = Field(None, description="shown in the report; default: the file stem")
    text_column: str | None = Field(None, description="default: the bundled dataset's, else 'text'")
    label_column: str | None = Field(None, description="probe: default the bundled dataset's, else 'label'")
    separator: str | None = Field(None, description="one character, or 'tab'; default from the file suffix")
    columns: list[str] | None = Field(None, description="column names of a delimited file without a header")
    max_rows: int = Field(500, ge=2, description="a seeded sample of this many rows keeps the check cheap")
    threshold: float = Field(
        0.10,
        gt=0,
        description="relative worsening flagged as catastrophic forgetting: 0.10 = perplexity up by more "
        "than 10%, or probe accuracy down by more than 10% of its value before tuning",
    )

    _one_character = field_validator("separator")(DataConfig._one_character.__func__)


class EvaluationConfig(Section):
    metric: str | None = Field(
        None, description="validation metric for early stopping and the best checkpoint; default per task"
    )
    baselines: list[Literal["base", "probe"]] | None = Field(
        None, description="base: the untuned model; probe (classify): a linear probe on frozen embeddings"
    )
    metrics: list[str] | None = Field(
        None,
        description="the metrics report.html's test table shows, each with its 95% interval; default: "
        "accuracy, macro/weighted/micro F1, MCC, ROC-AUC (classify), loss … chrF (sft, seq2seq)",
    )
    generation: GenerationConfig = GenerationConfig()
    forgetting: list[ReferenceConfig] = Field(
        [], description="reference datasets of the model's original abilities, scored before and after tuning"
    )


class AuditConfig(Section):
    """Checks of the tuned model against the untuned one (lmtune.evaluate.checks): each reads its
    references before the run, measures before and after tuning, and reports the change."""

    checks: list[str] | None = Field(
        None,
        description="the checks to run (lmtune.evaluate.checks.CHECKS); default: every check whose own "
        "settings below are given",
    )
    forgetting: list[ReferenceConfig] = Field(
        [],
        description="forgetting: reference datasets of the model's original abilities, scored before and "
        "after tuning (evaluation.forgetting is the same list in its older place)",
    )

    @field_validator("checks")
    @classmethod
    def _known_checks(cls, value: list[str] | None) -> list[str] | None:
        from lmtune.evaluate.checks import CHECKS  # a torch-free table

        for name in value or []:
            registered(name, CHECKS, "check")
        return value


class ChatConfig(Section):
    template: Literal["auto", "tokenizer", "chatml", "llama3", "alpaca"] = Field(
        "auto",
        description="auto: the tokenizer's own chat template, else chatml (or alpaca without its tokens)",
    )
    system: str | None = Field(None, description="system prompt for conversations that have none")
    train_on: Literal["responses", "all"] = Field(
        "responses", description="loss on assistant turns only, or on every token"
    )
    packing: bool = Field(False, description="pack short examples into model.max_length blocks")


class OutputConfig(Section):
    dir: str = Field("runs", description="parent folder of run directories")
    name: str | None = Field(None, description="run directory name; default: the config file's stem")

    @field_validator("name", mode="before")
    @classmethod
    def _one_plain_folder_name(cls, value):
        if value is None:
            return None
        value = str(value)  # `--set output.name=2024` arrives as an int
        if (
            value in ("", ".", "..")
            or "/" in value
            or "\\" in value
            or value.startswith(".")
            or any(ord(c) < 32 or ord(c) == 127 for c in value)
            or len(value.encode()) > 200
        ):
            raise ValueError(
                "must be one plain folder name (no '/', no control characters, not empty, not starting "
                "with '.', at most 200 bytes)"
            )
        return value

    @field_validator("dir")
    @classmethod
    def _a_folder_path(cls, value: str) -> str:
        if value == "" or any(ord(c) < 32 for c in value):
            raise ValueError("must be a folder path (not empty, no control characters)")
        return value


class SearchConfig(Section):
    """`lmtune tune`: a hyper-parameter search over dotted keys of this config (see lmtune.tune).

    `lmtune train` ignores this section; the space itself is checked by `lmtune tune`, which can
    name a bad dimension and its allowed values in one line."""

    sampler: Literal["grid", "random", "tpe"] = Field(
        "tpe", description="grid: every combination; random; tpe: Optuna's Bayesian sampler"
    )
    trials: int | None = Field(
        None,
        ge=1,
        description="budget: COMPLETE + PRUNED trials, counted across resumes; default: the grid size "
        "(grid), else 20 (or unlimited when timeout_min is set)",
    )
    timeout_min: float | None = Field(
        None, gt=0, description="budget per invocation: no new trial starts after this many minutes"
    )
    seed: int = Field(0, **SEED)
    pruning: Literal["median", "none"] = Field(
        "median",
        description="median: stop a trial whose validation score is worse than the median at that evaluation",
    )
    pruning_startup: int = Field(3, ge=0, description="completed trials before pruning starts")
    storage: str | None = Field(
        None,
        description="Optuna storage URL; default sqlite:///<output.dir>/<output.name>/study.db; a "
        "postgresql:// URL shares one study between machines",
    )
    space: dict[str, dict[str, Any]] = Field(
        {},
        description="dotted config key -> {type: float|int, low, high, log, step} or {type: categorical, choices}",
    )


class Settings(Section):
    """The sections every run has; RunConfig (below) adds each task's own section (Task.config)."""

    task: str = Field("classify", description="a recipe from the task registry")
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    method: MethodConfig = Field(default_factory=lambda: method_config({}))
    training: TrainingConfig = TrainingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    chat: ChatConfig = ChatConfig()
    audit: AuditConfig = AuditConfig()
    output: OutputConfig = OutputConfig()
    search: SearchConfig | None = None

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str) -> str:
        return registered(value, TASKS, "task")

    @model_validator(mode="after")
    def _task_defaults(self) -> Settings:
        """Validation metrics and baselines differ per task: fill the defaults, reject the rest."""
        task = tasks.describe(self)
        metrics, baselines = task.metrics, task.baselines
        e = self.evaluation
        if e.metric is None:
            e.metric = metrics[0]
        elif e.metric not in metrics:
            raise ValueError(
                f"evaluation.metric = {e.metric!r} is not a {self.task}{' multi-label' if self.data.multi_label else ''} "
                f"metric; allowed: {', '.join(metrics)}"
            )
        if e.baselines is None:
            e.baselines = list(baselines)
        elif unknown := [b for b in e.baselines if b not in baselines]:
            raise ValueError(
                f"evaluation.baselines: {unknown} not available for {self.task}; allowed: {', '.join(baselines)}"
            )
        return self

    @model_validator(mode="after")
    def _audit_settings(self) -> Settings:
        """A listed check needs its settings; the forgetting references live in one place."""
        a = self.audit
        if a.forgetting and self.evaluation.forgetting:
            raise ValueError(
                "audit.forgetting and evaluation.forgetting both set: give the references in one of them "
                "(evaluation.forgetting is the older place of audit.forgetting)"
            )
        from lmtune.evaluate.checks import configured

        if missing := [name for name in a.checks or [] if not configured(self, name)]:
            raise ValueError(f"audit.checks: {missing[0]!r} is listed but audit.{missing[0]} is empty")
        return self

    @model_validator(mode="after")
    def _known_metrics(self) -> Settings:
        """evaluation.metrics: names from the metrics registry, of the kinds this task's evaluation scores."""
        if self.evaluation.metrics is None:
            return self
        from lmtune.evaluate.metrics import names_for_task

        allowed = names_for_task(tasks.describe(self))
        if unknown := [m for m in self.evaluation.metrics if m not in allowed]:
            raise ValueError(
                f"evaluation.metrics: unknown metric {unknown[0]!r}; allowed: {', '.join(allowed)}"
            )
        return self

    @model_validator(mode="before")
    @classmethod
    def _multi_label_settings(cls, raw: Any) -> Any:
        """data.multi_label belongs to classify and has no class balancing (a row has several classes);
        checked before the task's defaults, which follow it."""
        data = raw.get("data") if isinstance(raw, dict) else None
        if isinstance(data, dict) and data.get("multi_label") is True:
            if raw.get("task", "classify") != "classify":
                raise ValueError(f"data.multi_label: only for task classify, not {raw.get('task')!r}")
            augment = data.get("augment")
            if isinstance(augment, dict) and augment.get("balance", "none") != "none":
                raise ValueError(
                    "data.augment.balance: not with data.multi_label (a row has several classes); weigh rows "
                    "with data.weight_column instead"
                )
        return raw

    @model_validator(mode="after")
    def _pair_of_two(self) -> Settings:
        d = self.data
        if d.text_pair and not (isinstance(d.text_column, list) and len(d.text_column) == 2):
            raise ValueError(
                f"data.text_pair needs data.text_column to name two columns, got {d.text_column!r} "
                "(e.g. text_column: [sentence1, sentence2])"
            )
        return self

    @model_validator(mode="after")
    def _folds_agree(self) -> Settings:
        """Validation rows come from the folds (data.split.fold, training.cv_folds) or from a file, never both."""
        s, k, validation = self.data.split, self.training.cv_folds, self.data.validation
        if k is not None:
            if validation is not None:
                raise ValueError(
                    f"training.cv_folds = {k} with data.validation = {validation!r}: cross-validation "
                    "validates on folds of the training rows; remove data.validation or training.cv_folds"
                )
            if s.fold is not None or s.folds not in (None, k):
                raise ValueError(
                    f"training.cv_folds = {k} sets data.split.folds and data.split.fold itself; "
                    "remove them (or drop training.cv_folds)"
                )
        elif s.fold is not None:
            if s.folds is None or s.fold >= s.folds:
                allowed = f"0..{s.folds - 1}" if s.folds else "set data.split.folds (≥ 2) first"
                raise ValueError(f"data.split.fold = {s.fold}: no such fold; allowed: {allowed}")
            if validation is not None:
                raise ValueError(
                    f"data.split.fold = {s.fold} with data.validation = {validation!r}: the validation "
                    "split is either a fold or a file; remove one"
                )
        return self


def _task_sections() -> dict[str, Any]:
    """Each task's own section (`preference:` for task preference), declared beside its recipe."""
    sections = {}
    for name in TASKS:
        if (section := tasks.section(name)) is not None:
            sections[name] = (section, Field(default_factory=section, description=section.__doc__))
    return sections


# the run config: the common sections and every task's own
RunConfig = create_model("RunConfig", __base__=Settings, __module__=__name__, **_task_sections())


# ----------------------------------------------------------------------------------- loading


def _describe(error: dict[str, Any], source: str, overridden: dict[str, str]) -> str:
    loc = error["loc"]
    if loc[:1] == ("method",) and len(loc) > 1 and loc[1] in METHODS:  # the union's tag is not a key
        loc = (loc[0], *loc[2:])
    key = ".".join(str(part) for part in loc)
    message = error["msg"].removeprefix("Value error, ")
    if loc == ("method",) and message.startswith("method."):  # names its key itself
        key = message.split(" ", 1)[0]
    # a value given by --set is named as such, not as the YAML file's
    source = next(
        (f"--set {k[:SHOWN]}" for k in overridden if key == k or key.startswith(k + ".")),
        source,
    )
    value = error.get("input")
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{source}: unknown key '{key}'"
    if kind == "missing":
        return f"{source}: missing key '{key}'"
    if not loc or (loc == ("method",) and message.startswith("method.")):  # names its keys itself
        return f"{source}: {message}"
    return f"{source}: {key} = {shorten(value)}: {message}"


def _mapping(raw: Any, source: str) -> dict:
    """The top level must be a mapping; sections left empty (all keys commented out) mean defaults."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise LmtuneError(
            f"{source}: expected a mapping of sections (model, data, …), got {type(raw).__name__}"
        )
    return {
        key: ({} if value is None and key in RunConfig.model_fields else value) for key, value in raw.items()
    }


def parse_value(text: str, where: str = "--set") -> Any:
    """`--set` values are YAML scalars: 3e-5, true, null, [a, b]."""
    value = yamlfile.loads(text, where, lines=False) if text != "" else ""
    # YAML 1.1 reads "3e-5" as a string; accept it as the float a user means.
    if isinstance(value, str):
        try:
            return float(value) if any(c in value for c in "eE.") else value
        except ValueError:
            return value
    return value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply `key.sub=value` overrides to the raw config mapping."""
    for item in overrides:
        if "=" not in item:
            raise LmtuneError(f"--set {shorten(item)}: expected key=value, e.g. training.learning_rate=3e-5")
        key, text = item.split("=", 1)
        if not key.strip():
            raise LmtuneError(f"--set {shorten(item)}: no key before '=', e.g. training.learning_rate=3e-5")
        where = f"--set {key.strip()[:SHOWN]}"
        set_key(raw, key.strip(), parse_value(text, where), where)
    return raw


def set_key(raw: dict, key: str, value: Any, where: str) -> None:
    """Set a dotted key (`training.learning_rate`) in a raw config mapping, creating empty sections."""
    node = raw
    parts = key.split(".")
    if not all(parts):
        raise LmtuneError(f"{where}: {shorten(key)} is not a dotted key such as training.learning_rate")
    *sections, leaf = parts
    for part in sections:
        if node.get(part) is None:  # a section left empty in YAML reads as null
            node[part] = {}
        child = node[part]
        if not isinstance(child, dict):
            raise LmtuneError(f"{where}: '{part}' is a value, not a section")
        node = child
    node[leaf] = value


def _check_values(raw: Any, source: str) -> None:
    """A NUL character cannot be part of any path or name a run uses: name the key that holds one; and
    no config nests deeper than a YAML file may (yamlfile.MAX_DEPTH), whoever built it. Iterative, and
    each container once: a value may hold itself (only Python callers can do that)."""
    stack: list[tuple[Any, str, int]] = [(raw, "", 0)]
    seen: set[int] = set()
    while stack:
        value, key, depth = stack.pop()
        if depth > yamlfile.MAX_DEPTH:
            raise LmtuneError(f"{source}: nested more than {yamlfile.MAX_DEPTH} levels deep")
        if isinstance(value, str):
            if "\0" in value:
                raise LmtuneError(
                    f"{source}: {shorten(key or '(top level)')[1:-1]}: contains a NUL character"
                )
            continue
        if not isinstance(value, dict | list) or id(value) in seen:
            continue
        seen.add(id(value))
        if isinstance(value, dict):
            for k, v in value.items():
                stack.append((k, f"a key in {key or '(top level)'}", depth + 1))
                stack.append((v, f"{key}.{k}" if key else str(k), depth + 1))
        else:
            stack.extend((v, f"{key}[{i}]", depth + 1) for i, v in enumerate(value))


def validate(raw: Any, source: str, overridden: dict[str, str] | None = None) -> RunConfig:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise LmtuneError(
            f"{source}: expected a mapping of sections (model, data, …), got {type(raw).__name__}"
        )
    _check_values(raw, source)
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        lines = [_describe(error, source, overridden or {}) for error in errors[:5]]
        if len(errors) > 5:
            lines.append(f"and {len(errors) - 5} more problems")
        raise LmtuneError("; ".join(lines)) from None


def read_text(path: Path, what: str = "config file") -> str:
    """A small text file the user named, or one line saying why it cannot be read (not just 'missing')."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise LmtuneError(f"{what} '{path}' does not exist") from None
    except OSError as exc:  # a symlink loop, a path through a file, permissions
        raise LmtuneError(f"{what} '{path}': cannot be read ({exc.strerror})") from None
    if stat.S_ISDIR(info.st_mode):
        raise LmtuneError(f"{what} '{path}' is a folder; give the YAML file inside it")
    try:
        with open(path, "rb") as handle:
            data = handle.read(yamlfile.MAX_BYTES + 1)
    except OSError as exc:
        raise LmtuneError(f"{what} '{path}': cannot be read ({exc.strerror})") from None
    if len(data) > yamlfile.MAX_BYTES:
        raise LmtuneError(
            f"{what} '{path}': more than {yamlfile.MAX_BYTES >> 10} KB; a run config is a few KB"
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise LmtuneError(f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x})") from None


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML run config (or the defaults when path is None), apply overrides, validate."""
    raw: Any = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        raw = yamlfile.loads(read_text(path), source)
    raw = _mapping(raw, source)
    overridden = {item.split("=", 1)[0].strip(): item for item in overrides or [] if "=" in item}
    raw = apply_overrides(raw, overrides or [])
    config = validate(raw, source, overridden)
    if config.output.name is None:
        stem = Path(path).stem if path is not None else "quickstart"
        try:
            config.output.name = stem
        except ValidationError:
            raise LmtuneError(
                f"{source}: the file's name {shorten(stem)} cannot name a run folder (output.name: one plain "
                "folder name, not starting with '.'); set output.name"
            ) from None
    return config


def with_reader(config: RunConfig, reader: dict | None, source: str = "eval --data options") -> RunConfig:
    """`config` with the data.* keys that say how to read a file (text_column, separator, …) replaced
    by a command's flags; checked like the same keys of a config file. Unset flags keep the config's."""
    overrides = {key: value for key, value in (reader or {}).items() if value}
    if not overrides:
        return config
    raw = config.model_dump(mode="json")
    return validate({**raw, "data": {**raw["data"], **overrides}}, source)


def dump_config(config: RunConfig) -> str:
    # a run's config.yaml carries its own task's section, not every task's, and never an empty search
    exclude = {name for name in TASKS if name != config.task and tasks.section(name) is not None}
    if config.search is None:
        exclude.add("search")
    return yaml.safe_dump(config.model_dump(mode="json", exclude=exclude or None), sort_keys=False)
