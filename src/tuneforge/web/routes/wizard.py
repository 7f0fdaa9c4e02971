"""The new-job wizard: pick a valid dataset, choose the method (supervised, or preference
(DPO) for a dataset of preference pairs), the model (a base model, or one of the
organization's fine-tunes to train on top of) and hyperparameters, review the estimate,
create. Each step is a plain page, so Back and reload always work."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from tuneforge.auth.service import Principal
from tuneforge.config import Settings
from tuneforge.datasets import service as datasets_service
from tuneforge.db.session import SessionDep
from tuneforge.db.tables.datasets import DatasetKind, DatasetStatus, FineTuningDataset
from tuneforge.db.tables.models import ModelStatus
from tuneforge.errors import InvalidInput, TuneForgeError
from tuneforge.jobs import service as jobs_service
from tuneforge.jobs.schemas import EstimateRequest, JobCreate, Method
from tuneforge.models import service as models_service
from tuneforge.providers.catalog import find_base_model, list_base_models
from tuneforge.providers.contract import (
    DPO,
    SUPERVISED,
    DpoHyperparameters,
    ResolvedHyperparameters,
)
from tuneforge.providers.registry import provider_names
from tuneforge.state import SettingsDep
from tuneforge.store.base_models import DEFAULT_MODEL
from tuneforge.web.deps import FormDep, WebPrincipal, field_errors
from tuneforge.web.templating import render

router = APIRouter(prefix="/dashboard/fine-tuning/jobs/new")

HYPERPARAMETERS = ("n_epochs", "batch_size", "learning_rate_multiplier")
FIELDS = ("dataset_id", "method", "model", "provider", "name", "suffix", *HYPERPARAMETERS, "beta")
DATASET_CHOICES = 100
MODEL_CHOICES = 100
METHODS = {SUPERVISED: "Supervised", DPO: "Preference (DPO)"}


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
        return float(raw) if name in ("learning_rate_multiplier", "beta") else int(raw)
    except ValueError:
        return raw


def _method(values: dict[str, str]) -> str:
    return DPO if values["method"] == DPO else SUPERVISED


def _hyperparameters(values: dict[str, str]) -> tuple[Method | None, dict[str, str]]:
    """The method with its hyperparameters; each field checked alone so every bad one gets
    its own message. Beta belongs to DPO: given for a supervised job, it is refused."""
    errors: dict[str, str] = {}
    parsed: dict[str, Any] = {}
    method = _method(values)
    names = (*HYPERPARAMETERS, "beta") if method == DPO else HYPERPARAMETERS
    for name in names:
        candidate = {name: _number(name, values[name])}
        try:
            DpoHyperparameters.model_validate(candidate)
            parsed.update(candidate)
        except ValidationError:
            errors[name] = f"Use {DpoHyperparameters.model_fields[name].description}"
    if method != DPO and values["beta"] not in ("", "auto"):
        errors["beta"] = "Beta applies to preference (DPO) training only"
    if errors:
        return None, errors
    return Method.model_validate({"type": method, method: {"hyperparameters": parsed}}), errors


def _job_request(values: dict[str, str]) -> tuple[JobCreate | None, dict[str, str]]:
    method, errors = _hyperparameters(values)
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
    if method is None:
        return None, errors
    return request.model_copy(update={"method": method}), {}


def _requested(method: Method | None) -> dict[str, Any]:
    settings = getattr(method, method.type) if method is not None else None
    return settings.hyperparameters.model_dump() if settings is not None else {}


def _step_two(
    request: Request,
    principal: Principal,
    session: Session,
    settings: Settings,
    dataset: FineTuningDataset,
    values: dict[str, str],
    errors: dict[str, str],
    status_code: int = 200,
) -> Response:
    method, _ = _hyperparameters(values)
    auto = _auto_hints(session, principal, settings, dataset, values, _requested(method))
    fine_tuned, _ = models_service.list_models(
        session, principal.organization_id, status=ModelStatus.ACTIVE, limit=MODEL_CHOICES
    )
    context = {
        "step": 2,
        "dataset": dataset,
        "values": values,
        "errors": errors,
        "methods": METHODS,
        "base_models": list_base_models(settings),
        "fine_tuned_models": [entry.model for entry in fine_tuned],
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
    if not values["method"]:  # preference pairs train with DPO
        values["method"] = DPO if dataset.kind is DatasetKind.PREFERENCE else SUPERVISED
    return _step_two(request, principal, session, settings, dataset, values, {})


def _auto_hints(
    session: Session,
    principal: Principal,
    settings: Settings,
    dataset: FineTuningDataset,
    values: dict[str, str],
    requested: dict[str, Any],
) -> ResolvedHyperparameters:
    """What "auto" becomes for the chosen model's provider and method; until a valid model
    is chosen, for the built-in local model's."""
    method = _method(values)
    try:
        start = jobs_service.starting_point(
            session,
            principal.organization_id,
            values["model"] or DEFAULT_MODEL,
            values["provider"] or None,
        )
        return jobs_service.preview_hyperparameters(settings, dataset, start, requested, method)
    except InvalidInput:
        start = jobs_service.StartingPoint(DEFAULT_MODEL, None)
        return jobs_service.preview_hyperparameters(settings, dataset, start, requested, method)


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
        return _step_two(request, principal, session, settings, dataset, values, errors, 422)
    try:
        start = jobs_service.starting_point(session, org, job_request.model, job_request.provider)
        base_model = find_base_model(start.base_model, settings)
    except InvalidInput as exc:
        errors = {str(exc.extra.get("field") or "model"): exc.detail}
        return _step_two(request, principal, session, settings, dataset, values, errors, 422)
    provider = start.provider or base_model.provider
    method = _method(values)
    try:
        resolved = jobs_service.preview_hyperparameters(
            settings,
            dataset,
            jobs_service.StartingPoint(start.base_model, provider, start.parent),
            _requested(job_request.method),
            method,
        )
    except InvalidInput as exc:
        errors = {"provider": exc.detail}
        return _step_two(request, principal, session, settings, dataset, values, errors, 422)
    estimate, estimate_problem = None, None
    try:
        estimate = jobs_service.estimate_job(
            session,
            settings,
            org,
            EstimateRequest(
                dataset_id=dataset.id, model=job_request.model, method=job_request.method
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
        "parent": start.parent,
        "method_label": METHODS[method],
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
        return _step_two(request, principal, session, settings, dataset, values, errors, 422)
    try:
        job = jobs_service.create_job(session, settings, org, principal.user_id, job_request)
    except TuneForgeError as exc:
        field = str(exc.extra.get("field", "form"))
        errors = {field: exc.detail}
        return _step_two(request, principal, session, settings, dataset, values, errors, 422)
    return RedirectResponse(f"/dashboard/fine-tuning/jobs/{job.id}", status_code=303)
