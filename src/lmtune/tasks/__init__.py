"""Task recipes, one module each, and the one torch-free description of every task.

`TASKS[name]` is what other modules may ask about a task without importing its recipe (or torch): the
row kind its data pipeline makes, its validation metrics, its baselines, the kinds of score its
evaluation reports, the headline columns of its results table, the forgetting check's kinds, the
torch-free modules that register its own scores and diagnosis rules, and its own config section. A
recipe module provides `prepare(config)` (read and validate everything, no side effects), `train(config,
prepared, run_dir, resume, callbacks)`, `evaluate(run_dir, data, **reader)`, `predictions_on(...)` and
`predict(run_dir, texts)`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType


@dataclass(frozen=True)
class Task:
    module: str  # the recipe
    rows: str  # the reader of its rows (lmtune.data.rows.READERS): labelled, numeric, tokens, generative, …
    metrics: tuple[str, ...]  # evaluation.metric choices (the validation score); the first is the default
    baselines: tuple[str, ...]  # models scored beside the tuned one (evaluation.baselines)
    scores: tuple[str, ...]  # kinds of the metrics registry its evaluation reports (evaluation.metrics)
    columns: tuple[str, ...]  # headline columns of its results: terminal table, cross-validation plot
    forgetting: tuple[str, ...]  # what audit's forgetting check can measure on it; the first is "auto"
    # torch-free modules that register its own metric kinds and diagnosis rules (load_measures)
    measures: tuple[str, ...] = ()
    # "module:Class" of its own config section, a lmtune.sections.Section read under the task's name
    # (`preference:`); lmtune.config gathers these, so a task's settings sit beside its recipe
    config: str | None = None

    @property
    def generative(self) -> bool:
        """Whether its runs answer with text (chat, generate) rather than with labels or numbers."""
        return self.rows in ("generative", "preference")


MULTI_LABEL_COLUMNS = ("micro_f1", "macro_f1", "samples_f1", "subset_accuracy", "hamming_loss")
_GENERATIVE_COLUMNS = ("loss", "perplexity", "rougeL", "bleu", "exact_match", "stop_rate")

TASKS: dict[str, Task] = {
    "classify": Task(
        "lmtune.tasks.classify",
        rows="labelled",
        metrics=("f1_macro", "accuracy", "precision_macro", "recall_macro", "loss"),
        baselines=("base", "probe"),
        scores=("classify",),
        # one label per row fills the first four, a set of labels (data.multi_label) the rest; a column no
        # model has is left out
        columns=(
            "accuracy",
            "precision_macro",
            "recall_macro",
            "f1_macro",
            *MULTI_LABEL_COLUMNS,
        ),
        # an encoder classifier has no language-model head
        forgetting=("probe",),
        measures=("lmtune.tasks.multilabel_measures",),
    ),
    "regress": Task(
        "lmtune.tasks.regress",
        rows="numeric",
        metrics=("spearman", "pearson", "mse", "mae", "loss"),
        baselines=("base", "probe"),
        scores=("regress",),
        columns=("mse", "mae", "pearson", "spearman"),
        forgetting=("probe",),
        measures=("lmtune.tasks.regress_measures",),
        config="lmtune.tasks.regress_config:RegressConfig",
    ),
    "token_classify": Task(
        "lmtune.tasks.token_classify",
        rows="tokens",
        metrics=(
            "entity_f1",
            "entity_macro_f1",
            "entity_precision",
            "entity_recall",
            "token_accuracy",
            "loss",
        ),
        baselines=("base", "probe"),
        scores=("entities",),
        columns=("entity_precision", "entity_recall", "entity_f1", "entity_macro_f1", "token_accuracy"),
        forgetting=("probe",),
        measures=("lmtune.tasks.token_measures",),
        config="lmtune.tasks.token_classify_config:TokenClassifyConfig",
    ),
    "qa": Task(
        "lmtune.tasks.qa",
        rows="qa",
        metrics=("f1", "em", "loss"),
        baselines=("base", "probe"),
        scores=("qa",),
        columns=("em", "f1"),
        forgetting=("probe",),
        measures=("lmtune.tasks.qa_measures",),
        config="lmtune.tasks.qa_config:QaConfig",
    ),
    "sft": Task(
        "lmtune.tasks.sft",
        rows="generative",
        metrics=("loss",),
        baselines=("base",),
        scores=("generate", "lm"),
        columns=_GENERATIVE_COLUMNS,
        forgetting=("perplexity", "probe"),
    ),
    "seq2seq": Task(
        "lmtune.tasks.seq2seq",
        rows="generative",
        metrics=("loss",),
        baselines=("base",),
        scores=("generate", "lm"),
        columns=_GENERATIVE_COLUMNS,
        forgetting=("perplexity",),  # a seq2seq body needs decoder inputs to give hidden states
    ),
    "preference": Task(
        "lmtune.tasks.preference",
        rows="preference",
        metrics=("loss",),
        baselines=("base",),
        scores=("preference", "unpaired_preference", "policy_kl"),
        # pairs fill the first two, unpaired (KTO) answers the next two; a column no model has is left out
        columns=(
            "preference_accuracy",
            "implicit_reward_accuracy",
            "desirable_auc",
            "implicit_reward_auc",
            "kl_to_reference",
            "stop_rate",
        ),
        forgetting=("perplexity", "probe"),  # a decoder, as in sft
        measures=("lmtune.tasks.preference_measures",),
        config="lmtune.tasks.preference_config:PreferenceConfig",
    ),
}


# classify with data.multi_label: a set of labels per row, with its own reader, scores and validation metrics
MULTI_LABEL = Task(
    "lmtune.tasks.classify",
    rows="multilabel",
    metrics=("micro_f1", "macro_f1", "samples_f1", "subset_accuracy", "hamming_loss", "loss"),
    baselines=("base", "probe"),
    scores=("multilabel",),
    columns=MULTI_LABEL_COLUMNS,
    forgetting=("probe",),
    measures=("lmtune.tasks.multilabel_measures",),
)


def describe(config) -> Task:
    """A run config's task: TASKS[config.task], or MULTI_LABEL for classify with data.multi_label."""
    return MULTI_LABEL if config.task == "classify" and config.data.multi_label else TASKS[config.task]


def load_measures() -> None:
    """Import every task's measures modules (once): they register their metric kinds and diagnosis
    rules, so the registries know every task's scores without a table of their own."""
    for module in dict.fromkeys(m for task in TASKS.values() for m in task.measures):
        importlib.import_module(module)


def section(task: str) -> type | None:
    """The task's own config section class (Task.config), imported torch-free; None when it has none."""
    if TASKS[task].config is None:
        return None
    module, name = TASKS[task].config.split(":")
    return getattr(importlib.import_module(module), name)


def recipe(task: str) -> ModuleType:
    return importlib.import_module(TASKS[task].module)
