"""The reviewer's interpretive comment and the two-step release, as every report format prints them
(the page reads the same keys of ``Slide.report``; slides.lis puts these lines into the FHIR
conclusion and the HL7 NTEs, slides.pdf and slides.exports the facts and CSV columns).

Pure Python (no Django). The frozen report carries::

    "comment": "..."                      the interpretive comment ("" when none)
    "release": {"two_step": true, "submitted_by": ..., "submitted_by_id": ..., "submitted_at": ISO,
                "released_by": ..., "released_by_id": ..., "released_at": ISO}   (two-step release only)
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timezone

MAX_COMMENT = 2000
CSV_COLUMNS = ["interpretive_comment", "submitted_by", "submitted_at", "released_by", "released_at"]


def comment_normalise(text: str | None) -> str:
    """The comment as stored: surrounding blanks removed, line ends as \\n."""
    return (text or "").replace("\r\n", "\n").replace("\r", "\n").strip()


def _when(iso: str | None) -> str:
    if not iso:
        return "—"
    return datetime.fromisoformat(iso).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def report_lines(report: Mapping) -> list[str]:
    """The comment and, for a two-step release, who submitted and who released it (free-text lines
    of the FHIR conclusion and the HL7 NTEs)."""
    out = []
    comment = report.get("comment") or ""
    if comment:
        out.append(f"Interpretive comment: {comment}")
    release = report.get("release")
    if release:
        out.append(f"Verified and submitted by {release.get('submitted_by')} ({_when(release.get('submitted_at'))}); "
                   f"released by {release.get('released_by')} ({_when(release.get('released_at'))}).")
    return out


def report_facts(report: Mapping) -> list[tuple[str, str]]:
    """(label, text) rows for the PDF's facts table."""
    out = []
    release = report.get("release")
    if release:
        out.append(("Submitted", f"{_when(release.get('submitted_at'))} by {release.get('submitted_by')} "
                                 "(verified and submitted)"))
        out.append(("Released", f"{_when(release.get('released_at'))} by {release.get('released_by')}"))
    if report.get("comment"):
        out.append(("Comment", report["comment"]))
    return out


def csv_values(report: Mapping) -> list[str]:
    """The values of ``CSV_COLUMNS``."""
    release = report.get("release") or {}
    return [report.get("comment") or "", release.get("submitted_by") or "", release.get("submitted_at") or "",
            release.get("released_by") or "", release.get("released_at") or ""]


def report_with_names(report: Mapping, *, name_of: Callable[[int | None, str | None], str | None]) -> dict:
    """A copy of the report whose submitter's and releaser's names are ``name_of(id, name)`` (an export
    without reader names gives pseudonyms)."""
    release = report.get("release")
    if not release:
        return dict(report)
    release = dict(release)
    for role in ("submitted_by", "released_by"):
        release[role] = name_of(release.get(f"{role}_id"), release.get(role))
    return dict(report, release=release)
