"""ia3: (IA)^3, learned rescaling vectors on keys, values and the MLP (peft)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lmtune.models.methods import Method, MethodSettings, register
from lmtune.sections import Section


class Ia3Config(Section):
    target_modules: list[str] | Literal["auto"] = Field(
        "auto", description="auto: attention key/value and the MLP down projection, per architecture"
    )


class Ia3Settings(MethodSettings):
    name: Literal["ia3"] = "ia3"
    ia3: Ia3Config = Ia3Config()


def apply(model, settings: Ia3Settings):
    """peft's per-architecture defaults for auto; listed names must exist."""
    from peft import IA3Config
    from peft.utils import constants

    from lmtune.errors import LmtuneError
    from lmtune.models.methods.common import check_names, linear_names, peft_model, scope, task_type

    defaults = constants.TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING
    feedforward_defaults = constants.TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING
    root, head = scope(model)
    model_type, wanted = model.config.model_type, settings.ia3.target_modules
    if wanted == "auto" and model_type not in defaults:
        raise LmtuneError(
            f"method.ia3.target_modules = 'auto' has no default for model type '{model_type}'; "
            f"list them, from the linear layers: {', '.join(linear_names(root))}"
        )
    if wanted == "auto":
        targets, feedforward = defaults[model_type], feedforward_defaults[model_type]
    else:
        check_names(root, list(wanted), "method.ia3.target_modules")
        targets = list(wanted)
        feedforward = [t for t in targets if t in feedforward_defaults.get(model_type, [])]
    peft_config = IA3Config(
        task_type=task_type(model),
        target_modules=list(targets),
        feedforward_modules=list(feedforward),
        modules_to_save=head or None,
    )
    return peft_model(model, peft_config)


register(Method("learned rescaling vectors on keys, values and the MLP (peft)", Ia3Settings, apply))
