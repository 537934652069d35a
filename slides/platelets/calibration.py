"""The lab's platelet factor from paired samples, as plain numbers (no Django).

A camera field is a fraction of a microscope's eyepiece field, and its size depends on the camera,
the objective and the crop: the classic "x 20" rule is for a whole x100 eyepiece field and is
wrong for a camera field. So the factor is the lab's own: for at least ``MIN_PAIRS`` slides it
pairs the analyser's platelet count (10^9/L) of the sample with the mean platelets per field the
portal found on the slide, and fits the line through the origin

    analyser count = factor x platelets per field

by least squares: ``factor = sum(x y) / sum(x^2)``, with a 95 % Student t interval on ``n - 1``
degrees of freedom (one parameter): ``se = s / sqrt(sum(x^2))``, ``s^2 = sum((y - factor x)^2) / (n - 1)``.

Values that cannot be right are refused, naming the pair: a count or a mean that is not a positive
number, a count above ``MAX_COUNT`` 10^9/L or a mean above ``MAX_PER_FIELD`` platelets per field,
and a fit whose interval reaches zero (the pairs do not determine a factor).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats as sps

ALPHA = 0.05
MIN_PAIRS = 10
MAX_COUNT = 3000.0  # 10^9/L: above any platelet count an analyser reports in practice
MAX_PER_FIELD = 1000.0  # platelets per camera field
MAX_FACTOR = 1000.0


class CalibrationError(ValueError):
    """The pairs cannot calibrate a factor; the message says which pair and why."""


@dataclass(frozen=True)
class Pair:
    """One slide: the analyser's count (10^9/L) and the mean platelets per field on the slide;
    ``label`` names it in messages (its line, or the slide's accession code)."""

    count: float
    per_field: float
    label: str = ""


@dataclass(frozen=True)
class Calibration:
    factor: float
    low: float
    high: float
    n: int
    se: float  # the factor's standard error
    residual_sd: float  # 10^9/L

    def as_dict(self) -> dict:
        return {"factor": self.factor, "interval": [self.low, self.high], "n": self.n, "se": self.se,
                "residual_sd": self.residual_sd}


def factor_interval(*, factor: float, se: float, n: int, alpha: float = ALPHA) -> tuple[float, float]:
    """The factor's (1 - alpha) Student t interval on n - 1 degrees of freedom (never below 0)."""
    half = float(sps.t.ppf(1 - alpha / 2, n - 1)) * se
    return max(0.0, factor - half), factor + half


def _check(pair: Pair, name: str) -> None:
    where = pair.label or name
    for value, what, limit, unit in ((pair.count, "analyser count", MAX_COUNT, "10^9/L"),
                                     (pair.per_field, "mean platelets per field", MAX_PER_FIELD, "per field")):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise CalibrationError(f"{where}: the {what} must be a number.")
        if value <= 0:
            raise CalibrationError(f"{where}: the {what} must be above 0 (a slide without platelets cannot "
                                   "calibrate the factor).")
        if value > limit:
            raise CalibrationError(f"{where}: the {what} {value:g} is above {limit:g} {unit}; check the value.")


def calibrate(pairs: Sequence[Pair], *, alpha: float = ALPHA) -> Calibration:
    """The factor (10^9/L per platelet per field) and its (1 - alpha) interval; see the module."""
    if len(pairs) < MIN_PAIRS:
        raise CalibrationError(f"At least {MIN_PAIRS} slides are needed to calibrate the factor; "
                               f"{len(pairs)} given.")
    for i, pair in enumerate(pairs, start=1):
        _check(pair, f"pair {i}")
    n = len(pairs)
    sxx = sum(p.per_field ** 2 for p in pairs)
    sxy = sum(p.per_field * p.count for p in pairs)
    factor = sxy / sxx
    rss = sum((p.count - factor * p.per_field) ** 2 for p in pairs)
    s = math.sqrt(rss / (n - 1))
    se = s / math.sqrt(sxx)
    half = float(sps.t.ppf(1 - alpha / 2, n - 1)) * se
    low, high = factor - half, factor + half
    if low <= 0:
        raise CalibrationError(f"The pairs do not determine a factor: its 95% interval ({low:.3g} to {high:.3g}) "
                               "reaches zero. Check the pairs, or add slides over a wider range of counts.")
    if factor > MAX_FACTOR:
        raise CalibrationError(f"The factor {factor:.3g} is above {MAX_FACTOR:g} 10^9/L per platelet per field; "
                               "check that the means are platelets per field, not per slide.")
    return Calibration(factor=round(factor, 4), low=round(low, 4), high=round(high, 4), n=n, se=round(se, 6),
                       residual_sd=round(s, 3))


def parse_pairs(text: str) -> list[tuple[float, float | str, str]]:
    """The pairs typed on the settings page, one slide per line: the analyser count, then the mean
    platelets per field or the accession code of a signed slide of fields (the mean is read from
    it; write ``slide:CODE`` for a code that is all digits), separated by a comma, a semicolon, a
    tab or spaces. Blank lines and lines starting with #
    are skipped. Returns (count, mean or accession, "line N") each; a line that is not a pair is
    refused, naming it."""
    out = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p for p in line.replace(",", " ").replace(";", " ").split() if p]
        label = f"line {number}"
        if len(parts) != 2:
            raise CalibrationError(f"{label} ({line!r}): give the analyser count and the mean platelets per field "
                                   "(or a slide's accession code), two values.")
        try:
            count = float(parts[0])
        except ValueError:
            raise CalibrationError(f"{label}: the analyser count {parts[0]!r} is not a number.") from None
        second: float | str = parts[1]
        if second.lower().startswith("slide:"):
            second = second[len("slide:"):]
            if not second:
                raise CalibrationError(f"{label}: give the slide's accession code after 'slide:'.")
        else:
            try:
                second = float(second)
            except ValueError:
                pass
        out.append((count, second, label))
    return out
