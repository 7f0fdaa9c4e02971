"""The base models TuneForge can fine-tune, as data.

Validation needs a model's context length and tokenizer before any job exists, and the
job wizard needs the list; keeping both in one table means adding a model is one entry.
Context lengths of OpenAI models are their documented maximum *training example* length,
which is what truncation and billing are measured against.
"""

from __future__ import annotations

from tuneforge.config import Settings
from tuneforge.errors import InvalidInput
from tuneforge.providers.contract import MODEL_TOKENIZER, BaseModelInfo

DEFAULT_VALIDATION_MODEL = "gpt-4o-mini-2024-07-18"
# The one place provider names are spelled; everything else asks the provider itself.
LOCAL_PROVIDER = "local"
OPENAI_PROVIDER = "openai"
DEFAULT_PROVIDER = LOCAL_PROVIDER


_OPENAI_MODELS: tuple[BaseModelInfo, ...] = (
    BaseModelInfo("gpt-4o-2024-08-06", OPENAI_PROVIDER, 65_536, "o200k_base", reads_images=True),
    BaseModelInfo("gpt-4o-mini-2024-07-18", OPENAI_PROVIDER, 65_536, "o200k_base"),
    BaseModelInfo("gpt-4.1-2025-04-14", OPENAI_PROVIDER, 65_536, "o200k_base", reads_images=True),
    BaseModelInfo("gpt-4.1-mini-2025-04-14", OPENAI_PROVIDER, 65_536, "o200k_base"),
    BaseModelInfo("gpt-4.1-nano-2025-04-14", OPENAI_PROVIDER, 65_536, "o200k_base"),
    BaseModelInfo("gpt-3.5-turbo-0125", OPENAI_PROVIDER, 16_385, "cl100k_base"),
)

# (name, context length, parameter count); each lives in a directory of that name in the
# model store, so the list depends on settings.
_LOCAL_MODELS: tuple[tuple[str, int, int], ...] = (("smollm2-135m-instruct", 8_192, 134_515_008),)


def list_base_models(settings: Settings) -> list[BaseModelInfo]:
    """OpenAI's fine-tunable models, the built-in local ones, and local models registered here."""
    from tuneforge.store.base_models import list_store_models

    builtin_names = {name for name, _, _ in _LOCAL_MODELS}
    registered = [
        BaseModelInfo(
            stored.name,
            LOCAL_PROVIDER,
            stored.context_length,
            MODEL_TOKENIZER,
            parameter_count=stored.parameter_count,
            local_path=stored.path,
        )
        for stored in list_store_models(settings)
        if stored.name not in builtin_names
    ]
    local = [
        BaseModelInfo(
            name,
            LOCAL_PROVIDER,
            context_length,
            MODEL_TOKENIZER,
            parameter_count=parameters,
            local_path=settings.model_store_dir / name,
        )
        for name, context_length, parameters in _LOCAL_MODELS
    ]
    return [*_OPENAI_MODELS, *local, *registered]


def find_base_model(name: str, settings: Settings) -> BaseModelInfo:
    models = list_base_models(settings)
    for model in models:
        if model.name == name:
            return model
    known = ", ".join(model.name for model in models)
    raise InvalidInput(f"model: unknown base model {name!r}; known models: {known}", field="model")


def training_price_per_million(name: str, settings: Settings) -> float | None:
    """USD per million training tokens; None when no price is configured (local models)."""
    return settings.training_prices_per_million_tokens.get(name)


def training_cost_usd(billed_tokens: int, price_per_million: float | None) -> float | None:
    """What training on ``billed_tokens`` costs; None when the model has no price."""
    if price_per_million is None:
        return None
    return round(billed_tokens / 1_000_000 * price_per_million, 6)
