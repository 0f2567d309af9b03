"""The builder's fast path (`EventBuilder._as_is`) takes an event as it is only when the full path (redaction,
fitting to WorkOS's limits, the caps) would leave it unchanged: checked over a grid of clean and unusual inputs."""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import random
import types
import zoneinfo
from typing import Any

from centure_audit_middleware.delivery.builder import EventBuilder
from centure_audit_middleware.delivery.redact import Redactor
from centure_audit_middleware.events import Actor, AuditEvent, EventContext, EventError, Target, new_event_id

WHEN = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)

METADATA: list[Any] = [
    {},
    {"plan": "pro", "seats": 3, "ratio": 0.5, "trial": False},
    {"api_token": "s3cr3t"},  # a secret's key: redacted
    {"note": "x" * 501},  # too long: cut
    {"note": "x" * 500},
    {"note": "café"},  # not ASCII: the full path checks it
    {"note": '{"looks": "like JSON"}'},
    {"nested": {"a": 1}},  # coerced to JSON text
    {"none": None},
    {"nan": float("nan")},
    {"bad key": 1},  # coerced key
    {"k" * 41: 1},
    {1: "numeric key"},
    {f"k{i}": i for i in range(51)},  # folded past 50 keys
    types.MappingProxyType({"plan": "pro"}),  # not a dict
]

ACTORS: list[Any] = [
    Actor("user_1"),
    Actor("user_1", name="Ada Lovelace"),
    Actor("user_1", name="Ådå"),
    Actor("u" * 257),  # past the id cap
    Actor("user_1", type="t" * 101),
    Actor("user_1", name="n" * 501),
    Actor("user_é"),
    Actor(""),  # refused
    Actor("user_1", name=42),  # type: ignore[arg-type]
    Target("user", "not an actor"),
]

TARGETS: list[Any] = [
    Target("project", "proj_1"),
    Target("project", "proj_1", name="Apollo"),
    Target("project", "p" * 257),
    Target("", "proj_1"),
    Target("project", "proj_é"),
    Actor("not_a_target"),
]

IDENTITIES: list[tuple[Any, Any]] = [
    ("org_1", "project.create"),
    ("org_é", "project.create"),
    ("org_1", "projet.créé"),
    ("", "project.create"),
    ("org_1", ""),
    (123, "project.create"),
]

TIMES: list[Any] = [WHEN, WHEN.replace(tzinfo=None), WHEN.astimezone(zoneinfo.ZoneInfo("Asia/Tokyo"))]


def event(identity: tuple[Any, Any], when: Any, actor: Any, targets: tuple[Any, ...], metadata: Any) -> AuditEvent:
    return AuditEvent(
        new_event_id(),
        identity[0],
        identity[1],
        when,
        actor,
        targets,
        EventContext("203.0.113.7", "Mozilla/5.0"),
        metadata,
    )


def with_metadata(entity: Any, metadata: Any) -> Any:
    if isinstance(entity, Actor):
        return Actor(entity.id, entity.type, entity.name, metadata)
    return Target(entity.type, entity.id, entity.name, metadata)


class FullPath(EventBuilder):
    """A builder that never takes the clean-metadata shortcut (`_fits`), which the fast path shares with `_finish`:
    the reference the fast path's answers are checked against, so that a wrong `_fits` can't vouch for itself."""

    def _fits(self, metadata: dict[Any, Any]) -> bool:
        return False


def test_an_event_taken_as_is_is_one_the_full_path_would_not_change() -> None:
    builder = EventBuilder(Redactor())
    reference = FullPath(Redactor())
    rng = random.Random(7)
    taken = refused_by_fast_path = 0
    cases = list(itertools.product(IDENTITIES, TIMES, ACTORS, range(3), METADATA))
    for identity, when, actor, n_targets, metadata in cases:
        targets = tuple(rng.choice(TARGETS) for _ in range(n_targets))
        # Metadata on one level at a time, chosen at random: the event's, the actor's or a target's.
        level = rng.randrange(3)
        if level == 1:
            actor = with_metadata(actor, metadata) if isinstance(actor, Actor | Target) else actor
            metadata = {}
        elif level == 2 and targets:
            targets = (with_metadata(targets[0], metadata), *targets[1:]) if isinstance(targets[0], Target) else targets
            metadata = {}
        candidate = event(identity, when, actor, targets, metadata)
        if builder._as_is(candidate):
            taken += 1
            assert builder._finish(candidate, ()) is candidate, candidate
            full = reference._finish(candidate, ())  # redacted and fitted, whatever `_fits` says
            assert full.to_dict() == candidate.to_dict() and not full.original_metadata, candidate
        else:
            refused_by_fast_path += 1
            with contextlib.suppress(EventError):  # the full path: fitted, capped, or refused with a reason
                builder._finish(candidate, ())
    assert taken >= 10 and refused_by_fast_path > 1000, (taken, refused_by_fast_path)


def test_clean_events_take_the_fast_path() -> None:
    builder = EventBuilder(Redactor())
    clean = event(
        ("org_1", "project.create"),
        WHEN,
        Actor("user_1", name="Ada", metadata={"email": "ada@example.com"}),
        (Target("project", "proj_1", name="Apollo", metadata={"plan": "pro"}),),
        {"seats": 3},
    )
    assert builder._as_is(clean)
    assert builder._as_is(event(("org_1", "a.b"), TIMES[2], Actor("user_1"), (), {}))  # any tz-aware time
    assert not builder._as_is(event(("org_1", "a.b"), TIMES[1], Actor("user_1"), (), {}))  # naive: refused below


def test_validators_run_on_the_fast_path_too() -> None:
    seen: list[str] = []
    builder = EventBuilder(Redactor(), validators=[lambda e: seen.append(e.action)])
    from centure_audit_middleware.context import PendingEvent

    built = builder.build(PendingEvent("project.create", actor=Actor("user_1"), organization_id="org_1"))
    assert builder._as_is(built) and seen == ["project.create"]


def test_to_json_is_to_dict_as_compact_json() -> None:
    """`to_json` takes shortcuts (the datetime and the metadata handed to orjson as they are): same text."""
    import json

    from centure_audit_middleware.events import GeoInfo, RequestInfo, UserAgentInfo

    for when in (WHEN, WHEN.replace(microsecond=123456), TIMES[2], dt.datetime(1, 1, 1, tzinfo=dt.UTC)):
        for metadata in ({}, {"plan": "pro", "n": 1}, types.MappingProxyType({"plan": "pro"})):
            full = AuditEvent(
                new_event_id(),
                "org_1",
                "project.create",
                when,
                Actor("user_1", name="Ada", metadata=metadata),
                (Target("project", "proj_1", metadata=metadata), Target("team", "t_1", name="Core")),
                EventContext("203.0.113.7", None),
                metadata,
                2,
                GeoInfo(country_code="GB", city="London"),
                UserAgentInfo("Chrome", "131"),
                RequestInfo("POST", "/p", "/p", 201, "10.0.0.1", None),
                {"event": {"long": "x" * 600}},
            )
            expected = json.dumps(full.to_dict(), separators=(",", ":"), ensure_ascii=False)
            assert full.to_json() == expected
            assert AuditEvent.from_json(full.to_json()) == AuditEvent.from_dict(full.to_dict())
