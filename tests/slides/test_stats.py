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


RULES = [
    {"name": "Band + IG", "codes": ["neutrophil_band", "immature_granulocyte"], "measure": "percent",
     "low": None, "high": 5.0, "flag_low": "", "flag_high": "Left shift"},
    {"name": "Atypical", "codes": ["atypical_lymphocyte"], "measure": "percent", "low": None, "high": 0.0,
     "flag_low": "", "flag_high": "Atypical lymphocytes present"},
    {"name": "Neutrophils", "codes": ["neutrophil_segmented"], "measure": "absolute", "low": 1.8, "high": 7.5,
     "flag_low": "Neutropenia", "flag_high": "Neutrophilia"},
    {"name": "Erythroblasts", "codes": ["erythroblast"], "measure": "per_100_wbc", "low": None, "high": 0.0,
     "flag_low": "", "flag_high": "Erythroblasts present"},
    {"name": "Lymphocytes", "codes": ["lymphocyte"], "measure": "percent", "low": 20.0, "high": 45.0,
     "flag_low": "Lymphopenia (relative)", "flag_high": "Lymphocytosis (relative)"},
]
COUNTS = {"neutrophil_segmented": 80, "neutrophil_band": 4, "immature_granulocyte": 3, "atypical_lymphocyte": 1,
          "lymphocyte": 12, "erythroblast": 2}


def _rows(counts, **kw):
    d = stats.differential(counts, leukocyte_codes=LEUKO, wbc_count=kw.pop("wbc_count", 12.0))
    return {r["name"]: r for r in stats.evaluate_flags(d, RULES, **kw)}


def test_a_flag_needs_the_whole_interval_outside_the_reference_interval():
    rows = _rows(COUNTS, target=100)
    # atypical 1/100: 95% interval 0.18-5.45 % lies above 0 -> flag; neutrophils 80/100 of 12 -> 8.5-10.4 > 7.5
    assert rows["Atypical"]["status"] == "flag" and rows["Atypical"]["flag"] == "Atypical lymphocytes present"
    assert rows["Neutrophils"]["status"] == "flag" and rows["Neutrophils"]["interpretation"] == "H"
    assert rows["Neutrophils"]["interval"][0] > 7.5
    assert rows["Erythroblasts"]["status"] == "flag"
    # band + IG 7/100 = 7 % > 5 % but its interval (3.4-13.7 %) reaches into the reference: possible, not a flag
    left = rows["Band + IG"]
    assert left["value"] == 7.0 and left["interval"][0] < 5.0 < left["interval"][1]
    assert left["status"] == "possible" and left["flag"] == "" and left["interpretation"] == "IND"
    assert left["possible"].startswith("possible left shift; count more cells to decide")
    # lymphocytes 12 % < 20 %, interval 7.0-19.8 % wholly below: a flag (low)
    assert rows["Lymphocytes"]["status"] == "flag" and rows["Lymphocytes"]["interpretation"] == "L"


def test_possible_flag_says_how_many_cells_would_decide():
    rows = _rows({"neutrophil_band": 9, "neutrophil_segmented": 91}, target=100)
    left = rows["Band + IG"]  # 9/100: interval 4.8-16.2 % straddles 5 %; 18/200 (5.8-13.8 %) lies above
    assert stats.proportion_interval(9, 100)[0] < 5.0 < stats.proportion_interval(18, 200)[0]
    assert left["status"] == "possible" and left["count_to"] == 200
    assert "200 leukocytes would" in left["possible"]


def test_a_normal_point_gives_interpretation_n_and_no_flag():
    rows = _rows({"lymphocyte": 30, "neutrophil_segmented": 45, "neutrophil_band": 1, "atypical_lymphocyte": 0,
                  "monocyte": 24}, target=100, wbc_count=6.0)
    assert rows["Lymphocytes"]["status"] == "normal" and rows["Lymphocytes"]["interpretation"] == "N"
    assert rows["Lymphocytes"]["flag"] == "" and rows["Lymphocytes"]["possible"] == ""


