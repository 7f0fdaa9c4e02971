"""The application's shared objects: built once by ``create_app``, reached one way.

``app.state`` is an ``AppState``, so its objects have types and one definition, and every
request dependency reads them through ``app_state``. The packages that own a shared object
declare its dependency next to it (``SessionDep`` in db, ``PrincipalCacheDep`` in auth,
``RuntimeDep`` in inference). Those of packages above this module are kept by their type
(``shared``): db and auth import this module, so it may import neither them nor what
imports them.

The dependencies are async and take the request itself: FastAPI calls them inline, with
no threadpool hop and no sub-dependency to resolve, on every request.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, TypeVar

import anyio
from fastapi import Depends, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.datastructures import State

from tuneforge.config import Settings

T = TypeVar("T")


class AppState(State):
    """What one app's requests share. A Starlette ``State``, so it can be ``app.state``."""

    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    read_session_factory: sessionmaker[Session]  # autocommit, for safe methods
    session_slots: anyio.CapacityLimiter
    _shared: dict[type, object]

    def __init__(
        self,
        *,
        settings: Settings,
        engine: Engine,
        session_factory: sessionmaker[Session],
        read_session_factory: sessionmaker[Session],
        session_slots: anyio.CapacityLimiter,
        shared: Iterable[object],
    ) -> None:
        super().__init__()
        self.settings = settings
        self.engine = engine
        self.session_factory = session_factory
        self.read_session_factory = read_session_factory
        self.session_slots = session_slots
        self._shared = {type(item): item for item in shared}

    def shared(self, kind: type[T]) -> T:
        """The app's one ``kind`` object, such as auth's credential cache."""
        item = self._shared.get(kind)
        if not isinstance(item, kind):
            raise LookupError(f"This app shares no {kind.__name__}")
        return item


def app_state(request: Request) -> AppState:
    """The one way to the shared objects, for dependencies and for handlers outside DI."""
    state = request.app.state
    if not isinstance(state, AppState):
        raise TypeError("The app was not built by create_app: its state is no AppState")
    return state


async def get_app_settings(request: Request) -> Settings:
    return app_state(request).settings


async def get_session_factory(request: Request) -> sessionmaker[Session]:
    """For work that outlives the request's session: a stream, a provider poll."""
    return app_state(request).session_factory


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
SessionFactoryDep = Annotated[sessionmaker[Session], Depends(get_session_factory)]
