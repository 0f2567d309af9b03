"""Durable-before-response under a real server (RELIABILITY row 27): SIGKILL the app's worker process right after a
`durable=True` request returned 200, twenty times (gunicorn forks a fresh worker each time); every event is
delivered after the restart, once. The commit interval is an hour and WorkOS is down until the end, so only the
durable path can have put the events anywhere before the kills."""

from __future__ import annotations

import functools
import os
import signal
from pathlib import Path

import httpx
import pytest

from centure_audit_middleware.testing import WorkOSEmulator

from .reliability_support import ProcessGroup, app_env, assert_delivered_once, free_port, gunicorn_argv, wait_until

pytestmark = pytest.mark.slow


def test_sigkill_right_after_a_durable_200_loses_nothing_20_of_20(
    procs: ProcessGroup, workos_emulator: WorkOSEmulator, tmp_path: Path
) -> None:
    env = app_env(workos_emulator, tmp_path / "outbox.db", RELIABILITY_COMMIT_INTERVAL="3600")
    workos_emulator.set_down(True)
    port = free_port()
    argv = gunicorn_argv("fastapi_app", port, worker_class="uvicorn.workers.UvicornWorker", workers=1, preload=True)
    server = procs.spawn("gunicorn", argv, env, port=port)
    answered: list[str] = []
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for round_ in range(20):
            worker = server.wait_ready()["pid"]
            response = client.post(f"/durable-events/d{round_}")
            assert response.status_code == 200, response.text
            answered.append(f"d{round_}")
            os.kill(worker, signal.SIGKILL)  # the app's process, right after its 200
            replaced = functools.partial(lambda old: server.wait_ready()["pid"] != old, worker)
            assert wait_until(replaced, 30), server.output()
    workos_emulator.set_down(False)
    assert workos_emulator.wait_for_events(20, 30), server.output()
    assert_delivered_once(workos_emulator, answered)
