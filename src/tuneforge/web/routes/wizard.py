"""The new-job wizard: pick a valid dataset, choose model and hyperparameters, review the
estimate, create. Each step is a plain page, so Back and reload always work."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from starlette.datastructures import FormData

from tuneforge.auth.service import Principal
from tuneforge.config import Settings
from tuneforge.datasets import service as datasets_service
from tuneforge.db.session import SessionDep
from tuneforge.db.tables.datasets import DatasetStatus, FineTuningDataset
from tuneforge.errors import InvalidInput, TuneForgeError
from tuneforge.jobs import service as jobs_service
from tuneforge.jobs.schemas import EstimateRequest, JobCreate
from tuneforge.providers.catalog import find_base_model, list_base_models
from tuneforge.providers.contract import (
    Hyperparameters,
    RequestedHyperparameters,
    ResolvedHyperparameters,
)
from tuneforge.providers.registry import provider_names
from tuneforge.state import SettingsDep
from tuneforge.store.base_models import DEFAULT_MODEL
from tuneforge.web.deps import FormDep, WebPrincipal, field_errors
from tuneforge.web.templating import render

router = APIRouter(prefix="/dashboard/fine-tuning/jobs/new")

HYPERPARAMETERS = ("n_epochs", "batch_size", "learning_rate_multiplier")
FIELDS = ("dataset_id", "model", "provider", "name", "suffix", *HYPERPARAMETERS)
DATASET_CHOICES = 100


def wizard_url(values: dict[str, str]) -> str:
    """Step two again with the choices made, for the review page's Back link."""
    return "/dashboard/fine-tuning/jobs/new?" + urlencode({k: v for k, v in values.items() if v})


def _values(source: FormData | dict[str, Any]) -> dict[str, str]:
    return {name: str(source.get(name) or "").strip() for name in FIELDS}


def _number(name: str, raw: str) -> int | float | str:
    """Form text as the API's strict types: "auto" (or blank), a whole number, or a float."""
    if raw in ("", "auto"):
        return "auto"
    try:
        return float(raw) if name == "learning_rate_multiplier" else int(raw)
    except ValueError:
        return raw


def _hyperparameters(
    values: dict[str, str],
) -> tuple[RequestedHyperparameters | None, dict[str, str]]:
    """Each field checked alone so every bad one gets its own message."""
    errors: dict[str, str] = {}
    parsed: dict[str, Any] = {}
    for name in HYPERPARAMETERS:
        candidate = {name: _number(name, values[name])}
        try:
            Hyperparameters.model_validate(candidate)
            parsed.update(candidate)
        except ValidationError:
            errors[name] = f"Use {Hyperparameters.model_fields[name].description}"
    if errors:
        return None, errors
    return RequestedHyperparameters.model_validate(parsed), errors


def _job_request(values: dict[str, str]) -> tuple[JobCreate | None, dict[str, str]]:
    hyperparameters, errors = _hyperparameters(values)
    data = {
        "dataset_id": values["dataset_id"],
        "model": values["model"],
        "provider": values["provider"] or None,
        "name": values["name"] or None,
        "suffix": values["suffix"] or None,
    }
    try:
        request = JobCreate.model_validate(data)
    except ValidationError as exc:
        return None, {**field_errors(exc), **errors}
    if hyperparameters is None:
        return None, errors
    return request.model_copy(update={"hyperparameters": hyperparameters}), {}


def _step_two(
    request: Request,
    principal: Principal,
    settings: Settings,
    dataset: FineTuningDataset,
    values: dict[str, str],
    errors: dict[str, str],
    status_code: int = 200,
) -> Response:
    requested, _ = _hyperparameters(values)
    auto = _auto_hints(settings, dataset, values, requested or Hyperparameters())
    context = {
        "step": 2,
        "dataset": dataset,
        "values": values,
        "errors": errors,
        "base_models": list_base_models(settings),
        "providers": provider_names(),
        "auto": auto,
    }
    return render(
        request,
        "jobs/wizard.html",
        context,
        principal=principal,
        section="jobs",
        status_code=status_code,
    )


