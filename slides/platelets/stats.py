"""The platelet estimate and the red-cell figures of a slide as plain numbers (no Django).

* Platelets per field: the mean over the fields and its 95 % interval.  Two sources of spread are
  taken into account, and the interval is the wider of the two: the counting noise of the platelets
  seen (an exact Poisson interval of the total, divided by the number of fields), and the spread
  between fields (a Student t interval of the per-field counts, with at least two fields).
* The estimate: the mean times the lab's calibrated factor (platelets per field -> 10^9/L, see
  ``calibration``), its interval taking in both the mean's and the factor's uncertainty
  (``estimate_interval``); the method and the calibration are stated with it.
* A flag against the lab's reference interval only when the whole 95 % interval lies outside it
  and no reason withholds automatic flags on the slide (as the differential's flags); a point
  estimate outside an interval that still overlaps is a *possible* finding ("look at more fields").
* Clumps: platelets in a clump cannot be counted one by one; a clump makes a low estimate
  unreliable (possible pseudothrombocytopenia), which the report says.
* Red cells per field, and the WBC:RBC ratio (white cells found / red cells counted).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from scipy import stats as sps

from .calibration import factor_interval

ALPHA = 0.05
UNIT = "10^9/L"
CLUMP_NOTE = ("Platelet clumps seen: platelets in a clump are not counted one by one, so a low estimate may be "
              "falsely low (possible pseudothrombocytopenia); check the smear or a citrate sample.")


def poisson_interval(total: int, *, alpha: float = ALPHA) -> tuple[float, float]:
    """Exact (Garwood) interval of a Poisson count."""
    lo = 0.0 if total == 0 else float(sps.chi2.ppf(alpha / 2, 2 * total) / 2)
    hi = float(sps.chi2.ppf(1 - alpha / 2, 2 * total + 2) / 2)
    return lo, hi


def mean_interval(per_field: Sequence[int], *, alpha: float = ALPHA) -> tuple[float, float, float]:
    """(mean, low, high) of platelets per field; see the module's docstring."""
    n = len(per_field)
    if n == 0:
        raise ValueError("no field")
    total = int(sum(per_field))
    mean = total / n
    plo, phi = poisson_interval(total, alpha=alpha)
    lo, hi = plo / n, phi / n
    if n >= 2:
        sd = math.sqrt(sum((x - mean) ** 2 for x in per_field) / (n - 1))
        half = float(sps.t.ppf(1 - alpha / 2, n - 1)) * sd / math.sqrt(n)
        lo, hi = min(lo, mean - half), max(hi, mean + half)
    return mean, max(0.0, lo), hi


def flag(estimate: float, interval: Sequence[float], rule: Mapping | None, *,
         flags_suppressed_reason: str | None = None, insufficient: str | None = None) -> dict:
    """The reference-interval row of the estimate, by the differential's rules
    (``slides.stats.evaluate_flags``): status ``flag`` (the whole 95 % interval outside),
    ``possible`` (only the point outside: no flag, ``possible`` says so), ``normal``,
    ``suppressed`` (``flags_suppressed_reason`` given: no automatic flag while it stands, whatever
    the values; interpretation IND), ``insufficient`` (``insufficient``, the differential's message
    of a count below its target, given: no automatic flag on the slide; interpretation IND), or
    ``no_reference``. ``flag`` and ``possible`` are what the
    report's flag summary (``slides.stats.flag_summary``) collects."""
    if rule is None or (rule.get("low") is None and rule.get("high") is None):
        return {"name": "Platelet estimate", "status": "no_reference", "flag": "", "possible": "",
                "interpretation": None, "low": None, "high": None, "text": ""}
    low, high = rule.get("low"), rule.get("high")
    lo, hi = interval
    out = {"name": rule.get("name") or "Platelet estimate", "low": low, "high": high, "flag": "", "possible": "",
           "interpretation": "N", "status": "normal", "text": ""}
    if flags_suppressed_reason:
        out.update(status="suppressed", interpretation="IND",
                   text=f"No automatic flag: {flags_suppressed_reason}.")
        return out
    if insufficient:
        out.update(status="insufficient", interpretation="IND", text=insufficient[:1].upper() + insufficient[1:])
        return out
    for direction, outside_all, outside_point, name in (
            ("low", low is not None and hi < low, low is not None and estimate < low, rule.get("flag_low") or "Low"),
            ("high", high is not None and lo > high, high is not None and estimate > high,
             rule.get("flag_high") or "High")):
        where = "below" if direction == "low" else "above"
        if outside_all:
            out.update(status="flag", flag=name, interpretation=direction[0].upper(), direction=direction,
                       text=f"{name}: the platelet estimate's 95% interval lies wholly {where} "
                            "the reference interval.")
        elif outside_point:
            lowered = name[:1].lower() + name[1:]
            out.update(status="possible", interpretation="IND", direction=direction,
                       possible=f"{lowered} not excluded (platelet estimate {where} the reference interval, "
                                "its 95% interval overlapping it); look at more fields to decide",
                       text=f"{name[:1].upper() + name[1:]} not excluded: the estimate is {where} the reference "
                            "interval but its 95% interval overlaps it; look at more fields to decide.")
    return out


