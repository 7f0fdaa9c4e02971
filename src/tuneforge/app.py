"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from pydantic import BaseModel
from sqlalchemy import text

from tuneforge.agents.endpoints import router as agents_router
from tuneforge.auth.endpoints import router as auth_router
from tuneforge.config import Settings, get_settings
from tuneforge.datasets.endpoints import router as datasets_router
from tuneforge.db.engine import make_engine, make_session_factory
from tuneforge.db.migrate import ensure_migrated
from tuneforge.db.session import SessionDep
from tuneforge.errors import ServiceUnavailable, error_responses, install_error_handler


class HealthResponse(BaseModel):
    status: str
    database: str


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    settings.ensure_data_dir()
    engine = make_engine(settings.resolved_database_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ensure_migrated(engine)
        yield
        engine.dispose()

    app = FastAPI(
        title="TuneForge",
        version="0.1.0",
        description="Self-hostable fine-tuning platform.",
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/api/openapi.json",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = make_session_factory(engine)
    install_error_handler(app)
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

    app.include_router(auth_router)
    app.include_router(agents_router)
    app.include_router(datasets_router)
    return app
