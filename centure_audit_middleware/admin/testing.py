"""`LocalStripe`: a localstripe server (a fake, stateful Stripe API) on loopback, for testing billing integrations.

    with LocalStripe() as fake:
        entitlements = StripeEntitlements("sk_test_x", "price_audit", api_base=fake.url, webhook_secret="whsec_x")
        fake.add_webhook("app", "http://127.0.0.1:8000/audit-logs/billing/stripe-webhook", "whsec_x")

localstripe's own command listens on every interface and writes its state to /tmp on every change; this runs its
application in a child process bound to 127.0.0.1 on a free port, with nothing written to disk. It signs webhooks as
Stripe does (``Stripe-Signature: t=...,v1=...``), about a second after the change. It has no Checkout Sessions and
sends no ``customer.subscription.updated`` (test those against a recording server or with `sign_webhook`).
Needs the ``localstripe`` package.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
import time
import urllib.request
from types import TracebackType
from typing import Any, Final, Self

__all__ = ["LocalStripe", "sign_webhook"]

# Runs in the child: localstripe's aiohttp app, on a socket it binds itself so the port is never raced for.
_SERVER: Final = """
import socket, sys
from aiohttp import web
from localstripe import resources, server
resources.store.dump_to_disk = lambda: None
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", 0))
print(sock.getsockname()[1], flush=True)
web.run_app(server.app, sock=sock, print=None, access_log=None, handle_signals=True)
"""


def sign_webhook(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """The ``Stripe-Signature`` header Stripe would send with `payload`."""
    stamp = int(time.time()) if timestamp is None else timestamp
    signature = hmac.new(secret.encode(), f"{stamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={signature}"


class LocalStripe:
    """A localstripe child process on 127.0.0.1; `url` is its API base (``http://127.0.0.1:PORT``)."""

    def __init__(self, *, start_timeout: float = 20.0) -> None:
        self.start_timeout = start_timeout
        self._process: subprocess.Popen[str] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        process = subprocess.Popen(
            [sys.executable, "-c", _SERVER],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._process = process
        assert process.stdout is not None
        line = process.stdout.readline().strip()  # the port, printed once the socket is bound
        if not line.isdigit():
            self.stop()
            raise RuntimeError("localstripe did not start (is the localstripe package installed?)")
        self.port = int(line)
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                self._request("DELETE", "/_config/data")
                return self
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    self.stop()
                    raise RuntimeError("localstripe did not answer") from None
                time.sleep(0.05)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _request(self, method: str, path: str, data: dict[str, Any] | None = None) -> None:
        body = None
        headers = {}
        if data is not None:
            body = json.dumps(data).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.url + path, data=body, method=method, headers=headers)
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()

    def reset(self) -> None:
        """Forget every object (customers, plans, subscriptions); webhooks stay registered."""
        self._request("DELETE", "/_config/data")

    def add_webhook(self, name: str, url: str, secret: str, events: list[str] | None = None) -> None:
        """Have localstripe POST signed events (those of `events`, default all) to `url`."""
        data: dict[str, Any] = {"url": url, "secret": secret}
        if events is not None:
            data["events"] = events
        self._request("POST", f"/_config/webhooks/{name}", data)
