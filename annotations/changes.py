"""What an audit event changed, as a list a person reads: field, value before, value after.

Pure functions (no Django): the audit log page and each image's history render their output.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Change:
    field: str
    before: str | None  # None: the field did not exist before (a creation)
    after: str | None  # None: the field is gone after (a withdrawal, a deletion)


def readable(value) -> str:
    """A stored JSON value as text: no Python reprs, no braces."""
    if value is None or value == "":
        return "—"
    if value is True:
        return "yes"
    if value is False:
        return "no"
    if isinstance(value, dict):
        return ", ".join(f"{_field(k)}: {readable(v)}" for k, v in value.items()) or "—"
    if isinstance(value, (list, tuple)):
        return "; ".join(" ".join(readable(v) for v in item) if isinstance(item, (list, tuple)) else readable(item)
                         for item in value) or "—"
    return str(value)


def _field(key) -> str:
    return str(key).replace("_", " ")


def _as_dict(value) -> dict:
    if value is None:
        return {}
    return value if isinstance(value, dict) else {"value": value}


def field_changes(before, after) -> list[Change]:
    """The fields whose value differs between ``before`` and ``after`` (an event's stored states), in
    the order they were recorded. A creation lists every field it set, a removal every field it took."""
    old, new = _as_dict(before), _as_dict(after)
    changes = []
    for key in list(old) + [k for k in new if k not in old]:
        if key in old and key in new and old[key] == new[key]:
            continue
        changes.append(Change(
            field=_field(key),
            before=readable(old[key]) if key in old else None,
            after=readable(new[key]) if key in new else None,
        ))
    return changes