@router.get("")
def wizard(
    request: Request,
    principal: WebPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    dataset_id: Annotated[str | None, Query(max_length=32)] = None,
) -> Response:
    org = principal.organization_id
    if not dataset_id:
        datasets, _ = datasets_service.list_datasets(
            session,
            org,
            status=DatasetStatus.VALID,
            fmt=None,
            name_contains=None,
            limit=DATASET_CHOICES,
            offset=0,
        )
        context = {"step": 1, "datasets": datasets}
        return render(request, "jobs/wizard.html", context, principal=principal, section="jobs")
    dataset = datasets_service.require_valid_dataset(session, org, dataset_id)
    values = _values(dict(request.query_params))
    values["model"] = values["model"] or dataset.target_model or ""
    return _step_two(request, principal, settings, dataset, values, {})


def _auto_hints(
    settings: Settings,
    dataset: FineTuningDataset,
    values: dict[str, str],
    requested: Hyperparameters,
) -> ResolvedHyperparameters:
    """What "auto" becomes for the chosen model's provider; until a valid model is chosen,
    for the built-in local model's."""
    try:
        return jobs_service.preview_hyperparameters(
            settings,
            dataset,
            values["model"] or DEFAULT_MODEL,
            values["provider"] or None,
            requested.model_dump(),
        )
    except InvalidInput:
        return jobs_service.preview_hyperparameters(
            settings, dataset, DEFAULT_MODEL, None, requested.model_dump()
        )


@router.post("/review")
def review(
    request: Request,
    principal: WebPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    form: FormDep,
) -> Response:
    org = principal.organization_id
    values = _values(form)
    dataset = datasets_service.require_valid_dataset(session, org, values["dataset_id"])
    job_request, errors = _job_request(values)
    if job_request is None:
        return _step_two(request, principal, settings, dataset, values, errors, 422)
    try:
        base_model = find_base_model(job_request.model, settings)
    except InvalidInput as exc:
        return _step_two(request, principal, settings, dataset, values, {"model": exc.detail}, 422)
    provider = job_request.provider or base_model.provider
    try:
        resolved = jobs_service.preview_hyperparameters(
            settings, dataset, job_request.model, provider, job_request.hyperparameters.model_dump()
        )
    except InvalidInput as exc:
        errors = {"provider": exc.detail}
        return _step_two(request, principal, settings, dataset, values, errors, 422)
    estimate, estimate_problem = None, None
    try:
        estimate = jobs_service.estimate_job(
            session,
            settings,
            org,
            EstimateRequest(
                dataset_id=dataset.id,
                model=job_request.model,
                hyperparameters=job_request.hyperparameters,
            ),
        )
    except InvalidInput as exc:
        # The estimate is advice: the API creates the job all the same, so say why there
        # is no estimate and let the user decide.
        estimate_problem = exc.detail
    context = {
        "step": 3,
        "dataset": dataset,
        "values": values,
        "estimate": estimate,
        "estimate_problem": estimate_problem,
        "provider": provider,
        "resolved": resolved,
        "back_url": wizard_url(values),
    }
    return render(request, "jobs/wizard.html", context, principal=principal, section="jobs")


@router.post("")
def create(
    request: Request,
    principal: WebPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    form: FormDep,
) -> Response:
    org = principal.organization_id
    values = _values(form)
    dataset = datasets_service.require_valid_dataset(session, org, values["dataset_id"])
    job_request, errors = _job_request(values)
    if job_request is None:
        return _step_two(request, principal, settings, dataset, values, errors, 422)
    try:
        job = jobs_service.create_job(session, settings, org, principal.user_id, job_request)
    except TuneForgeError as exc:
        field = str(exc.extra.get("field", "form"))
        return _step_two(request, principal, settings, dataset, values, {field: exc.detail}, 422)
    return RedirectResponse(f"/dashboard/fine-tuning/jobs/{job.id}", status_code=303)
