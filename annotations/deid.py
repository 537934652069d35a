"""Checks that a free-text code is a de-identified code and not a name or a date (no Django)."""
import re

_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,39}$")
_DATE = re.compile(r"(?<!\d)(\d{1,4})[-./](\d{1,2})[-./](\d{1,4})(?!\d)")
_COMPACT_DATE = re.compile(r"(?<!\d)(19|20)\d{2}(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])(?!\d)|(?<!\d)(0[1-9]|[12]\d|3[01])(0[1-9]|1[0-2])(19|20)\d{2}(?!\d)")


def deidentified_code_problem(value: str) -> str | None:
    """Return why ``value`` is not acceptable as a de-identified code, or None if it is."""
    if not _CODE.match(value):
        return (
            "Use a code of letters, digits and . _ / - only (at most 40 characters, no spaces): "
            "a de-identified code, not a name."
        )
    for match in _DATE.finditer(value):
        a, b, c = (int(x) for x in match.groups())
        if (1 <= b <= 12) and ((a > 31 and 1 <= c <= 31) or (c > 31 and 1 <= a <= 31) or (a <= 31 and c <= 31)):
            return "This looks like a date (a date of birth is identifying); use the lab's accession code."
    if _COMPACT_DATE.search(value):
        return "This contains what looks like a date (a date of birth is identifying); use the lab's accession code."
    letters = re.sub(r"[^A-Za-z]", "", value)
    if not re.search(r"\d", value) and len(letters) >= 3:
        return "This looks like a name (letters only); a de-identified code contains digits."
    return None
