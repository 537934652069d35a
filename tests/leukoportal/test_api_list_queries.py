"""List APIs read what each row shows in a fixed number of queries, however many rows there are."""
import pytest

from classifier.models import ModelVersion, TrainingRun
from reports.models import Evaluation, GateDecision
from slides.models import Slide


def _training_runs(n: int, user) -> None:
    """Succeeded runs whose version has two gate decisions (the list shows the newest)."""
    for _ in range(n):
        version = ModelVersion.objects.create(ensemble="offline", status="candidate")
        GateDecision.objects.create(model_version=version, outcome="too_small", reasons=["older"])
        GateDecision.objects.create(model_version=version, outcome="candidate", reasons=["newest"])
        TrainingRun.objects.create(ensemble="offline", status="succeeded", model_version=version, created_by=user)


def _evaluations(n: int, user) -> None:
    version = ModelVersion.objects.create(ensemble="offline", status="candidate")
    Evaluation.objects.bulk_create(
        Evaluation(model_version=version, status="succeeded", n_cells=3, requested_by=user,
                   results={"vote": {"overall_accuracy": 0.875}, "cells": [[1, "a", "b"]] * 3})
        for _ in range(n))


def _slides(n: int, user) -> None:
    """Signed slides, each corrected by a signed version 2 (the list shows "superseded by v2")."""
    for i in range(Slide.objects.count(), Slide.objects.count() + n, 2):
        first = Slide.objects.create(code=f"LQ-{i}", created_by=user, status=Slide.Status.SIGNED, signed_by=user)
        Slide.objects.create(code=f"LQ-{i}", version=2, previous=first, created_by=user, status=Slide.Status.SIGNED,
                             signed_by=user)


def _superseded_by_v2(row) -> bool:
    return (row["superseded_by"] or {}).get("version") == (2 if row["version"] == 1 else None)


LISTS = {
    "training runs": ("/api/training-runs/", _training_runs,
                      lambda row: row["gate"]["outcome"] == "candidate" and row["gate"]["reasons"] == ["newest"]),
    "evaluations": ("/api/evaluations/", _evaluations,
                    lambda row: row["overall_accuracy"] == 0.875 and "results" not in row),
    "slides": ("/api/slides/", _slides, _superseded_by_v2),
}


@pytest.mark.parametrize("name", LISTS)
def test_list_queries_do_not_grow_with_the_rows(name, client, lab_admin, django_assert_max_num_queries):
    url, make_rows, shows_its_figure = LISTS[name]
    client.force_login(lab_admin)
    make_rows(2, lab_admin)
    with django_assert_max_num_queries(100) as two_rows:
        assert client.get(url).status_code == 200
    make_rows(6, lab_admin)
    with django_assert_max_num_queries(len(two_rows.captured_queries)):
        rows = client.get(url).json()["results"]
    assert len(rows) == 8 and all(shows_its_figure(row) for row in rows)


def test_evaluation_list_shows_a_missing_accuracy_as_null(client, reviewer):
    version = ModelVersion.objects.create(ensemble="offline", status="candidate")
    Evaluation.objects.create(model_version=version, status="failed", results={})
    Evaluation.objects.create(model_version=version, status="succeeded", results={"vote": None})
    client.force_login(reviewer)
    assert [row["overall_accuracy"] for row in client.get("/api/evaluations/").json()["results"]] == [None, None]
