"""The Centure action catalog: package data, typed builders, `changes`, `source`, and validation reasons."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import random
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, TypedDict, cast

import pytest

from centure_audit_middleware import Actor, AuditEvent, Auditor, EventError, Target
from centure_audit_middleware import catalog as c
from centure_audit_middleware.catalog import model
from centure_audit_middleware.catalog.changes import OMITTED_KEY, text_length
from centure_audit_middleware.events import new_event_id
from centure_audit_middleware.sinks import MemorySink

from .conftest import ORG, delivered

ROOT = Path(__file__).resolve().parents[1]
PACKAGED = ROOT / "centure_audit_middleware" / "catalog" / "centure.json"
DOC = ROOT / "README.md"
SHARED = ROOT.parent / "shared" / "data" / "centure-catalog.json"

JANE = c.actor("user_01JANE", "Jane", "Smith", "jane@example.com")
T = c.targets


# -- one valid sample event per action, built with the typed helpers (shared with the round-trip tests) -------------
def _proxy() -> Target:
    return T.mcp_proxy("mcp_1", "Production API Proxy", project_id="proj_1", organization_id=ORG)


def _project(**kwargs: Any) -> Target:
    return T.project("proj_1", "Apollo", organization_id=ORG, **kwargs)


class AppTargets(TypedDict):
    external_app: Target
    mcp_proxy: Target
    project: Target


class MembershipTargets(TypedDict):
    project: Target
    organization_membership: Target
    user: Target


def _app_targets() -> AppTargets:
    return {
        "external_app": T.external_app("app_1", "Claude", client_id="client_abc"),
        "mcp_proxy": _proxy(),
        "project": _project(),
    }


def _membership() -> MembershipTargets:
    return {
        "project": _project(),
        "organization_membership": T.organization_membership(
            "om_1", "Bob Jones", organization_id=ORG, role_slug="member"
        ),
        "user": T.user("user_02BOB", first_name="Bob", last_name="Jones", email="bob@example.com"),
    }


_ORG = T.organization(ORG, "Acme")
SAMPLES: dict[str, Callable[[], c.CatalogEvent]] = {
    c.API_KEY_CREATE: lambda: c.events.api_key_create(
        api_key=T.api_key("key_1", "deploy", project_id="proj_1", organization_id=ORG),
        project=_project(),
        source=c.source("/projects/[projectId]/api-keys/new", projectId="proj_1"),
        expiration_date="2027-01-01T00:00:00Z",
        ip_addresses="10.0.0.0/8,192.0.2.7",
    ),
    c.PROJECT_CREATE: lambda: c.events.project_create(
        project=_project(), source=c.source("/organizations/{org_id}/projects/new", org_id=ORG)
    ),
    c.PROJECT_UPDATE_NAME: lambda: c.events.project_update_name(
        project=T.project("proj_1", "Apollo 2", organization_id=ORG, old_name="Apollo", new_name="Apollo 2")
    ),
    c.PROJECT_MEMBERSHIP_CREATE: lambda: c.events.project_membership_create(
        **_membership(), source="/projects/proj_1/members", role="editor"
    ),
    c.PROJECT_MEMBERSHIP_UPDATE: lambda: c.events.project_membership_update(
        **_membership(), source="/projects/proj_1/members", role="viewer"
    ),
    c.ORGANIZATION_CREATE: lambda: c.events.organization_create(organization=_ORG),
    c.ORGANIZATION_UPDATE_NAME: lambda: c.events.organization_update_name(
        organization=T.organization(ORG, "Acme Corp", old_name="Acme", new_name="Acme Corp")
    ),
    c.MCP_PROXY_CREATE: lambda: c.events.mcp_proxy_create(
        mcp_proxy=_proxy(), source="/projects/proj_1/mcp-proxies/new"
    ),
    c.MCP_PROXY_UPDATE: lambda: c.events.mcp_proxy_update(
        mcp_proxy=_proxy(),
        project=T.project("proj_1"),
        source="/projects/proj_1/mcp-proxies/mcp_1",
        changes={"name": ("Proxy", "Production API Proxy"), "description": ("", "Ünïcode ✓ 😀")},
    ),
    c.MCP_PROXY_UPDATE_STATUS: lambda: c.events.mcp_proxy_update_status(
        mcp_proxy=_proxy(),
        project=T.project("proj_1"),
        source="/projects/proj_1/mcp-proxies/mcp_1",
        previous_status="active",
        new_status="paused",
    ),
    c.MCP_PROXY_REVOKE: lambda: c.events.mcp_proxy_revoke(
        mcp_proxy=_proxy(), project=T.project("proj_1"), source="/projects/proj_1/mcp-proxies/mcp_1"
    ),
    c.MCP_PROXY_DELETE: lambda: c.events.mcp_proxy_delete(
        mcp_proxy=_proxy(), project=T.project("proj_1"), source="/projects/proj_1/mcp-proxies/mcp_1"
    ),
    c.MCP_PROXY_VIEW_DETAILS: lambda: c.events.mcp_proxy_view_details(
        mcp_proxy=_proxy(), source="/projects/proj_1/mcp-proxies/mcp_1"
    ),
    c.EXTERNAL_APP_LOGIN_VIEW: lambda: c.events.external_app_login_view(
        **_app_targets(), user_has_access_to_proxy=True
    ),
    c.EXTERNAL_APP_LOGIN_APPROVE: lambda: c.events.external_app_login_approve(**_app_targets()),
    c.SSO_VIEW_SETTINGS: lambda: c.events.sso_view_settings(organization=_ORG, source=f"/organizations/{ORG}/sso"),
    c.SSO_CREATE_MANAGEMENT_PORTAL_URL: lambda: c.events.portal_link(
        "sso", organization=_ORG, source=f"/organizations/{ORG}/sso"
    ),
    c.SSO_DELETE_CONNECTION: lambda: c.events.sso_delete_connection(
        sso_connection=T.sso_connection("conn_1", "Okta", connection_type="OktaSAML", organization_id=ORG),
        source=f"/organizations/{ORG}/sso",
    ),
    c.DIRECTORY_SYNC_DELETE: lambda: c.events.directory_sync_delete(
        directory_sync=T.directory_sync(
            "directory_1", "Okta SCIM", directory_type="okta scim v2.0", organization_id=ORG
        ),
        source=f"/organizations/{ORG}/sso",
    ),
    c.DIRECTORY_SYNC_CREATE_MANAGEMENT_PORTAL_URL: lambda: c.events.directory_sync_create_management_portal_url(
        organization=_ORG, source=f"/organizations/{ORG}/sso"
    ),
    c.AUDIT_LOGS_CREATE_MANAGEMENT_PORTAL_URL: lambda: c.events.audit_logs_create_management_portal_url(
        organization=_ORG, source=f"/organizations/{ORG}/audit-logs"
    ),
    c.LOG_STREAMS_CREATE_MANAGEMENT_PORTAL_URL: lambda: c.events.portal_link(
        "log_streams", organization=_ORG, source=f"/organizations/{ORG}/audit-logs"
    ),
    c.USER_VIEW_SETTINGS: lambda: c.events.user_view_settings(
        user=T.user("user_01JANE", first_name="Jane", last_name="Smith", email="jane@example.com"),
        source="/settings/profile",
    ),
    c.ANALYTICS_VIEW: lambda: c.events.analytics_view(
        project=_project(),
        source="/projects/proj_1/analytics",
        start_date="2026-11-01T00:00:00Z",
        end_date="2026-11-07T00:00:00Z",
        interval="hour",
    ),
}


def built(sample: c.CatalogEvent, actor: Actor = JANE, **changes: Any) -> AuditEvent:
    """The event the dispatcher would validate (coerced like the pipeline does), with `changes` applied."""
    event = AuditEvent(
        id=new_event_id(),
        organization_id=ORG,
        action=sample.action,
        occurred_at=dt.datetime.now(dt.UTC),
        actor=actor,
        targets=sample.targets,
        metadata=sample.metadata,
    )
    return dataclasses.replace(event, **changes).validated()


def reasons(event: AuditEvent, catalog: c.Catalog | None = None) -> list[str]:
    return [str(v) for v in c.check(event, catalog)]


@pytest.fixture
def fresh_default(monkeypatch: pytest.MonkeyPatch) -> c.Catalog:
    """A private default catalog, so registrations in a test never leak into others (or the docs check)."""
    fresh = c.Catalog.centure()
    monkeypatch.setattr(model, "_default", fresh)
    return fresh


# -- package data and model ----------------------------------------------------------------------------------------
def test_packaged_catalog_has_the_24_documented_actions_in_11_categories() -> None:
    catalog = c.Catalog.centure()
    assert len(catalog) == 24
    assert len(catalog.by_category()) == 11
    assert [spec.action for spec in catalog] == list(c.CENTURE_ACTIONS)
    assert set(SAMPLES) == set(c.CENTURE_ACTIONS)


def test_package_data_round_trips_through_the_model() -> None:
    document = json.loads(PACKAGED.read_text(encoding="utf-8"))
    assert c.Catalog.from_dict(document).to_dict() == document


def test_actions_are_str_constants_that_know_their_spec() -> None:
    action = c.MCP_PROXY_UPDATE_STATUS
    assert isinstance(action, str)
    assert action == "mcp_proxy.update_status"
    by_name: dict[str, int] = {action: 1}
    assert by_name["mcp_proxy.update_status"] == 1
    assert json.dumps(action) == '"mcp_proxy.update_status"'
    assert action.spec.target_types == ("mcp_proxy", "project")
    assert action.category == "mcp_proxies"


def test_portal_actions_cover_the_four_portal_intents() -> None:
    assert dict(c.PORTAL_ACTIONS) == {
        "audit_logs": "audit_logs.create_management_portal_url",
        "log_streams": "log_streams.create_management_portal_url",
        "sso": "sso.create_management_portal_url",
        "dsync": "directory_sync.create_management_portal_url",
    }
    with pytest.raises(ValueError, match="no Centure action for portal intent 'domain_verification'"):
        c.portal_action("domain_verification")


def test_register_an_app_action_as_spec_dict_or_file(tmp_path: Path) -> None:
    catalog = c.Catalog.centure()
    spec = catalog.register(
        c.ActionSpec(
            "invoice.pay",
            "billing",
            targets=(c.TargetSpec("invoice", metadata=(c.FieldSpec("amount", "number", required=True),)),),
            metadata=(c.FieldSpec("source", required=True),),
        )
    )
    assert catalog["invoice.pay"] is spec
    assert catalog.categories["billing"] == "Billing"
    catalog.register({"action": "invoice.refund", "category": "billing", "targets": ["invoice"], "metadata": {}})
    path = tmp_path / "actions.json"
    path.write_text(
        json.dumps({"categories": {"reports": "Reports"}, "actions": {"report.export": {"category": "reports"}}})
    )
    [exported] = catalog.register_file(path)
    assert exported.action == "report.export"
    assert catalog.categories["reports"] == "Reports"
    assert c.Catalog.from_dict(catalog.to_dict()).to_dict() == catalog.to_dict()


def test_register_refuses_to_redefine_silently() -> None:
    catalog = c.Catalog.centure()
    changed = dataclasses.replace(catalog["api_key.create"], description="something else")
    with pytest.raises(c.CatalogError, match=r"api_key.create is already in the catalog \(pass replace=True"):
        catalog.register(changed)
    assert catalog.register(changed, replace=True) is changed
    catalog.register(changed)  # the identical spec again is harmless


@pytest.mark.parametrize(
    ("document", "message"),
    [
        pytest.param({"format": 2}, "catalog format 2 is not supported", id="format"),
        pytest.param({"actions": {"x.y": {"category": "c", "colour": 1}}}, "x.y: unknown key(s) 'colour'", id="typo"),
        pytest.param({"actions": {"nodot": {"category": "c"}}}, "is not of the form resource.verb", id="action-name"),
        pytest.param(
            {"actions": {"x.y": {"category": "c", "metadata": {"a.b": "string"}}}},
            "x.y.metadata.a.b: 'a.b' is not a WorkOS metadata key",
            id="key",
        ),
        pytest.param(
            {"actions": {"x.y": {"category": "c", "metadata": {"a": "text"}}}}, "type 'text' is not one of", id="type"
        ),
        pytest.param(
            {"actions": {"x.y": {"category": "c", "metadata": {"a": {"type": "string", "max_length": 501}}}}},
            "max_length must be 1-500",
            id="max-length",
        ),
    ],
)
def test_invalid_documents_say_where(document: dict[str, Any], message: str) -> None:
    with pytest.raises(c.CatalogError, match=message.replace("(", r"\(").replace(")", r"\)")):
        c.Catalog.from_dict(document)


def test_module_register_adds_to_the_default_catalog(fresh_default: c.Catalog) -> None:
    c.register({"action": "invoice.pay", "category": "billing", "targets": ["invoice"]})
    assert "invoice.pay" in c.default_catalog()
    assert "invoice.pay" not in c.Catalog.centure()


# -- helpers -------------------------------------------------------------------------------------------------------
def test_actor_metadata_has_empty_impersonator_fields_when_nobody_impersonates() -> None:
    assert c.actor_metadata("Jane", "Smith", "jane@example.com") == {
        "first_name": "Jane",
        "last_name": "Smith",
        "email": "jane@example.com",
        "impersonator_email": "",
        "impersonator_reason": "",
    }
    impersonated = c.actor(
        "user_1", "Jane", "Smith", "jane@example.com", impersonator_email="admin@centure.ai", impersonator_reason="T-42"
    )
    assert impersonated.type == "user"
    assert impersonated.name == "Jane Smith"
    assert impersonated.metadata["impersonator_email"] == "admin@centure.ai"
    assert impersonated.metadata["impersonator_reason"] == "T-42"


@pytest.mark.parametrize(
    ("template", "params", "expected"),
    [
        pytest.param("/projects/{project_id}/api-keys/new", {"project_id": "proj_1"}, "/projects/proj_1/api-keys/new"),
        pytest.param(
            "/projects/[projectId]/mcp-proxies/{id}", {"projectId": "p", "id": "m"}, "/projects/p/mcp-proxies/m"
        ),
        pytest.param("/projects/<int:pid>/analytics", {"pid": 7}, "/projects/7/analytics", id="flask"),
        pytest.param("/projects/{id:str}", {"id": "a/b c"}, "/projects/a%2Fb%20c", id="quoted"),
        pytest.param("project_settings", {}, "project_settings", id="token"),
    ],
)
def test_source_renders_dashboard_routes(template: str, params: dict[str, object], expected: str) -> None:
    assert c.source(template, **params) == expected


def test_source_refuses_missing_and_unused_parameters() -> None:
    with pytest.raises(ValueError, match=r"source '/projects/\{project_id\}': no value for project_id"):
        c.source("/projects/{project_id}")
    with pytest.raises(ValueError, match="has no placeholder for projectid"):
        c.source("/projects/{project_id}", project_id="p", projectid="p")


# -- changes -------------------------------------------------------------------------------------------------------
def test_changes_from_pairs_and_from_before_after() -> None:
    assert c.changes({"name": ("Old", "New")}) == '{"name":{"from":"Old","to":"New"}}'
    before = {"name": "Proxy", "description": "x", "url": "https://a"}
    after = {"name": "Proxy", "description": "y", "timeout": 30}
    assert json.loads(c.changes(before, after)) == {
        "description": {"from": "x", "to": "y"},
        "url": {"from": "https://a", "to": None},
        "timeout": {"from": None, "to": 30},
    }
    assert c.changes({}, {}) == "{}"
    with pytest.raises(TypeError, match="takes \\(from, to\\) pairs"):
        c.changes(cast(Any, {"name": "New"}))


def test_changes_encodes_values_json_cannot_hold() -> None:
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    decoded = json.loads(
        c.changes({"at": (None, when), "tags": ({"b", "a"}, ["c"]), "x": (Decimal("1.5"), float("nan"))})
    )
    assert decoded == {
        "at": {"from": None, "to": "2026-01-02T03:04:05+00:00"},
        "tags": {"from": ["a", "b"], "to": ["c"]},
        "x": {"from": "1.5", "to": "nan"},
    }


def test_long_changes_stay_valid_json_within_500() -> None:
    text = c.changes({"description": ("x" * 400, "y" * 400), "name": ("old", "new")})
    assert text_length(text) <= 500
    decoded = json.loads(text)
    assert decoded["name"] == {"from": "old", "to": "new"}  # short values stay whole
    assert decoded["description"]["from"].endswith("…")
    assert decoded["description"]["from"].startswith("x" * 100)


def test_too_many_changed_fields_keep_the_first_and_count_the_rest() -> None:
    text = c.changes({f"field_{i}": ("old", "new") for i in range(60)})
    decoded = json.loads(text)
    assert text_length(text) <= 500
    kept = [key for key in decoded if key != OMITTED_KEY]
    assert kept == [f"field_{i}" for i in range(len(kept))]
    assert decoded[OMITTED_KEY] == 60 - len(kept)


def test_changes_count_utf16_and_never_split_a_character() -> None:
    family = "👩\u200d👩\u200d👧"  # one emoji made of three code points joined by zero-width joiners
    text = c.changes({"d": ("😀" * 400, family * 100), "e": ("e\u0301" * 300, "x")})
    assert text_length(text) <= 500
    assert len(text.encode("utf-16-le")) // 2 <= 500  # JavaScript's String.length, not just code points
    decoded = json.loads(text)
    assert decoded["d"]["from"].rstrip("…").strip("😀") == ""
    assert decoded["d"]["to"].rstrip("…").replace(family, "") == ""
    assert decoded["e"]["from"].rstrip("…").replace("e\u0301", "") == ""
    text.encode("utf-8")  # valid UTF-8


def test_changes_replace_lone_surrogates() -> None:
    text = c.changes({"d": ("a\ud800b", "\udc00")})
    assert json.loads(text) == {"d": {"from": "a\ufffdb", "to": "\ufffd"}}
    text.encode("utf-8")


def test_changes_always_valid_json_within_the_limit() -> None:
    rng = random.Random(5)
    alphabet = ["a", "é", '"', "\\", "\n", "😀", "\u0301", "\u200d", "中", "\x00"]
    for _ in range(300):
        pairs = {
            "".join(rng.choices(alphabet, k=rng.randint(1, 30))): (
                "".join(rng.choices(alphabet, k=rng.randint(0, 400))),
                rng.choice([None, 1.5, True, ["x" * rng.randint(0, 600)], "".join(rng.choices(alphabet, k=50))]),
            )
            for _ in range(rng.randint(1, 25))
        }
        text = c.changes(pairs)
        assert text_length(text) <= 500
        assert isinstance(json.loads(text), dict)
        text.encode("utf-8")


# -- builders ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("action", list(c.CENTURE_ACTIONS))
def test_every_sample_matches_its_catalog_entry(action: str) -> None:
    sample = SAMPLES[action]()
    assert sample.action == action
    assert reasons(built(sample)) == []


def test_builders_trim_targets_to_the_documented_keys() -> None:
    sample = c.events.project_create(project=_project(), source="/organizations/o/projects/new")
    [project] = sample.targets
    assert project.name == "Apollo"
    assert dict(project.metadata) == {"organization_id": ORG}  # project.create's project has no metadata.name
    view = c.events.external_app_login_view(**_app_targets(), user_has_access_to_proxy=False)
    assert [t.name for t in view.targets] == ["Claude", None, None]  # the docs show the last two without names


def test_builders_leave_out_unset_optional_metadata_and_encode_changes() -> None:
    key = c.events.api_key_create(
        api_key=T.api_key("k", "n", project_id="p", organization_id=ORG), project=_project(), source="/s"
    )
    assert dict(key.metadata) == {"source": "/s"}
    update = SAMPLES[c.MCP_PROXY_UPDATE]()
    assert json.loads(str(update.metadata["changes"]))["name"] == {"from": "Proxy", "to": "Production API Proxy"}


def test_a_hand_made_changes_string_that_is_too_long_is_re_encoded() -> None:
    by_hand = json.dumps({"description": {"from": "a" * 300, "to": "b" * 300}})
    sample = c.events.mcp_proxy_update(mcp_proxy=_proxy(), project=T.project("p"), source="/s", changes=by_hand)
    text = str(sample.metadata["changes"])
    assert text_length(text) <= 500
    assert json.loads(text)["description"]["to"].endswith("…")


def test_generic_event_passes_unknown_actions_through() -> None:
    target = Target("widget", id="w1", metadata={"anything": 1})
    event = c.event("widget.spin", [target], {"speed": 3, "unset": None})
    assert event.targets == (target,)
    assert dict(event.metadata) == {"speed": 3}


# -- validation: each kind of violation, with its exact reason ------------------------------------------------------
def test_missing_target() -> None:
    sample = SAMPLES[c.API_KEY_CREATE]()
    assert reasons(built(sample, targets=sample.targets[:1])) == [
        "api_key.create: targets[1]: missing required target 'project'"
    ]


def test_wrong_target_order() -> None:
    sample = SAMPLES[c.API_KEY_CREATE]()
    assert reasons(built(sample, targets=sample.targets[::-1])) == [
        "api_key.create: targets: out of order: expected [api_key, project], got [project, api_key]"
    ]


def test_unexpected_and_repeated_targets() -> None:
    sample = SAMPLES[c.PROJECT_CREATE]()
    extra = (*sample.targets, Target("user", id="u"), sample.targets[0])
    assert reasons(built(sample, targets=extra)) == [
        "project.create: targets[1]: target type 'user' is not documented for this action (expected [project])",
        "project.create: targets[2]: target 'project' appears too many times",
    ]


def test_unknown_metadata_key() -> None:
    sample = SAMPLES[c.API_KEY_CREATE]()
    assert reasons(built(sample, metadata={**sample.metadata, "colour": "red"})) == [
        "api_key.create: metadata.colour: unknown key (documented: expiration_date, ip_addresses, source)"
    ]


def test_unknown_target_and_actor_metadata_keys() -> None:
    sample = SAMPLES[c.PROJECT_CREATE]()
    [project] = sample.targets
    odd_project = dataclasses.replace(project, metadata={**project.metadata, "owner": "x"})
    odd_actor = dataclasses.replace(JANE, metadata={**JANE.metadata, "role": "admin"})
    assert reasons(built(sample, targets=(odd_project,), actor=odd_actor)) == [
        "project.create: targets[0](project).metadata.owner: unknown key (documented: organization_id)",
        "project.create: actor.metadata.role: unknown key (documented: email, first_name, impersonator_email, "
        "impersonator_reason, last_name)",
    ]


def test_over_long_value() -> None:
    sample = SAMPLES[c.MCP_PROXY_UPDATE_STATUS]()
    assert reasons(built(sample, metadata={**sample.metadata, "new_status": "p" * 51})) == [
        "mcp_proxy.update_status: metadata.new_status: 51 characters, at most 50 allowed"
    ]


def test_over_long_in_utf16_even_when_500_code_points() -> None:
    # WorkOS (JavaScript) counts 1,000 characters in 500 emoji: the validator says so on an uncoerced event...
    sample = SAMPLES[c.SSO_VIEW_SETTINGS]()
    raw = dataclasses.replace(built(sample), metadata={"source": "😀" * 500})
    assert reasons(raw) == ["sso.view_settings: metadata.source: 1000 characters, at most 500 allowed"]
    # ...and the pipeline's coercion, which counts the same way, cuts it to fit before the validator runs.
    coerced = built(sample, metadata={"source": "😀" * 500})
    assert reasons(coerced) == []
    assert len(str(coerced.metadata["source"]).encode("utf-16-le")) // 2 <= 500


def test_missing_required_metadata() -> None:
    sample = SAMPLES[c.API_KEY_CREATE]()
    metadata = {k: v for k, v in sample.metadata.items() if k != "source"}
    assert reasons(built(sample, metadata=metadata)) == ["api_key.create: metadata.source: missing required field"]


def test_missing_target_and_actor_metadata() -> None:
    sample = SAMPLES[c.API_KEY_CREATE]()
    key = dataclasses.replace(sample.targets[0], metadata={"name": "deploy"})
    anonymous = Actor("user_1", name="Jane")
    assert reasons(built(sample, targets=(key, sample.targets[1]), actor=anonymous)) == [
        "api_key.create: targets[0](api_key).metadata.environment: missing required field",
        "api_key.create: targets[0](api_key).metadata.project_id: missing required field",
        "api_key.create: targets[0](api_key).metadata.organization_id: missing required field",
        "api_key.create: actor.metadata.first_name: missing required field",
        "api_key.create: actor.metadata.last_name: missing required field",
        "api_key.create: actor.metadata.email: missing required field",
    ]


def test_wrong_type_wrong_constant_and_actor_type() -> None:
    view = SAMPLES[c.EXTERNAL_APP_LOGIN_VIEW]()
    machine = dataclasses.replace(JANE, type="api_key")
    metadata = {**view.metadata, "user_has_access_to_proxy": "yes", "source": "/elsewhere"}
    assert reasons(built(view, metadata=metadata, actor=machine)) == [
        "external_app.login_view: metadata.source: must be '/external-apps/login', got '/elsewhere'",
        "external_app.login_view: metadata.user_has_access_to_proxy: must be a boolean, got str",
        "external_app.login_view: actor.type: must be 'user', got 'api_key'",
    ]


def test_pipeline_keys_and_open_lists_are_not_unknown() -> None:
    sample = SAMPLES[c.API_KEY_CREATE]()
    enriched = {**sample.metadata, "geo_country_code": "FR", "geo_city": "Paris", "http_status": 409}
    assert reasons(built(sample, metadata=enriched)) == []
    # project.update_name's docs are cut off: more metadata may exist.
    rename = SAMPLES[c.PROJECT_UPDATE_NAME]()
    assert reasons(built(rename, metadata={**rename.metadata, "reason": "typo"})) == []
    # mcp_proxy.update's project target lists no fields at all.
    update = SAMPLES[c.MCP_PROXY_UPDATE]()
    project = dataclasses.replace(update.targets[1], metadata={"anything": "goes"})
    assert reasons(built(update, targets=(update.targets[0], project))) == []


def test_actions_outside_the_catalog_pass_untouched() -> None:
    event = built(c.CatalogEvent("widget.spin", (Target("widget", id="w"),), {"whatever": 1}), actor=Actor("svc"))
    assert c.check(event) == []
    c.validator(strict=True)(event)


def test_strict_validator_raises_every_reason() -> None:
    sample = SAMPLES[c.API_KEY_CREATE]()
    event = built(sample, targets=sample.targets[:1], metadata={"source": "/s", "colour": "red"})
    with pytest.raises(EventError) as caught:
        c.validator(strict=True)(event)
    assert str(caught.value) == (
        "api_key.create: targets[1]: missing required target 'project'; "
        "api_key.create: metadata.colour: unknown key (documented: expiration_date, ip_addresses, source)"
    )


def test_default_validator_logs_once_per_action_and_reason_per_minute(caplog: pytest.LogCaptureFixture) -> None:
    sample = SAMPLES[c.API_KEY_CREATE]()
    event = built(sample, metadata={**sample.metadata, "colour": "red"})
    validate = c.validator()
    with caplog.at_level(logging.WARNING, logger="centure_audit_middleware.catalog"):
        for _ in range(5):
            validate(event)  # returns: the event is delivered
    [record] = caplog.records
    assert record.name == "centure_audit_middleware.catalog"
    assert "api_key.create: metadata.colour: unknown key" in record.getMessage()
    assert "delivered anyway" in record.getMessage()
    caplog.clear()
    every_time = c.CatalogValidator(log_interval=0)
    with caplog.at_level(logging.WARNING, logger="centure_audit_middleware.catalog"):
        every_time(event)
        every_time(event)
    assert len(caplog.records) == 2


def test_validator_sees_actions_registered_after_it_was_made(fresh_default: c.Catalog) -> None:
    validate = c.validator(strict=True)
    event = built(c.CatalogEvent("invoice.pay", (Target("invoice", id="i"),), {}), actor=JANE)
    validate(event)
    c.register(
        {"action": "invoice.pay", "category": "billing", "targets": ["invoice"], "metadata": {"amount": "number!"}}
    )
    with pytest.raises(EventError, match=r"^invoice.pay: metadata.amount: missing required field$"):
        validate(event)


def test_a_custom_catalog_can_be_passed_explicitly() -> None:
    mine = c.Catalog([c.ActionSpec("invoice.pay", "billing", targets=(c.TargetSpec("invoice"),))])
    event = built(c.CatalogEvent("invoice.pay", (), {}), actor=Actor("svc", type="system"))
    assert reasons(event, mine) == ["invoice.pay: targets[0]: missing required target 'invoice'"]
    assert reasons(event) == []  # not in the default catalog


# -- validation in the pipeline ------------------------------------------------------------------------------------
def test_strict_mode_dead_letters_with_the_reason(tmp_path: Path) -> None:
    sink = MemorySink()
    auditor = Auditor(sinks=[sink], outbox=tmp_path / "outbox.db", geoip=False, validators=[c.validator(strict=True)])
    try:
        sample = SAMPLES[c.API_KEY_CREATE]()
        auditor.record(
            sample.action, actor=JANE, organization=ORG, targets=sample.targets[:1], metadata=sample.metadata
        )
        SAMPLES[c.PROJECT_CREATE]().record(actor=JANE, organization=ORG)
        assert [e.action for e in delivered(auditor, sink)] == ["project.create"]
        assert auditor.stats()["dead_lettered"] == 1
        [dead] = auditor.dispatcher.outbox.dead_letters()
        assert dead.reason == "api_key.create: targets[1]: missing required target 'project'"
    finally:
        auditor.close(timeout=5)


def test_default_mode_logs_and_delivers(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sink = MemorySink()
    auditor = Auditor(sinks=[sink], outbox=tmp_path / "outbox.db", geoip=False, validators=[c.validator()])
    try:
        sample = SAMPLES[c.MCP_PROXY_UPDATE_STATUS]()
        with caplog.at_level(logging.WARNING, logger="centure_audit_middleware.catalog"):
            auditor.record(
                sample.action,
                actor=JANE,
                organization=ORG,
                targets=sample.targets,
                metadata={**sample.metadata, "new_status": "p" * 60},
            )
            [event] = delivered(auditor, sink)
        assert event.metadata["new_status"] == "p" * 60
        assert [r.getMessage().split(": ", 1)[1] for r in caplog.records if r.name.endswith(".catalog")] == [
            "mcp_proxy.update_status: metadata.new_status: 60 characters, at most 50 allowed"
        ]
    finally:
        auditor.close(timeout=5)


# -- documentation and fidelity ------------------------------------------------------------------------------------
def test_docs_table_is_up_to_date() -> None:
    text = DOC.read_text(encoding="utf-8")
    begin, end = "<!-- catalog-table:begin -->\n", "<!-- catalog-table:end -->"
    assert begin in text and end in text, "README.md lost its catalog table markers"
    table = text.split(begin, 1)[1].split(end, 1)[0]
    assert table == c.markdown_table(c.Catalog.centure()), (
        "README.md's catalog table is out of date: regenerate it with catalog.markdown_table()"
    )


def _shared_names(fields: list[Mapping[str, Any]]) -> list[str]:
    return [f["name"].removeprefix("metadata.") for f in fields if f["name"].startswith("metadata.")]


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data/centure-catalog.json is not available")
def test_packaged_catalog_agrees_with_the_researched_facts() -> None:
    facts = json.loads(SHARED.read_text(encoding="utf-8"))
    catalog = c.Catalog.centure()
    assert {e["action"] for e in facts["events"]} == {spec.action for spec in catalog}
    assert dict(catalog.categories) == {cat["id"]: cat["title"] for cat in facts["categories"]}
    assert [f.name for f in catalog.actor.metadata] == list(facts["base"]["actor"]["metadata"])
    for documented in facts["events"]:
        spec = catalog[documented["action"]]
        assert spec.category == documented["category"], spec.action
        # Targets: the documented ones, in order; an action the docs show without targets has only inferred ones.
        if documented["targets"]:
            assert [t["type"] for t in documented["targets"]] == list(spec.target_types), spec.action
        else:
            assert all(t.inferred for t in spec.targets), spec.action
        for shared_target, target in zip(documented["targets"], spec.targets, strict=False):
            names = _shared_names(shared_target["fields"])
            concrete = [n for n in names if not n.startswith("<")]
            ours = [f.name for f in target.metadata]
            assert [n for n in ours if n in concrete] == concrete, spec.action
            assert all(f.inferred or target.inferred for f in target.metadata if f.name not in concrete), spec.action
            assert sum(f.inferred for f in target.metadata) >= len(names) - len(concrete), spec.action
        # Event metadata: every documented name; the rest are inferred (names the docs don't show).
        shared_fields = documented["metadata"]
        named = [m["name"] for m in shared_fields if m["name"] is not None]
        assert [f.name for f in spec.metadata if not f.inferred] == named, spec.action
        unnamed = [m for m in shared_fields if m["name"] is None]
        if unnamed:
            inferred = [f for f in spec.metadata if f.inferred]
            assert [f.max_length for f in inferred] == [m["max_length"] for m in unnamed], spec.action
        for item in shared_fields:
            if item["name"] is not None:
                field = spec.field(item["name"])
                assert field is not None and field.type == item["type"], (spec.action, item["name"])
                assert field.max_length == item["max_length"], (spec.action, item["name"])
                if item["required"] is not None:
                    assert field.required == item["required"], (spec.action, item["name"])
