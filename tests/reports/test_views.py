"""Report pages and API: roles, tables, plots, CSV/JSON downloads, comparison, agreement."""
import csv
import io
import json

import pytest
from django.utils import timezone

from classifier.models import Prediction
from reports import services
from reports.models import Evaluation
from tests.factories import ModelVersionFactory
from tests.helpers import png_bytes


@pytest.fixture
def evaluated(good_version, bad_version):
    services.model_version_evaluate_and_gate(model_version_id=good_version.pk)
    services.model_version_evaluate_and_gate(model_version_id=bad_version.pk)
    return {"good": Evaluation.objects.filter(model_version=good_version).latest("id"),
            "bad": Evaluation.objects.filter(model_version=bad_version).latest("id")}


def test_labellers_get_403_on_reports_and_reviewers_read_them(client, labeller, reviewer, evaluated):
    ev = evaluated["good"]
    client.force_login(labeller)
    for url in ("/reports/", f"/reports/evaluations/{ev.pk}/", f"/reports/evaluations/{ev.pk}/tables/summary.csv",
                "/reports/agreement/", f"/api/evaluations/{ev.pk}/", "/api/evaluations/", "/models/training/"):
        assert client.get(url).status_code == 403, url
    client.force_login(reviewer)
    page = client.get(f"/reports/evaluations/{ev.pk}/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "rows predicted, columns actual" in html.lower() or "Rows: predicted class" in html
    assert "k-NN (k=3)" in html and "Decision tree" in html
    assert "Cohen" in html and "Misdiagnosis rate" in html
    # reviewers read reports but cannot evaluate, promote or train
    assert client.post("/reports/evaluate/", {"model_version": ev.model_version_id}).status_code == 403
    assert client.get("/models/training/").status_code == 403


def test_table_ii_on_the_page_has_predicted_rows(client, reviewer, evaluated):
    client.force_login(reviewer)
    ev = evaluated["bad"]
    response = client.get(f"/reports/evaluations/{ev.pk}/tables/confusion.json")
    data = json.loads(response.content)
    assert data["columns"][0] == "predicted \\ actual"
    labels = data["columns"][1:]
    m_actual_rows = ev.results["vote"]["confusion_matrix"]["matrix"]
    for i, row in enumerate(data["rows"]):
        assert row[0] == labels[i]
        assert row[1:] == [m_actual_rows[j][i] for j in range(len(labels))]


def test_every_table_downloads_as_csv_and_json(client, reviewer, evaluated):
    client.force_login(reviewer)
    ev = evaluated["good"]
    for table in ("summary", "per_class", "confusion", "abstention", "baselines", "cells", "history"):
        as_csv = client.get(f"/reports/evaluations/{ev.pk}/tables/{table}.csv")
        assert as_csv.status_code == 200 and as_csv["Content-Type"].startswith("text/csv"), table
        assert "attachment" in as_csv["Content-Disposition"]
        rows = list(csv.reader(io.StringIO(as_csv.content.decode())))
        as_json = json.loads(client.get(f"/reports/evaluations/{ev.pk}/tables/{table}.json").content)
        assert rows[0] == as_json["columns"], table
        assert len(rows) - 1 == len(as_json["rows"]) == len(as_json["records"]) > 0, table


def test_per_class_download_matches_stored_summary(client, reviewer, evaluated):
    client.force_login(reviewer)
    ev = evaluated["bad"]
    data = json.loads(client.get(f"/reports/evaluations/{ev.pk}/tables/per_class.json").content)
    for rec in data["records"]:
        stored = ev.results["vote"]["per_class"][rec["class"]]
        assert rec["sensitivity"] == stored["sensitivity"]
        assert rec["specificity"] == stored["specificity"]
        assert rec["support"] == stored["support"]
    backbone = ev.results["backbones"][0]
    per_bb = client.get(f"/reports/evaluations/{ev.pk}/tables/per_class.csv?model={backbone}")
    assert per_bb.status_code == 200
    assert client.get(f"/reports/evaluations/{ev.pk}/tables/per_class.csv?model=nope").status_code == 404
    assert client.get(f"/reports/evaluations/{ev.pk}/tables/nope.csv").status_code == 404
    assert client.get(f"/reports/evaluations/{ev.pk}/tables/summary.xml").status_code == 404


def test_plots_compare_page_and_training_curves(client, reviewer, evaluated, good_version, bad_version):
    client.force_login(reviewer)
    ev = evaluated["good"]
    for kind in ("confusion", "sensspec", "abstention"):
        response = client.get(f"/reports/evaluations/{ev.pk}/plots/{kind}.svg")
        assert response.status_code == 200 and response["Content-Type"] == "image/svg+xml"
        assert response.content.lstrip().startswith(b"<?xml") and b"<svg" in response.content
    assert client.get(f"/reports/evaluations/{ev.pk}/plots/pie.svg").status_code == 404
    svg = client.get(f"/reports/versions/{good_version.pk}/training-curves.svg")
    assert svg.status_code == 200 and b"<svg" in svg.content
    page = client.get(f"/reports/compare/?a={good_version.pk}&b={bad_version.pk}")
    html = page.content.decode()
    assert page.status_code == 200
    assert f"v{good_version.pk}" in html and f"v{bad_version.pk}" in html
    assert "100.0%" in html  # the good version's overall accuracy
    assert "not made on the same held-out snapshot" not in html
    assert client.get("/reports/compare/?a=x&b=1").status_code == 400


def test_api_evaluation_detail_and_tables(client, reviewer, evaluated):
    client.force_login(reviewer)
    ev = evaluated["good"]
    data = client.get(f"/api/evaluations/{ev.pk}/").json()
    assert data["results"]["vote"]["overall_accuracy"] == 1.0
    assert data["results"]["table_ii"]["rows"] == "predicted"
    assert "cells" not in data["results"]
    assert len(client.get(f"/api/evaluations/{ev.pk}/?cells=true").json()["results"]["cells"]) == 12
    table = client.get(f"/api/evaluations/{ev.pk}/tables/baselines/").json()
    assert [r["model"] for r in table["records"]] == ["vote", "knn3", "svm", "logreg", "tree"]
    assert client.get(f"/api/evaluations/{ev.pk}/tables/baselines/?model=zzz").status_code == 400
    listing = client.get("/api/evaluations/").json()
    assert listing["count"] == Evaluation.objects.count()


def test_evaluation_request_queues_for_lab_admins(client, lab_admin, good_version, django_capture_on_commit_callbacks):
    client.force_login(lab_admin)
    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post("/api/evaluations/request/", {"model_version": good_version.pk}, content_type="application/json")
    assert response.status_code == 202
    ev = Evaluation.objects.get(pk=response.json()["id"])
    assert ev.status == "queued" and ev.n_cells == 12 and len(callbacks) == 1
    # the task body, run here: claims the queued row, then a second delivery does nothing
    assert services.evaluation_execute(evaluation_id=ev.pk).status == "succeeded"
    assert services.evaluation_execute(evaluation_id=ev.pk) is None
    assert client.post("/api/evaluations/request/", {"model_version": 999999}, content_type="application/json").status_code == 400


def test_agreement_by_week_and_version(client, reviewer, cells, good_version, bad_version):
    img = cells["heldout"][0]
    other = cells["heldout"][-1]
    code = img.final_label.code
    wrong = "lymphocyte" if code != "lymphocyte" else "eosinophil"
    common = dict(confidence=0.9, agreement=1, n_backbones=1)
    Prediction.objects.create(image=img, model_version=good_version, label=code, top_class=code, **common)
    Prediction.objects.create(image=img, model_version=bad_version, label=wrong, top_class=wrong, **common)
    Prediction.objects.create(image=other, model_version=good_version, label=other.final_label.code,
                              top_class=other.final_label.code, **common)
    from reports.selectors import agreement_over_time

    data = agreement_over_time()
    by_version = {row["key"]: row for row in data["by_version"]["rows"]}
    assert by_version[good_version.pk]["overall"] == {"n": 2, "agree": 2, "rate": 1.0}
    assert by_version[bad_version.pk]["overall"]["rate"] == 0.0
    assert data["by_week"]["rows"][0]["overall"]["n"] == 3
    client.force_login(reviewer)
    assert client.get("/reports/agreement/").status_code == 200
    assert b"<svg" in client.get("/reports/agreement/plot.svg").content
    rows = list(csv.reader(io.StringIO(client.get("/reports/agreement/by-version.csv").content.decode())))
    assert rows[0][:3] == ["model_version", "class", "cells"] and len(rows) == 4
    assert client.get("/reports/agreement/?weeks=abc").status_code == 400
    api = client.get(f"/api/agreement/?model_version={bad_version.pk}").json()
    assert api["by_version"]["rows"][0]["overall"]["agree"] == 0
    assert client.get("/api/agreement/?source=nope").status_code == 400
    assert timezone.now()  # weeks are computed on the server's clock


def test_agreement_counts_the_slides_ledger(db, lab_admin):
    pytest.importorskip("slides.models")
    from annotations.models import CellClass
    from annotations.services import image_upload
    from classifier.models import ModelVersion
    from reports.selectors import agreement_over_time
    from slides.models import Slide, SlideCell

    version = ModelVersionFactory(status="candidate")
    slide = Slide.objects.create(code="S-1", created_by=lab_admin, kind="cells")
    mono = CellClass.objects.get(code="monocyte")
    for i, top in enumerate(["monocyte", "monocyte", "lymphocyte"]):
        image = image_upload(data=png_bytes(color=(i, 10, 10)), uploaded_by=lab_admin, source="slide_cell",
                             enqueue_classification=False).image
        SlideCell.objects.create(slide=slide, image=image, top_class=top, predicted_class=top, model_version=version,
                                 final_class=mono, changed_by=lab_admin)
    data = agreement_over_time(source="slide_cell")
    row = data["by_version"]["rows"][0]
    assert row["key"] == version.pk and row["overall"] == {"n": 3, "agree": 2, "rate": 2 / 3}
    assert agreement_over_time(source="cell")["by_version"]["rows"] == []
