"""The differential count as plain numbers: percentages, 95% intervals, absolute counts, the
target-count message, the "count further" suggestion and reference-interval flags.

Pure Python (statsmodels for the intervals); no Django, so the portal, the API and the
``differential`` command compute exactly the same figures.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from statsmodels.stats.proportion import proportion_confint

INTERVAL_METHODS = {"wilson": "wilson", "clopper-pearson": "beta", "beta": "beta"}
DEFAULT_METHOD = "wilson"
ALPHA = 0.05

# Classes whose presence matters clinically, with the level (percent of leukocytes, or per 100
# WBC for erythroblasts) a count should be able to rule in or out. When the 95% interval still
# straddles the level, the page suggests counting further.
CLINICAL_THRESHOLDS: dict[str, float] = {
    "blast": 1.0,
    "atypical_lymphocyte": 5.0,
    "immature_granulocyte": 2.0,
    "erythroblast": 1.0,
}
FURTHER_COUNTS = (200, 400, 1000)


def proportion_interval(k: int, n: int, *, method: str = DEFAULT_METHOD, alpha: float = ALPHA) -> tuple[float, float]:
    """Two-sided (1 - alpha) interval of k/n, in percent. n == 0 gives (0, 100)."""
    if n <= 0:
        return (0.0, 100.0)
    if not 0 <= k <= n:
        raise ValueError(f"k must be within 0..n, got k={k}, n={n}")
    lo, hi = proportion_confint(k, n, alpha=alpha, method=INTERVAL_METHODS[method])
    return (round(max(0.0, float(lo)) * 100, 2), round(min(1.0, float(hi)) * 100, 2))


def per_100_interval(k: int, n_wbc: int, *, method: str = DEFAULT_METHOD) -> tuple[float, float]:
    """Interval of a ratio per 100 WBC (e.g. erythroblasts): the interval of k/(k+n) mapped
    through p -> 100 p / (1 - p)."""
    total = k + n_wbc
    if n_wbc <= 0:
        return (0.0, float("inf")) if total else (0.0, 100.0)
    lo, hi = proportion_interval(k, total, method=method)
    lo, hi = lo / 100, hi / 100
    f = lambda p: 100 * p / (1 - p) if p < 1 else float("inf")  # noqa: E731
    return (round(f(lo), 2), round(f(hi), 2))


@dataclass
class Differential:
    counts: dict[str, int]  # every class seen (leukocytes, erythroblasts, smudge cells, ...)
    leukocyte_total: int
    percentages: dict[str, float]  # leukocyte classes, percent of counted leukocytes
    intervals: dict[str, list[float]]  # 95% interval of each percentage
    absolute: dict[str, float]  # 10^9/L, only with the WBC count
    per_100_wbc: dict[str, float]  # non-leukocytes (erythroblasts) per 100 WBC
    per_100_intervals: dict[str, list[float]]
    method: str
    wbc_count: float | None = None

    def as_dict(self) -> dict:
        return {
            "counts": self.counts, "leukocyte_total": self.leukocyte_total, "percentages": self.percentages,
            "intervals": self.intervals, "absolute": self.absolute, "per_100_wbc": self.per_100_wbc,
            "per_100_intervals": self.per_100_intervals, "method": self.method, "wbc_count": self.wbc_count,
        }


def differential(
    counts: Mapping[str, int],
    *,
    leukocyte_codes: Iterable[str],
    per_100_codes: Iterable[str] = ("erythroblast",),
    report_codes: Iterable[str] = (),
    wbc_count: float | None = None,
    method: str = DEFAULT_METHOD,
) -> Differential:
    """``counts``: class code -> number of counted cells. Percentages and intervals are over the
    leukocyte classes only; ``report_codes`` adds leukocyte classes with a zero count (an interval
    of 0/N still says something)."""
    if method not in INTERVAL_METHODS:
        raise ValueError(f"method must be one of {', '.join(INTERVAL_METHODS)}")
    leuko = set(leukocyte_codes)
    counts = {c: int(n) for c, n in counts.items() if int(n) > 0}
    n = sum(v for c, v in counts.items() if c in leuko)
    shown = [c for c in counts if c in leuko] + [c for c in report_codes if c in leuko and c not in counts]
    percentages, intervals, absolute = {}, {}, {}
    for code in shown:
        k = counts.get(code, 0)
        percentages[code] = round(100.0 * k / n, 2) if n else 0.0
        intervals[code] = list(proportion_interval(k, n, method=method))
        if wbc_count is not None and n:
            absolute[code] = round(float(wbc_count) * k / n, 3)
    per_100, per_100_iv = {}, {}
    for code in per_100_codes:
        if code in leuko:
            continue
        k = counts.get(code, 0)
        if k or code in report_codes:
            per_100[code] = round(100.0 * k / n, 2) if n else 0.0
            per_100_iv[code] = list(per_100_interval(k, n, method=method))
    return Differential(counts=counts, leukocyte_total=n, percentages=percentages, intervals=intervals,
                        absolute=absolute, per_100_wbc=per_100, per_100_intervals=per_100_iv, method=method,
                        wbc_count=float(wbc_count) if wbc_count is not None else None)


def target_message(counted: int, target: int) -> str | None:
    if counted >= target:
        return None
    return f"Target of {target} leukocytes not reached: {counted} counted ({target - counted} short)."


def count_further(diff: Differential, *, thresholds: Mapping[str, float] = CLINICAL_THRESHOLDS) -> list[dict]:
    """Clinically important classes seen in the count whose 95% interval straddles their
    threshold, with the smallest further count that would decide at the same observed proportion.
    (A class not seen at all is not flagged: absence in the target count is the usual standard.)"""
    out = []
    n = diff.leukocyte_total
    for code, level in thresholds.items():
        k = diff.counts.get(code, 0)
        per_100 = code in diff.per_100_wbc
        if not n or not k:
            continue
        lo, hi = (per_100_interval(k, n, method=diff.method) if per_100
                  else proportion_interval(k, n, method=diff.method))
        if not (lo < level < hi):
            continue
        value = 100.0 * k / n
        needed = None
        for total in FURTHER_COUNTS:
            if total <= n:
                continue
            k2 = round(k * total / n)
            lo2, hi2 = (per_100_interval(k2, total, method=diff.method) if per_100
                        else proportion_interval(k2, total, method=diff.method))
            if not (lo2 < level < hi2):
                needed = total
                break
        unit = "per 100 WBC" if per_100 else "%"
        out.append({
            "code": code, "threshold": level, "value": round(value, 2), "interval": [lo, hi], "unit": unit,
            "count_to": needed,
            "message": (
                f"{code}: {value:.1f} {unit} (95% interval {lo:.1f}–{hi:.1f}) cannot rule {level:g} {unit} in or out; "
                + (f"count to {needed} leukocytes." if needed else f"count beyond {FURTHER_COUNTS[-1]} leukocytes or "
                   "confirm by another method.")
            ),
        })
    return out


# Interpretation codes of FHIR's v3-ObservationInterpretation: high, low, normal, and
# indeterminate where the count cannot decide (a possible flag, a count below its target, flags
# withheld). H, L and N are also HL7 v2 table 0078 abnormal flags; IND is not, so the HL7 message
# leaves OBX-8 empty for it and says why in the OBX's NTE (slides.hl7).
HIGH, LOW, NORMAL, INDETERMINATE = "H", "L", "N", "IND"
NOT_ASSESSED_NOTE = "not assessed by the model — expert only"
EXPERT_COUNTED_NOTE = "counted by the expert; not pre-classified by the model"
# Why a row carries no flag, in the PDF's flag column (an IND result's reason: indeterminate_reason).
NO_FLAG_TEXT = {"insufficient": "no flag: insufficient count", "suppressed": "no flag: withheld"}


def indeterminate_reason(row: Mapping) -> str:
    """Why a rule's row is indeterminate (interpretation IND), in words: its possible flag, or why
    no flag may be raised. Empty for a row that is not indeterminate."""
    if row.get("interpretation") != INDETERMINATE:
        return ""
    return {"possible": row.get("possible") or "possible flag; count more cells to decide",
            "insufficient": "insufficient count (fewer leukocytes than the target count)",
            "suppressed": "automatic flags withheld (see the report's comments)"}.get(row.get("status") or "", "")


def _measure_interval(k: int, n: int, measure: str, *, wbc_count: float | None, method: str):
    """(value, 95% interval, unit) of ``k`` cells of ``n`` leukocytes in the rule's measure, or
    None when it cannot be evaluated (no WBC count for an absolute measure)."""
    if measure == "percent":
        return 100.0 * k / n, list(proportion_interval(k, n, method=method)), "%"
    if measure == "absolute":
        if wbc_count is None:
            return None
        lo, hi = proportion_interval(k, n, method=method)
        return wbc_count * k / n, [round(wbc_count * lo / 100, 3), round(wbc_count * hi / 100, 3)], "10^9/L"
    if measure == "per_100_wbc":
        return 100.0 * k / n, list(per_100_interval(k, n, method=method)), "/100 WBC"
    raise ValueError(f"unknown measure {measure!r}")


def _side(interval, value, low, high) -> tuple[str, str]:
    """(where the 95% interval lies, where the point lies): "high"/"low"/"" each."""
    lo, hi = interval
    wholly = "high" if high is not None and lo > high else "low" if low is not None and hi < low else ""
    point = "high" if high is not None and value > high else "low" if low is not None and value < low else ""
    return wholly, point


def _decisive_count(k: int, n: int, rule: Mapping, direction: str, *, wbc_count, method: str) -> int | None:
    """The smallest further count (200, 400, 1000) whose interval would lie wholly outside the
    reference interval at the same observed proportion; None beyond 1000."""
    for total in FURTHER_COUNTS:
        if total <= n:
            continue
        k2 = round(k * total / n)
        value, interval, _ = _measure_interval(k2, total, rule["measure"], wbc_count=wbc_count, method=method)
        if _side(interval, value, rule.get("low"), rule.get("high"))[0] == direction:
            return total
    return None


def insufficient_message(counted: int, target: int) -> str | None:
    """The standing message of a count below its target (no automatic flag is raised then)."""
    if counted >= target:
        return None
    return f"insufficient count ({counted} of {target}): no automatic flag is raised below the target count."


def unverified_message(*, unverified: int, unverified_leukocytes: int) -> str:
    """What the cells waiting for an expert are, in words that agree with the "Leukocytes counted"
    beside them: a cell the model gave a leukocyte class is among them (on the model's class
    alone), an unidentified one (or one of a class that is not a leukocyte) is not."""
    text = f"{unverified} cell(s) are waiting for an expert's verification"
    if not unverified_leukocytes:
        return text + " and are not among the leukocytes counted yet"
    if unverified_leukocytes == unverified:
        return text + ", all of them among the leukocytes counted on the model's class alone"
    return (text + f"; {unverified_leukocytes} of them are among the leukocytes counted on the model's class alone, "
            f"{unverified - unverified_leukocytes} not yet")


def evaluate_flags(diff: Differential, rules: Iterable[Mapping], *, target: int = 0,
                   flags_suppressed_reason: str | None = None, not_assessed: Iterable[str] = (),
                   expert_counted: Iterable[str] = ()) -> list[dict]:
    """The reference-interval rows of a differential: the ONE place where flags are decided.

    Each rule: name, codes (list), measure (percent / absolute / per_100_wbc), low, high,
    flag_low, flag_high. One row per rule that can be evaluated, with its ``status``:

    * ``flag``: the whole 95% interval lies outside the reference interval (``flag`` holds the
      flag, ``direction`` high/low, interpretation H/L);
    * ``possible``: the point estimate is outside but the interval overlaps the reference
      interval -- ``possible`` says "possible …; count more cells to decide" (how many when a
      count up to 1000 would decide), interpretation IND, no flag;
    * ``normal``: the point estimate is inside (interpretation N);
    * ``insufficient``: fewer leukocytes than ``target`` were counted -- no automatic flag,
      whatever the values (interpretation IND);
    * ``suppressed``: ``flags_suppressed_reason`` is given (e.g. the images are unlike those the
      model was trained on) -- no automatic flag until that is resolved (interpretation IND);
    * ``not_assessed``: every class of the rule is one the model has no training data for
      (``not_assessed``: while some counted cell is not verified, so any cell could be one of
      them) and no cell was assigned to it -- no value is reported (``note`` says so).

    ``expert_counted``: classes the model has no training data for whose count is the expert's
    (every counted cell verified): their rows are evaluated like any other -- a zero is a result
    with its interval -- and ``note`` says that the expert counted them.
    """
    rows = []
    n = diff.leukocyte_total
    not_assessed = set(not_assessed)
    expert_counted = set(expert_counted)
    insufficient = n < target
    for rule in rules:
        codes = list(rule["codes"])
        k = sum(diff.counts.get(c, 0) for c in codes)
        if not n:
            continue
        measured = _measure_interval(k, n, rule["measure"], wbc_count=diff.wbc_count, method=diff.method)
        if measured is None:
            continue
        value, interval, unit = measured
        low, high = rule.get("low"), rule.get("high")
        row = {"name": rule["name"], "codes": codes, "measure": rule["measure"], "unit": unit,
               "value": round(value, 3), "interval": interval, "low": low, "high": high, "flag": "",
               "direction": "", "possible": "", "status": "normal", "interpretation": NORMAL, "note": ""}
        unassessed = [c for c in codes if c in not_assessed]
        if unassessed and len(unassessed) == len(codes) and k == 0:
            row.update(value=None, interval=None, status="not_assessed", interpretation=None, note=NOT_ASSESSED_NOTE)
            rows.append(row)
            continue
        by_expert = [c for c in codes if c in expert_counted]
        if unassessed:
            row["note"] = f"{', '.join(unassessed)}: {NOT_ASSESSED_NOTE}"
        elif by_expert:
            row["note"] = EXPERT_COUNTED_NOTE if len(by_expert) == len(codes) else (
                f"{', '.join(by_expert)}: {EXPERT_COUNTED_NOTE}")
        wholly, point = _side(interval, value, low, high)
        label = (rule.get("flag_high") or f"{rule['name']} high") if (wholly or point) == "high" else (
            rule.get("flag_low") or f"{rule['name']} low")
        if flags_suppressed_reason:
            row.update(status="suppressed", interpretation=INDETERMINATE)
        elif insufficient:
            row.update(status="insufficient", interpretation=INDETERMINATE)
        elif wholly:
            row.update(status="flag", flag=label, direction=wholly, interpretation=HIGH if wholly == "high" else LOW)
        elif point:
            needed = _decisive_count(k, n, rule, point, wbc_count=diff.wbc_count, method=diff.method)
            row.update(status="possible", direction=point, interpretation=INDETERMINATE, count_to=needed,
                       possible=f"possible {label[:1].lower() + label[1:]}; count more cells to decide"
                       + (f" (at this proportion, {needed} leukocytes would)." if needed else
                          f" (beyond {FURTHER_COUNTS[-1]} leukocytes, or confirm by another method)."))
        rows.append(row)
    return rows


def flag_summary(rows: Iterable[Mapping], *, counted: int, target: int,
                 flags_suppressed_reason: str | None = None) -> dict:
    """What a report says above its table: the flags raised, the possible ones, and why none
    may be raised (suppressed, insufficient count). ``rows``: the differential's reference rows
    (``evaluate_flags``) and, when the lab reports it, the platelet estimate's
    (``slides.platelets.stats.flag``, the same keys): every format prints this one summary."""
    rows = list(rows)
    return {
        "flags": [r["flag"] for r in rows if r.get("status") == "flag"],
        "possible": [r["possible"] for r in rows if r.get("status") == "possible"],
        "insufficient": insufficient_message(counted, target),
        "suppressed_reason": flags_suppressed_reason or None,
    }


# Adult defaults a lab starts from (editable). Percent of leukocytes, 10^9/L, per 100 WBC.
DEFAULT_REFERENCE_INTERVALS = [
    # name, codes, measure, low, high, flag_low, flag_high, order
    ("Neutrophils", "neutrophil_segmented+neutrophil_band", "percent", 40.0, 75.0, "Neutropenia (relative)", "Neutrophilia (relative)", 10),
    ("Neutrophils", "neutrophil_segmented+neutrophil_band", "absolute", 1.8, 7.5, "Neutropenia", "Neutrophilia", 11),
    ("Lymphocytes", "lymphocyte+atypical_lymphocyte", "percent", 20.0, 45.0, "Lymphopenia (relative)", "Lymphocytosis (relative)", 20),
    ("Lymphocytes", "lymphocyte+atypical_lymphocyte", "absolute", 1.0, 4.0, "Lymphopenia", "Lymphocytosis", 21),
    ("Monocytes", "monocyte", "percent", 2.0, 10.0, "", "Monocytosis (relative)", 30),
    ("Monocytes", "monocyte", "absolute", 0.2, 1.0, "", "Monocytosis", 31),
    ("Eosinophils", "eosinophil", "percent", None, 6.0, "", "Eosinophilia (relative)", 40),
    ("Eosinophils", "eosinophil", "absolute", None, 0.5, "", "Eosinophilia", 41),
    ("Basophils", "basophil", "percent", None, 2.0, "", "Basophilia (relative)", 50),
    ("Basophils", "basophil", "absolute", None, 0.2, "", "Basophilia", 51),
    ("Band + immature granulocytes", "neutrophil_band+immature_granulocyte", "percent", None, 5.0, "", "Left shift", 60),
    ("Immature granulocytes", "immature_granulocyte", "percent", None, 2.0, "", "Immature granulocytes increased", 61),
    ("Atypical lymphocytes", "atypical_lymphocyte", "percent", None, 0.0, "", "Atypical lymphocytes present", 70),
    ("Blasts", "blast", "percent", None, 0.0, "", "Blasts present", 75),
    ("Erythroblasts", "erythroblast", "per_100_wbc", None, 0.0, "", "Erythroblasts present", 80),
]
