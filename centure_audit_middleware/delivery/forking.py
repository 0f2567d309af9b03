"""One helper for what every long-lived object of the pipeline does at fork: start afresh in the child."""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from typing import TypeVar

__all__ = ["after_fork_in_child"]

T = TypeVar("T")


def after_fork_in_child(obj: T, reset: Callable[[T], None]) -> None:
    """Call `reset(obj)` in every child forked while `obj` lives. Held weakly: hooks can't be unregistered, and an
    object that is gone must not be kept alive by one."""
    ref = weakref.ref(obj)

    def hook() -> None:
        target = ref()
        if target is not None:
            reset(target)

    os.register_at_fork(after_in_child=hook)
