"""Faults with real processes: kill -9 the ML worker (inference and training), Redis down while
experts upload and label, PostgreSQL restarted under load, two reviewers deciding one cell at once.

Each scenario runs once here (benchmarks/faults.py repeats them). They run on a private stack
(tests/faults/stack.py): the shared PostgreSQL and Redis are never touched.
"""
import pytest

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


def test_uploads_and_labels_save_while_redis_is_down_and_are_classified_after(fault_stack):
    result = scenarios.redis_outage(fault_stack, users=fault_stack.users)
    _check(result)
    assert result.detail["classified_after"] == result.detail["accepted"] // 2
    assert result.detail["slowest_s"] < 15


def test_postgres_restart_under_load_fails_cleanly_and_loses_no_label(fault_stack):
    result = scenarios.postgres_restart(fault_stack, users=fault_stack.users)
    _check(result)
    assert result.detail["hangs"] == 0 and result.detail["recovered"]


def test_two_reviewers_adjudicating_one_cell_over_http_one_wins_the_other_is_told(fault_stack):
    result = scenarios.concurrent_adjudication(fault_stack, users=fault_stack.users)
    _check(result)
