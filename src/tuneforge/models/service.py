"""Fine-tuned models: created once per succeeded job (and on request from any checkpoint a
finished job kept), deployed to agents, archived, deleted.

A model's ``name`` is a label, not a key: it is not unique. Agents and the API address a
model by its id, and the default name (the provider's model id) is already distinct per
job; refusing duplicate labels would need a partial unique index to be more than a race.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from tuneforge.config import Settings
from tuneforge.db.base import utcnow
from tuneforge.db.scoping import get_owned
from tuneforge.db.tables.agents import Agent
from tuneforge.db.tables.jobs import FineTuningJob, JobStatus
from tuneforge.db.tables.models import FineTunedModel, ModelStatus
from tuneforge.errors import Conflict
from tuneforge.jobs import service as jobs
from tuneforge.jobs.states import TERMINAL_STATUSES
from tuneforge.models import repository
from tuneforge.models.schemas import ModelUpdate
from tuneforge.providers.registry import get_provider


@dataclass(frozen=True)
class ModelWithAgents:
    """A model and the live agents it serves, which every model response shows."""

    model: FineTunedModel
    agents: list[Agent]


def create_model_from_job(session: Session, job: FineTuningJob) -> FineTunedModel:
    """The job's model, created on its first call; later or concurrent calls get the same row.

    Called by the worker in the transaction that marks the job succeeded (or after it).
    A job's model stays its one model even once soft-deleted, so this returns that row too.
    """
    if job.status != JobStatus.SUCCEEDED:
        raise Conflict(f"Job {job.id} has not succeeded (status {job.status.value})")
    if not job.fine_tuned_model_name:
        raise Conflict(f"Job {job.id} succeeded without a fine-tuned model name")
    existing = repository.find_model_for_job(session, job.organization_id, job.id)
    if existing is not None:
        return existing
    repository.insert_model_unless_job_has_one(
        session,
        {
            "organization_id": job.organization_id,
            "job_id": job.id,
            "dataset_id": job.dataset_id,
            "name": job.fine_tuned_model_name,
            "provider": job.provider,
            "base_model": job.base_model,
            "provider_model_id": job.fine_tuned_model_name,
            "status": ModelStatus.ACTIVE,
            "metrics_summary": {
                "trained_tokens": job.trained_tokens,
                "metrics": dict(job.latest_metrics or {}),
            },
        },
    )
    created = repository.find_model_for_job(session, job.organization_id, job.id)
    if created is None:  # our insert, or the row that beat it, is always visible here
        raise RuntimeError(f"Model for job {job.id} is missing right after its insert")
    return created


def create_model_from_checkpoint(
    session: Session, settings: Settings, organization_id: str, job_id: str, step: int
) -> tuple[FineTunedModel, bool]:
    """A model served from one of a finished job's kept checkpoints, and whether it is new.

    Asking twice returns the same model. Only finished jobs qualify: a running trainer
    prunes its older checkpoints, which would leave the model without files.
    """
    job = jobs.get_job(session, organization_id, job_id)
    if job.status not in TERMINAL_STATUSES:
        raise Conflict(
            f"Job {job.id} is {job.status.value}; models are made from checkpoints once it "
            "has finished",
            status=job.status.value,
        )
    checkpoint = jobs.kept_checkpoint(session, job, step)
    existing = repository.find_model_for_job(session, organization_id, job.id, step)
    if existing is not None:
        return existing, False
    provider = get_provider(job.provider, settings)
    files = provider.servable_files(checkpoint.model_reference, job.base_model)
    if files is not None and not (files.adapter_path and files.adapter_path.is_dir()):
        raise Conflict(f"The files of job {job.id}'s checkpoint at step {step} are gone")
    label = job.fine_tuned_model_name or job.id
    repository.insert_model_unless_job_has_one(
        session,
        {
            "organization_id": organization_id,
            "job_id": job.id,
            "checkpoint_step": step,
            "dataset_id": job.dataset_id,
            "name": f"{label}:ckpt-step-{step}",
            "provider": job.provider,
            "base_model": job.base_model,
            "provider_model_id": checkpoint.model_reference,
            "status": ModelStatus.ACTIVE,
            "metrics_summary": {"metrics": dict(checkpoint.metrics or {})},
        },
    )
    created = repository.find_model_for_job(session, organization_id, job.id, step)
    if created is None:
        raise RuntimeError(f"Model for job {job.id} step {step} is missing right after its insert")
    return created, True


def checkpoint_models(session: Session, organization_id: str, job_id: str) -> dict[int, str]:
    """The models made from a job's checkpoints: step to model id."""
    return repository.checkpoint_models(session, organization_id, job_id)


