"""The recipe contract: what every task module provides, what its training returns, and the Predictor a
finished run is used through.

Torch-free to import (the Predictor's methods call into the recipe, which imports torch), so that the
CLI, the search and cross-validation can name these types without loading a model stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NotRequired, Protocol, TypedDict

if TYPE_CHECKING:
    from lmtune.config import RunConfig


class TrainResult(TypedDict):
    """What `train` returns and writes as metrics.json. Every task fills these keys; a task adds its own
    (classify: labels, truncated_train_texts; sft/seq2seq: train_tokens, packing, skipped_records …)."""

    test: dict[str, dict]  # model (base, probe, tuned) → its test scores, with "ci" intervals
    best_validation: float | None  # the best evaluation.metric on validation; None without validation
    best_checkpoint: str | None
    steps: int
    train_runtime_s: float | None
    parameters: dict[str, int]  # trainable, total
    rows: dict[str, int]  # train / validation / test
    forgetting: list[dict]  # the forgetting check's results (empty when none was asked for)
    train_samples_per_second: NotRequired[float | None]
    train_tokens_per_second: NotRequired[float]


class Recipe(Protocol):
    """A task module (lmtune.tasks.<name>): prepare reads and checks everything before any directory
    exists; train writes a run into `run_dir` (a .partial the caller publishes); load opens a finished
    run; evaluate / predictions_on score one on its test split or a file read with `reader` flags."""

    def prepare(self, config: RunConfig) -> Any: ...

    def train(
        self, config: RunConfig, prepared: Any, run_dir: Path, resume: bool = False, callbacks: tuple = ()
    ) -> TrainResult: ...

    def load(self, run_dir: Path) -> Predictor: ...

    def evaluate(self, run_dir: Path, data: str | None = None, **reader) -> dict: ...

    def predictions_on(
        self, run_dir: Path, data: str | None = None, *, base: bool = False, **reader
    ) -> dict: ...


@dataclass
class Predictor:
    """A finished run loaded once, answering many calls: `predict`, `chat`, `eval`, `export` (and the
    coming server) all use it. `labels` for classifiers; `stop` (the end-of-turn) for generative runs;
    `info` holds a regressor's target (its column, and the mean and sd it was standardised with)."""

    task: str
    config: RunConfig
    model: Any
    tokenizer: Any
    info: dict  # model/lmtune_model.json: base model, method, adapter, attention, template, stop
    labels: list[str] | None = None
    stop: Any = None  # models.chat_template.Stop
    run_dir: Path | None = None
    _recipe: Any = field(default=None, repr=False)

    @classmethod
    def open(cls, run_dir: Path) -> Predictor:
        """The run's model, tokenizer and settings, from its directory alone (checked by read_run)."""
        from lmtune.runs import read_run
        from lmtune.tasks import recipe

        module = recipe(read_run(run_dir)["task"])
        predictor = module.load(run_dir)
        predictor._recipe, predictor.run_dir = module, run_dir
        return predictor

    @property
    def generative(self) -> bool:
        from lmtune.tasks import TASKS

        return TASKS[self.task].generative

    @property
    def template(self) -> str | None:
        """The chat template the run trained with (None: plain text or an encoder-decoder)."""
        return self.info.get("template")

    @property
    def max_length(self) -> int:
        return self.config.model.max_length

    def predict(self, texts: list[str]) -> list[dict]:
        """A label with its probabilities per text (classify), or an answer per prompt (generative)."""
        return self._recipe.predict_with(self, texts)

    def generate(self, text: str, history: list[dict] | None = None, streamer=None) -> dict:
        """The answer to one user turn after an optional history, rendered as in training."""
        if not self.generative:
            raise _not_generative(self)
        prompt = self._recipe.prompt_ids(self, text, history)
        return self._recipe.answer(self, [prompt], [text], streamer=streamer)[0]

    def describe(self) -> str:
        return f"{self.info.get('method')} on {self.info.get('base_model')}"


def _not_generative(predictor: Predictor):
    from lmtune.errors import LmtuneError
    from lmtune.tasks import TASKS

    generative = [name for name, task in TASKS.items() if task.generative]
    return LmtuneError(
        f"{predictor.run_dir}: a {predictor.task} run answers with labels or numbers; chat and generate need a "
        f"generative run (task {', '.join(generative[:-1])} or {generative[-1]})"
    )
