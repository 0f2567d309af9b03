"""`centure-audit demo`: the whole pipeline on loopback, with no account, key or network.

A FastAPI app under uvicorn and a Flask app under werkzeug's threaded WSGI server, both audited by one Auditor
that delivers to the WorkOS emulator (through the real SDK) and to the local store. A scripted tour sends requests
as several users of two organizations through a trusted proxy (X-Forwarded-For from several cities, resolved with
a GeoIP database the demo builds), plus one forged X-Forwarded-For from an untrusted peer, and requests that record
nothing (a read, a form's GET, a dry run, a refused call, a visitor who isn't signed in). Beside each request it
prints the event recorded or why none was (`demo.outcomes`), then what the store and the emulator received.
`--serve` keeps everything up afterwards, for a browser: the Audit Logs page as a subscribed and an unsubscribed
organization's admin.
"""

from __future__ import annotations

import argparse
import itertools
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

__all__ = ["register"]

USER_AGENTS = {
    "chrome-mac": (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.0.0 Safari/537.36"
    ),
    "firefox-linux": "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "safari-iphone": (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/18.1 Mobile/15E148 Safari/604.1"
    ),
    "edge-windows": (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 "
        "Safari/537.36 Edg/131.0.0.0"
    ),
    "curl": "curl/8.5.0",
}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the demo: audited FastAPI and Flask apps, scripted traffic",
        description="Run audited FastAPI and Flask apps on loopback with a WorkOS emulator, send a scripted tour of "
        "requests, and print what each one recorded (or why it recorded nothing). No account, key or network.",
    )
    parser.add_argument("--dir", type=Path, default=None, help="keep the demo's files here (default: a temp dir)")
    parser.add_argument(
        "--serve",
        action="store_true",
        help="after the tour, keep the apps, the WorkOS emulator and the Audit Logs page running until Ctrl-C, to "
        "open the printed links in a browser (an admin of a subscribed and of an unsubscribed organization)",
    )
    parser.set_defaults(handler=run)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def _uvicorn(app: Any, port: int) -> Iterator[str]:
    import uvicorn

    # The Auditor resolves X-Forwarded-For (trusted_proxies): uvicorn must not do it first (README, "uvicorn behind a
    # proxy"), or the Auditor would see the header's client as the socket peer.
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", proxy_headers=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="demo-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def _werkzeug(app: Any, port: int) -> Iterator[str]:
    import logging

    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access log in the middle of the tour

    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="demo-werkzeug", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _tour(fastapi_url: str, flask_url: str, outcome: Callable[[str], str], say: Callable[[str], None]) -> int:
    """The scripted traffic. `say`s two lines per request as it goes (so the library's own log lines land beside
    the request they are about): the request, and what it recorded or why it recorded nothing (`outcome`). Returns
    how many requests recorded nothing."""
    import httpx

    from ..enrich.geodb import DEMO_CLIENT_IPS

    # The demo client plays the load balancer: it connects from 127.0.0.1, the trusted proxy.
    proxy = httpx.Client(timeout=10)
    # An untrusted peer: another loopback address, which the Auditor does not trust.
    untrusted = httpx.Client(timeout=10, transport=httpx.HTTPTransport(local_address="127.0.0.2"))
    ids = itertools.count(1)
    not_recorded = 0

    def send(
        client: httpx.Client, method: str, url: str, token: str | None, city: str | None, agent: str, **kw: Any
    ) -> None:
        request_id = f"demo-tour-{next(ids):02d}"
        headers = {"User-Agent": USER_AGENTS[agent], "X-Request-ID": request_id}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if city is not None:
            headers["X-Forwarded-For"] = DEMO_CLIENT_IPS.get(city, city)
        response = client.request(method, url, headers=headers, **kw)
        where = url.split("//", 1)[1]
        say(f"  {response.status_code} {method:5} {where:60} {token or '(none)':12} {city or '-'}")
        result = outcome(request_id)
        say(f"      -> {result}")
        if not result.startswith("recorded"):
            nonlocal not_recorded
            not_recorded += 1

    with proxy, untrusted:
        send(
            proxy,
            "POST",
            f"{fastapi_url}/projects/proj_atlas/api-keys",
            "tok_ada",
            "London",
            "chrome-mac",
            json={"name": "ci-deploy", "project_name": "Atlas"},
        )
        send(
            proxy,
            "PATCH",
            f"{fastapi_url}/projects/proj_atlas/mcp-proxies/mcp_7/status",
            "tok_grace",
            "Paris",
            "firefox-linux",
            json={"status": "paused"},
        )
        send(proxy, "POST", f"{flask_url}/projects", "tok_linus", "Linköping", "edge-windows", json={"name": "Orion"})
        send(
            proxy,
            "POST",
            f"{flask_url}/projects/proj_orion/members",
            "tok_support",
            "Tokyo",
            "safari-iphone",
            json={"user_id": "user_01LINUS", "role": "admin"},
        )
        send(
            proxy,
            "POST",
            f"{fastapi_url}/projects/proj_gemini/api-keys",
            "tok_linus",
            "São Paulo",
            "curl",
            json={"name": "nightly-export", "project_name": "Gemini"},
        )
        send(
            proxy,
            "PATCH",
            f"{fastapi_url}/projects/proj_gemini/mcp-proxies/mcp_9/status",
            "tok_support",
            "Sydney",
            "safari-iphone",
            json={"status": "active"},
        )
        # Requests that record nothing, each for its own reason (printed beside it).
        send(proxy, "GET", f"{fastapi_url}/projects/proj_atlas", "tok_ada", "London", "chrome-mac")
        send(proxy, "GET", f"{flask_url}/projects", "tok_linus", "Linköping", "edge-windows")
        send(
            proxy,
            "POST",
            f"{fastapi_url}/projects/proj_atlas/api-keys?dry_run=true",
            "tok_ada",
            "London",
            "chrome-mac",
            json={"name": "ci-deploy-2"},
        )
        send(proxy, "POST", f"{fastapi_url}/projects/proj_atlas/api-keys", "tok_nobody", "Milton", "curl", json={})
        send(proxy, "POST", f"{flask_url}/projects", None, "Milton", "curl", json={"name": "Anonymous"})
        # A forged X-Forwarded-For from a peer that is not a trusted proxy: ignored, the peer is recorded.
        send(
            untrusted,
            "POST",
            f"{flask_url}/projects",
            "tok_grace",
            "6.6.6.6",
            "firefox-linux",
            json={"name": "Spoofed"},
        )
    return not_recorded


