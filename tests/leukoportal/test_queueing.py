"""enqueue_on_commit: published after the commit, never on a rollback, and a broker that is away or
hung never holds the caller longer than the publish bound (the sweep enqueues the work again)."""
import socket
import threading
import time

import pytest
from django.db import transaction

from leukoportal import queueing


def test_published_after_the_commit_and_not_after_a_rollback(db, broker, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        with transaction.atomic():
            queueing.enqueue_on_commit("classifier.tasks.train_model_version", 41)
            assert broker.messages("training") == []  # not before the commit
    assert broker.messages("training") == [("classifier.tasks.train_model_version", [41])]

    with django_capture_on_commit_callbacks(execute=True):
        with pytest.raises(ZeroDivisionError), transaction.atomic():
            queueing.enqueue_on_commit("classifier.tasks.train_model_version", 42)
            1 / 0
    assert broker.messages("training") == [("classifier.tasks.train_model_version", [41])]


def test_the_task_keeps_its_own_queue(db, broker, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        queueing.enqueue_on_commit("slides.tasks.process_slide", 7)  # declared on the inference queue
    assert broker.messages("inference") == [("slides.tasks.process_slide", [7])]
    assert broker.messages("default") == []


def test_a_training_run_is_chained_to_the_gate_by_task_name(db, broker, lab_admin, django_capture_on_commit_callbacks):
    import base64
    import json

    from classifier.services import training_run_start

    with django_capture_on_commit_callbacks(execute=True):
        run = training_run_start(user=lab_admin, ensemble="offline")
    [raw] = broker.client.lrange("training", 0, -1)
    message = json.loads(raw)
    args, _kwargs, embed = json.loads(base64.b64decode(message["body"]))
    assert (message["headers"]["task"], args) == ("classifier.tasks.train_model_version", [run.pk])
    assert [callback["task"] for callback in embed["callbacks"]] == ["reports.tasks.gate_model_version"]


def test_an_unknown_task_name_is_an_error_in_the_callers_transaction(db):
    with pytest.raises(KeyError, match="classifier.tasks.no_such_task"):
        queueing.enqueue_on_commit("classifier.tasks.no_such_task", 1)


def test_an_unknown_linked_task_name_is_an_error_too(db):
    with pytest.raises(KeyError, match="reports.tasks.no_such_task"):
        queueing.enqueue_on_commit("classifier.tasks.train_model_version", 1, link="reports.tasks.no_such_task")


class SilentBroker:
    """A TCP port that accepts connections and never answers (a hung Redis); counts connections."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self):
        self.sock.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def silent_broker(monkeypatch, broker):
    server = SilentBroker()
    monkeypatch.setenv("CELERY_BROKER_URL", f"redis://127.0.0.1:{server.port}/0")  # Celery reads it first
    yield server
    server.close()


def test_a_hung_broker_holds_the_caller_for_the_publish_bound_only_and_then_not_at_all(
        db, silent_broker, caplog):
    started = time.monotonic()
    assert queueing.enqueue_now("classifier.tasks.train_model_version", 1) is False
    waited = time.monotonic() - started
    # One bounded attempt (0.5 s), not the 10 s socket timeout of the workers' connections, and no retries.
    assert waited < 5 * queueing.PUBLISH_TIMEOUT_S, waited
    assert len(silent_broker.accepted) >= 1
    assert "the sweep will enqueue it again" in caplog.text

    # Right after a failure the process does not wait on the broker again: the work is left to the sweep.
    tried = len(silent_broker.accepted)
    assert queueing.enqueue_now("classifier.tasks.train_model_version", 2) is False
    assert len(silent_broker.accepted) == tried


def test_a_refused_connection_is_reported_and_never_raised(db, monkeypatch, broker, caplog):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("CELERY_BROKER_URL", f"redis://127.0.0.1:{port}/0")
    assert queueing.enqueue_now("classifier.tasks.train_model_version", 3) is False
    assert "Connection refused" in caplog.text or "111" in caplog.text


def test_the_embedded_filesystem_broker_takes_the_message(db, monkeypatch, tmp_path, broker):
    from leukoportal.celery import app

    folders = {"data_folder_in": str(tmp_path / "q"), "data_folder_out": str(tmp_path / "q"),
               "processed_folder": str(tmp_path / "p"), "control_folder": str(tmp_path / "c")}
    for folder in set(folders.values()):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("CELERY_BROKER_URL", "filesystem://")
    before = app.conf.broker_transport_options
    app.conf.broker_transport_options = folders
    try:
        assert queueing.enqueue_now("classifier.tasks.train_model_version", 4) is True
    finally:
        app.conf.broker_transport_options = before
    assert len(list((tmp_path / "q").iterdir())) == 1
