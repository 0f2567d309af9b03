"""Secrets are redacted by normalised key, everywhere an event goes (finding 2 of the evasion issue).

Redaction ran on the raw key before coercion, so `api.key` and `private key` slipped through and were then
delivered as `api_key` and `private_key`. The property: for any spelling that normalises to a redacted name, placed
in event, actor or target metadata, nested in lists and dicts, or inside a JSON string, the value never appears in
any sink's output, the store, the outbox, dead letters or logs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from centure_audit_middleware import Actor, AuditEvent, Auditor, Target
from centure_audit_middleware.delivery.redact import REDACTED, Redactor, normalise_key
from centure_audit_middleware.sinks import JsonlSink, MemorySink, RejectEvent, Sink, StoreSink
from centure_audit_middleware.store import SqliteStore

from .conftest import ORG

SECRET_NAMES = [
    ("api", "key"),
    ("access", "token"),
    ("refresh", "token"),
    ("client", "secret"),
    ("private", "key"),
    ("password",),
    ("passwd",),
    ("authorization",),
    ("secret",),
    ("cookie",),
    ("session", "id"),
]
SEPARATORS = ["", "_", "-", ".", " ", "camel"]


@st.composite
def secret_keys(draw: st.DrawFn) -> str:
    words = draw(st.sampled_from(SECRET_NAMES))
    separator = draw(st.sampled_from(SEPARATORS))
    camel = words[0] + "".join(w.title() for w in words[1:])
    key = camel if separator == "camel" else separator.join(words)
    flips = draw(st.lists(st.booleans(), min_size=len(key), max_size=len(key)))
    key = "".join(ch.upper() if flip else ch for ch, flip in zip(key, flips, strict=True))
    prefix = draw(st.sampled_from(["", "x-", "X_", "user.", "my ", "new"]))
    suffix = draw(st.sampled_from(["", "_v2", "Value", ".old", " hash"]))
    return prefix + key + suffix


PLACES = [
    "event",
    "actor",
    "target",
    "nested-dict",
    "list-of-dicts",
    "actor-list",
    "target-list",
    "json-string",
    "cut-json-string",
]


def _place(where: str, key: str, secret: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(event metadata, actor metadata, target metadata) with the secret at `where`."""
    event: dict[str, Any] = {"note": "kept"}
    actor: dict[str, Any] = {}
    target: dict[str, Any] = {}
    if where == "event":
        event[key] = secret
    elif where == "actor":
        actor[key] = secret
    elif where == "target":
        target[key] = secret
    elif where == "nested-dict":
        event["settings"] = {"outer": {key: secret, "ok": 1}}
    elif where == "list-of-dicts":
        event["items"] = [{"ok": 1}, {key: secret}, [{key: [secret]}]]
    elif where == "actor-list":  # lists in an actor's or a target's metadata go through the same descent
        actor["keys"] = [{"ok": 1}, ({key: secret},)]
    elif where == "target-list":
        target["history"] = [[{"ok": 1}], [{key: secret}]]
    elif where == "json-string":
        event["changes"] = json.dumps({key: {"from": secret, "to": secret + "2"}, "name": {"from": "a", "to": "b"}})
    elif where == "cut-json-string":  # an app's JSON already cut short: no parser can read it any more
        event["changes"] = json.dumps({"name": "n", key: secret + "x" * 600})[:300]
    return event, actor, target


class RefusesAll(Sink):
    """Dead-letters every event: the outbox keeps each one, as a dead letter, for the scan below."""

    name = "refuses"

    def send(self, event: AuditEvent) -> None:
        raise RejectEvent("HTTP 422: refused")


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Keep(logging.DEBUG)
    logger = logging.getLogger("centure_audit_middleware")
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(previous)


def _everything_written(tmp_path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(tmp_path.iterdir()) if p.is_file())


