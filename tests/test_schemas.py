"""WorkOS action schemas from the catalog: the bodies, `push_schemas` against the emulator, and the CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from workos import WorkOSClient

from centure_audit_middleware import catalog as c
from centure_audit_middleware.catalog.schemas import action_schema, push_schemas, remote_schemas, workos_client
from centure_audit_middleware.cli import main
from centure_audit_middleware.testing import WorkOSEmulator

SCHEMAS_PATH = "/audit_logs/actions/{}/schemas"
ACTOR_SCHEMA = {
    "metadata": {
        "type": "object",
        "properties": {
            "first_name": {"type": "string"},
            "last_name": {"type": "string"},
            "email": {"type": "string"},
            "impersonator_email": {"type": "string"},
            "impersonator_reason": {"type": "string"},
        },
        "required": ["first_name", "last_name", "email"],
    }
}


@pytest.fixture
def emulator() -> Iterator[WorkOSEmulator]:
    emulator = WorkOSEmulator().start()
    yield emulator
    emulator.stop()


@pytest.fixture
def client(emulator: WorkOSEmulator) -> Iterator[WorkOSClient]:
    with workos_client(emulator.api_key, emulator.url, timeout=5) as client:
        yield client


def schema_posts(emulator: WorkOSEmulator) -> list[str]:
    return [r.path for r in emulator.requests if r.method == "POST" and r.path.endswith("/schemas")]


def cli(emulator: WorkOSEmulator, *args: str) -> int:
    return main(["schemas", *args, "--api-key", emulator.api_key, "--base-url", emulator.url])


# -- bodies --------------------------------------------------------------------------------------------------------
def test_schema_body_for_api_key_create() -> None:
    assert action_schema(c.API_KEY_CREATE.spec, c.default_catalog().actor) == {
        "targets": [
            {
                "type": "api_key",
                "metadata": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "environment": {"type": "string"},
                        "project_id": {"type": "string"},
                        "organization_id": {"type": "string"},
                    },
                    "required": ["name", "environment", "project_id", "organization_id"],
                },
            },
            {
                "type": "project",
                "metadata": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "organization_id": {"type": "string"}},
                    "required": ["name", "organization_id"],
                },
            },
        ],
        "actor": ACTOR_SCHEMA,
        "metadata": {
            "type": "object",
            "properties": {
                "source": {"type": "string"},
                "expiration_date": {"type": "string"},
                "ip_addresses": {"type": "string"},
            },
            "required": ["source"],
        },
    }


def test_schema_bodies_carry_limits_constants_and_types() -> None:
    status = action_schema(c.MCP_PROXY_UPDATE_STATUS.spec)
    assert status["metadata"]["properties"]["new_status"] == {"type": "string", "maxLength": 50}
    assert status["targets"][1] == {"type": "project"}  # the docs list no fields for it
    assert "actor" not in status  # no actor given
    view = action_schema(c.EXTERNAL_APP_LOGIN_VIEW.spec)
    assert view["metadata"]["properties"] == {
        "source": {"type": "string", "enum": ["/external-apps/login"]},
        "user_has_access_to_proxy": {"type": "boolean"},
    }
    assert action_schema(c.ORGANIZATION_CREATE.spec)["targets"] == [{"type": "organization"}]


# -- push against the emulator -------------------------------------------------------------------------------------
def test_push_creates_every_action_then_changes_nothing(emulator: WorkOSEmulator, client: WorkOSClient) -> None:
    first = push_schemas(client)
    assert [(r.action, r.status, r.version) for r in first] == [(a, "created", 1) for a in c.CENTURE_ACTIONS]
    assert len(schema_posts(emulator)) == 24
    second = push_schemas(client)
    assert {(r.status, r.version) for r in second} == {("unchanged", 1)}
    assert len(schema_posts(emulator)) == 24  # compared first: nothing was sent again
    remote = remote_schemas(client)
    assert sorted(remote) == sorted(c.CENTURE_ACTIONS)
    assert {s.version for s in remote.values()} == {1}


def test_dry_run_writes_nothing(emulator: WorkOSEmulator, client: WorkOSClient) -> None:
    results = push_schemas(client, actions=[c.API_KEY_CREATE, c.ANALYTICS_VIEW], dry_run=True)
    assert [(r.action, r.status) for r in results] == [
        ("api_key.create", "would create"),
        ("analytics.view", "would create"),
    ]
    assert schema_posts(emulator) == []
    assert remote_schemas(client) == {}


def test_a_changed_catalog_creates_a_new_version(emulator: WorkOSEmulator, client: WorkOSClient) -> None:
    push_schemas(client, actions=[c.API_KEY_CREATE])
    mine = c.Catalog.centure()
    spec = mine[c.API_KEY_CREATE]
    mine.register(
        c.ActionSpec(spec.action, spec.category, targets=spec.targets, metadata=(*spec.metadata, c.FieldSpec("note"))),
        replace=True,
    )
    [preview] = push_schemas(client, mine, actions=[c.API_KEY_CREATE], dry_run=True)
    assert str(preview) == "api_key.create: would update (version 1): metadata differ"
    [updated] = push_schemas(client, mine, actions=[c.API_KEY_CREATE])
    assert str(updated) == "api_key.create: updated (version 2): metadata differ"
    [again] = push_schemas(client, mine, actions=[c.API_KEY_CREATE])
    assert again.status == "unchanged"


def test_push_reports_a_failing_action_and_continues(emulator: WorkOSEmulator, client: WorkOSClient) -> None:
    emulator.fail_next(422, path=SCHEMAS_PATH.format("project.create"))
    results = push_schemas(client, actions=[c.PROJECT_CREATE, c.USER_VIEW_SETTINGS])
    assert [r.status for r in results] == ["failed", "created"]
    assert results[0].detail.startswith("HTTP 422")


def test_push_refuses_actions_outside_the_catalog(client: WorkOSClient) -> None:
    with pytest.raises(KeyError, match=r"not in the catalog: widget\.spin"):
        push_schemas(client, actions=["widget.spin"])


def test_push_pages_through_more_than_100_actions(emulator: WorkOSEmulator, client: WorkOSClient) -> None:
    many = c.Catalog([c.ActionSpec(f"thing.do_{i:03}", "things", targets=(c.TargetSpec("thing"),)) for i in range(105)])
    assert {r.status for r in push_schemas(client, many)} == {"created"}
    assert {r.status for r in push_schemas(client, many)} == {"unchanged"}
    assert len(remote_schemas(client)) == 105


# -- CLI -------------------------------------------------------------------------------------------------------------
def test_cli_push_twice_and_list(emulator: WorkOSEmulator, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(emulator, "push", "--dry-run") == 0
    out = capsys.readouterr().out
    assert "api_key.create: would create" in out
    assert out.rstrip().endswith("24 actions: 24 would create (dry run: nothing written)")
    assert cli(emulator, "push") == 0
    assert capsys.readouterr().out.rstrip().endswith("24 actions: 24 created")
    assert cli(emulator, "push") == 0
    out = capsys.readouterr().out
    assert "analytics.view: unchanged (version 1)" in out
    assert out.rstrip().endswith("24 actions: 24 unchanged (already in sync: nothing written)")
    assert cli(emulator, "list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 24
    assert all(line.endswith("v1  in sync") for line in lines)


def test_cli_list_says_what_differs(emulator: WorkOSEmulator, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(emulator, "push", "--action", "api_key.create") == 0
    custom = c.Catalog([c.ActionSpec("widget.spin", "widgets", targets=(c.TargetSpec("widget"),))])
    with workos_client(emulator.api_key, emulator.url) as client:
        push_schemas(client, custom)
        push_schemas(client, actions=["user.view_settings"], catalog=_changed_user_view())
    capsys.readouterr()
    assert cli(emulator, "list") == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert lines["api_key.create"].endswith("v1  in sync")
    assert lines["widget.spin"].endswith("v1  not in the catalog")
    assert lines["user.view_settings"].endswith("v1  differs from the catalog")
    assert lines["project.create"].endswith("-  missing at WorkOS (run: centure-audit schemas push)")


def _changed_user_view() -> c.Catalog:
    mine = c.Catalog.centure()
    spec = mine[c.USER_VIEW_SETTINGS]
    mine.register(c.ActionSpec(spec.action, spec.category, targets=spec.targets), replace=True)
    return mine


def test_cli_show_prints_the_bodies(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schemas", "show", "--action", "api_key.create"]) == 0
    bodies = json.loads(capsys.readouterr().out)
    assert bodies == {"api_key.create": action_schema(c.API_KEY_CREATE.spec, c.default_catalog().actor)}
    assert main(["schemas", "show", "--action", "widget.spin"]) == 2
    assert "not in the catalog: widget.spin" in capsys.readouterr().err


def test_cli_adds_the_apps_own_actions_from_a_file(
    emulator: WorkOSEmulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "actions.json"
    path.write_text(json.dumps({"actions": {"invoice.pay": {"category": "billing", "targets": ["invoice"]}}}))
    assert cli(emulator, "push", "--catalog", str(path), "--action", "invoice.pay") == 0
    assert "invoice.pay: created (version 1)" in capsys.readouterr().out
    assert "invoice.pay" not in c.default_catalog()  # the CLI worked on a copy


def test_cli_reads_the_environment(
    emulator: WorkOSEmulator, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WORKOS_API_KEY", emulator.api_key)
    monkeypatch.setenv("WORKOS_BASE_URL", emulator.url)
    assert main(["schemas", "push", "--action", "sso.view_settings"]) == 0
    assert "sso.view_settings: created (version 1)" in capsys.readouterr().out


def test_cli_errors(
    emulator: WorkOSEmulator, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("WORKOS_API_KEY", raising=False)
    assert main(["schemas", "list"]) == 2
    assert "no API key (pass --api-key or set WORKOS_API_KEY)" in capsys.readouterr().err
    assert main(["schemas", "list", "--api-key", "sk_wrong_secret", "--base-url", emulator.url]) == 1
    err = capsys.readouterr().err
    assert "HTTP 401" in err
    assert "sk_wrong_secret" not in err
    assert cli(emulator, "push", "--action", "widget.spin") == 2
    assert "not in the catalog: widget.spin" in capsys.readouterr().err
    emulator.fail_next(500, path=SCHEMAS_PATH.format("analytics.view"))
    assert cli(emulator, "push", "--action", "analytics.view") == 1
    assert "analytics.view: failed: HTTP 500" in capsys.readouterr().out
