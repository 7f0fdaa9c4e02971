"""The exports API's request and response shapes."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from tuneforge.db.tables.exports import (
    ExportFormat,
    ExportQuantization,
    ExportStatus,
    ModelExport,
)


class ExportCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: ExportFormat = Field(
        description="adapter: the LoRA adapter; merged: a standalone Hugging Face model; "
        "gguf: one GGUF file; ollama: the GGUF and a Modelfile."
    )
    quantization: ExportQuantization | None = Field(
        default=None,
        description="GGUF weights (gguf and ollama only): f16 (default) or q8_0.",
    )
    agent_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=32,
        description="ollama only: an agent the model is deployed to, whose system prompt "
        "becomes the Modelfile's SYSTEM.",
    )


class ExportOut(BaseModel):
    id: str
    model_id: str
    format: ExportFormat
    quantization: ExportQuantization | None
    agent_id: str | None
    status: ExportStatus
    progress: float = Field(description="0 to 1.")
    stage: str | None = Field(description="What the worker is doing now.")
    file_name: str | None
    size_bytes: int | None
    sha256: str | None = Field(description="Hex SHA-256 of the file, once it is written.")
    download_url: str | None = Field(description="Where to GET the file once it is written.")
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def from_row(cls, export: ModelExport) -> ExportOut:
        done = export.status is ExportStatus.SUCCEEDED
        return cls(
            id=export.id,
            model_id=export.model_id,
            format=export.format,
            quantization=export.quantization,
            agent_id=export.agent_id,
            status=export.status,
            progress=export.progress,
            stage=export.stage,
            file_name=export.file_name,
            size_bytes=export.size_bytes,
            sha256=export.sha256,
            download_url=(
                f"/fine-tuning/models/{export.model_id}/exports/{export.id}/download"
                if done
                else None
            ),
            error=export.error_message,
            created_at=export.created_at,
            started_at=export.started_at,
            finished_at=export.finished_at,
        )


class ExportPage(BaseModel):
    items: list[ExportOut]
    total: int
    limit: int
    offset: int


class ExportDeleted(BaseModel):
    id: str
    deleted: bool = True
