"""Facts about the whole deployment that every server and worker process must agree on."""

from __future__ import annotations

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tuneforge.db.base import Base


class DeploymentFact(Base):
    """One named value, e.g. which storage holds the local jobs' directories."""

    __tablename__ = "deployment_facts"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
