"""Model exports: queue one, list them, hand over the file, delete it.

An export is a queued task, like an evaluation: the request checks everything it can
cheaply (the format suits the model's architecture, the files are on this machine, the
agent is the model's) and inserts a row in its transaction; a worker writes the file
(``execution.py``) into ``<data dir>/exports/<export id>/``, where downloads read it.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from tuneforge.config import Settings
from tuneforge.db.scoping import get_owned
from tuneforge.db.tables.agents import Agent
from tuneforge.db.tables.exports import (
    ExportFormat,
    ExportQuantization,
    ExportStatus,
    ModelExport,
)
from tuneforge.db.tables.models import FineTunedModel
from tuneforge.errors import Conflict, InvalidInput, NotFound
from tuneforge.exports import repository
from tuneforge.exports.gguf import check_architecture
from tuneforge.exports.modelfile import quoted
from tuneforge.exports.schemas import ExportCreate
from tuneforge.models import repository as models
from tuneforge.providers.contract import name_part
from tuneforge.providers.registry import get_provider

GGUF_FORMATS = frozenset({ExportFormat.GGUF, ExportFormat.OLLAMA})


@dataclass(frozen=True)
class ExportWork:
    """Everything a worker needs to write one export, read in one short transaction."""

    format: ExportFormat
    quantization: ExportQuantization | None
    slug: str  # the model's name as a file name: archives, folders and GGUF files
    model_name: str
    base_path: Path
    adapter_path: Path
    system_prompt: str | None

    @property
    def file_name(self) -> str:
        suffix = f"-{self.quantization.value}" if self.quantization else ""
        extension = "gguf" if self.format is ExportFormat.GGUF else "tar"
        return f"{self.slug}-{self.format.value}{suffix}.{extension}"


@dataclass(frozen=True)
class ExportFile:
    path: Path
    sha256: str


def export_dir(settings: Settings, export_id: str) -> Path:
    return settings.data_dir / "exports" / export_id


def create_export(
    session: Session,
    settings: Settings,
    organization_id: str,
    user_id: str | None,
    model_id: str,
    request: ExportCreate,
) -> ModelExport:
    """Queue an export of the organization's model, refusing what could not be written."""
    model = models.get_model(session, organization_id, model_id)
    quantization = request.quantization
    if request.format in GGUF_FORMATS:
        quantization = quantization or ExportQuantization.F16
    elif quantization is not None:
        raise InvalidInput(
            "quantization: only the gguf and ollama formats take a quantization",
            field="quantization",
        )
    system_prompt = None
    if request.agent_id is not None:
        system_prompt = _agent_system_prompt(session, organization_id, model, request)
    base, _ = model_files(settings, model)
    if request.format in GGUF_FORMATS:
        check_architecture(_base_config(base))
    export = ModelExport(
        organization_id=organization_id,
        model_id=model.id,
        created_by=user_id,
        format=request.format,
        quantization=quantization,
        agent_id=request.agent_id,
        system_prompt=system_prompt,
        status=ExportStatus.QUEUED,
        stage="queued",
    )
    session.add(export)
    session.flush()
    return export


def _agent_system_prompt(
    session: Session, organization_id: str, model: FineTunedModel, request: ExportCreate
) -> str | None:
    """The system prompt of the agent the model is deployed to, checked for a Modelfile."""
    if request.format is not ExportFormat.OLLAMA:
        raise InvalidInput(
            "agent_id: only the ollama format carries an agent's system prompt", field="agent_id"
        )
    agent_id = request.agent_id or ""
    try:
        agent = get_owned(session, Agent, agent_id, organization_id, label="Agent")
    except NotFound as exc:
        raise NotFound(exc.detail, field="agent_id") from None
    if agent.fine_tuned_model_id != model.id:
        raise InvalidInput(
            f"agent_id: agent {agent.id} is not deployed with model {model.id}", field="agent_id"
        )
    if agent.system_prompt:
        try:
            quoted(agent.system_prompt, what="agent_id")
        except InvalidInput as exc:
            raise InvalidInput(
                f"{exc.detail} (in agent {agent.id}'s system prompt)", field="agent_id"
            ) from None
    return agent.system_prompt


def model_files(settings: Settings, model: FineTunedModel) -> tuple[Path, Path]:
    """The base and adapter directories on this machine, or a 409 saying why not."""
    provider = get_provider(model.provider, settings)
    files = provider.servable_files(model.provider_model_id, model.base_model)
    if files is None:
        raise Conflict(
            f"Model {model.id} is hosted by {model.provider}; only models served here can "
            "be exported"
        )
    adapter = files.adapter_path
    if adapter is None or not (adapter / "adapter_config.json").is_file():
        raise Conflict(f"The adapter files of model {model.id} are gone")
    return files.base_path, adapter


def _base_config(base: Path) -> dict[str, Any]:
    try:
        config = json.loads((base / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise Conflict(f"The base model's config.json in {base} cannot be read: {exc}") from exc
    if not isinstance(config, dict):
        raise Conflict(f"The base model's config.json in {base} is not a JSON object")
    return config


def export_work(session: Session, settings: Settings, export: ModelExport) -> ExportWork:
    """What the worker writes: the export's choices and the model's files."""
    model = session.get(FineTunedModel, export.model_id)
    if model is None:
        raise Conflict(f"Model {export.model_id} no longer exists")
    base, adapter = model_files(settings, model)
    return ExportWork(
        format=export.format,
        quantization=export.quantization,
        slug=name_part(model.name),
        model_name=model.name,
        base_path=base,
        adapter_path=adapter,
        system_prompt=export.system_prompt,
    )


def list_exports(
    session: Session, organization_id: str, model_id: str, *, limit: int, offset: int
) -> tuple[list[ModelExport], int]:
    models.get_model(session, organization_id, model_id)
    return repository.list_exports(session, organization_id, model_id, limit=limit, offset=offset)


def get_export(
    session: Session, organization_id: str, model_id: str, export_id: str
) -> ModelExport:
    return repository.get_export(session, organization_id, model_id, export_id)


def export_file(
    session: Session, settings: Settings, organization_id: str, model_id: str, export_id: str
) -> ExportFile:
    """The written file of a succeeded export."""
    export = repository.get_export(session, organization_id, model_id, export_id)
    if export.status is not ExportStatus.SUCCEEDED or not export.file_name or not export.sha256:
        raise Conflict(
            f"Export {export.id} is {export.status.value}; its file is ready once it succeeds",
            status=export.status.value,
        )
    path = export_dir(settings, export.id) / export.file_name
    if not path.is_file():
        raise Conflict(f"The file of export {export.id} is gone; create the export again")
    return ExportFile(path, export.sha256)


def delete_export(
    session: Session, settings: Settings, organization_id: str, model_id: str, export_id: str
) -> ModelExport:
    """Delete an export and its file; refused while a worker is writing it."""
    export = repository.get_export(session, organization_id, model_id, export_id, for_update=True)
    if export.status is ExportStatus.RUNNING:
        raise Conflict(f"Export {export.id} is being written; delete it once it has finished")
    session.delete(export)
    session.flush()
    shutil.rmtree(export_dir(settings, export.id), ignore_errors=True)
    return export
