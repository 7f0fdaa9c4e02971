"""HTTP surface for datasets, their examples and conversation imports; the service holds logic."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool

from tuneforge.auth.deps import BriefPrincipalDep, PrincipalDep
from tuneforge.bounds import Offset
from tuneforge.datasets import importers, ingest, service
from tuneforge.datasets.schemas import (
    DatasetOut,
    DatasetPage,
    DatasetStatistics,
    DatasetSummary,
    DatasetUpdate,
    DatasetUploadForm,
    ExampleOut,
    ExamplePage,
    ExampleUpdate,
    ImportFilter,
    ImportPreview,
    ImportRequest,
    SplitRequest,
    ValidateRequest,
)
from tuneforge.db.session import SessionDep, request_unit_of_work
from tuneforge.db.tables.datasets import DatasetFormat, DatasetStatus, ExampleSplit
from tuneforge.errors import (
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    UnsupportedMediaType,
    error_responses,
)
from tuneforge.state import SettingsDep, app_state

router = APIRouter(prefix="/fine-tuning/datasets", tags=["datasets"])

Limit = Annotated[int, Query(ge=1, le=100, description="Page size.")]
ExampleLimit = Annotated[int, Query(ge=1, le=500, description="Page size.")]


@router.post(
    "",
    summary="Upload a JSONL or CSV dataset, store its examples and validate them",
    description=(
        "Multipart form: `file` plus `name` (and optionally `description`, `model`, "
        "`validation_fraction`, `split_seed`). The file is streamed to disk; one over the "
        "upload limit is refused with 413 as soon as the limit is passed. A dataset with "
        "bad lines is still stored, with status `invalid` and a report naming the lines."
    ),
    status_code=status.HTTP_201_CREATED,
    response_model=DatasetOut,
    responses=error_responses(Unauthorized, InvalidInput, PayloadTooLarge, UnsupportedMediaType),
    openapi_extra=DatasetUploadForm.openapi_body(),
)
async def upload_dataset(request: Request, principal: BriefPrincipalDep) -> DatasetOut:
    """The body streams in before a session is taken: a slow upload holds no session slot."""
    state = app_state(request)
    settings = state.settings
    upload = await ingest.receive_upload(
        request.headers.get("content-type"),
        request.headers.get("content-length"),
        request.stream(),
        settings,
    )
    async with request_unit_of_work(state, read_only=False) as session:
        dataset = await run_in_threadpool(
            ingest.create_from_upload,
            session,
            principal.organization_id,
            principal.user_id,
            upload,
            settings,
        )
        return DatasetOut.model_validate(dataset)


@router.get(
    "",
    summary="List the organization's datasets, newest first",
    response_model=DatasetPage,
    responses=error_responses(Unauthorized, InvalidInput),
)
def list_datasets(
    principal: PrincipalDep,
    session: SessionDep,
    status_filter: Annotated[DatasetStatus | None, Query(alias="status")] = None,
    format_filter: Annotated[DatasetFormat | None, Query(alias="format")] = None,
    name: Annotated[
        str | None, Query(max_length=200, description="Case-insensitive name substring.")
    ] = None,
    limit: Limit = 20,
    offset: Offset = 0,
) -> DatasetPage:
    datasets, total = service.list_datasets(
        session,
        principal.organization_id,
        status=status_filter,
        fmt=format_filter,
        name_contains=name,
        limit=limit,
        offset=offset,
    )
    items = [DatasetSummary.model_validate(d) for d in datasets]
    return DatasetPage(items=items, total=total, limit=limit, offset=offset)


@router.post(
    "/import",
    summary="Import logged agent conversations as examples, then validate the dataset",
    status_code=status.HTTP_201_CREATED,
    response_model=DatasetOut,
    responses=error_responses(Unauthorized, NotFound, InvalidInput),
)
def import_conversations(
    body: ImportRequest, principal: PrincipalDep, session: SessionDep, settings: SettingsDep
) -> DatasetOut:
    dataset = importers.import_conversations(
        session, principal.organization_id, principal.user_id, body, settings
    )
    return DatasetOut.model_validate(dataset)


@router.post(
    "/import/preview",
    summary="Count the conversations an import with these filters would read",
    response_model=ImportPreview,
    responses=error_responses(Unauthorized, NotFound, InvalidInput),
)
def preview_import(
    body: ImportFilter, principal: PrincipalDep, session: SessionDep
) -> ImportPreview:
    count = importers.preview_import(session, principal.organization_id, body)
    return ImportPreview(conversations=count)


@router.get(
    "/{dataset_id}",
    summary="Get a dataset with its validation report",
    response_model=DatasetOut,
    responses=error_responses(Unauthorized, NotFound),
)
def get_dataset(dataset_id: str, principal: PrincipalDep, session: SessionDep) -> DatasetOut:
    dataset = service.get_dataset(session, principal.organization_id, dataset_id)
    return DatasetOut.model_validate(dataset)


@router.patch(
    "/{dataset_id}",
    summary="Rename a dataset or change its description",
    response_model=DatasetOut,
    responses=error_responses(Unauthorized, NotFound, InvalidInput),
)
def update_dataset(
    dataset_id: str, body: DatasetUpdate, principal: PrincipalDep, session: SessionDep
) -> DatasetOut:
    dataset = service.update_dataset(session, principal.organization_id, dataset_id, body)
    return DatasetOut.model_validate(dataset)


@router.delete(
    "/{dataset_id}",
    summary="Soft-delete a dataset: it disappears from listings and can no longer be trained on",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    response_model=None,
    responses=error_responses(Unauthorized, NotFound),
)
def delete_dataset(dataset_id: str, principal: PrincipalDep, session: SessionDep) -> Response:
    service.delete_dataset(session, principal.organization_id, dataset_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{dataset_id}/validate",
    summary="Re-validate the stored examples (after edits, or against another base model)",
    response_model=DatasetOut,
    responses=error_responses(Unauthorized, NotFound, InvalidInput),
)
def validate_dataset(
    dataset_id: str,
    principal: PrincipalDep,
    session: SessionDep,
    settings: SettingsDep,
    body: ValidateRequest | None = None,
) -> DatasetOut:
    model = body.model if body is not None else None
    dataset = service.validate_dataset(
        session, principal.organization_id, dataset_id, settings, model=model
    )
    return DatasetOut.model_validate(dataset)


@router.post(
    "/{dataset_id}/split",
    summary="Re-assign the train/validation split (stable per seed) and re-validate",
    response_model=DatasetOut,
    responses=error_responses(Unauthorized, NotFound, InvalidInput),
)
def split_dataset(
    dataset_id: str,
    body: SplitRequest,
    principal: PrincipalDep,
    session: SessionDep,
    settings: SettingsDep,
) -> DatasetOut:
    dataset = service.split_dataset(session, principal.organization_id, dataset_id, body, settings)
    return DatasetOut.model_validate(dataset)


@router.get(
    "/{dataset_id}/statistics",
    summary="Counts, token totals, split sizes, distributions and epoch/cost estimates",
    response_model=DatasetStatistics,
    responses=error_responses(Unauthorized, NotFound),
)
def dataset_statistics(
    dataset_id: str, principal: PrincipalDep, session: SessionDep
) -> DatasetStatistics:
    return service.dataset_statistics(session, principal.organization_id, dataset_id)


@router.get(
    "/{dataset_id}/examples",
    summary="Page through a dataset's examples in line order",
    response_model=ExamplePage,
    responses=error_responses(Unauthorized, NotFound, InvalidInput),
)
def list_examples(
    dataset_id: str,
    principal: PrincipalDep,
    session: SessionDep,
    split: ExampleSplit | None = None,
    valid: Annotated[bool | None, Query(description="Only valid or only invalid rows.")] = None,
    limit: ExampleLimit = 50,
    offset: Offset = 0,
) -> ExamplePage:
    examples, total = service.list_examples(
        session,
        principal.organization_id,
        dataset_id,
        split=split,
        valid=valid,
        limit=limit,
        offset=offset,
    )
    items = [ExampleOut.model_validate(e) for e in examples]
    return ExamplePage(items=items, total=total, limit=limit, offset=offset)


@router.get(
    "/{dataset_id}/examples/{example_id}",
    summary="Get one example",
    response_model=ExampleOut,
    responses=error_responses(Unauthorized, NotFound),
)
def get_example(
    dataset_id: str, example_id: str, principal: PrincipalDep, session: SessionDep
) -> ExampleOut:
    example = service.get_example(session, principal.organization_id, dataset_id, example_id)
    return ExampleOut.model_validate(example)


@router.patch(
    "/{dataset_id}/examples/{example_id}",
    summary="Replace an example's messages and tools; the dataset then needs re-validation",
    response_model=ExampleOut,
    responses=error_responses(Unauthorized, NotFound, InvalidInput),
)
def update_example(
    dataset_id: str,
    example_id: str,
    body: ExampleUpdate,
    principal: PrincipalDep,
    session: SessionDep,
    settings: SettingsDep,
) -> ExampleOut:
    example = service.update_example(
        session, principal.organization_id, dataset_id, example_id, body, settings
    )
    return ExampleOut.model_validate(example)


@router.delete(
    "/{dataset_id}/examples/{example_id}",
    summary="Remove an example; the dataset then needs re-validation",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    response_model=None,
    responses=error_responses(Unauthorized, NotFound),
)
def delete_example(
    dataset_id: str, example_id: str, principal: PrincipalDep, session: SessionDep
) -> Response:
    service.delete_example(session, principal.organization_id, dataset_id, example_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
