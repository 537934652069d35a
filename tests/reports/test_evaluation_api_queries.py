"""The evaluation list API shows each evaluation's overall accuracy without loading every result per row."""
from django.db import connection
from django.test.utils import CaptureQueriesContext

from classifier.models import ModelVersion
from reports.models import Evaluation


def _evaluations(n: int, *, accuracy: float | None = 0.875) -> None:
    version = ModelVersion.objects.create(ensemble="offline", status="candidate")
    results = {"vote": {"overall_accuracy": accuracy}, "cells": [[1, "a", "b"]] * 3} if accuracy is not None else {}
    for _ in range(n):
        Evaluation.objects.create(model_version=version, status="succeeded", results=results, n_cells=3)


def _list(client) -> tuple[list[dict], int]:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get("/api/evaluations/")
    assert response.status_code == 200
    return response.json()["results"], len(ctx.captured_queries)


def test_evaluation_list_shows_overall_accuracy_or_null(client, reviewer):
    _evaluations(2, accuracy=0.875)
    _evaluations(1, accuracy=None)
    client.force_login(reviewer)
    rows, _ = _list(client)
    assert [row["overall_accuracy"] for row in rows] == [None, 0.875, 0.875]
    assert all("results" not in row and "snapshot" not in row for row in rows)


def test_evaluation_list_queries_do_not_grow_with_the_evaluations(client, reviewer, django_assert_max_num_queries):
    client.force_login(reviewer)
    _evaluations(2)
    _, two = _list(client)
    _evaluations(6)
    with django_assert_max_num_queries(two):
        rows, _ = _list(client)
    assert len(rows) == 8
