"""Training hyperparameters: what a user may ask for, and what "auto" becomes.

A job stores the values as requested (``"auto"`` included), because that is what the
provider is sent: OpenAI resolves "auto" itself. The API also shows them resolved with
OpenAI's published rules so a user sees the numbers training will use before it starts:
epochs by the cookbook heuristic the dataset report uses, batch size as ~0.2% of the
training examples capped at 256, and a learning-rate multiplier of 1 (no scaling).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tuneforge.datasets.validation import TARGET_EPOCHS, default_epochs
from tuneforge.errors import InvalidInput

AUTO = "auto"
AUTO_BATCH_FRACTION = 0.002
MAX_BATCH_SIZE = 256
AUTO_LEARNING_RATE_MULTIPLIER = 1.0

Auto = Literal["auto"]
EpochCount = Auto | Annotated[int, Field(strict=True, ge=1, le=50)]
BatchSize = Auto | Annotated[int, Field(strict=True, ge=1, le=MAX_BATCH_SIZE)]
LearningRateMultiplier = Auto | Annotated[float, Field(strict=True, gt=0, le=10)]


class Hyperparameters(BaseModel):
    """Requested values; each is a number in range or "auto"."""

    model_config = ConfigDict(extra="forbid")

    n_epochs: EpochCount = Field(default=AUTO, description='1 to 50, or "auto".')
    batch_size: BatchSize = Field(default=AUTO, description='1 to 256, or "auto".')
    learning_rate_multiplier: LearningRateMultiplier = Field(
        default=AUTO, description='Above 0 up to 10, or "auto".'
    )


class RequestedHyperparameters(Hyperparameters):
    """The shared knobs, plus any a provider adds (the job's provider checks those)."""

    model_config = ConfigDict(extra="allow")


def require_shared_only(provider: str, requested: dict[str, Any]) -> None:
    """For providers that take only the shared knobs: name the first one they do not take."""
    extra = sorted(set(requested) - set(Hyperparameters.model_fields))
    if extra:
        raise InvalidInput(
            f"hyperparameters.{extra[0]}: the {provider} provider does not take it; it takes "
            f"{', '.join(Hyperparameters.model_fields)}",
            field=f"hyperparameters.{extra[0]}",
        )


class ResolvedHyperparameters(BaseModel):
    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float


def shared_hyperparameters(stored: dict[str, Any]) -> Hyperparameters:
    """The shared values of a job's stored hyperparameters, ignoring provider-specific extras."""
    return Hyperparameters.model_validate(
        {name: value for name, value in stored.items() if name in Hyperparameters.model_fields}
    )


def resolve_epochs(requested: int | str, train_examples: int) -> int:
    """The epoch count training uses: as requested, else the report's heuristic."""
    if isinstance(requested, int):
        return requested
    return default_epochs(train_examples) or TARGET_EPOCHS


def resolve_hyperparameters(
    requested: Hyperparameters, train_examples: int
) -> ResolvedHyperparameters:
    batch_size = requested.batch_size
    if not isinstance(batch_size, int):
        batch_size = max(1, min(MAX_BATCH_SIZE, round(train_examples * AUTO_BATCH_FRACTION)))
    multiplier = requested.learning_rate_multiplier
    if not isinstance(multiplier, float):
        multiplier = AUTO_LEARNING_RATE_MULTIPLIER
    return ResolvedHyperparameters(
        n_epochs=resolve_epochs(requested.n_epochs, train_examples),
        batch_size=batch_size,
        learning_rate_multiplier=multiplier,
    )
