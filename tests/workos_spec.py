"""The WorkOS emulator checked against WorkOS's own published OpenAPI spec (npm `@workos/openapi-spec`, pinned).

The emulator is the oracle of every delivery test: if it accepted what the real API rejects, or answered in a shape
the real API never uses, those tests would prove nothing. So the suite's conftest records every exchange of every
emulator (`observe_exchanges`) and each test fails if one of its exchanges breaks the rules below. The spec is
fetched, pinned and checksummed by `scripts/fetch-workos-openapi-spec.sh` into a git-ignored cache; nothing here
downloads. Without it (offline, no npm), the checks are off and the tests of this oracle skip, except under
CI=true, where they fail.

The rules, for each exchange on an API route:

- A request the spec rejects (body, parameters, missing bearer key) must be rejected: answered with a 4xx. A 2xx
  or an injected 5xx to such a request is a violation: the real API would never have let it through.
- A request to an operation the spec does not have must not succeed.
- An answer whose status the spec declares for the operation must match the declared body.
- An answer whose status the spec does not declare is allowed only where the emulator documents its assumption
  (`ASSUMED_STATUSES`, below, and "Where the spec is silent" in emulator.py) or where a test injected it
  (`fail_next`, `set_failure_rate`: the test chose the status), and must still carry a JSON body with a string
  `message`.

Where the spec lags the SDK, `SPEC_OVERLAYS` patches it, each patch with its reason.

Not checked: the emulator's stand-ins for URLs WorkOS serves from other hosts (the Admin Portal page a link opens,
an export's presigned CSV download), which the API spec does not describe.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qsl, unquote

from centure_audit_middleware.testing import Exchange, observe_exchanges

SPEC_VERSION: Final = "0.1.0"
SPEC_ENV: Final = "CENTURE_AUDIT_WORKOS_OPENAPI_SPEC"
"""Overrides where the spec is read from (a path to open-api-spec.yaml)."""
ROOT: Final = Path(__file__).resolve().parents[1]
DEFAULT_SPEC: Final = ROOT / ".cache" / "workos-openapi-spec" / SPEC_VERSION / "open-api-spec.yaml"
FETCH_SCRIPT: Final = "scripts/fetch-workos-openapi-spec.sh"
# The spec's own production server: requests are matched as if they had been sent there.
SPEC_HOST: Final = "https://api.workos.com"

#: Statuses the spec does not declare that the emulator answers on its own, and why (see emulator.py's docstring).
ASSUMED_STATUSES: Final[dict[int, str]] = {
    401: "bad or revoked API key: the spec declares no 401 for Audit Logs routes; body {message}",
    413: "body over the emulator's max_body_bytes (WorkOS publishes no limit); body {message, code}",
    429: "rate limit on routes whose 429 the spec omits (WorkOS: 6,000 requests per 60 s); Retry-After in seconds",
    500: "an emulator bug (also kept in `internal_errors`); body {message}",
}
#: Faults a test injects: their status is the test's choice, so any status is allowed (the body is still checked).
INJECTED_FAULTS: Final = frozenset({"fail_next", "failure_rate"})
#: POST /audit_logs/events answers 200 in the spec; `WorkOSEmulator(event_success_status=201)` exists to check that
#: clients also take a 201, which some tools report. Allowed on that route only.
ASSUMED_EVENT_SUCCESS: Final = 201


class SpecUnavailable(Exception):
    """The pinned spec is not on disk (or openapi-core is not installed)."""


def spec_path() -> Path:
    return Path(os.environ.get(SPEC_ENV) or DEFAULT_SPEC)


@dataclass(slots=True)
class _Request:
    """openapi-core's `Request` protocol over an emulator's `ReceivedRequest`."""

    host_url: str
    path: str
    method: str
    parameters: Any
    content_type: str
    body: bytes | None


@dataclass(slots=True)
class _Response:
    """openapi-core's `Response` protocol over an emulator's answer."""

    status_code: int
    content_type: str
    headers: Any
    data: bytes | None


@dataclass(slots=True)
class Violation:
    method: str
    path: str
    status: int | None
    problem: str

    def __str__(self) -> str:
        return f"{self.method} {self.path} -> {self.status}: {self.problem}"


class SpecOracle:
    """Checks exchanges against the spec; thread-safe (openapi-core validators hold no per-call state)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        from openapi_core import Config, OpenAPI

        # No check of the spec itself: 0.1.0 fails its own meta-schema (list schemas repeat `list_metadata` in
        # `required`), which changes nothing for validating against it, and the check costs ~5 s.
        self._api = OpenAPI.from_dict(spec, config=Config(spec_validator_cls=None))
        # Retries and idempotent replays repeat an exchange byte for byte: checked once (a check costs ~5 ms).
        self._verdicts: dict[tuple[Any, ...], list[Violation]] = {}

    def check(self, exchange: Exchange) -> list[Violation]:
        received = exchange.request
        key = (
            received.method,
            received.path,
            received.query,
            tuple(sorted(received.headers.items())),
            received.body,
            received.fault,
            exchange.status,
            exchange.content_type,
            exchange.headers,
            exchange.body,
        )
        verdict = self._verdicts.get(key)
        if verdict is None:
            verdict = self._check(exchange)
            if len(self._verdicts) >= 10_000:
                self._verdicts.clear()
            self._verdicts[key] = verdict
        return list(verdict)

    def _check(self, exchange: Exchange) -> list[Violation]:
        from openapi_core.datatypes import RequestParameters
        from openapi_core.templating.paths.exceptions import PathError
        from openapi_core.templating.responses.exceptions import ResponseNotFound
        from werkzeug.datastructures import Headers, ImmutableMultiDict

        received = exchange.request
        path = unquote(received.path)
        if _emulator_only(received.method, path):
            return []
        status = exchange.status
        found: list[Violation] = []

        def violation(problem: str) -> None:
            found.append(Violation(received.method, received.path, status, problem))

        request = _Request(
            host_url=SPEC_HOST,
            path=path,
            method=received.method.lower(),
            parameters=RequestParameters(
                query=ImmutableMultiDict(parse_qsl(received.query, keep_blank_values=True)),
                header=Headers(list(received.headers.items())),
            ),
            content_type=received.headers.get("content-type", ""),
            body=received.body or None,
        )
        request_errors = list(self._api.iter_request_errors(request))
        unknown = [e for e in request_errors if isinstance(e, PathError)]
        rejected = status is not None and 400 <= status < 500
        if unknown:
            if not rejected and status is not None:
                violation(f"the spec has no such operation ({unknown[0]}), yet the emulator did not reject it")
            return found
        if request_errors and status is not None and not rejected:
            violation(f"did not reject a request the spec rejects (4xx): {_describe(request_errors)}")
        if status is None:
            return found  # a reset connection: nothing was answered

        response = _Response(status, exchange.content_type, Headers(list(exchange.headers)), exchange.body or None)
        response_errors = list(self._api.iter_response_errors(request, response))
        if any(isinstance(e, ResponseNotFound) for e in response_errors):
            is_event_success = received.method == "POST" and path == "/audit_logs/events"
            if status == ASSUMED_EVENT_SUCCESS and is_event_success:
                if _json_or_none(exchange.body) != {"success": True}:
                    violation("the assumed 201 for an event must carry the 200's body {success: true}")
            elif status not in ASSUMED_STATUSES and received.fault not in INJECTED_FAULTS:
                violation(f"status {status} is neither in the spec for this operation nor a documented assumption")
            elif not _has_message(exchange.body):
                violation(f"the body of an assumed {status} must be JSON with a string `message`: {exchange.body!r}")
            return found
        if response_errors:
            violation(f"answer does not match the spec: {_describe(response_errors)}; body {exchange.body[:300]!r}")
        return found