def list_models(
    session: Session,
    organization_id: str,
    *,
    status: ModelStatus | None = None,
    deployed: bool | None = None,
    base_model: str | None = None,
    limit: int = 20,
    offset: int = 0,
) -> tuple[list[ModelWithAgents], int]:
    models, total = repository.list_models(
        session,
        organization_id,
        status=status,
        deployed=deployed,
        base_model=base_model,
        limit=limit,
        offset=offset,
    )
    agents = repository.agents_serving(session, organization_id, [m.id for m in models])
    return [ModelWithAgents(model, agents[model.id]) for model in models], total


def get_model(session: Session, organization_id: str, model_id: str) -> ModelWithAgents:
    model = repository.get_model(session, organization_id, model_id)
    return _with_agents(session, model)


def update_model(
    session: Session, organization_id: str, model_id: str, request: ModelUpdate
) -> ModelWithAgents:
    model = repository.get_model(session, organization_id, model_id)
    for field, value in request.model_dump(exclude_unset=True).items():
        setattr(model, field, value)
    session.flush()
    return _with_agents(session, model)


def deploy_model(
    session: Session, organization_id: str, model_id: str, agent_id: str
) -> ModelWithAgents:
    """Point the agent at the model; one model may serve many agents, an agent one model.

    The model row is locked so a concurrent archive or delete cannot slip in between.
    """
    model = repository.get_model(session, organization_id, model_id, for_update=True)
    if model.status == ModelStatus.ARCHIVED:
        raise Conflict(f"Fine-tuned model {model.id} is archived; unarchive it to deploy")
    agent = get_owned(session, Agent, agent_id, organization_id, label="Agent")
    agent.model = model.id
    agent.fine_tuned_model_id = model.id
    agent.provider = model.provider
    session.flush()
    return _with_agents(session, model)


def undeploy_model(
    session: Session, organization_id: str, model_id: str, agent_id: str | None = None
) -> ModelWithAgents:
    """Put the agent (or, with no agent, every agent on this model) back on the base model."""
    model = repository.get_model(session, organization_id, model_id, for_update=True)
    if agent_id is None:
        agents = repository.agents_serving(session, organization_id, [model.id])[model.id]
    else:
        agent = get_owned(session, Agent, agent_id, organization_id, label="Agent")
        if agent.fine_tuned_model_id != model.id:
            raise Conflict(f"Agent {agent.id} is not deployed with fine-tuned model {model.id}")
        agents = [agent]
    for agent in agents:
        agent.model = model.base_model
        agent.fine_tuned_model_id = None
    session.flush()
    return _with_agents(session, model)


def archive_model(session: Session, organization_id: str, model_id: str) -> ModelWithAgents:
    """Retire a model: hidden from deploys until unarchived; refused while it serves agents."""
    model = repository.get_model(session, organization_id, model_id, for_update=True)
    _refuse_while_deployed(session, model, "archive")
    model.status = ModelStatus.ARCHIVED
    session.flush()
    return ModelWithAgents(model, [])


def unarchive_model(session: Session, organization_id: str, model_id: str) -> ModelWithAgents:
    model = repository.get_model(session, organization_id, model_id, for_update=True)
    model.status = ModelStatus.ACTIVE
    session.flush()
    return _with_agents(session, model)


def delete_model(session: Session, organization_id: str, model_id: str) -> FineTunedModel:
    """Soft delete, refused while any live agent is deployed with the model."""
    model = repository.get_model(session, organization_id, model_id, for_update=True)
    _refuse_while_deployed(session, model, "delete")
    model.deleted_at = utcnow()
    session.flush()
    return model


def _refuse_while_deployed(session: Session, model: FineTunedModel, action: str) -> None:
    agents = repository.agents_serving(session, model.organization_id, [model.id])[model.id]
    if agents:
        names = ", ".join(agent.name for agent in agents)
        raise Conflict(
            f"Cannot {action} fine-tuned model {model.id}: deployed to {names}; undeploy it first",
            agents=[{"id": agent.id, "name": agent.name} for agent in agents],
        )


def _with_agents(session: Session, model: FineTunedModel) -> ModelWithAgents:
    agents = repository.agents_serving(session, model.organization_id, [model.id])[model.id]
    return ModelWithAgents(model, agents)
