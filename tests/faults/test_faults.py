"""Faults with real processes: kill -9 the ML worker (inference, training, a slide), Redis down while
experts upload and label, PostgreSQL restarted under load, two reviewers deciding one cell at once.

Each scenario runs once here (benchmarks/faults.py repeats them, quiet and under a CPU hog). They run
on a private stack (tests/faults/stack.py): the shared PostgreSQL and Redis are never touched. Their
waits are deadlines on observed outcomes, so they hold on a busy machine.
"""
import pytest

from leukoportal.queueing import PUBLISH_TIMEOUT_S

from . import scenarios

pytestmark = [pytest.mark.slow, pytest.mark.worker]


def _check(result):
    assert result.survived, result
    assert result.lost == 0, result


def test_killed_inference_worker_loses_nothing_and_duplicates_nothing(fault_stack):
    result = scenarios.inference_worker_killed(fault_stack)
    _check(result)
    assert result.detail["classified_when_killed"] < result.detail["cells"], "the kill came after the batch"


def test_killed_training_is_marked_failed_and_the_active_model_is_unchanged(fault_stack):
    result = scenarios.training_worker_killed(fault_stack)
    _check(result)
    assert result.detail["status"] == "failed" and result.detail["active_unchanged"]


def test_killed_slide_processing_is_queued_again_and_resumes_where_it_stopped(fault_stack):
    result = scenarios.slide_worker_killed(fault_stack)
    _check(result)
    assert result.detail["state_when_killed"] == "running" and result.detail["resumed"] == 1, result
    assert result.detail["kept_cells"], result


def test_uploads_and_labels_save_while_redis_is_down_and_are_classified_after(fault_stack):
    result = scenarios.redis_outage(fault_stack, users=fault_stack.users)
    _check(result)
    assert result.detail["classified_after"] == result.detail["accepted"] // 2
    # No request waits on the broker: with Redis down an upload takes what it takes with Redis up (measured
    # in the same run, on the same machine, so under the same load), plus at most one bounded publish.
    up, down = result.detail["upload_p50_up"], result.detail["upload_p50_down"]
    assert down <= 2 * up + PUBLISH_TIMEOUT_S, result


def test_postgres_restart_under_load_fails_cleanly_and_loses_no_label(fault_stack):
    result = scenarios.postgres_restart(fault_stack, users=fault_stack.users)
    _check(result)
    assert result.detail["hangs"] == 0 and result.detail["recovered"]


def test_two_reviewers_adjudicating_one_cell_over_http_one_wins_the_other_is_told(fault_stack):
    result = scenarios.concurrent_adjudication(fault_stack, users=fault_stack.users)
    _check(result)
