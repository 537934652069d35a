"""The differential's numbers (pure functions, no database)."""
import pytest

from slides import stats
from slides.fhir import diagnostic_report
from slides.pipeline import cell_record, differential_json

LEUKO = ["neutrophil_segmented", "neutrophil_band", "lymphocyte", "atypical_lymphocyte", "monocyte", "eosinophil",
         "basophil", "immature_granulocyte"]


def test_wilson_interval_matches_the_textbook_value():
    # 50/100: Wilson 95% interval 40.38%-59.62%
    lo, hi = stats.proportion_interval(50, 100)
    assert (lo, hi) == pytest.approx((40.38, 59.62), abs=0.01)


def test_clopper_pearson_is_wider_than_wilson_for_zero_counts():
    w = stats.proportion_interval(0, 100, method="wilson")
    cp = stats.proportion_interval(0, 100, method="clopper-pearson")
    assert w[0] == 0 and cp[0] == 0
    assert cp[1] == pytest.approx(3.62, abs=0.01)  # the "rule of three" region
    assert w[1] == pytest.approx(3.70, abs=0.01)


def test_percentages_are_over_leukocytes_only_and_absolute_counts_use_the_wbc():
    counts = {"neutrophil_segmented": 60, "lymphocyte": 30, "monocyte": 10, "smudge": 7, "erythroblast": 5}
    d = stats.differential(counts, leukocyte_codes=LEUKO, wbc_count=8.0)
    assert d.leukocyte_total == 100
    assert d.percentages == {"neutrophil_segmented": 60.0, "lymphocyte": 30.0, "monocyte": 10.0}
    assert "smudge" not in d.percentages and d.counts["smudge"] == 7
    assert d.absolute["neutrophil_segmented"] == pytest.approx(4.8)
    assert d.per_100_wbc["erythroblast"] == 5.0
    lo, hi = d.per_100_intervals["erythroblast"]
    assert lo < 5.0 < hi


def test_without_wbc_count_there_are_no_absolute_counts():
    d = stats.differential({"lymphocyte": 3}, leukocyte_codes=LEUKO)
    assert d.absolute == {}


def test_target_message_only_when_short():
    assert stats.target_message(57, 100) == "Target of 100 leukocytes not reached: 57 counted (43 short)."
    assert stats.target_message(200, 200) is None


def test_count_further_when_an_interval_straddles_a_clinical_threshold():
    # 4 atypical lymphocytes in 100: 95% interval ~1.6-9.8% cannot rule 5% in or out
    counts = {"lymphocyte": 30, "atypical_lymphocyte": 4, "neutrophil_segmented": 66}
    d = stats.differential(counts, leukocyte_codes=LEUKO)
    suggestions = stats.count_further(d)
    assert [s["code"] for s in suggestions] == ["atypical_lymphocyte"]
    assert suggestions[0]["count_to"] in (200, 400, 1000, None)
    assert "cannot rule 5" in suggestions[0]["message"]
    # 20 in 100 clearly exceeds 5%: nothing to suggest
    d2 = stats.differential({"atypical_lymphocyte": 20, "lymphocyte": 80}, leukocyte_codes=LEUKO)
    assert stats.count_further(d2) == []


def test_flags_left_shift_presence_and_absolute_rules():
    rules = [
        {"name": "Band + IG", "codes": ["neutrophil_band", "immature_granulocyte"], "measure": "percent",
         "low": None, "high": 5.0, "flag_low": "", "flag_high": "Left shift"},
        {"name": "Atypical", "codes": ["atypical_lymphocyte"], "measure": "percent", "low": None, "high": 0.0,
         "flag_low": "", "flag_high": "Atypical lymphocytes present"},
        {"name": "Neutrophils", "codes": ["neutrophil_segmented"], "measure": "absolute", "low": 1.8, "high": 7.5,
         "flag_low": "Neutropenia", "flag_high": "Neutrophilia"},
        {"name": "Erythroblasts", "codes": ["erythroblast"], "measure": "per_100_wbc", "low": None, "high": 0.0,
         "flag_low": "", "flag_high": "Erythroblasts present"},
    ]
    counts = {"neutrophil_segmented": 80, "neutrophil_band": 4, "immature_granulocyte": 3, "atypical_lymphocyte": 1,
              "lymphocyte": 12, "erythroblast": 2}
    d = stats.differential(counts, leukocyte_codes=LEUKO, wbc_count=12.0)
    flags = {f["name"]: f["flag"] for f in stats.evaluate_flags(d, rules)}
    assert flags == {"Band + IG": "Left shift", "Atypical": "Atypical lymphocytes present",
                     "Neutrophils": "Neutrophilia", "Erythroblasts": "Erythroblasts present"}
    # no WBC count: the absolute rule is skipped, not guessed
    d2 = stats.differential(counts, leukocyte_codes=LEUKO)
    assert "Neutrophils" not in {f["name"] for f in stats.evaluate_flags(d2, rules)}


def test_differential_json_shape():
    cells = [cell_record(field="a.jpg", box=(1, 2, 30, 40), label="lymphocyte", confidence=0.91234, agreement=3,
                         n_backbones=3),
             cell_record(field="a.jpg", box=(50, 60, 90, 99), label="smudge", confidence=0.5, agreement=0, n_backbones=3)]
    out = differential_json(cells, leukocyte_codes=LEUKO)
    assert set(out) == {"cells", "counts", "percentages", "intervals"}
    assert out["cells"][0] == {"field": "a.jpg", "box": [1, 2, 30, 40], "class": "lymphocyte", "confidence": 0.9123,
                               "agreement": "3/3"}
    assert out["counts"] == {"lymphocyte": 1, "smudge": 1}
    assert out["percentages"] == {"lymphocyte": 100.0}
    assert out["intervals"]["lymphocyte"][1] == 100.0


def test_fhir_report_has_one_observation_per_class_with_loinc_codes():
    d = stats.differential({"neutrophil_segmented": 55, "neutrophil_band": 5, "lymphocyte": 40, "erythroblast": 2},
                           leukocyte_codes=LEUKO, wbc_count=6.0)
    report = d.as_dict()
    report["neutrophils"] = {"count": 60, "percent": 60.0, "interval": [50.2, 69.1], "absolute": 3.6}
    report["flags"] = [{"flag": "Erythroblasts present"}]
    doc = diagnostic_report(report=report, accession="S-123", version=1, issued="2026-01-01T10:00:00+00:00",
                            performer="rev1", names={})
    assert doc["resourceType"] == "DiagnosticReport" and doc["status"] == "final"
    codes = [o["code"]["coding"][0]["code"] for o in doc["contained"]]
    assert {"769-0", "764-1", "736-9", "731-0", "770-8", "751-8", "19048-8"} <= set(codes)
    assert all(o["resourceType"] == "Observation" for o in doc["contained"])
    assert [r["reference"] for r in doc["result"]] == [f"#{o['id']}" for o in doc["contained"]]
    lymph = next(o for o in doc["contained"] if o["code"]["coding"][0]["code"] == "736-9")
    assert lymph["valueQuantity"]["value"] == 40.0 and lymph["valueQuantity"]["code"] == "%"
    assert "Erythroblasts present" in doc["conclusion"]
