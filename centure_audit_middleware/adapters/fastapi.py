"""FastAPI adapter: FastAPI is Starlette underneath; `scope["route"]` is the APIRoute, whose path is the template."""

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