def _emulator_only(method: str, path: str) -> bool:
    """The Admin Portal page and an export's CSV: stand-ins for other WorkOS hosts, outside the API spec."""
    segments = path.strip("/").split("/")
    if method != "GET" or len(segments) != 2:
        return False
    return segments[0] == "portal" or (segments[0] == "exports" and segments[1].endswith(".csv"))


def _describe(errors: list[Exception]) -> str:
    parts = []
    for error in errors:
        text = f"{type(error).__name__}: {error}"
        # Schema errors carry the jsonschema details on __cause__ (schema_errors for request and response bodies).
        details = getattr(error, "schema_errors", None) or getattr(error.__cause__, "schema_errors", None)
        if details:
            text += " [" + "; ".join(f"{'/'.join(map(str, d.path))}: {d.message}" for d in details) + "]"
        parts.append(text)
    return " | ".join(parts)


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def _has_message(body: bytes) -> bool:
    parsed = _json_or_none(body)
    return isinstance(parsed, dict) and isinstance(parsed.get("message"), str)


@functools.cache
def load_oracle() -> SpecOracle:
    """The oracle on the pinned spec (parsed once per session); `SpecUnavailable` says why not."""
    path = spec_path()
    if not path.is_file():
        raise SpecUnavailable(
            f"WorkOS OpenAPI spec {SPEC_VERSION} not found at {path}: run {FETCH_SCRIPT} (needs npm or curl and "
            f"the npm registry once), or set {SPEC_ENV}"
        )
    try:
        import yaml
        from openapi_core import OpenAPI  # noqa: F401
    except ImportError as exc:
        raise SpecUnavailable(f"checking the emulator against the spec needs openapi-core: {exc}") from exc
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 0.6 s for the 1.1 MB spec instead of ~10
    with path.open("rb") as file:
        spec = yaml.load(file, Loader=loader)  # a safe loader either way
    for overlay in SPEC_OVERLAYS:
        overlay.apply(spec)
    # Only the operations the emulator serves: matching a request against 120 paths doubles the cost of each
    # check (~14 ms instead of ~7), and a request to any other WorkOS path is then an operation the spec has not,
    # which the emulator must refuse (it answers 404), so nothing the suite could catch is lost.
    paths = spec["paths"]
    missing = [path for path in EMULATED_PATHS if path not in paths]
    if missing:
        raise RuntimeError(f"WorkOS OpenAPI spec {SPEC_VERSION} lacks {missing}: is it the pinned one?")
    spec["paths"] = {path: paths[path] for path in EMULATED_PATHS}
    return SpecOracle(spec)


