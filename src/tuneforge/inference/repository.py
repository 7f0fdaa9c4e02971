"""SQL for inference: finding servable models and appending chat turns to conversations."""

from __future__ import annotations

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session

from tuneforge.db.scoping import org_scoped
from tuneforge.db.tables.agents import ConversationMessage
from tuneforge.db.tables.jobs import FineTuningJob, JobCheckpoint
from tuneforge.db.tables.models import FineTunedModel, ModelStatus


def find_models_by_reference(
    session: Session, organization_id: str, reference: str
) -> list[FineTunedModel]:
    """The organization's live models whose id or name is ``reference``: the id match, then
    active before archived, newest first (names are labels and may repeat)."""
    stmt = (
        org_scoped(FineTunedModel, organization_id)
        .where(or_(FineTunedModel.id == reference, FineTunedModel.name == reference))
        .order_by(
            (FineTunedModel.id != reference),
            (FineTunedModel.status != ModelStatus.ACTIVE),
            FineTunedModel.created_at.desc(),
        )
    )
    return list(session.scalars(stmt))


def _kept_checkpoints(organization_id: str) -> Select[tuple[FineTuningJob, JobCheckpoint]]:
    return (
        select(FineTuningJob, JobCheckpoint)
        .join(JobCheckpoint, JobCheckpoint.job_id == FineTuningJob.id)
        .where(
            FineTuningJob.organization_id == organization_id,
            JobCheckpoint.model_reference.is_not(None),
        )
    )


def find_job_checkpoint(
    session: Session, organization_id: str, job_id: str, step: int
) -> tuple[FineTuningJob, JobCheckpoint] | None:
    stmt = _kept_checkpoints(organization_id).where(
        FineTuningJob.id == job_id, JobCheckpoint.step == step
    )
    row = session.execute(stmt).first()
    return (row[0], row[1]) if row is not None else None


def list_servable_checkpoints(
    session: Session, organization_id: str, providers: list[str]
) -> list[tuple[FineTuningJob, JobCheckpoint]]:
    """Kept checkpoints of the organization's jobs whose provider serves here, newest job
    first, then highest step."""
    stmt = (
        _kept_checkpoints(organization_id)
        .where(FineTuningJob.provider.in_(providers))
        .order_by(FineTuningJob.created_at.desc(), FineTuningJob.id, JobCheckpoint.step.desc())
    )
    return [(job, checkpoint) for job, checkpoint in session.execute(stmt)]


def list_servable_models(
    session: Session, organization_id: str, providers: list[str]
) -> list[FineTunedModel]:
    stmt = (
        org_scoped(FineTunedModel, organization_id)
        .where(FineTunedModel.status == ModelStatus.ACTIVE, FineTunedModel.provider.in_(providers))
        .order_by(FineTunedModel.created_at.desc(), FineTunedModel.id)
    )
    return list(session.scalars(stmt))


def next_message_position(session: Session, conversation_id: str) -> int:
    """Where appended messages start; the conversation id must come from a scoped read."""
    stmt = select(func.max(ConversationMessage.position)).where(
        ConversationMessage.conversation_id == conversation_id
    )
    last = session.scalar(stmt)
    return 0 if last is None else last + 1
