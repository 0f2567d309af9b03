"""The event model: WorkOS limits, documented coercions, clear errors, and the SDK conversion."""

from __future__ import annotations

import datetime as dt
import enum
import json
import uuid
from decimal import Decimal
from typing import Any

import pytest

from centure_audit_middleware import Actor, AuditEvent, EventContext, EventError, MetadataError, Target
from centure_audit_middleware.events import (
    MAX_METADATA_KEYS,
    TRUNCATION_MARKER,
    coerce_metadata,
    fit_metadata,
    new_event_id,
    truncate,
)


class Color(enum.Enum):
    RED = "red"


WHEN = dt.datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        pytest.param({"a": "x"}, {"a": "x"}, id="plain string"),
        pytest.param({"n": 3, "f": 1.5, "b": True}, {"n": 3, "f": 1.5, "b": True}, id="numbers and booleans kept"),
        pytest.param({"x": float("nan")}, {"x": "nan"}, id="nan becomes a string"),
        pytest.param({"x": float("inf")}, {"x": "inf"}, id="infinity becomes a string"),
        pytest.param({"x": None}, {"x": ""}, id="none becomes empty string"),
        pytest.param({"user.email": "a"}, {"user_email": "a"}, id="dot in key"),
        pytest.param({"first name": "a"}, {"first_name": "a"}, id="space in key"),
        pytest.param({"k" * 60: 1}, {"k" * 40: 1}, id="key cut to 40"),
        pytest.param({"ключ": 1}, {"____": 1}, id="non-ascii key"),
        pytest.param({"d": dt.date(2026, 1, 2)}, {"d": "2026-01-02"}, id="date"),
        pytest.param({"u": uuid.UUID(int=1)}, {"u": "00000000-0000-0000-0000-000000000001"}, id="uuid"),
        pytest.param({"m": Decimal("1.10")}, {"m": "1.10"}, id="decimal"),
        pytest.param({"c": Color.RED}, {"c": "red"}, id="enum"),
        pytest.param({"b": b"\xffok"}, {"b": "\ufffdok"}, id="non-utf8 bytes"),
        pytest.param({"j": {"z": 1, "a": [1, 2]}}, {"j": '{"a":[1,2],"z":1}'}, id="dict as compact json"),
        pytest.param({}, {}, id="empty"),
        pytest.param(None, {}, id="none"),
    ],
)
def test_coercions(given: Any, expected: dict[str, Any]) -> None:
    assert coerce_metadata(given) == expected


def test_long_string_truncated_with_marker() -> None:
    value = coerce_metadata({"s": "é" * 2000})["s"]
    assert isinstance(value, str)
    assert len(value) == 500
    assert value.endswith(TRUNCATION_MARKER)
    assert truncate("short") == "short"


def test_truncation_counts_utf16_units_and_never_splits_a_character() -> None:
    emoji = "😀" * 400  # 400 characters, 800 UTF-16 units
    cut = truncate(emoji)
    assert cut.endswith(TRUNCATION_MARKER)
    assert len(cut.encode("utf-16-le")) // 2 <= 500
    assert set(cut.removesuffix(TRUNCATION_MARKER)) == {"😀"}
    assert truncate("😀" * 250) == "😀" * 250  # exactly 500 units fits


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        pytest.param({"a.b": 1, "a_b": 2}, {"a_b": 2, "a_b_2": 1}, id="collision: the valid key keeps its name"),
        pytest.param({"a.b": 1, "a b": 2, "a_b_2": 3}, {"a_b_2": 3, "a_b": 1, "a_b_3": 2}, id="suffix skips taken"),
        pytest.param({"k" * 45: 1, "k" * 41: 2}, {"k" * 40: 1, "k" * 38 + "_2": 2}, id="suffix within 40"),
        pytest.param({1: "x"}, {"1": "x"}, id="non-string key becomes its text"),
        pytest.param({"s": {2, 1}}, {"s": "[1,2]"}, id="set as json list"),
        pytest.param({"o": Color}, {"o": str(Color)}, id="other values become their text"),
    ],
)
def test_payloads_are_fitted_not_refused(given: Any, expected: dict[str, Any]) -> None:
    assert coerce_metadata(given, "event") == expected


def test_over_50_keys_folds_the_rest_deterministically() -> None:
    given = {f"k{i:02d}": i for i in reversed(range(60))}
    fitted, lossy = fit_metadata(given, "event", declared=["k59", "missing"])
    assert lossy
    assert len(fitted) == MAX_METADATA_KEYS
    assert list(fitted)[:3] == ["k59", "k00", "k01"]  # declared first, then sorted
    assert fitted["metadata_overflow_keys"] == 12
    assert json.loads(str(fitted["metadata_overflow"])) == {f"k{i}": i for i in range(47, 59)}
    assert fit_metadata(dict(reversed(given.items())), "event", declared=["k59"])[0] == fitted  # order-independent


