"""Which files answer a request: a fine-tuned model's adapter on its base, or a base model.

Only local models are served here; OpenAI-hosted ones are called through OpenAI itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from tuneforge.agents.tables import Agent
from tuneforge.config import Settings
from tuneforge.errors import Conflict, InvalidInput, NotFound
from tuneforge.inference import repository
from tuneforge.inference.schemas import ModelCard
from tuneforge.models.tables import FineTunedModel, ModelStatus
from tuneforge.providers.catalog import find_base_model, list_base_models
from tuneforge.providers.local.inference import ModelSource, ModelUnavailable
from tuneforge.providers.local.jobdir import ADAPTER_DIR, jobs_root
from tuneforge.providers.local.provider import local_model_files
from tuneforge.providers.local.store import list_store_models, pull_command

LOCAL_PROVIDER = "local"
BASE_MODEL_OWNER = "tuneforge"


@dataclass(frozen=True)
class ModelTarget:
    """A resolved model; ``fine_tuned_model_id`` is set when usage should be recorded."""

    public_id: str
    source: ModelSource
    fine_tuned_model_id: str | None = None


def resolve_model(
    session: Session, settings: Settings, organization_id: str, reference: str
) -> ModelTarget:
    """``model`` of an OpenAI-style request: a fine-tuned model's id or name, else a base model."""
    matches = repository.find_models_by_reference(session, organization_id, reference)
    if not matches:
        return _base_target(settings, reference)
    model = matches[0]
    if model.status != ModelStatus.ACTIVE:
        raise NotFound(f"Model {reference} is archived; unarchive it to use it", field="model")
    return _fine_tuned_target(settings, model)


def resolve_agent_model(session: Session, settings: Settings, agent: Agent) -> ModelTarget:
    """The agent's deployed fine-tuned model, else its base model; a broken link is a 409."""
    if agent.fine_tuned_model_id is not None:
        matches = repository.find_models_by_reference(
            session, agent.organization_id, agent.fine_tuned_model_id
        )
        model = matches[0] if matches else None
        if model is None or model.status != ModelStatus.ACTIVE:
            state = "deleted" if model is None else "archived"
            raise Conflict(
                f"Agent {agent.id} is deployed with model {agent.fine_tuned_model_id}, which is "
                f"{state}; deploy another model to the agent"
            )
        return _fine_tuned_target(settings, model)
    if agent.provider != LOCAL_PROVIDER:
        raise Conflict(
            f"Agent {agent.id} uses the {agent.provider} model {agent.model}; "
            "TuneForge serves local models only"
        )
    try:
        return _base_target(settings, agent.model)
    except (NotFound, InvalidInput) as exc:
        raise Conflict(f"Agent {agent.id} cannot chat: {exc.detail}") from exc


def list_model_cards(session: Session, settings: Settings, organization_id: str) -> list[ModelCard]:
    """Active local fine-tuned models of the organization, then base models on this disk."""
    cards = [
        ModelCard(
            id=model.id,
            created=int(model.created_at.timestamp()),
            owned_by=organization_id,
            name=model.name,
            base_model=model.base_model,
        )
        for model in repository.list_servable_models(session, organization_id, LOCAL_PROVIDER)
    ]
    for name, path in local_base_models(settings).items():
        config = path / "config.json"
        if config.is_file():
            created = int(config.stat().st_mtime)
            cards.append(ModelCard(id=name, created=created, owned_by=BASE_MODEL_OWNER, name=name))
    return cards


def local_base_models(settings: Settings) -> dict[str, Path]:
    """The catalog's local models (installed or not) and the models registered in the store."""
    models = {
        info.name: info.local_path
        for info in list_base_models(settings)
        if info.provider == LOCAL_PROVIDER and info.local_path is not None
    }
    for stored in list_store_models(settings):
        models.setdefault(stored.name, stored.path)
    return models


def _base_target(settings: Settings, name: str) -> ModelTarget:
    path = local_base_models(settings).get(name)
    if path is None:
        try:
            provider = find_base_model(name, settings).provider
        except InvalidInput:
            raise NotFound(f"Model {name} not found", field="model") from None
        raise InvalidInput(
            f"Model {name} is hosted by {provider}; TuneForge serves local models only",
            field="model",
        )
    if not (path / "config.json").is_file():
        raise ModelUnavailable(
            f"Base model {name} is not installed in the model store; run `{pull_command(name)}`"
        )
    return ModelTarget(public_id=name, source=ModelSource(name, path))


def _fine_tuned_target(settings: Settings, model: FineTunedModel) -> ModelTarget:
    if model.provider != LOCAL_PROVIDER:
        raise InvalidInput(
            f"Model {model.id} is hosted by {model.provider}; call it through {model.provider}",
            field="model",
        )
    base_path, adapter_path = fine_tuned_files(model, settings)
    source = ModelSource(f"{model.name} ({model.id})", base_path, adapter_path)
    return ModelTarget(public_id=model.id, source=source, fine_tuned_model_id=model.id)


def fine_tuned_files(model: FineTunedModel, settings: Settings) -> tuple[Path, Path]:
    """Base model and adapter directories: a path reference is the adapter itself, a model
    name is looked up in its training job's directory, else the job's default adapter place."""
    reference = Path(model.provider_model_id)
    for candidate in (reference, settings.data_dir / reference):
        if candidate.is_dir():
            return _base_path(model, settings, candidate), candidate
    try:
        return local_model_files(settings, model.provider_model_id)
    except (InvalidInput, OSError, ValueError, TypeError):
        adapter = jobs_root(settings) / model.job_id / ADAPTER_DIR
        return _base_path(model, settings, adapter), adapter


def _base_path(model: FineTunedModel, settings: Settings, adapter: Path) -> Path:
    """The named base model's directory, else the one the adapter says it was trained on."""
    known = local_base_models(settings).get(model.base_model)
    if known is not None:
        return known
    try:
        config = json.loads((adapter / "adapter_config.json").read_text())
    except (OSError, ValueError):
        config = {}
    trained_on = config.get("base_model_name_or_path")
    if isinstance(trained_on, str) and Path(trained_on).is_dir():
        return Path(trained_on)
    raise ModelUnavailable(
        f"Model {model.id}: its base model {model.base_model} is not in the local model store"
    )
