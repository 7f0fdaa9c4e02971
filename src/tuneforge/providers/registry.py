"""Providers by name. Adding a provider means one module and one entry in ``_FACTORIES``."""

from __future__ import annotations

from collections.abc import Callable

from tuneforge.config import Settings
from tuneforge.errors import InvalidInput
from tuneforge.providers.catalog import LOCAL_PROVIDER, OPENAI_PROVIDER
from tuneforge.providers.contract import FineTuningProvider


def _openai(settings: Settings) -> FineTuningProvider:
    from tuneforge.providers.openai import OpenAIProvider

    return OpenAIProvider(settings)


def _local(settings: Settings) -> FineTuningProvider:
    from tuneforge.providers.local.provider import LocalProvider

    return LocalProvider(settings)


_FACTORIES: dict[str, Callable[[Settings], FineTuningProvider]] = {
    LOCAL_PROVIDER: _local,
    OPENAI_PROVIDER: _openai,
}


def provider_names() -> list[str]:
    return sorted(_FACTORIES)


def get_provider(name: str, settings: Settings) -> FineTuningProvider:
    factory = _FACTORIES.get(name)
    if factory is None:
        raise InvalidInput(
            f"Unknown provider {name!r}; available: {', '.join(provider_names())}",
            field="provider",
        )
    return factory(settings)


def providers_serving_here(settings: Settings) -> list[str]:
    """Names of the providers whose models this machine's inference engine serves."""
    return [name for name in provider_names() if get_provider(name, settings).serves_models_here]