def test_no_spelling_of_a_secret_key_leaks_anywhere(tmp_path: Path, log_lines: list[str]) -> None:
    memory = MemorySink()
    store = SqliteStore(tmp_path / "store.db")
    sinks = [memory, JsonlSink(tmp_path / "events.jsonl"), StoreSink(store), RefusesAll()]
    auditor = Auditor(sinks=sinks, outbox=tmp_path / "outbox.db", geoip=False, commit_interval=0.005)
    auditor.dispatcher._log.interval = 0  # every log line, not one per minute: each is scanned

    @settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        key=secret_keys(),
        where=st.sampled_from(PLACES),
        secret=st.text(alphabet="0123456789abcdef", min_size=16, max_size=16).map(lambda s: "zq" + s),
    )
    def check(key: str, where: str, secret: str) -> None:
        event_metadata, actor_metadata, target_metadata = _place(where, key, secret)
        memory.clear()
        actor = Actor("user_1", metadata=actor_metadata)
        targets = [Target("doc", id="d1", metadata=target_metadata)]
        auditor.record("doc.update", actor=actor, organization=ORG, targets=targets, metadata=event_metadata)
        # And one that can't be built (no organization): its dead letter keeps the event, redacted too.
        auditor.dispatcher.submit(_unbuildable(actor, targets, event_metadata))
        assert auditor.flush(10), auditor.stats()
        [delivered] = memory.events
        assert REDACTED in delivered.to_json()  # the event got through, with the value replaced
        assert "kept" in delivered.to_json() or where == "json-string" or where == "cut-json-string"
        written = _everything_written(tmp_path)
        assert secret.encode() not in written
        for letter in auditor.dispatcher.outbox.dead_letters(limit=10_000):
            assert secret not in letter.body
        assert not [line for line in log_lines if secret in line]

    try:
        check()
    finally:
        auditor.close()
    assert len(log_lines) > 0  # the scan of the logs saw real lines (the dead letters' warnings)


def _unbuildable(actor: Actor, targets: list[Target], metadata: dict[str, Any]) -> Any:
    from centure_audit_middleware.context import PendingEvent

    return PendingEvent("doc.update", actor=actor, organization_id=None, targets=targets, metadata=metadata)


@pytest.mark.parametrize(
    "key",
    [
        *("api.key", "apiKey", "API-KEY", "x-api-key", "accessToken", "refresh_token", "client_secret"),
        *("Authorization", "password", "private key", "PRIVATE.KEY", "ｐａｓｓｗｏｒｄ", "pass\u0130word"),
        "aws_secret_access_key",
    ],
)
def test_named_spellings_are_secret(key: str) -> None:
    assert Redactor().is_secret(key)


@pytest.mark.parametrize("key", ["name", "email", "source", "changes", "ip_address", "team_id", "keyboard"])
def test_ordinary_keys_are_kept(key: str) -> None:
    assert not Redactor().is_secret(key)


def test_custom_patterns_are_normalised_too() -> None:
    redactor = Redactor(["Card-Number"])
    assert redactor.patterns == ("cardnumber",)
    assert redactor({"card.number": "4111", "cardNumber": "4111", "card": "visa"}) == {
        "card.number": REDACTED,
        "cardNumber": REDACTED,
        "card": "visa",
    }
    assert normalise_key("X-API Key") == "xapikey"


def test_redaction_is_case_insensitive_and_descends_into_lists() -> None:
    # Two mutations that broke the product and passed the suite: a case-sensitive match, and no descent into lists.
    redacted = Redactor()({"PASSWORD": "a", "list": [{"Token": "b"}, ("c", {"secret": "d"})]})
    assert redacted == {"PASSWORD": REDACTED, "list": [{"Token": REDACTED}, ["c", {"secret": REDACTED}]]}


def test_clean_metadata_is_not_copied() -> None:
    metadata = {"a": 1, "nested": {"b": [1, 2]}, "text": '{"name": "x"}'}
    assert Redactor()(metadata) is metadata
