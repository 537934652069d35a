"""The red-cell findings a reviewer grades, with the ICSH 2015 grading (pure Python, no Django).

Source: Palmer L, Briggs C, McFadden S, et al. ICSH recommendations for the standardization of
nomenclature and grading of peripheral blood cell morphological features. Int J Lab Hematol
2015;37:287-303. Most findings are graded semi-quantitatively from the share of red cells showing
the feature (1+ few, 2+ moderate, 3+ many); schistocytes are reported by their percentage, which
gives the grade (<1 %, 1-2 %, >2 %); sickle cells and the inclusions are reported as present.
"0" says the reviewer looked and saw none (a result); a finding left blank is not graded and is
not reported.

Codes: LOINC where a term for the finding by light microscopy exists and its code is certain
(``10381-2`` target cells, ``10378-8`` polychromasia, both "[Presence] in Blood by Light
microscopy"); every other finding has a local code in ``LOCAL_SYSTEM`` (listed in the README).
The grades are coded in ``GRADE_SYSTEM``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

LOINC = "http://loinc.org"
LOCAL_SYSTEM = "urn:leukoportal:rbc-morphology"
GRADE_SYSTEM = "urn:leukoportal:rbc-morphology-grade"
PANEL = ("rbc-morphology", "Red cell morphology")  # local: the section's code (nothing graded)
NOTHING_GRADED = "No red-cell findings graded."
METHOD = ("Graded by the reviewer on the slide's fields following ICSH 2015 (Palmer et al., Int J Lab Hematol "
          "2015;37:287-303).")

GRADED = "graded"  # 0 / 1+ / 2+ / 3+
PERCENT = "percent"  # a percentage of red cells, which gives 0 / 1+ / 2+ / 3+
PRESENT = "present"  # 0 / present

NONE, ONE, TWO, THREE, PRESENT_GRADE = "0", "1+", "2+", "3+", "present"
GRADE_TEXT = {NONE: "0 (none seen)", ONE: "1+ (few)", TWO: "2+ (moderate)", THREE: "3+ (many)",
              PRESENT_GRADE: "present"}
SCALE_GRADES = {GRADED: (NONE, ONE, TWO, THREE), PERCENT: (NONE, ONE, TWO, THREE), PRESENT: (NONE, PRESENT_GRADE)}

GROUPS = {"size": "Size", "colour": "Colour", "shape": "Poikilocytes (shape)", "inclusions": "Inclusions"}


@dataclass(frozen=True)
class Finding:
    code: str
    name: str
    group: str
    scale: str
    cutoffs: tuple[str, str, str] | None = None  # the share of red cells for 1+, 2+, 3+ (ICSH 2015)
    loinc: tuple[str, str] | None = None  # (code, display) where LOINC has the term

    @property
    def grades(self) -> tuple[str, ...]:
        return SCALE_GRADES[self.scale]

    @property
    def definition(self) -> str:
        """The grading rule in words (the verification form and the README)."""
        if self.scale == PRESENT:
            return "reported as present (not graded)"
        one, two, three = self.cutoffs
        return f"1+ {one}, 2+ {two}, 3+ {three} of red cells"

    @property
    def coding(self) -> tuple[str, str, str]:
        """(system, code, display) of the finding."""
        if self.loinc:
            return LOINC, self.loinc[0], self.loinc[1]
        return LOCAL_SYSTEM, self.code, self.name


_MOST = ("11-20 %", "21-50 %", ">50 %")
_FEW_COUNT = ("5-20 %", "21-50 %", ">50 %")  # findings significant at a lower share

FINDINGS: tuple[Finding, ...] = (
    Finding("anisocytosis", "Anisocytosis", "size", GRADED, _MOST),
    Finding("microcytes", "Microcytes", "size", GRADED, _MOST),
    Finding("macrocytes", "Macrocytes", "size", GRADED, _MOST),
    Finding("hypochromia", "Hypochromia", "colour", GRADED, _MOST),
    Finding("polychromasia", "Polychromasia", "colour", GRADED, _FEW_COUNT,
            loinc=("10378-8", "Polychromasia [Presence] in Blood by Light microscopy")),
    Finding("target_cells", "Target cells", "shape", GRADED, _MOST,
            loinc=("10381-2", "Target cells [Presence] in Blood by Light microscopy")),
    Finding("schistocytes", "Schistocytes", "shape", PERCENT, ("<1 %", "1-2 %", ">2 %")),
    Finding("spherocytes", "Spherocytes", "shape", GRADED, _FEW_COUNT),
    Finding("elliptocytes", "Elliptocytes", "shape", GRADED, _MOST),
    Finding("tear_drop_cells", "Tear-drop cells (dacrocytes)", "shape", GRADED, _FEW_COUNT),
    Finding("sickle_cells", "Sickle cells", "shape", PRESENT),
    Finding("howell_jolly_bodies", "Howell-Jolly bodies", "inclusions", PRESENT),
    Finding("basophilic_stippling", "Basophilic stippling", "inclusions", PRESENT),
    Finding("pappenheimer_bodies", "Pappenheimer bodies", "inclusions", PRESENT),
)
BY_CODE = {f.code: f for f in FINDINGS}
MAX_PERCENT = 100.0


class GradeError(ValueError):
    """A grade the finding does not allow (the message names the finding and what it allows)."""


def schistocyte_grade(percent: float) -> str:
    """ICSH 2015: schistocytes are counted as a percentage of red cells; <1 % is 1+, 1-2 % 2+,
    over 2 % 3+ (none seen: 0)."""
    if percent <= 0:
        return NONE
    if percent < 1:
        return ONE
    if percent <= 2:
        return TWO
    return THREE


def parse_percent(value) -> float:
    try:
        percent = float(str(value).strip().rstrip("%").strip())
    except (TypeError, ValueError):
        raise GradeError("The schistocyte percentage must be a number (per cent of red cells).") from None
    if not math.isfinite(percent) or not 0 <= percent <= MAX_PERCENT:
        raise GradeError("The schistocyte percentage must be between 0 and 100.")
    return round(percent, 2)


def validate(code: str, *, grade: str = "", percent=None) -> tuple[str, float | None] | None:
    """The (grade, percent) to store for one finding, or None where it is left ungraded.

    A finding graded by percentage (schistocytes) takes ``percent`` and derives its grade (a grade
    given beside it must agree); any other finding takes one of the grades it allows. Raises
    GradeError otherwise."""
    finding = BY_CODE.get(code)
    if finding is None:
        raise GradeError(f"Unknown red-cell finding {code!r}.")
    grade = (grade or "").strip()
    blank_percent = percent is None or str(percent).strip() == ""
    if finding.scale == PERCENT:
        if blank_percent:
            if grade:
                raise GradeError(f"{finding.name} are graded by their percentage of red cells (ICSH): "
                                 "give the percentage, the grade follows from it.")
            return None
        value = parse_percent(percent)
        derived = schistocyte_grade(value)
        if grade and grade != derived:
            raise GradeError(f"{finding.name} at {value:g} % are graded {derived}, not {grade}.")
        return derived, value
    if not blank_percent:
        raise GradeError(f"{finding.name} are graded, not given as a percentage.")
    if not grade:
        return None
    if grade not in finding.grades:
        raise GradeError(f"{finding.name}: {grade!r} is not a grade of this finding; "
                         f"allowed: {', '.join(finding.grades)}.")
    return grade, None


def grade_text(code: str, grade: str, percent: float | None = None) -> str:
    """The grade in words as every format prints it, e.g. "2+ (moderate)", "1+ (few; 0.5 % of red cells)"."""
    text = GRADE_TEXT.get(grade, grade)
    if percent is not None:
        text = text[:-1] + f"; {percent:g} % of red cells)" if text.endswith(")") else f"{text} ({percent:g} %)"
    return text
