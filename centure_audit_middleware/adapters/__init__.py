"""Framework adapters: one-line install, route templates, shutdown hooks. Each imports its framework lazily."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

__all__ = ["detect"]


def detect(app: Any) -> ModuleType:
    """The adapter module for `app`: Flask (has `wsgi_app` and `view_functions`), FastAPI, or Starlette."""
    for cls in type(app).__mro__:
        module = cls.__module__.split(".")[0]
        if module in ("flask", "fastapi", "starlette"):
            return importlib.import_module(f"{__name__}.{module}")
    raise TypeError(
        f"cannot install into {type(app).__name__}: use AuditMiddleware (ASGI) or AuditWSGIMiddleware (WSGI)"
    )