#: The spec's paths the emulator implements. An emulator route added later and not listed here answers 2xx to an
#: operation the oracle does not know: a violation, until it is added.
EMULATED_PATHS: Final = (
    "/audit_logs/events",
    "/audit_logs/exports",
    "/audit_logs/exports/{auditLogExportId}",
    "/audit_logs/actions",
    "/audit_logs/actions/{actionName}/schemas",
    "/portal/generate_link",
    "/organizations/{id}/audit_logs_retention",
)


@dataclass(frozen=True, slots=True)
class Overlay:
    """A documented patch to the spec: `schema` replaces components.schemas[`name`]."""

    name: str
    schema: dict[str, Any]
    reason: str

    def apply(self, spec: dict[str, Any]) -> None:
        spec["components"]["schemas"][self.name] = self.schema


#: `RetentionPeriod` values of workos 10.8 (`UpdateAuditLogsRetentionRetentionPeriod`).
_RETENTION_PERIODS: Final = [
    *(f"{n}_MONTH{'S' if n > 1 else ''}" for n in range(1, 12)),
    *(f"{n}_YEAR{'S' if n > 1 else ''}" for n in range(1, 11)),
]
SPEC_OVERLAYS: Final = (
    Overlay(
        "UpdateAuditLogsRetentionDto",
        {
            "oneOf": [
                {
                    "type": "object",
                    "properties": {"retention_period_in_days": {"type": "integer"}},
                    "required": ["retention_period_in_days"],
                },
                {
                    "type": "object",
                    "properties": {"retention_period": {"type": "string", "enum": _RETENTION_PERIODS}},
                    "required": ["retention_period"],
                },
            ]
        },
        "spec 0.1.0 knows only retention_period_in_days; the SDK (workos 10.8, generated from a later spec) sends "
        "`retention_period` ('3_MONTHS', ...) for a RetentionPeriod",
    ),
)


@dataclass(slots=True)
class Recorder:
    """The exchanges seen while recording, taken out (`drain`) and checked later, off the emulator's request path."""

    exchanges: list[Exchange] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, exchange: Exchange) -> None:
        with self.lock:
            self.exchanges.append(exchange)

    def drain(self) -> list[Exchange]:
        """The exchanges recorded since the last drain."""
        with self.lock:
            taken, self.exchanges = self.exchanges, []
        return taken


def violations(oracle: SpecOracle, exchanges: list[Exchange]) -> list[Violation]:
    return [violation for exchange in exchanges for violation in oracle.check(exchange)]


@contextmanager
def recording() -> Iterator[Recorder]:
    recorder = Recorder()
    with observe_exchanges(recorder):
        yield recorder