def test_the_overflow_markers_never_replace_an_app_key() -> None:
    given: dict[str, Any] = {f"k{i:02d}": i for i in range(60)}
    given["metadata_overflow"] = "mine"
    fitted, _ = fit_metadata(given, "event", declared=["metadata_overflow"])
    assert fitted["metadata_overflow"] == "mine"
    assert json.loads(str(fitted["metadata_overflow_2"]))["k59"] == 59


def test_unprintable_values_still_fit() -> None:
    class Broken:
        def __str__(self) -> str:
            raise RuntimeError("no")

    looped: list[Any] = []
    looped.append(looped)
    assert coerce_metadata({"b": Broken(), "l": looped}) == {"b": "<unprintable Broken>", "l": "[[...]]"}


def test_only_a_non_mapping_is_refused() -> None:
    with pytest.raises(MetadataError, match="must be a mapping"):
        coerce_metadata(["a"], "event")  # type: ignore[arg-type]


def make_event(**overrides: Any) -> AuditEvent:
    fields: dict[str, Any] = {
        "id": new_event_id(),
        "organization_id": "org_1",
        "action": "api_key.create",
        "occurred_at": WHEN,
        "actor": Actor("user_1", name="Ann", metadata={"email": "ann@example.com"}),
        "targets": (Target("api_key", id="k1", name="ci", metadata={"env.name": "prod"}),),
        "context": EventContext(location="203.0.113.1", user_agent="ua"),
        "metadata": {"source": "/x"},
        "version": 1,
    }
    fields.update(overrides)
    return AuditEvent(**fields)


def test_validated_coerces_every_metadata_level() -> None:
    event = make_event(actor=Actor("u", metadata={"a.b": None})).validated()
    assert event.actor.metadata == {"a_b": ""}
    assert event.targets[0].metadata == {"env_name": "prod"}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        pytest.param({"organization_id": ""}, "organization_id", id="empty organization"),
        pytest.param({"action": None}, "action", id="no action"),
        pytest.param({"occurred_at": dt.datetime(2026, 1, 1)}, "timezone-aware", id="naive time"),
        pytest.param({"actor": "user_1"}, "actor must be an Actor", id="actor not an Actor"),
        pytest.param({"actor": Actor("")}, "actor.id", id="empty actor id"),
        pytest.param({"targets": (Target("", id="x"),)}, r"targets\[0\].type", id="empty target type"),
        pytest.param({"targets": ("x",)}, r"targets\[0\] must be a Target", id="target not a Target"),
        pytest.param({"metadata": ["o"]}, "event: metadata", id="event metadata not a mapping"),
        pytest.param({"actor": Actor("u", metadata=["x"])}, "actor: metadata", id="actor metadata not a mapping"),  # type: ignore[arg-type]
    ],
)
def test_validation_errors(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(EventError, match=message):
        make_event(**overrides).validated()


def test_workos_shape() -> None:
    body = make_event().to_workos()
    assert body == {
        "action": "api_key.create",
        "occurred_at": "2026-11-25T12:00:00.123Z",
        "actor": {"id": "user_1", "type": "user", "name": "Ann", "metadata": {"email": "ann@example.com"}},
        "targets": [{"id": "k1", "type": "api_key", "name": "ci", "metadata": {"env.name": "prod"}}],
        "context": {"location": "203.0.113.1", "user_agent": "ua"},
        "metadata": {"source": "/x"},
        "version": 1,
    }


def test_sdk_event_is_the_dataclass_with_aware_time() -> None:
    from workos.audit_logs.models import AuditLogEvent

    sdk_event = make_event().validated().to_sdk()
    assert isinstance(sdk_event, AuditLogEvent)
    assert sdk_event.action == "api_key.create"
    assert sdk_event.occurred_at.tzinfo is not None
    assert sdk_event.occurred_at == WHEN.replace(microsecond=123000)
    assert sdk_event.targets[0].id == "k1"


def test_json_round_trip_is_lossless() -> None:
    from centure_audit_middleware.events import GeoInfo, RequestInfo, UserAgentInfo

    event = make_event(
        geo=GeoInfo(country_code="GB", city="London", latitude=51.5),
        user_agent=UserAgentInfo(browser_family="Firefox", device_class="desktop"),
        request=RequestInfo(method="POST", route="/x/{id}", status=201),
    )
    assert AuditEvent.from_json(event.to_json()) == event


def test_event_ids_are_uuid7_and_time_ordered() -> None:
    ids = [new_event_id(1_700_000_000 + i) for i in range(50)]
    assert ids == sorted(ids)
    parsed = uuid.UUID(ids[0])
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert len({new_event_id(1.0) for _ in range(1000)}) == 1000
    same_millisecond = [new_event_id(2.0) for _ in range(100)]
    assert same_millisecond == sorted(same_millisecond)