def test_below_the_target_count_no_flag_is_raised_and_the_report_says_so():
    # 6 cells, none a neutrophil: the old rules raised "Neutropenia" on 0 % (95 % 0-39 %)
    counts = {"lymphocyte": 6}
    d = stats.differential(counts, leukocyte_codes=LEUKO, wbc_count=5.0)
    rows = stats.evaluate_flags(d, RULES, target=100)
    assert rows and all(r["status"] == "insufficient" and r["flag"] == "" and r["possible"] == "" for r in rows)
    assert all(r["interpretation"] == "IND" for r in rows)
    summary = stats.flag_summary(rows, counted=6, target=100)
    assert summary["flags"] == [] and summary["possible"] == []
    assert summary["insufficient"].startswith("insufficient count (6 of 100)")
    # the same counts at a target they reach: the flags come back
    assert any(r["status"] == "flag" for r in stats.evaluate_flags(d, RULES, target=6))


def test_a_suppression_reason_withholds_every_flag():
    reason = "these images are unlike the images the model was trained on — every cell needs verification"
    rows = list(_rows(COUNTS, target=100, flags_suppressed_reason=reason).values())
    assert all(r["status"] == "suppressed" and not r["flag"] for r in rows)
    assert stats.flag_summary(rows, counted=100, target=100, flags_suppressed_reason=reason)["suppressed_reason"] == reason


def test_classes_without_training_data_are_not_assessed_instead_of_zero():
    counts = {"neutrophil_segmented": 60, "lymphocyte": 40}
    rows = _rows(counts, target=100, not_assessed={"atypical_lymphocyte"})
    atyp = rows["Atypical"]
    assert atyp["status"] == "not_assessed" and atyp["value"] is None and atyp["interval"] is None
    assert atyp["note"] == "not assessed by the model — expert only" and atyp["interpretation"] is None
    # an expert assigned one: the count is shown (and flagged), with the note
    rows = _rows(dict(counts, atypical_lymphocyte=1), target=100, not_assessed={"atypical_lymphocyte"})
    assert rows["Atypical"]["status"] == "flag" and rows["Atypical"]["value"] > 0
    assert "not assessed by the model" in rows["Atypical"]["note"]


def test_absolute_rules_are_skipped_without_a_wbc_count():
    d2 = stats.differential(COUNTS, leukocyte_codes=LEUKO)
    assert "Neutrophils" not in {f["name"] for f in stats.evaluate_flags(d2, RULES, target=100)}


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


def _signed_report(counts, *, target=100, not_assessed=(), expert_counted=(), wbc=6.0, **extra):
    leuko = LEUKO + ["blast"]
    d = stats.differential(counts, leukocyte_codes=leuko, report_codes=leuko + ["erythroblast"], wbc_count=wbc)
    rules = [{"name": name, "codes": codes.split("+"), "measure": measure, "low": low, "high": high,
              "flag_low": fl, "flag_high": fh}
             for name, codes, measure, low, high, fl, fh, _ in stats.DEFAULT_REFERENCE_INTERVALS]
    flags = stats.evaluate_flags(d, rules, target=target, not_assessed=not_assessed, expert_counted=expert_counted)
    report = d.as_dict()
    n = d.leukocyte_total
    k = counts.get("neutrophil_segmented", 0) + counts.get("neutrophil_band", 0)
    report.update(flags=flags, target=target, not_assessed=sorted(not_assessed), expert_counted=sorted(expert_counted),
                  flag_summary=stats.flag_summary(flags, counted=n, target=target),
                  neutrophils={"count": k, "percent": round(100 * k / n, 2),
                               "interval": list(stats.proportion_interval(k, n)), "absolute": round(wbc * k / n, 3)},
                  **extra)
    return report


