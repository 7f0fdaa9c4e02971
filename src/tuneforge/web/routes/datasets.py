"""Dataset pages: the list, upload and import, and a dataset's report and examples."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from starlette.datastructures import FormData

from tuneforge.agents import service as agents_service
from tuneforge.bounds import Offset, in_range_day
from tuneforge.datasets import importers
from tuneforge.datasets import service as datasets_service
from tuneforge.datasets.schemas import ImportFilter, ImportRequest
from tuneforge.db.session import SessionDep
from tuneforge.db.tables.datasets import DatasetStatus, ExampleSplit
from tuneforge.errors import InvalidInput
from tuneforge.providers.catalog import DEFAULT_VALIDATION_MODEL, list_base_models
from tuneforge.state import SettingsDep
from tuneforge.web.deps import FormDep, WebPrincipal, action_done, choice, parse_form
from tuneforge.web.templating import render

router = APIRouter(prefix="/dashboard/fine-tuning/datasets")

PAGE_SIZE = 25
EXAMPLES_PAGE = 10
AGENT_CHOICES = 100
BASE = "/dashboard/fine-tuning/datasets"


@router.get("")
def dataset_list(
    request: Request,
    principal: WebPrincipal,
    session: SessionDep,
    status: Annotated[str, Query(max_length=20)] = "",
    offset: Offset = 0,
) -> Response:
    status_filter = choice(DatasetStatus, status)
    datasets, total = datasets_service.list_datasets(
        session,
        principal.organization_id,
        status=status_filter,
        fmt=None,
        name_contains=None,
        limit=PAGE_SIZE,
        offset=offset,
    )
    context = {
        "datasets": datasets,
        "total": total,
        "offset": offset,
        "page_size": PAGE_SIZE,
        "status": status_filter,
        "statuses": list(DatasetStatus),
    }
    return render(request, "datasets/list.html", context, principal=principal, section="datasets")


@router.get("/new")
def new_dataset(
    request: Request, principal: WebPrincipal, session: SessionDep, settings: SettingsDep
) -> Response:
    agents, _ = agents_service.list_agents(
        session, principal.organization_id, name_contains=None, limit=AGENT_CHOICES, offset=0
    )
    context = {
        "base_models": list_base_models(settings),
        "default_model": DEFAULT_VALIDATION_MODEL,
        "agents": agents,
        "upload_limit": settings.upload_limit_bytes,
    }
    return render(request, "datasets/new.html", context, principal=principal, section="datasets")


def _day(form: FormData, name: str) -> date | None:
    value = str(form.get(name) or "").strip()
    if not value:
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError as exc:
        raise InvalidInput(f"{name}: {value!r} is not a date (YYYY-MM-DD)", field=name) from exc
    try:
        return in_range_day(day)
    except ValueError as exc:
        raise InvalidInput(f"{name}: {exc}", field=name) from exc


def _import_filter_data(form: FormData) -> dict[str, Any]:
    """Form fields as ``ImportFilter`` input; the form's end date is inclusive."""
    data: dict[str, Any] = {}
    agent_ids = [str(v) for v in form.getlist("agent_ids") if v]
    if agent_ids:
        data["agent_ids"] = agent_ids
    if (start := _day(form, "from")) is not None:
        data["started_from"] = start.isoformat()
    if (end := _day(form, "to")) is not None:
        data["started_to"] = (end + timedelta(days=1)).isoformat()
    if form.get("min_rating"):
        data["min_rating"] = form["min_rating"]
    if form.get("kind"):
        data["kind"] = form["kind"]
    tags = [t.strip() for t in str(form.get("tags") or "").split(",") if t.strip()]
    if tags:
        data["tags"] = tags
    return data


@router.post("/import/preview")
def import_preview(
    request: Request, principal: WebPrincipal, session: SessionDep, form: FormDep
) -> Response:
    request_filter = parse_form(ImportFilter, _import_filter_data(form))
    count = importers.preview_import(session, principal.organization_id, request_filter)
    return render(request, "datasets/_preview.html", {"count": count})


@router.post("/import")
def import_conversations(
    request: Request,
    principal: WebPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    form: FormDep,
) -> Response:
    data = _import_filter_data(form)
    data.update(
        name=str(form.get("name") or "").strip() or None,
        model=str(form.get("model") or "") or None,
        assistant_turns=str(form.get("assistant_turns") or "all"),
        include_system_prompt=form.get("include_system_prompt") == "on",
        validation_fraction=form.get("validation_fraction") or None,
    )
    if data["name"] is None:
        raise InvalidInput("name: give the new dataset a name", field="name")
    body = parse_form(ImportRequest, data)
    dataset = importers.import_conversations(
        session, principal.organization_id, principal.user_id, body, settings
    )
    return action_done(request, f"{BASE}/{dataset.id}")


@router.get("/{dataset_id}")
def dataset_detail(
    dataset_id: str,
    request: Request,
    principal: WebPrincipal,
    session: SessionDep,
    settings: SettingsDep,
) -> Response:
    org = principal.organization_id
    dataset = datasets_service.get_dataset(session, org, dataset_id)
    context = {
        "dataset": dataset,
        "report": dataset.validation_report,
        "stats": datasets_service.dataset_statistics(session, org, dataset.id),
        "base_models": list_base_models(settings),
        **_examples_context(session, org, dataset.id, valid=None, split=None, offset=0),
    }
    return render(request, "datasets/detail.html", context, principal=principal, section="datasets")


def _examples_context(
    session: SessionDep,
    organization_id: str,
    dataset_id: str,
    *,
    valid: bool | None,
    split: ExampleSplit | None,
    offset: int,
) -> dict[str, Any]:
    examples, total = datasets_service.list_examples(
        session,
        organization_id,
        dataset_id,
        split=split,
        valid=valid,
        limit=EXAMPLES_PAGE,
        offset=offset,
    )
    return {
        "examples": examples,
        "examples_total": total,
        "examples_offset": offset,
        "examples_page": EXAMPLES_PAGE,
        "examples_valid": valid,
        "examples_split": split,
        "dataset_id": dataset_id,
    }


@router.get("/{dataset_id}/examples")
def dataset_examples(
    dataset_id: str,
    request: Request,
    principal: WebPrincipal,
    session: SessionDep,
    valid: Annotated[str, Query(max_length=5)] = "",
    split: Annotated[str, Query(max_length=20)] = "",
    offset: Offset = 0,
) -> Response:
    context = _examples_context(
        session,
        principal.organization_id,
        dataset_id,
        valid={"true": True, "false": False}.get(valid),
        split=choice(ExampleSplit, split),
        offset=offset,
    )
    return render(request, "datasets/_examples.html", context, principal=principal)


@router.post("/{dataset_id}/validate")
def validate_dataset(
    dataset_id: str,
    request: Request,
    principal: WebPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    form: FormDep,
) -> Response:
    model = str(form.get("model") or "") or None
    datasets_service.validate_dataset(
        session, principal.organization_id, dataset_id, settings, model=model
    )
    return action_done(request, f"{BASE}/{dataset_id}")


@router.post("/{dataset_id}/delete")
def delete_dataset(
    dataset_id: str, request: Request, principal: WebPrincipal, session: SessionDep
) -> Response:
    datasets_service.delete_dataset(session, principal.organization_id, dataset_id)
    return action_done(request, BASE)