def estimate_interval(platelets_per_field: Sequence[int], *, factor: float,
                      calibration: Mapping | None = None) -> list[float]:
    """The estimate's 95 % interval. With a calibrated factor (``calibration``: its ``se`` and ``n``)
    both uncertainties count: the bounds of the 97.5 % interval of the mean platelets per field times
    those of the factor's 97.5 % interval, so that both hold together at least 95 % of the time
    (Bonferroni). Without one, the mean's 95 % interval times the factor."""
    if calibration and calibration.get("se") is not None and calibration.get("n"):
        _, lo, hi = mean_interval(platelets_per_field, alpha=ALPHA / 2)
        flo, fhi = factor_interval(factor=factor, se=float(calibration["se"]), n=int(calibration["n"]),
                                   alpha=ALPHA / 2)
        return [round(lo * flo, 1), round(hi * fhi, 1)]
    _, lo, hi = mean_interval(platelets_per_field)
    return [round(lo * factor, 1), round(hi * factor, 1)]


def summary(*, platelets_per_field: Sequence[int], red_cells_per_field: Sequence[int], white_cells: int,
            clumps: int, factor: float, rule: Mapping | None, corrected_fields: int = 0,
            calibration: Mapping | None = None, flags_suppressed_reason: str | None = None,
            insufficient: str | None = None) -> dict:
    """Everything the screens and reports show about platelets and red cells (JSON-able).
    ``calibration``: how the lab's factor was calibrated (its interval, the number of slides, when
    and by whom), stated with the method; ``flags_suppressed_reason``, ``insufficient``: see ``flag``."""
    n = len(platelets_per_field)
    mean, lo, hi = mean_interval(platelets_per_field)
    estimate = mean * factor
    est_iv = estimate_interval(platelets_per_field, factor=factor, calibration=calibration)
    red_total = int(sum(red_cells_per_field))
    out = {
        "fields": n,
        "per_field": [int(x) for x in platelets_per_field],
        "mean": round(mean, 3),
        "interval": [round(lo, 3), round(hi, 3)],
        "factor": factor,
        "estimate": round(estimate, 1),
        "estimate_interval": est_iv,
        "unit": UNIT,
        "clumps": int(clumps),
        "clump_note": CLUMP_NOTE if clumps else "",
        "corrected_fields": int(corrected_fields),
        "red_cells": {"per_field": [int(x) for x in red_cells_per_field], "total": red_total,
                      "mean": round(red_total / n, 2) if n else None},
        "white_cells": int(white_cells),
        "wbc_rbc_ratio": f"1:{red_total / white_cells:.0f}" if white_cells and red_total else None,
        "method": (f"Platelet estimate: platelets found per field (mean of {n} field(s)"
                   + (f", {corrected_fields} corrected by the reviewer" if corrected_fields else "")
                   + f") x the laboratory's factor {factor:g} ({UNIT} per platelet per field"
                   + (f", calibrated against analyser counts of {calibration['n']} slides on "
                      f"{calibration['calibrated_at'][:10]}, 95% interval {calibration['interval'][0]:g}-"
                      f"{calibration['interval'][1]:g}" if calibration else "")
                   + ("); 95% interval over the fields and of the factor" if calibration else
                      "); 95% interval over the fields")
                   + ". Digital estimate from smear images, not a count by an analyser."),
        "calibration": dict(calibration) if calibration else None,
    }
    out["reference"] = flag(estimate, est_iv, rule, flags_suppressed_reason=flags_suppressed_reason,
                            insufficient=insufficient)
    low = (rule or {}).get("low")
    if clumps and (out["reference"].get("direction") == "low" or (low is not None and estimate < low)):
        out["reference"]["text"] += " " + CLUMP_NOTE
    return out


def command_json(per_field_platelets: Sequence[int], per_field_red_cells: Sequence[int]) -> dict:
    """The ``differential --json`` keys: ``platelets`` {per_field, mean, interval} and ``red_cells``
    {per_field}."""
    if per_field_platelets:
        mean, lo, hi = mean_interval(per_field_platelets)
        plt = {"per_field": list(per_field_platelets), "mean": round(mean, 3), "interval": [round(lo, 3), round(hi, 3)]}
    else:
        plt = {"per_field": [], "mean": None, "interval": None}
    return {"platelets": plt, "red_cells": {"per_field": list(per_field_red_cells)}}
