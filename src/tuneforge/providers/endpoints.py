"""``GET /fine-tuning/base-models``: what every provider can fine-tune, and what is ready here."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from tuneforge.auth.deps import PrincipalDep
from tuneforge.errors import Unauthorized, error_responses
from tuneforge.providers.catalog import list_base_models, training_price_per_million
from tuneforge.providers.registry import get_provider
from tuneforge.state import SettingsDep

router = APIRouter(prefix="/fine-tuning/base-models", tags=["base models"])


class BaseModelOut(BaseModel):
    name: str
    provider: str
    context_length: int
    parameter_count: int | None
    price_per_million_training_tokens: float | None
    pricing: str
    ready: bool
    ready_detail: str


@router.get(
    "",
    summary="List every provider's base models with context, size, price and readiness",
    response_model=list[BaseModelOut],
    responses=error_responses(Unauthorized),
)
def list_models(_: PrincipalDep, settings: SettingsDep) -> list[BaseModelOut]:
    models = []
    for model in list_base_models(settings):
        price = training_price_per_million(model.name, settings)
        provider = get_provider(model.provider, settings)
        readiness = provider.readiness(model)
        if provider.serves_models_here:
            pricing = "local"
        else:
            pricing = "not priced" if price is None else f"${price:g} per 1M training tokens"
        models.append(
            BaseModelOut(
                name=model.name,
                provider=model.provider,
                context_length=model.context_length,
                parameter_count=model.parameter_count,
                price_per_million_training_tokens=price,
                pricing=pricing,
                ready=readiness.ready,
                ready_detail=readiness.detail,
            )
        )
    return models
