"""FastAPI adapter: FastAPI is Starlette underneath, so the Starlette adapter installs it; route templates (with every
`include_router` prefix, which FastAPI >= 0.137 leaves out of `scope["route"]`) come from `starlette.route_template`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import starlette as _starlette

if TYPE_CHECKING:
    from fastapi import FastAPI

    from ..auditor import Auditor

__all__ = ["install"]


def install(app: FastAPI, auditor: Auditor) -> FastAPI:
    _starlette.install(app, auditor)
    return app
