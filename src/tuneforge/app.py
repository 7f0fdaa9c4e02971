"""The FastAPI application factory."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from sqlalchemy import Engine, text
from starlette.exceptions import HTTPException as StarletteHTTPException

from tuneforge.agents.endpoints import router as agents_router
from tuneforge.auth.cache import PrincipalCache
from tuneforge.auth.endpoints import router as auth_router
from tuneforge.config import Settings, get_settings
from tuneforge.datasets.endpoints import router as datasets_router
from tuneforge.datasets.storage import sweep_abandoned_uploads
from tuneforge.db.engine import make_engine, make_session_factory
from tuneforge.db.migrate import ensure_migrated
from tuneforge.db.session import SessionDep, session_slots
from tuneforge.errors import (
    ServiceUnavailable,
    TuneForgeError,
    ValidationErrorBody,
    error_responses,
    http_error_code,
)
from tuneforge.evals.endpoints import router as evals_router
from tuneforge.exports.endpoints import router as exports_router
from tuneforge.inference.calls import GenerationSlots, InferenceRuntime
from tuneforge.inference.endpoints import agent_chat_router, openai_router
from tuneforge.inference.engine import InferenceEngine
from tuneforge.jobs.endpoints import router as jobs_router
from tuneforge.models.endpoints import checkpoint_router, stats_router
from tuneforge.models.endpoints import router as models_router
from tuneforge.openai_compat.endpoints import router as openai_fine_tuning_router
from tuneforge.openai_errors import OpenAIErrorBody
from tuneforge.providers.endpoints import router as base_models_router
from tuneforge.state import AppState
from tuneforge.web.errors import install_dashboard_error_pages
from tuneforge.web.headers import SecurityHeaders
from tuneforge.web.json_body import JsonBodyChecks
from tuneforge.web.routes import router as web_router
from tuneforge.web.templating import WEB_DIR
from tuneforge.webhooks.endpoints import router as webhooks_router
from tuneforge.webhooks.openai_endpoints import router as openai_webhooks_router
from tuneforge.worker.endpoints import router as sync_router
from tuneforge.worker.loop import WorkerThread


class HealthResponse(BaseModel):
    status: str
    database: str


# An upload's temp file older than this belongs to a server that died receiving it.
ABANDONED_UPLOAD_SECONDS = 6 * 60 * 60
FAVICON = WEB_DIR / "static" / "favicon.ico"


def build_state(settings: Settings, engine: Engine) -> AppState:
    """Every object the app's requests share, each made once here."""
    session_factory = make_session_factory(engine)
    return AppState(
        settings=settings,
        engine=engine,
        session_factory=session_factory,
        read_session_factory=make_session_factory(
            engine.execution_options(isolation_level="AUTOCOMMIT")
        ),
        session_slots=session_slots(engine),
        shared=[
            PrincipalCache(settings.auth_cache_seconds),
            # Its engine loads a model at the first chat: an app that never chats loads none.
            InferenceRuntime(
                settings=settings,
                engine=InferenceEngine.from_settings(settings),
                session_factory=session_factory,
                slots=GenerationSlots(settings.inference_concurrency_per_organization),
            ),
        ],
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    settings.ensure_data_dir()
    engine = make_engine(settings.resolved_database_url)
    state = build_state(settings, engine)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ensure_migrated(engine)
        sweep_abandoned_uploads(settings.uploads_dir, ABANDONED_UPLOAD_SECONDS)
        # Import and startup leave ~500k long-lived objects (torch's among them); every full
        # collection would walk them all, stalling a loaded worker ~0.4 s several times a
        # minute. Frozen, the collector skips them until shutdown.
        gc.freeze()
        worker = None
        if settings.embedded_worker:
            inference = state.shared(InferenceRuntime).engine
            worker = WorkerThread(state.session_factory, settings, inference).start()
        yield
        if worker is not None:
            worker.stop()
        engine.dispose()
        gc.unfreeze()

    app = FastAPI(
        title="TuneForge",
        version="0.1.0",
        description="Self-hostable fine-tuning platform.",
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/api/openapi.json",
        lifespan=lifespan,
    )
    app.state = state
    install_error_handler(app)
    install_dashboard_error_pages(app)
    document_error_shapes(app)
    app.add_middleware(JsonBodyChecks, limit_bytes=settings.json_body_limit_bytes)
    app.add_middleware(SecurityHeaders)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=True,
            allow_methods=["*"],
            allow_headers=["*"],
        )

    @app.get(
        "/health",
        tags=["health"],
        summary="Liveness and database reachability, for load balancers",
        response_model=HealthResponse,
        responses=error_responses(ServiceUnavailable),
    )
    def health(session: SessionDep) -> HealthResponse:
        try:
            session.execute(text("SELECT 1"))
        except Exception as exc:
            raise ServiceUnavailable("Database is unreachable") from exc
        return HealthResponse(status="ok", database=engine.dialect.name)

    # A request tries the routers in this order, each of their routes in turn (~10 us a
    # route), so the ones programs call most come first; no path of one router is another's.
    for router in (
        jobs_router,
        openai_router,
        agent_chat_router,
        openai_fine_tuning_router,
        datasets_router,
        models_router,
        sync_router,
        checkpoint_router,
        exports_router,
        stats_router,
        base_models_router,
        evals_router,
        agents_router,
        auth_router,
        webhooks_router,
        openai_webhooks_router,
        web_router,
    ):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=WEB_DIR / "static"), name="static")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:
        """Browsers ask for it on every first page view."""
        return FileResponse(FAVICON, media_type="image/x-icon")

    return app


def document_error_shapes(app: FastAPI) -> None:
    """FastAPI documents every 422 as its own ``HTTPValidationError``; ours are
    ``ValidationErrorBody`` (OpenAI's error shape under ``/v1``), as the handlers render."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (ValidationErrorBody, OpenAIErrorBody):
            if model.__name__ not in components:
                definition = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(definition.pop("$defs", {}))
                components[model.__name__] = definition
        for path, operations in schema.get("paths", {}).items():
            body = OpenAIErrorBody if path.startswith("/v1/") else ValidationErrorBody
            for operation in operations.values():
                response = operation.get("responses", {}).get("422")
                if response is not None:
                    ref = {"$ref": f"#/components/schemas/{body.__name__}"}
                    response["content"] = {"application/json": {"schema": ref}}
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def install_error_handler(app: FastAPI) -> None:
    """The one handler of every ``TuneForgeError``, request validation error and HTTP error."""

    @app.exception_handler(TuneForgeError)
    async def render_tuneforge_error(_: Request, exc: TuneForgeError) -> JSONResponse:
        body = {"error": exc.error, "detail": exc.detail, **exc.extra}
        return JSONResponse(status_code=exc.status_code, content=body, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def render_http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        """Errors raised below our code (an unparsable body, an unknown route) in our shape."""
        return JSONResponse(
            status_code=exc.status_code,
            content={"error": http_error_code(exc.status_code), "detail": str(exc.detail)},
            headers=exc.headers,
        )

    @app.exception_handler(RequestValidationError)
    async def render_request_validation_error(
        _: Request, exc: RequestValidationError
    ) -> JSONResponse:
        fields = [
            {"field": ".".join(str(part) for part in err["loc"]), "message": err["msg"]}
            for err in exc.errors()
        ]
        summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
        return JSONResponse(
            status_code=422,
            content={"error": "validation_error", "detail": summary, "fields": fields},
        )
