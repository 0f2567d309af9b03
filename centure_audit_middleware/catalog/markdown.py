"""The catalog as a Markdown table, for the README (its catalog section is generated from it and tested for drift)."""

from __future__ import annotations

from .model import ActionSpec, Catalog, FieldSpec, TargetSpec, default_catalog

__all__ = ["markdown_table"]

LEGEND = (
    "`?` optional · `≤n` at most n characters · `=v` fixed value · `…` the docs' list is incomplete "
    "(more keys accepted) · `†` not shown in Centure's docs: inferred by this catalog"
)


def markdown_table(catalog: Catalog | None = None) -> str:
    """One row per action, grouped by category in catalog order: targets in order, then event metadata."""
    catalog = catalog if catalog is not None else default_catalog()
    titles = catalog.categories
    lines = ["| Category | Action | Targets (in order) | Metadata |", "| --- | --- | --- | --- |"]
    for category, specs in catalog.by_category().items():
        for index, spec in enumerate(specs):
            title = titles.get(category, category) if index == 0 else ""
            lines.append(f"| {title} | `{spec.action}` | {_targets(spec)} | {_metadata(spec)} |")
    actor = ", ".join(f"`{_field(f)}`" for f in catalog.actor.metadata)
    lines += ["", f"Actor metadata (every action): {actor}.", "", LEGEND, ""]
    return "\n".join(lines)


def _targets(spec: ActionSpec) -> str:
    return ", ".join(_target(t) for t in spec.targets) or "—"


def _target(target: TargetSpec) -> str:
    text = f"`{target.type}{'' if target.required else '?'}`" + ("†" if target.inferred else "")
    keys = [_field(f, inferred=target.inferred) for f in target.metadata]
    if target.open:
        keys.append("…")
    return f"{text} ({', '.join(keys)})" if keys else text


def _metadata(spec: ActionSpec) -> str:
    keys = [f"`{_field(f)}`" for f in spec.metadata]
    if spec.open:
        keys.append("…")
    return ", ".join(keys) or "—"


def _field(field: FieldSpec, *, inferred: bool = False) -> str:
    text = field.name + ("" if field.required else "?")
    if field.max_length is not None:
        text += f" ≤{field.max_length}" + (" (truncated)" if field.overflow == "truncate" else "")
    if field.const is not None:
        text += f" ={field.const}"
    if field.inferred and not inferred:
        text += "†"
    return text