def test_fhir_report_validates_as_r4_with_one_loinc_method_family_and_interpretations():
    from fhir.resources.R4B.diagnosticreport import DiagnosticReport

    from slides import lis

    report = _signed_report({"neutrophil_segmented": 55, "neutrophil_band": 5, "lymphocyte": 40, "erythroblast": 2},
                            not_assessed={"blast"}, sign_warnings=[], sign_reason="")
    doc = diagnostic_report(report=report, accession="S-123", version=1, issued="2026-01-01T10:00:00+00:00",
                            performer="rev1", names={"blast": "Blast"})
    parsed = DiagnosticReport.model_validate(doc)  # raises on anything R4 does not allow
    assert parsed.status == "final" and len(parsed.contained) == len(doc["contained"])
    codes = [o["code"]["coding"][0]["code"] for o in doc["contained"]]
    assert {"26505-8", "26508-2", "26478-8", "30451-9", "26511-6", "26499-4", "19048-8"} <= set(codes)
    every_loinc = ({c for c, _ in lis.LOINC_PERCENT.values()} | {c for c, _ in lis.LOINC_ABSOLUTE.values()}
                   | {lis.NEUTROPHILS_PERCENT[0], lis.NEUTROPHILS_ABSOLUTE[0], lis.NRBC_PER_100[0]})
    assert set(codes) <= every_loinc
    displays = [o["code"]["coding"][0]["display"] for o in doc["contained"]]
    assert not any("Manual count" in d or "Automated count" in d for d in displays)  # one method family
    assert [r["reference"] for r in doc["result"]] == [f"#{o['id']}" for o in doc["contained"]]
    by_code = {o["code"]["coding"][0]["code"]: o for o in doc["contained"]}
    lymph = by_code["26478-8"]
    assert lymph["valueQuantity"]["value"] == 40.0 and lymph["valueQuantity"]["code"] == "%"
    # total neutrophils 60 % (50.2-69.1): the lab's 40-75 % interval, inside it -> N
    neut = by_code["26511-6"]
    assert neut["referenceRange"][0]["low"]["value"] == 40.0 and neut["referenceRange"][0]["high"]["value"] == 75.0
    assert neut["interpretation"][0]["coding"][0]["code"] == "N"
    # 2 erythroblasts per 100 WBC: interval above 0 -> H, and the flag in the conclusion
    nrbc = by_code["19048-8"]
    assert nrbc["interpretation"][0]["coding"][0]["code"] == "H" and nrbc["valueQuantity"]["code"] == "/100{WBCs}"
    assert "Erythroblasts present" in doc["conclusion"]
    # blasts: the model has no training data -> no value, the reason instead of a reassuring 0
    blast = by_code["26446-5"]
    assert "valueQuantity" not in blast and blast["dataAbsentReason"]["coding"][0]["code"] == "not-performed"
    assert blast["note"][0]["text"] == "not assessed by the model — expert only"


def test_fhir_status_of_corrected_and_superseded_versions():
    from fhir.resources.R4B.diagnosticreport import DiagnosticReport

    report = _signed_report({"neutrophil_segmented": 30, "lymphocyte": 3}, sign_warnings=["Insufficient count: 33 of 100."],
                            sign_reason="urgent: the ward called")
    kw = dict(report=report, accession="S-9", issued="2026-01-01T10:00:00+00:00", performer="rev1", names={})
    corrected = diagnostic_report(version=2, correction_reason="eosinophil missed", **kw)
    assert corrected["status"] == "corrected" and {o["status"] for o in corrected["contained"]} == {"corrected"}
    assert "eosinophil missed" in corrected["conclusion"]
    old = diagnostic_report(version=1, superseded=True, successor_version=2, **kw)
    assert old["status"] == "entered-in-error" and "Superseded by version 2" in old["conclusion"]
    for doc in (corrected, old):
        DiagnosticReport.model_validate(doc)
        assert "urgent: the ward called" in doc["conclusion"] and "Insufficient count" in doc["conclusion"]
    # below the target: no H/L anywhere, only IND where a reference interval exists
    interpretations = {o["interpretation"][0]["coding"][0]["code"] for o in corrected["contained"] if "interpretation" in o}
    assert interpretations == {"IND"}


