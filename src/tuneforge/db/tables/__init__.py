"""Every table, imported in one place so metadata (and Alembic) sees the whole schema."""

from tuneforge.db.base import Base
from tuneforge.db.tables.agents import Agent, Conversation, ConversationMessage, ConversationTag
from tuneforge.db.tables.auth import ApiKey, Membership, Organization, User
from tuneforge.db.tables.datasets import FineTuningDataset, TrainingExample
from tuneforge.db.tables.deployment import DeploymentFact
from tuneforge.db.tables.evals import EvalResult, EvalRun
from tuneforge.db.tables.exports import ModelExport
from tuneforge.db.tables.jobs import FineTuningEvent, FineTuningJob, JobCheckpoint, JobMetric
from tuneforge.db.tables.models import FineTunedModel, ModelUsage
from tuneforge.db.tables.webhooks import (
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)

__all__ = [
    "Agent",
    "ApiKey",
    "Base",
    "Conversation",
    "ConversationMessage",
    "ConversationTag",
    "DeploymentFact",
    "EvalResult",
    "EvalRun",
    "FineTunedModel",
    "FineTuningDataset",
    "FineTuningEvent",
    "FineTuningJob",
    "JobCheckpoint",
    "JobMetric",
    "Membership",
    "ModelExport",
    "ModelUsage",
    "Organization",
    "TrainingExample",
    "User",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookEvent",
]
