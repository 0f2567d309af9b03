"""WorkOS action schemas from the catalog, and pushing them through the `workos` SDK.

`action_schema(spec)` is the body of `POST /audit_logs/actions/{action}/schemas`: the target types in order, each
with a JSON Schema for its metadata, the actor's metadata schema, and the event's. Each property has its `type`,
its `maxLength` when the docs state one, and an `enum` for a documented constant; documented-required keys are
`required`. No schema says `additionalProperties: false`: the pipeline adds its own keys (``geo_*``,
``http_status``), and unknown keys are the local validator's call, where non-strict mode can still deliver.

WorkOS validates every event of an action against its latest schema once one exists, so pushing is opting in to
WorkOS refusing (and the outbox dead-lettering) events that miss a required key: run the app with
`catalog.validator(strict=True)` in tests first.

`push_schemas` reads the current schemas first and only creates a version where the catalog's differs, so running
it twice changes nothing (WorkOS would also return an identical latest version, but a dry run needs to know).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

from .model import ActionSpec, ActorSpec, Catalog, FieldSpec, default_catalog

if TYPE_CHECKING:
    from workos import WorkOSClient
    from workos.audit_logs.models import AuditLogSchema

__all__ = [
    "SchemaResult",
    "action_schema",
    "metadata_schema",
    "push_schemas",
    "remote_schemas",
    "schema_body",
    "workos_client",
]

SchemaStatus = Literal["created", "updated", "unchanged", "would create", "would update", "skipped", "failed"]
#: `list_actions` pages hold at most 100 (the API's maximum).
_PAGE: Final = 100


def metadata_schema(fields: Sequence[FieldSpec]) -> dict[str, Any] | None:
    """A JSON Schema object for metadata `fields`, or None when there are none."""
    if not fields:
        return None
    properties: dict[str, Any] = {}
    for field in fields:
        prop: dict[str, Any] = {"type": field.type}
        if field.max_length is not None:
            prop["maxLength"] = field.max_length
        if field.const is not None:
            prop["enum"] = [field.const]
        properties[field.name] = prop
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    required = [f.name for f in fields if f.required]
    if required:
        schema["required"] = required
    return schema


def action_schema(spec: ActionSpec, actor: ActorSpec | None = None) -> dict[str, Any]:
    """The schema body for `spec` (`actor`: the catalog's actor when the action has none of its own)."""
    targets: list[dict[str, Any]] = []
    for target in spec.targets:
        entry: dict[str, Any] = {"type": target.type}
        metadata = metadata_schema(target.metadata)
        if metadata is not None:
            entry["metadata"] = metadata
        targets.append(entry)
    body: dict[str, Any] = {"targets": targets}
    actor_spec = spec.actor if spec.actor is not None else actor
    actor_metadata = metadata_schema(actor_spec.metadata) if actor_spec is not None else None
    if actor_metadata is not None:
        body["actor"] = {"metadata": actor_metadata}
    metadata = metadata_schema(spec.metadata)
    if metadata is not None:
        body["metadata"] = metadata
    return body


def schema_body(schema: AuditLogSchema) -> dict[str, Any]:
    """The comparable part (targets, actor, metadata) of a schema WorkOS returned, in `action_schema`'s form."""
    body: dict[str, Any] = {"targets": [t.to_dict() for t in schema.targets]}
    if schema.actor is not None:
        body["actor"] = schema.actor.to_dict()
    if schema.metadata is not None:
        body["metadata"] = schema.metadata
    return body


def _canonical(body: dict[str, Any]) -> str:
    # Key order and whitespace are not differences.
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class SchemaResult:
    """What `push_schemas` did (or, in a dry run, would do) for one action."""

    action: str
    status: SchemaStatus
    #: the latest version at WorkOS afterwards (before, in a dry run); None when there is none
    version: int | None = None
    #: for updates: the parts that differ (targets, actor, metadata); for failures and skips: why
    detail: str = ""

    def __str__(self) -> str:
        version = f" (version {self.version})" if self.version is not None else ""
        detail = f": {self.detail}" if self.detail else ""
        return f"{self.action}: {self.status}{version}{detail}"


def workos_client(api_key: str | None = None, base_url: str | None = None, timeout: float = 10.0) -> WorkOSClient:
    """A `WorkOSClient` without the SDK's own retries (a CLI run should fail fast and say why). The key and base URL
    fall back to `WORKOS_API_KEY` / `WORKOS_BASE_URL`; no key at all is a `ValueError`."""
    import os

    from workos import WorkOSClient

    key = api_key or os.environ.get("WORKOS_API_KEY")
    if not key:
        raise ValueError("no API key (pass --api-key or set WORKOS_API_KEY)")
    return WorkOSClient(
        api_key=key,
        base_url=base_url or os.environ.get("WORKOS_BASE_URL") or None,
        request_timeout=timeout,  # type: ignore[arg-type]  # typed int, used as a float
        max_retries=0,
    )


def remote_schemas(client: WorkOSClient) -> dict[str, AuditLogSchema]:
    """Action name -> its latest schema, for every action WorkOS has."""
    page = client.audit_logs.list_actions(limit=_PAGE)
    return {action.name: action.schema for action in page.auto_paging_iter()}


def push_schemas(
    client: WorkOSClient,
    catalog: Catalog | None = None,
    *,
    actions: Iterable[str] | None = None,
    dry_run: bool = False,
) -> list[SchemaResult]:
    """Create a schema version for each catalog action (or each of `actions`) whose schema differs from WorkOS's
    latest; identical ones are left alone. Errors on one action are reported and the others still pushed."""
    from workos._errors import WorkOSError

    catalog = catalog if catalog is not None else default_catalog()
    if actions is None:
        specs = list(catalog)
    else:
        names = list(dict.fromkeys(actions))
        unknown = [name for name in names if name not in catalog]
        if unknown:
            raise KeyError(f"not in the catalog: {', '.join(unknown)}")
        specs = [catalog[name] for name in names]
    existing = remote_schemas(client)
    results: list[SchemaResult] = []
    for spec in specs:
        if not spec.targets:
            results.append(SchemaResult(spec.action, "skipped", detail="no documented targets (WorkOS requires one)"))
            continue
        body = action_schema(spec, catalog.actor)
        current = existing.get(spec.action)
        if current is not None and _canonical(schema_body(current)) == _canonical(body):
            results.append(SchemaResult(spec.action, "unchanged", current.version))
            continue
        differs = _differences(schema_body(current), body) if current is not None else ""
        if dry_run:
            status: SchemaStatus = "would create" if current is None else "would update"
            results.append(SchemaResult(spec.action, status, current.version if current else None, differs))
            continue
        try:
            created = client.audit_logs.create_schema(
                spec.action,
                targets=_sdk_targets(body),
                actor=_sdk_actor(body),
                metadata=body.get("metadata"),
            )
        except WorkOSError as exc:
            results.append(SchemaResult(spec.action, "failed", detail=_describe(exc)))
            continue
        results.append(SchemaResult(spec.action, "created" if current is None else "updated", created.version, differs))
    return results


def _differences(current: dict[str, Any], wanted: dict[str, Any]) -> str:
    parts = [
        key
        for key in ("targets", "actor", "metadata")
        if _canonical({key: current.get(key)}) != _canonical({key: wanted.get(key)})
    ]
    return f"{', '.join(parts)} differ" if parts else ""


def _sdk_targets(body: dict[str, Any]) -> list[Any]:
    from workos.audit_logs.models import AuditLogSchemaTargetInput

    return [AuditLogSchemaTargetInput(type=t["type"], metadata=t.get("metadata")) for t in body["targets"]]


def _sdk_actor(body: dict[str, Any]) -> Any:
    from workos.audit_logs.models import AuditLogSchemaActorInput

    actor = body.get("actor")
    return AuditLogSchemaActorInput(metadata=actor["metadata"]) if actor is not None else None


def _describe(exc: Exception) -> str:
    """Status and message, never the request (its headers carry the API key)."""
    status = getattr(exc, "status_code", None)
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return f"HTTP {status}: {message}"[:300] if status else f"{type(exc).__name__}: {message}"[:300]