def test_hl7_oru_r01_parses_back_with_values_flags_and_the_reason():
    from datetime import datetime, timezone

    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.parser import parse_message

    from slides.hl7 import oru_r01

    report = _signed_report({"neutrophil_segmented": 55, "neutrophil_band": 5, "lymphocyte": 40, "erythroblast": 2},
                            target=200, not_assessed={"blast"}, sign_warnings=["Insufficient count: 100 of 200."],
                            sign_reason="sample clotted | recount ^ impossible")
    text = oru_r01(report=report, accession="S-123", version=1, signed_at=datetime(2026, 1, 1, 10, tzinfo=timezone.utc),
                   signer="rev1", names={}, control_id="LP1-1", created_at=datetime(2026, 1, 1, 10, 5, tzinfo=timezone.utc))
    msg = parse_message(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    assert msg.msh.msh_9.to_er7() == "ORU^R01^ORU_R01" and msg.msh.msh_12.to_er7() == "2.5.1"
    order = msg.ORU_R01_PATIENT_RESULT.ORU_R01_ORDER_OBSERVATION
    assert order.OBR.obr_4.to_er7().startswith("69738-3^") and order.OBR.obr_25.to_er7() == "F"
    notes = [n.nte_3.to_er7() for n in order.children if n.name == "NTE"]
    assert any("sample clotted \\F\\ recount \\S\\ impossible" in n for n in notes)  # escaped, not split
    obx = {o.OBX.obx_3.obx_3_1.to_er7(): o.OBX for o in order.ORU_R01_OBSERVATION}
    assert obx["26478-8"].obx_5.to_er7() == "40" and obx["26478-8"].obx_6.to_er7() == "%^%^UCUM"
    assert obx["19048-8"].obx_8.to_er7() == ""  # below the target: no automatic H (and IND is no table 0078 flag)
    assert obx["26511-6"].obx_7.to_er7() == "40-75"
    assert obx["26446-5"].obx_5.to_er7() == "" and obx["26446-5"].obx_11.to_er7() == "X"  # blast: not assessed
    assert all(o.obx_11.to_er7() in ("F", "X") for o in obx.values())


# --- Expert-verified zeros (classes the model does not assess) and HL7 table 0078 -------------------

BLAST_RULE = {"name": "Blasts", "codes": ["blast"], "measure": "percent", "low": None, "high": 0.0, "flag_low": "",
              "flag_high": "Blasts present"}
LYMPH_RULE = {"name": "Lymphocytes", "codes": ["lymphocyte", "atypical_lymphocyte"], "measure": "percent",
              "low": 20.0, "high": 45.0, "flag_low": "", "flag_high": ""}


def _blast_rows(counts, **kw):
    d = stats.differential(counts, leukocyte_codes=LEUKO + ["blast"], report_codes=["blast"])
    return {r["name"]: r for r in stats.evaluate_flags(d, [BLAST_RULE, LYMPH_RULE], **kw)}


def test_an_expert_counted_zero_is_a_result_with_its_interval_and_a_note():
    counts = {"neutrophil_segmented": 60, "lymphocyte": 40}
    rows = _blast_rows(counts, target=100, expert_counted={"blast", "atypical_lymphocyte"})
    blast = rows["Blasts"]
    assert blast["status"] == "normal" and blast["value"] == 0.0 and blast["flag"] == ""
    assert blast["interval"] == [0.0, pytest.approx(3.7, abs=0.01)] and blast["interpretation"] == "N"
    assert blast["note"] == "counted by the expert; not pre-classified by the model"
    assert rows["Lymphocytes"]["note"] == "atypical_lymphocyte: counted by the expert; not pre-classified by the model"
    # the same zero while cells are unverified: not assessed, no value
    unverified = _blast_rows(counts, target=100, not_assessed={"blast", "atypical_lymphocyte"})["Blasts"]
    assert unverified["status"] == "not_assessed" and unverified["value"] is None and unverified["interval"] is None
    # one blast counted by the expert: "Blasts present" like any other flag
    one = _blast_rows(dict(counts, blast=1), target=100, expert_counted={"blast"})["Blasts"]
    assert one["status"] == "flag" and one["flag"] == "Blasts present" and one["interpretation"] == "H"
    # below the target: still the value and its interval, no flag
    short = _blast_rows({"lymphocyte": 6}, target=100, expert_counted={"blast"})["Blasts"]
    assert short["status"] == "insufficient" and short["value"] == 0.0 and short["interval"][1] > 30


def test_result_lines_report_the_expert_counted_zero_and_not_assessed_only_with_unverified_cells():
    from slides import lis

    counts = {"neutrophil_segmented": 55, "neutrophil_band": 5, "lymphocyte": 40}
    verified = _signed_report(counts, expert_counted={"blast", "atypical_lymphocyte"}, sign_warnings=[])
    lines = {line.loinc[0]: line for line in lis.result_lines(verified, names={"atypical_lymphocyte": "Atypical lymphocyte"})}
    blast = lines[lis.LOINC_PERCENT["blast"][0]]
    assert blast.value == 0.0 and blast.interval[0] == 0.0 and blast.interval[1] > 0 and blast.count == 0
    assert blast.interpretation == "N" and blast.notes == [lis.EXPERT_COUNTED]
    lymph = lines[lis.LOINC_PERCENT["lymphocyte"][0]]
    assert lymph.notes == []  # a class the model pre-classifies: no note
    verified["rows"] = [{"code": "blast", "name": "Blast"}, {"code": "atypical_lymphocyte", "name": "Atypical lymphocyte"}]
    assert any("Counted by the expert; not pre-classified by the model" in c and "Blast" in c
               for c in lis.report_comments(verified, status="final", version=1))
    unverified = _signed_report(counts, not_assessed={"blast", "atypical_lymphocyte"}, sign_warnings=[])
    blast = next(line for line in lis.result_lines(unverified, names={}) if line.codes == ("blast",))
    assert blast.value is None and blast.interval is None and blast.notes == [lis.NOT_ASSESSED]
    assert lis.NOT_ASSESSED not in " ".join(lis.report_comments(verified, status="final", version=1))


def test_fhir_and_hl7_carry_the_expert_counted_zero():
    from datetime import datetime, timezone

    from fhir.resources.R4B.diagnosticreport import DiagnosticReport
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.parser import parse_message

    from slides.hl7 import oru_r01

    report = _signed_report({"neutrophil_segmented": 55, "neutrophil_band": 5, "lymphocyte": 40},
                            expert_counted={"blast", "atypical_lymphocyte"}, sign_warnings=[], sign_reason="")
    doc = diagnostic_report(report=report, accession="S-0", version=1, issued="2026-01-01T10:00:00+00:00",
                            performer="rev1", names={})
    DiagnosticReport.model_validate(doc)
    blast = next(o for o in doc["contained"] if o["code"]["coding"][0]["code"] == "26446-5")
    assert blast["valueQuantity"]["value"] == 0.0 and "dataAbsentReason" not in blast
    assert blast["interpretation"][0]["coding"][0]["code"] == "N"
    assert blast["note"] == [{"text": "counted by the expert; not pre-classified by the model"}]
    ci = next(c for c in blast["component"] if c["code"]["text"] == "95% confidence interval")
    assert ci["valueRange"]["low"]["value"] == 0.0 and ci["valueRange"]["high"]["value"] > 0
    text = oru_r01(report=report, accession="S-0", version=1, signed_at=datetime(2026, 1, 1, 10, tzinfo=timezone.utc),
                   signer="rev1", names={}, control_id="LP1-1", created_at=datetime(2026, 1, 1, 10, 5, tzinfo=timezone.utc))
    msg = parse_message(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    obs = {o.OBX.obx_3.obx_3_1.to_er7(): o for o in msg.ORU_R01_PATIENT_RESULT.ORU_R01_ORDER_OBSERVATION.ORU_R01_OBSERVATION}
    blast = obs["26446-5"]
    assert blast.OBX.obx_5.to_er7() == "0" and blast.OBX.obx_8.to_er7() == "N" and blast.OBX.obx_11.to_er7() == "F"
    notes = _notes(blast)
    assert "counted by the expert; not pre-classified by the model" in notes
    assert any(n.startswith("95% confidence interval 0-") for n in notes)


def _hl7_observations(report):
    from datetime import datetime, timezone

    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.parser import parse_message

    from slides.hl7 import oru_r01

    text = oru_r01(report=report, accession="S-1", version=1, signed_at=datetime(2026, 1, 1, 10, tzinfo=timezone.utc),
                   signer="rev1", names={}, control_id="LP1-1", created_at=datetime(2026, 1, 1, 10, 5, tzinfo=timezone.utc))
    msg = parse_message(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    return list(msg.ORU_R01_PATIENT_RESULT.ORU_R01_ORDER_OBSERVATION.ORU_R01_OBSERVATION)


def _notes(observation):
    return [c.nte_3.to_er7() for c in observation.children if c.name == "NTE"]


@pytest.mark.parametrize("counts, target, suppressed, why", [
    # below the target: every rule indeterminate
    ({"neutrophil_segmented": 30, "lymphocyte": 3, "erythroblast": 1}, 100, None, "insufficient count"),
    # band + IG 7/100: a possible left shift
    ({"neutrophil_segmented": 80, "neutrophil_band": 7, "lymphocyte": 13}, 100, None, "possible"),
    # flags withheld (images unlike the training images)
    ({"neutrophil_segmented": 90, "lymphocyte": 10}, 100, "the images are unlike ...", "automatic flags withheld"),
])
def test_every_obx_8_is_a_table_0078_value_or_empty_and_an_indeterminate_result_says_why(counts, target, suppressed, why):
    from slides.hl7 import TABLE_0078

    report = _signed_report(counts, target=target, sign_warnings=[], sign_reason="")
    if suppressed:
        d = stats.differential(counts, leukocyte_codes=LEUKO + ["blast"], wbc_count=6.0)
        rules = [{"name": n, "codes": c.split("+"), "measure": m, "low": lo, "high": hi, "flag_low": fl, "flag_high": fh}
                 for n, c, m, lo, hi, fl, fh, _ in stats.DEFAULT_REFERENCE_INTERVALS]
        report["flags"] = stats.evaluate_flags(d, rules, target=target, flags_suppressed_reason=suppressed)
    observations = _hl7_observations(report)
    flags = [o.OBX.obx_8.to_er7() for o in observations]
    assert all(f == "" or f in TABLE_0078 for f in flags), flags
    assert "IND" not in flags
    indeterminate = [o for o in observations if o.OBX.obx_7.to_er7() and not o.OBX.obx_8.to_er7()]
    assert indeterminate  # each case has indeterminate results with a reference interval
    for o in indeterminate:
        first = _notes(o)[0]
        assert first.startswith("No abnormal flag (indeterminate): ") and why in first, first


def test_fhir_keeps_ind_and_says_why_in_its_text():
    from fhir.resources.R4B.diagnosticreport import DiagnosticReport

    report = _signed_report({"neutrophil_segmented": 80, "neutrophil_band": 7, "lymphocyte": 13}, sign_warnings=[])
    doc = diagnostic_report(report=report, accession="S-2", version=1, issued="2026-01-01T10:00:00+00:00",
                            performer="rev1", names={})
    DiagnosticReport.model_validate(doc)
    ind = [o["interpretation"][0] for o in doc["contained"]
           if o.get("interpretation") and o["interpretation"][0]["coding"][0]["code"] == "IND"]
    assert ind and all(i["text"].startswith("possible ") for i in ind)


def test_a_platelet_line_marked_ind_leaves_obx_8_empty():
    from slides import hl7, lis

    line = lis.ResultLine(loinc=("49497-1", "x"), text="Platelets", codes=("platelets",), measure="platelets",
                          value=120.0, unit=lis.ABSOLUTE, interpretation="IND")
    assert hl7.abnormal_flag(line) == ("", "No abnormal flag (indeterminate): the result cannot be called normal or abnormal")
    line.interpretation = "L"
    assert hl7.abnormal_flag(line) == ("L", "")


@pytest.mark.parametrize("unverified, leukocytes, expected", [
    (6, 0, "6 cell(s) are waiting for an expert's verification and are not among the leukocytes counted yet"),
    (4, 4, "4 cell(s) are waiting for an expert's verification, all of them among the leukocytes counted on the "
           "model's class alone"),
    (6, 2, "6 cell(s) are waiting for an expert's verification; 2 of them are among the leukocytes counted on the "
           "model's class alone, 4 not yet"),
])
def test_the_unverified_message_agrees_with_the_leukocytes_counted(unverified, leukocytes, expected):
    assert stats.unverified_message(unverified=unverified, unverified_leukocytes=leukocytes) == expected
