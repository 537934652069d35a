"""The platelet factor's calibration (slides.platelets.calibration) and the estimate's flag by the
differential's rules (slides.platelets.stats): pure, no Django. The numbers are small enough to check
by hand."""
import math

import pytest

from slides.platelets import stats as platelet_stats
from slides.platelets.calibration import (
    MIN_PAIRS, CalibrationError, Pair, calibrate, factor_interval, parse_pairs,
)

T_975_9DF = 2.2621571628  # Student t, 97.5th percentile, 9 degrees of freedom
RULE = {"name": "Platelet estimate", "low": 150, "high": 400, "flag_low": "Possible thrombocytopenia",
        "flag_high": "Possible thrombocytosis"}


def pairs(counts, per_field):
    return [Pair(count=c, per_field=x) for c, x in zip(counts, per_field)]


def test_pairs_on_a_line_through_the_origin_give_its_slope_exactly():
    c = calibrate(pairs([10 * x for x in range(1, 11)], range(1, 11)))
    assert (c.factor, c.low, c.high, c.n, c.residual_sd) == (10.0, 10.0, 10.0, 10, 0.0)


def test_the_factor_is_sum_xy_over_sum_x2_with_a_t_interval_on_n_minus_1_df():
    # x = 1, 2 five times each; y = 10, 22: sum xy = 5 (10 + 44) = 270, sum x^2 = 5 (1 + 4) = 25 -> 10.8;
    # residuals -0.8 and +0.4: rss = 5 (0.64 + 0.16) = 4, s = sqrt(4 / 9) = 2/3, se = s / 5 = 2/15
    c = calibrate(pairs([10, 22] * 5, [1, 2] * 5))
    assert c.factor == pytest.approx(10.8)
    assert c.se == pytest.approx(2 / 15, abs=1e-6) and c.residual_sd == pytest.approx(2 / 3, abs=1e-3)
    half = T_975_9DF * 2 / 15
    assert (c.low, c.high) == (pytest.approx(10.8 - half, abs=1e-4), pytest.approx(10.8 + half, abs=1e-4))
    # x = 1 ten times, y = 9, 11: the factor is the mean, 10, and se = sqrt(10 / 9) / sqrt(10) = 1/3
    c = calibrate(pairs([9, 11] * 5, [1] * 10))
    assert c.factor == 10 and (c.low, c.high) == (pytest.approx(10 - T_975_9DF / 3, abs=1e-4),
                                                  pytest.approx(10 + T_975_9DF / 3, abs=1e-4))
    assert factor_interval(factor=c.factor, se=c.se, n=c.n) == (pytest.approx(c.low, abs=1e-4),
                                                               pytest.approx(c.high, abs=1e-4))


@pytest.mark.parametrize("counts, per_field, message", [
    ([200] * (MIN_PAIRS - 1), [10] * (MIN_PAIRS - 1), "At least 10 slides"),
    ([200] * 9 + [0], [10] * 10, "pair 10: the analyser count must be above 0"),
    ([200] * 9 + [-5], [10] * 10, "pair 10: the analyser count must be above 0"),
    ([200] * 10, [10] * 9 + [0], "pair 10: the mean platelets per field must be above 0"),
    ([200] * 9 + [math.nan], [10] * 10, "pair 10: the analyser count must be a number"),
    ([200] * 9 + [5000], [10] * 10, "analyser count 5000 is above 3000"),
    ([200] * 9 + [200], [10] * 9 + [2000], "mean platelets per field 2000 is above 1000"),
    ([800] * 10, [0.5] * 10, "factor 1.6e\\+03 is above 1000"),
    # nine slides at 1 and one at 300 for one platelet per field: the interval reaches below zero
    ([1] * 9 + [300], [1] * 10, "do not determine a factor"),
])
def test_pairs_that_cannot_calibrate_a_factor_are_refused_naming_why(counts, per_field, message):
    with pytest.raises(CalibrationError, match=message):
        calibrate(pairs(counts, per_field))


def test_typed_pairs_are_read_one_slide_per_line_and_a_bad_line_is_named():
    text = "# count, mean\n212, 7.4\n\n180;6\n150\t5.5\n90 S-2026-0012\n120, slide:12345\n"
    assert parse_pairs(text) == [(212.0, 7.4, "line 2"), (180.0, 6.0, "line 4"), (150.0, 5.5, "line 5"),
                                 (90.0, "S-2026-0012", "line 6"), (120.0, "12345", "line 7")]
    with pytest.raises(CalibrationError, match="line 2 .* two values"):
        parse_pairs("200, 7\n200, 7, 8\n")
    with pytest.raises(CalibrationError, match="line 1: the analyser count 'abc' is not a number"):
        parse_pairs("abc, 7\n")


def test_the_platelet_flag_is_withheld_by_the_differentials_rules():
    # one platelet per field in six fields, x 20: 20 x 10^9/L, the whole interval far below 150
    common = dict(platelets_per_field=[1] * 6, red_cells_per_field=[100] * 6, white_cells=6, clumps=0, factor=20,
                  rule=RULE)
    assert platelet_stats.summary(**common)["reference"]["flag"] == "Possible thrombocytopenia"
    withheld = platelet_stats.summary(**common, flags_suppressed_reason="the images are unlike the training images")
    ref = withheld["reference"]
    assert (ref["status"], ref["flag"], ref["possible"], ref["interpretation"]) == ("suppressed", "", "", "IND")
    assert ref["text"] == "No automatic flag: the images are unlike the training images."
    short = platelet_stats.summary(**common, insufficient="insufficient count (6 of 100): no automatic flag")
    assert short["reference"]["status"] == "insufficient" and short["reference"]["flag"] == ""
    assert short["reference"]["text"] == "Insufficient count (6 of 100): no automatic flag"
    # a point below 150 whose interval overlaps it: no flag, the possible finding is said
    possible = platelet_stats.summary(**dict(common, platelets_per_field=[6]))["reference"]
    assert possible["status"] == "possible" and possible["flag"] == ""
    assert possible["possible"].startswith("possible thrombocytopenia not excluded")


def test_a_calibrated_factor_widens_the_estimates_interval_by_its_own_uncertainty():
    per_field = [3, 4, 2, 5, 3, 4]
    plain = platelet_stats.summary(platelets_per_field=per_field, red_cells_per_field=[100] * 6, white_cells=6,
                                   clumps=0, factor=20, rule=RULE)
    calibration = {"factor": 20, "interval": [16, 24], "n": 10, "se": 1.77, "calibrated_at": "2026-12-01T09:00:00",
                   "calibrated_by": "admin1"}
    s = platelet_stats.summary(platelets_per_field=per_field, red_cells_per_field=[100] * 6, white_cells=6, clumps=0,
                               factor=20, rule=RULE, calibration=calibration)
    assert s["estimate"] == plain["estimate"] == pytest.approx(20 * 21 / 6, abs=0.1)
    assert s["estimate_interval"][0] < plain["estimate_interval"][0] < s["estimate"]
    assert s["estimate"] < plain["estimate_interval"][1] < s["estimate_interval"][1]
    assert s["calibration"]["n"] == 10
    assert "calibrated against analyser counts of 10 slides on 2026-12-01, 95% interval 16-24" in s["method"]
