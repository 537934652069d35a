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


def evaluate_flags(diff: Differential, rules: Iterable[Mapping]) -> list[dict]:
    """Each rule: name, codes (list), measure (percent / absolute / per_100_wbc), low, high,
    flag_low, flag_high. Returns one row per rule that can be evaluated, with its flag (or '')."""
    rows = []
    n = diff.leukocyte_total
    for rule in rules:
        codes = list(rule["codes"])
        k = sum(diff.counts.get(c, 0) for c in codes)
        measure = rule["measure"]
        if not n:
            continue
        if measure == "percent":
            value = 100.0 * k / n
            interval = list(proportion_interval(k, n, method=diff.method))
            unit = "%"
        elif measure == "absolute":
            if diff.wbc_count is None:
                continue
            value = diff.wbc_count * k / n
            lo, hi = proportion_interval(k, n, method=diff.method)
            interval = [round(diff.wbc_count * lo / 100, 3), round(diff.wbc_count * hi / 100, 3)]
            unit = "10^9/L"
        elif measure == "per_100_wbc":
            value = 100.0 * k / n
            interval = list(per_100_interval(k, n, method=diff.method))
            unit = "/100 WBC"
        else:
            raise ValueError(f"unknown measure {measure!r}")
        low, high = rule.get("low"), rule.get("high")
        flag, direction = "", ""
        if high is not None and value > high:
            flag, direction = rule.get("flag_high") or f"{rule['name']} high", "high"
        elif low is not None and value < low:
            flag, direction = rule.get("flag_low") or f"{rule['name']} low", "low"
        rows.append({
            "name": rule["name"], "codes": codes, "measure": measure, "unit": unit, "value": round(value, 3),
            "interval": interval, "low": low, "high": high, "flag": flag, "direction": direction,
        })
    return rows


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
