"""The page's HTML: server-rendered, no script, no external asset (one inline stylesheet, allowed by its hash).

Every value that comes from an event, a filter or the app goes through `esc` (or `attr_url`); the functions here
take plain values and return markup, and know nothing of requests. Accessibility: a `lang` attribute, landmarks
(header, main, nav, section with headings), a skip link, a label for every input, table headers with `scope`,
buttons for everything that POSTs, visible focus rings, and "(opens in a new tab)" spoken for the portal buttons.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import html
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Final
from urllib.parse import urlencode

from ..events import AuditEvent
from .entitlements import EntitlementStatus

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "PageModel",
    "error_page",
    "esc",
    "event_page",
    "format_day",
    "link",
    "main_page",
]

CSS: Final = """
:root{--fg:#1f2328;--muted:#59636e;--bg:#fff;--line:#d1d9e0;--accent:#0b57d0;--accent-fg:#fff;--warn-bg:#fff8c5;
--warn-line:#d4a72c;--info-bg:#ddf4ff;--info-line:#54aeff;--err-bg:#ffebe9;--err-line:#ff8182;--focus:#0b57d0}
*{box-sizing:border-box}
body{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
.wrap{max-width:72rem;margin:0 auto;padding:0 1rem}
.skip{position:absolute;left:-999px;top:0;background:var(--accent);color:var(--accent-fg);padding:.5rem 1rem}
.skip:focus{left:1rem}
header.top{border-bottom:1px solid var(--line);padding:.75rem 0;background:#f6f8fa}
header.top .wrap{display:flex;gap:1rem;align-items:baseline;justify-content:space-between;flex-wrap:wrap}
.brand{font-weight:700}
.muted{color:var(--muted)}
h1{font-size:1.75rem;margin:1.5rem 0 1rem}
h2{font-size:1.25rem;margin:0 0 .5rem}
section.card{border:1px solid var(--line);border-radius:8px;padding:1rem 1.25rem;margin:0 0 1.5rem}
.banner{background:var(--info-bg);border-color:var(--info-line)}
.notice{border:1px solid var(--warn-line);background:var(--warn-bg);border-radius:6px;padding:.75rem 1rem;
margin:0 0 1rem}
.notice.error{border-color:var(--err-line);background:var(--err-bg)}
.notice.info{border-color:var(--info-line);background:var(--info-bg)}
.actions{display:flex;gap:.75rem;flex-wrap:wrap;margin:.75rem 0 0}
.actions form{margin:0}
button,.button{font:inherit;display:inline-block;padding:.5rem 1rem;border-radius:6px;border:1px solid var(--line);
background:#f6f8fa;color:var(--fg);cursor:pointer;text-decoration:none;white-space:nowrap}
button.primary{background:var(--accent);border-color:var(--accent);color:var(--accent-fg);font-weight:600}
a{color:var(--accent)}
a:focus-visible,button:focus-visible,input:focus-visible,.table-wrap:focus-visible{outline:3px solid var(--focus);
outline-offset:2px}
form.filters{display:grid;grid-template-columns:repeat(auto-fill,minmax(12rem,1fr));gap:.75rem;align-items:start;
margin:0 0 1rem}
form.filters label{display:block;font-size:.875rem;font-weight:600;margin-bottom:.25rem}
form.filters input{width:100%;height:2.5rem;font:inherit;padding:.4rem .5rem;border:1px solid #818b98;
border-radius:6px}
form.filters .hint{display:block;font-size:.8rem}
form.filters .filter-actions{display:flex;gap:.75rem;align-items:center;padding-top:1.55rem;grid-column:span 2}
.toolbar{display:flex;gap:.75rem;align-items:center;flex-wrap:wrap;margin:0 0 1rem}
.table-wrap{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:.9375rem}
caption{text-align:left;color:var(--muted);padding:.25rem 0}
th,td{text-align:left;vertical-align:top;padding:.5rem;border-bottom:1px solid var(--line)}
thead th{background:#f6f8fa}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.875rem}
pre{background:#f6f8fa;border:1px solid var(--line);border-radius:6px;padding:1rem;overflow-x:auto;white-space:pre-wrap;
word-break:break-word}
dl.summary{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem}
dl.summary dt{font-weight:600}
dl.summary dd{margin:0}
nav.pages{display:flex;gap:1rem;margin:1rem 0}
nav.crumbs{margin:1.25rem 0 0}
.sr-only{position:absolute;width:1px;height:1px;padding:0;margin:-1px;overflow:hidden;clip:rect(0,0,0,0);border:0}
footer{color:var(--muted);font-size:.875rem;padding:2rem 0}
"""

#: No script, no frame, no external anything; the one stylesheet is allowed by its hash. `form-action` is left out on
#: purpose: Chrome applies it to the redirect after a form post too, and ours lead to Stripe and WorkOS.
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; "
    f"style-src 'sha256-{base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode()}'; "
    "img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'"
)

_MONTHS: Final = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)

FILTER_LABELS: Final = (
    ("actor", "Actor", "text", "Id or exact name"),
    ("action", "Action", "text", "e.g. api_key.create or mcp_proxy.*"),
    ("target_type", "Target type", "text", "e.g. project"),
    ("target_id", "Target id", "text", ""),
    ("since", "From", "date", "UTC, inclusive"),
    ("until", "To", "date", "UTC, inclusive"),
    ("q", "Search", "search", "Names, emails, ids, metadata"),
)


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def link(path: str, params: Mapping[str, str] | None = None) -> str:
    """A URL path with a query string, escaped for an attribute."""
    query = urlencode(dict(params or {}))
    return esc(f"{path}?{query}" if query else path)


def format_day(moment: dt.datetime) -> str:
    """ "November 30, 2026" (UTC), whatever the server's locale."""
    day = moment.astimezone(dt.UTC)
    return f"{_MONTHS[day.month - 1]} {day.day}, {day.year}"


def _time(moment: dt.datetime) -> str:
    utc = moment.astimezone(dt.UTC)
    return f'<time datetime="{esc(utc.isoformat())}">{esc(utc.strftime("%Y-%m-%d %H:%M:%S"))}</time>'


def layout(title: str, main: str, *, organization: str | None = None) -> str:
    org = f'<span class="muted">Organization: {esc(organization)}</span>' if organization else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f'<meta name="referrer" content="no-referrer"><title>{esc(title)}</title><style>{CSS}</style></head>'
        '<body><a class="skip" href="#main">Skip to main content</a>'
        f'<header class="top"><div class="wrap"><span class="brand">Centure</span>{org}</div></header>'
        f'<main id="main" class="wrap" tabindex="-1">{main}</main>'
        '<footer><div class="wrap">Audit logs are delivered to WorkOS; times are in UTC.</div></footer>'
        "</body></html>"
    )


def error_page(title: str, message: str, *, back: str | None = None) -> str:
    back_link = f'<p><a href="{esc(back)}">Back to Audit Logs</a></p>' if back else ""
    return layout(title, f'<h1>{esc(title)}</h1><p class="notice error" role="alert">{esc(message)}</p>{back_link}')


def _hidden_token(token: str) -> str:
    return f'<input type="hidden" name="csrf_token" value="{esc(token)}">'


class PageModel:
    """What the main page shows; built by the view, rendered by `main_page`."""

    def __init__(
        self,
        *,
        base: str,
        organization: str,
        status: EntitlementStatus | None,
        csrf_token: str,
        can_subscribe: bool,
        price_note: str | None = None,
        notices: Sequence[tuple[str, str]] = (),
        has_store: bool = False,
        filters: Mapping[str, str] | None = None,
        filter_error: str | None = None,
        events: Sequence[AuditEvent] = (),
        next_cursor: str | None = None,
        paged: bool = False,
    ) -> None:
        self.base = base
        self.organization = organization
        self.status = status
        self.csrf_token = csrf_token
        self.can_subscribe = can_subscribe
        self.price_note = price_note
        self.notices = notices
        self.has_store = has_store
        self.filters = dict(filters or {})
        self.filter_error = filter_error
        self.events = events
        self.next_cursor = next_cursor
        self.paged = paged


def _notices(notices: Iterable[tuple[str, str]]) -> str:
    # role=status for information, role=alert for problems: screen readers announce both without moving focus.
    return "".join(
        f'<p class="notice {esc(kind)}" role="{"alert" if kind == "error" else "status"}">{esc(text)}</p>'
        for kind, text in notices
    )


def _subscribe_section(m: PageModel) -> str:
    note = f"<p>{esc(m.price_note)}</p>" if m.price_note else ""
    if m.can_subscribe:
        action = (
            f'<form method="post" action="{esc(m.base)}/subscribe">{_hidden_token(m.csrf_token)}'
            '<button type="submit" class="primary">Subscribe Now</button></form>'
        )
    else:
        action = "<p>Ask your Centure account manager to enable the Audit Logging add-on.</p>"
    return (
        '<section class="card banner" aria-labelledby="subscription-heading">'
        '<h2 id="subscription-heading">Audit Logging is not enabled for this organization</h2>'
        "<p>Subscribe to the Audit Logging add-on to see who did what in your organization, search and export the "
        "record, and stream it to your SIEM.</p>"
        f'{note}<div class="actions">{action}</div></section>'
    )


def _portal_form(base: str, intent: str, label: str, token: str) -> str:
    # target=_blank: the portal opens in a new tab, leaving this page where it was. noopener: the portal's page
    # gets no handle on this one.
    return (
        f'<form method="post" action="{esc(base)}/portal/{esc(intent)}" target="_blank" rel="noopener noreferrer">'
        f'{_hidden_token(token)}<button type="submit" class="primary">{esc(label)}'
        '<span class="sr-only"> (opens in a new tab)</span></button></form>'
    )


def _portal_section(m: PageModel) -> str:
    status = m.status
    ending = ""
    if status is not None and status.cancel_at_period_end and status.current_period_end is not None:
        ending = (
            f'<p class="notice" role="status">Your subscription ends on {esc(format_day(status.current_period_end))}. '
            "Audit logs stay available until then.</p>"
        )
    return (
        '<section class="card" aria-labelledby="portal-heading">'
        '<h2 id="portal-heading">WorkOS Audit Logs</h2>'
        f"{ending}<p>Browse your organization's audit trail in the WorkOS portal, or send it to your SIEM with a log "
        "stream. Each button opens the portal in a new tab with a link valid for five minutes.</p>"
        '<div class="actions">'
        f"{_portal_form(m.base, 'audit_logs', 'View Audit Logs', m.csrf_token)}"
        f"{_portal_form(m.base, 'log_streams', 'Configure Log Streams', m.csrf_token)}"
        "</div></section>"
    )


def _filter_form(m: PageModel) -> str:
    fields = []
    for name, label, kind, hint in FILTER_LABELS:
        hint_id = f"hint-{name}"
        described = f' aria-describedby="{hint_id}"' if hint else ""
        hint_html = f'<span id="{hint_id}" class="hint muted">{esc(hint)}</span>' if hint else ""
        fields.append(
            f'<div><label for="filter-{name}">{esc(label)}</label>'
            f'<input id="filter-{name}" name="{name}" type="{kind}" value="{esc(m.filters.get(name, ""))}"'
            f' maxlength="1000"{described}>{hint_html}</div>'
        )
    return (
        f'<form class="filters" method="get" action="{esc(m.base)}" role="search" aria-label="Filter events">'
        f'{"".join(fields)}<div class="filter-actions"><button type="submit">Apply filters</button>'
        f'<a href="{esc(m.base)}">Clear filters</a></div></form>'
    )


def _actor_cell(event: AuditEvent) -> str:
    actor = event.actor
    name = esc(actor.name) if actor.name else ""
    ident = f'<span class="muted">{esc(actor.type)} <code>{esc(actor.id)}</code></span>'
    return f"{name}<br>{ident}" if name else ident


def _targets_cell(event: AuditEvent) -> str:
    parts = []
    for target in event.targets:
        label = esc(target.name) if target.name else f"<code>{esc(target.id)}</code>"
        parts.append(f'<span class="muted">{esc(target.type)}:</span> {label}')
    return "<br>".join(parts)


def _location_cell(event: AuditEvent) -> str:
    geo = event.geo
    place = ", ".join(p for p in (geo.city, geo.country_code) if p) if geo is not None else ""
    where = f'<br><span class="muted">{esc(place)}</span>' if place else ""
    return f"<code>{esc(event.context.location)}</code>{where}"


def _row(base: str, event: AuditEvent) -> str:
    detail = f"{base}/events/{event.id}"
    stamp = event.occurred_at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    return (
        f"<tr><td>{_time(event.occurred_at)}</td><td>{_actor_cell(event)}</td>"
        f"<td><code>{esc(event.action)}</code></td><td>{_targets_cell(event)}</td><td>{_location_cell(event)}</td>"
        f'<td><a href="{link(detail)}">Details<span class="sr-only"> of {esc(event.action)} at {esc(stamp)}'
        "</span></a></td></tr>"
    )


def _events_section(m: PageModel) -> str:
    error = _notices([("error", m.filter_error)]) if m.filter_error else ""
    head = "".join(
        f'<th scope="col">{label}</th>'
        for label in ("Time (UTC)", "Actor", "Action", "Targets", "Location", '<span class="sr-only">Details</span>')
    )
    rows = "".join(_row(m.base, e) for e in m.events) or (
        '<tr><td colspan="6">No events match these filters.</td></tr>'
    )
    table = (
        '<div class="table-wrap" role="region" aria-labelledby="events-caption" tabindex="0">'
        f'<table><caption id="events-caption">Events, newest first</caption><thead><tr>{head}</tr></thead>'
        f"<tbody>{rows}</tbody></table></div>"
    )
    pages = []
    if m.paged:
        pages.append(f'<a href="{link(m.base, m.filters)}">First page</a>')
    if m.next_cursor:
        pages.append(f'<a rel="next" href="{link(m.base, {**m.filters, "cursor": m.next_cursor})}">Next page</a>')
    nav = f'<nav class="pages" aria-label="Pagination">{"".join(pages)}</nav>' if pages else ""
    export = f'<a class="button" href="{link(m.base + "/export.csv", m.filters)}">Export CSV</a>'
    body = "" if m.filter_error else f'<div class="toolbar">{export}</div>{table}{nav}'
    return (
        '<section aria-labelledby="events-heading">'
        f'<h2 id="events-heading">Events</h2>{_filter_form(m)}{error}{body}</section>'
    )


def main_page(m: PageModel) -> str:
    parts = [f"<h1>Audit Logs</h1>{_notices(m.notices)}"]
    if m.status is not None:
        parts.append(_portal_section(m) if m.status.active else _subscribe_section(m))
        if m.status.active and m.has_store:
            parts.append(_events_section(m))
    return layout("Audit Logs", "".join(parts), organization=m.organization)


def event_page(base: str, organization: str, event: AuditEvent) -> str:
    pretty = json.dumps(event.to_dict(), indent=2, ensure_ascii=False, sort_keys=True, default=str)
    summary = (
        '<dl class="summary">'
        f"<dt>Action</dt><dd><code>{esc(event.action)}</code></dd>"
        f"<dt>Time (UTC)</dt><dd>{_time(event.occurred_at)}</dd>"
        f"<dt>Actor</dt><dd>{_actor_cell(event)}</dd>"
        f"<dt>Targets</dt><dd>{_targets_cell(event) or 'None'}</dd>"
        f"<dt>Location</dt><dd>{_location_cell(event)}</dd>"
        "</dl>"
    )
    main = (
        f'<nav class="crumbs" aria-label="Breadcrumb"><a href="{esc(base)}">Audit Logs</a> › Event</nav>'
        f"<h1>Event <code>{esc(event.id)}</code></h1>{summary}"
        f'<section aria-labelledby="json-heading"><h2 id="json-heading">Full event (JSON)</h2>'
        f"<pre><code>{esc(pretty)}</code></pre></section>"
    )
    return layout(f"Event {event.id} · Audit Logs", main, organization=organization)
