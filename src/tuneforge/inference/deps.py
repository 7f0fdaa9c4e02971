"""The app's inference runtime as a request dependency, for the API and the dashboard alike."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from tuneforge.inference.calls import InferenceRuntime
from tuneforge.state import app_state


async def get_runtime(request: Request) -> InferenceRuntime:
    return app_state(request).shared(InferenceRuntime)


RuntimeDep = Annotated[InferenceRuntime, Depends(get_runtime)]