def _cell(value: Any, width: int) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _table(events: list[Any]) -> str:
    columns = [
        ("time", 8),
        ("actor", 16),
        ("action", 26),
        ("targets", 34),
        ("location", 13),
        ("city", 17),
        ("client", 22),
    ]
    lines = ["  ".join(f"{name:<{width}}" for name, width in columns)]
    lines.append("  ".join("-" * width for _, width in columns))
    for e in events:
        geo = e.geo
        city = f"{geo.city or '?'}, {geo.country_code or '?'}" if geo else "-"
        agent = e.user_agent
        client = f"{agent.browser_family} / {agent.device_class}" if agent else "-"
        targets = ", ".join(f"{t.type}:{t.name or t.id}" for t in e.targets)
        values = [
            e.occurred_at.strftime("%H:%M:%S"),
            e.actor.name or e.actor.id,
            e.action,
            targets,
            e.context.location,
            city,
            client,
        ]
        lines.append("  ".join(f"{_cell(v, w):<{w}}" for v, (_, w) in zip(values, columns, strict=True)))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..demo.admin import mount_admin
    from ..demo.apps import ORGANIZATIONS, build_fastapi_app, build_flask_app
    from ..demo.outcomes import ExplainingAuditor
    from ..enrich.geo import GeoLocator
    from ..enrich.geodb import build_demo_databases
    from ..sinks import StoreSink, WorkOSSink
    from ..store import EventQuery, open_store
    from ..testing import WorkOSEmulator

    with ExitStack() as stack:
        directory = args.dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="centure-demo-")))
        directory.mkdir(parents=True, exist_ok=True)
        print(f"Centure audit demo: files in {directory}\n")
        city_db, asn_db = build_demo_databases(directory)
        emulator = stack.enter_context(WorkOSEmulator(organizations=list(ORGANIZATIONS)))
        store = open_store(directory / "audit.db")
        stack.callback(store.close)
        auditor = ExplainingAuditor(
            sinks=[WorkOSSink(api_key=emulator.api_key, base_url=emulator.url), StoreSink(store)],
            trusted_proxies=["127.0.0.1/32"],
            geoip=GeoLocator.open(city_db, asn_path=asn_db),
            outbox=directory / "outbox.db",
        )
        stack.callback(auditor.close)
        fastapi_app = build_fastapi_app()
        admin_path = mount_admin(fastapi_app, store=store, auditor=auditor, emulator=emulator)
        flask_app = build_flask_app()
        auditor.install(fastapi_app)
        auditor.install(flask_app)
        fastapi_url = stack.enter_context(_uvicorn(fastapi_app, _free_port()))
        flask_url = stack.enter_context(_werkzeug(flask_app, _free_port()))
        print(f"FastAPI under uvicorn: {fastapi_url}\nFlask under werkzeug:  {flask_url}")
        print(f"WorkOS emulator:       {emulator.url} (the real workos SDK sends to it)\n")

        print("Scripted requests (status, method, URL, token, X-Forwarded-For city), each with what it recorded:")
        not_recorded = _tour(fastapi_url, flask_url, auditor.outcome, say=lambda line: print(line, flush=True))
        if not auditor.flush(15):
            print("warning: not everything was delivered within 15 s", file=sys.stderr)

        for organization_id, name in ORGANIZATIONS.items():
            events = list(store.iter_events(EventQuery(organization_id=organization_id)))
            print(f"\nRecorded for {name} ({organization_id}), newest first, from the local store:")
            print(_table(events))

        stats = auditor.stats()
        keys = emulator.count_by_key()
        print(
            f"\nDelivered: {stats['sent']} sink deliveries, {stats['dead_lettered']} dead letters, "
            f"{sum(stats['dropped'].values())} dropped; the WorkOS emulator accepted {len(keys)} events, "
            f"{sum(1 for n in keys.values() if n > 1)} twice."
        )
        print(
            f"Not recorded: {not_recorded} requests, each for the reason printed beside it "
            f"(stats()['skipped']: {stats['skipped']})."
        )
        print("The forged X-Forwarded-For (6.6.6.6 from 127.0.0.2, not a trusted proxy) was recorded as 127.0.0.2.")
        login = f"{fastapi_url}{admin_path.rsplit('/', 1)[0]}/demo-login?token="
        print(
            f"\nThe Audit Logs page: {fastapi_url}{admin_path}\n"
            f"  as Ada, admin of Acme (subscribed: portal buttons, events): {login}tok_ada\n"
            f"  as Linus, admin of Globex (not subscribed: Subscribe Now):  {login}tok_linus"
        )
        if args.serve:
            print("\nServing until Ctrl-C.", flush=True)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
        else:
            print("  (`centure-audit demo --serve` keeps them up until Ctrl-C)")
    return 0
