"""Which files answer a request: a fine-tuned model's adapter on its base, or a base model.

Only models of providers that serve here (``serves_models_here``) are served; hosted ones
are called through their provider. Each provider says where its models' files are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from tuneforge.config import Settings
from tuneforge.db.tables.agents import Agent
from tuneforge.db.tables.models import FineTunedModel, ModelStatus
from tuneforge.errors import Conflict, InvalidInput, NotFound
from tuneforge.inference import repository
from tuneforge.inference.engine import ModelSource
from tuneforge.inference.schemas import ModelCard
from tuneforge.jobs.service import job_model_name
from tuneforge.providers.catalog import find_base_model, list_base_models
from tuneforge.providers.contract import (
    ModelUnavailable,
    checkpoint_model_name,
    parse_checkpoint_model_name,
)
from tuneforge.providers.registry import get_provider, providers_serving_here
from tuneforge.store.base_models import pull_command

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
        checkpoint = parse_checkpoint_model_name(reference)
        if checkpoint is not None:
            return _checkpoint_target(session, settings, organization_id, reference, *checkpoint)
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
    if agent.provider not in providers_serving_here(settings):
        raise Conflict(
            f"Agent {agent.id} uses the {agent.provider} model {agent.model}, which is not "
            "served here; call it through its provider"
        )
    try:
        return _base_target(settings, agent.model)
    except (NotFound, InvalidInput) as exc:
        raise Conflict(f"Agent {agent.id} cannot chat: {exc.detail}") from exc


def list_model_cards(session: Session, settings: Settings, organization_id: str) -> list[ModelCard]:
    """Active fine-tuned models of the organization served here, then base models on this disk."""
    serving = providers_serving_here(settings)
    cards = [
        ModelCard(
            id=model.name if model.name.startswith("ft:") else model.id,
            created=int(model.created_at.timestamp()),
            owned_by=organization_id,
            name=model.name,
            base_model=model.base_model,
        )
        for model in repository.list_servable_models(session, organization_id, serving)
    ]
    for job, checkpoint in repository.list_servable_checkpoints(session, organization_id, serving):
        name = checkpoint_model_name(job_model_name(session, job), checkpoint.step)
        created = int(checkpoint.created_at.timestamp())
        cards.append(
            ModelCard(
                id=name,
                created=created,
                owned_by=organization_id,
                name=name,
                base_model=job.base_model,
            )
        )
    for name, path in servable_base_models(settings).items():
        config = path / "config.json"
        if config.is_file():
            created = int(config.stat().st_mtime)
            cards.append(ModelCard(id=name, created=created, owned_by=BASE_MODEL_OWNER, name=name))
    return cards


def servable_base_models(settings: Settings) -> dict[str, Path]:
    """Base models of the providers that serve here, by name (installed or not)."""
    serving = set(providers_serving_here(settings))
    return {
        info.name: info.local_path
        for info in list_base_models(settings)
        if info.provider in serving and info.local_path is not None
    }


def _base_target(settings: Settings, name: str) -> ModelTarget:
    path = servable_base_models(settings).get(name)
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


def _checkpoint_target(
    session: Session,
    settings: Settings,
    organization_id: str,
    reference: str,
    job_id: str,
    step: int,
) -> ModelTarget:
    """A job's kept checkpoint by OpenAI's name for it (``ft:…:ckpt-step-N``)."""
    found = repository.find_job_checkpoint(session, organization_id, job_id, step)
    if found is None:
        raise NotFound(f"Model {reference} not found", field="model")
    job, checkpoint = found
    files = get_provider(job.provider, settings).servable_files(
        checkpoint.model_reference or "", job.base_model
    )
    if files is None:
        raise InvalidInput(
            f"Model {reference} is hosted by {job.provider}; call it through {job.provider}",
            field="model",
        )
    source = ModelSource(reference, files.base_path, files.adapter_path)
    return ModelTarget(public_id=reference, source=source)


def _fine_tuned_target(settings: Settings, model: FineTunedModel) -> ModelTarget:
    provider = get_provider(model.provider, settings)
    files = provider.servable_files(model.provider_model_id, model.base_model)
    if files is None:
        raise InvalidInput(
            f"Model {model.id} is hosted by {model.provider}; call it through {model.provider}",
            field="model",
        )
    source = ModelSource(f"{model.name} ({model.id})", files.base_path, files.adapter_path)
    return ModelTarget(public_id=model.id, source=source, fine_tuned_model_id=model.id)
