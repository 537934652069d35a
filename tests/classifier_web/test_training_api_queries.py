"""The training-run list API reads each run's gate decision without one query per run."""
from django.db import connection
from django.test.utils import CaptureQueriesContext

from classifier.models import ModelVersion, TrainingRun
from reports.models import GateDecision


def _succeeded_runs(n: int, user) -> None:
    for _ in range(n):
        version = ModelVersion.objects.create(ensemble="offline", status="candidate")
        GateDecision.objects.create(model_version=version, outcome="too_small", reasons=["older"])
        GateDecision.objects.create(model_version=version, outcome="candidate", reasons=["newest"])
        TrainingRun.objects.create(ensemble="offline", status="succeeded", model_version=version, created_by=user)


def _list(client) -> tuple[list[dict], int]:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get("/api/training-runs/")
    assert response.status_code == 200
    return response.json()["results"], len(ctx.captured_queries)


def test_training_run_list_shows_each_runs_newest_gate_decision(client, lab_admin):
    _succeeded_runs(3, lab_admin)
    client.force_login(lab_admin)
    runs, _ = _list(client)
    assert len(runs) == 3
    assert all(run["gate"]["outcome"] == "candidate" and run["gate"]["reasons"] == ["newest"] for run in runs)


def test_training_run_list_queries_do_not_grow_with_the_runs(client, lab_admin, django_assert_max_num_queries):
    client.force_login(lab_admin)
    _succeeded_runs(2, lab_admin)
    _, two = _list(client)
    _succeeded_runs(6, lab_admin)
    with django_assert_max_num_queries(two):
        runs, _ = _list(client)
    assert len(runs) == 8
