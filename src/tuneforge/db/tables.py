"""Every table, imported in one place so metadata (and Alembic) sees the whole schema."""

from tuneforge.agents.tables import Agent, Conversation, ConversationMessage, ConversationTag
from tuneforge.auth.tables import ApiKey, Membership, Organization, User
from tuneforge.datasets.tables import FineTuningDataset, TrainingExample
from tuneforge.db.base import Base
from tuneforge.jobs.tables import FineTuningEvent, FineTuningJob, JobCheckpoint, JobMetric
from tuneforge.models.tables import FineTunedModel, ModelUsage

__all__ = [
    "Agent",
    "ApiKey",
    "Base",
    "Conversation",
    "ConversationMessage",
    "ConversationTag",
    "FineTunedModel",
    "FineTuningDataset",
    "FineTuningEvent",
    "FineTuningJob",
    "JobCheckpoint",
    "JobMetric",
    "Membership",
    "ModelUsage",
    "Organization",
    "TrainingExample",
    "User",
]
