"""The dashboard's routes: thin handlers that call the domain services and render templates."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import RedirectResponse

from tuneforge.web.deps import DASHBOARD, require_csrf
from tuneforge.web.routes import (
    agents,
    auth,
    datasets,
    evals,
    jobs,
    models,
    overview,
    webhooks,
    wizard,
)

router = APIRouter(include_in_schema=False, dependencies=[Depends(require_csrf)])


@router.get("/")
@router.get("/dashboard")
def home() -> RedirectResponse:
    return RedirectResponse(DASHBOARD, status_code=303)


for module in (auth, overview, datasets, wizard, jobs, models, evals, agents, webhooks):
    router.include_router(module.router)
