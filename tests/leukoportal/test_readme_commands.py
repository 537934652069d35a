"""The README's manage.py commands run as printed against the embedded default: a clean environment
(no DATABASE_URL, no SECRET_KEY, no DEBUG), only a fresh var/ directory. The embedded default makes
its secret key there on first run (owner-only) and reuses it; a deployment still needs SECRET_KEY."""
import os
import re
import shlex
import stat
import subprocess

import pytest
import yaml

from tests.helpers import REPO

README = (REPO / "README.md").read_text()
PY = ".venv/bin/python"


def clean_env(var_dir, **extra) -> dict:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(var_dir.parent),
           "LEUKOPORTAL_VAR_DIR": str(var_dir), "LANG": "C.UTF-8"}
    env.update(extra)
    return env


def run(args, var_dir, **extra):
    return subprocess.run(args, cwd=REPO, env=clean_env(var_dir, **extra), capture_output=True, text=True,
                          timeout=300)


def readme_commands() -> list[str]:
    names = list(dict.fromkeys(re.findall(r"manage\.py ([a-z_]+)", README)))
    assert {"import_cells", "train_ensemble", "evaluate_folder", "classify", "differential", "drf_create_token",
            "import_weights"} <= set(names), names
    return names


@pytest.mark.slow
def test_every_readme_manage_command_answers_help_in_a_clean_environment(tmp_path):
    var_dir = tmp_path / "var"
    failures = []
    for name in readme_commands():
        result = run([PY, "manage.py", name, "--help"], var_dir)
        if result.returncode != 0 or "usage:" not in result.stdout:
            failures.append(f"manage.py {name} --help -> {result.returncode}\n{result.stderr[-1500:]}")
    assert not failures, "\n".join(failures)
    key = var_dir / "secret_key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert len(key.read_text().strip()) >= 50


@pytest.mark.slow
def test_readme_token_command_runs_verbatim(tmp_path):
    lines = [line.strip() for line in README.splitlines() if line.strip().startswith(f"{PY} manage.py drf_create_token ")]
    verbatim = [line for line in lines if "USERNAME" not in line]
    assert verbatim == [f"{PY} manage.py drf_create_token labeller"]
    var_dir = tmp_path / "var"
    # what `make run` leaves behind: the migrated database and the demo user
    made = run([PY, "manage.py", "migrate", "--noinput"], var_dir)
    assert made.returncode == 0, made.stderr
    user = run([PY, "manage.py", "shell", "-c",
                "from django.contrib.auth import get_user_model; get_user_model().objects.create_user('labeller')"],
               var_dir)
    assert user.returncode == 0, user.stderr
    first = run(shlex.split(verbatim[0]), var_dir)
    assert first.returncode == 0, first.stderr
    token = re.fullmatch(r"Generated token ([0-9a-f]{40}) for user labeller\n", first.stdout)
    assert token, first.stdout
    again = run(shlex.split(verbatim[0]), var_dir)  # the same key and database: the same token
    assert again.returncode == 0 and token.group(1) in again.stdout


def test_the_generated_secret_key_is_reused_and_refused_when_others_can_read_it(tmp_path):
    var_dir = tmp_path / "var"
    show = [PY, "-c", "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='leukoportal.settings'; "
                      "django.setup(); from django.conf import settings as s; print(s.SECRET_KEY, s.DEBUG)"]
    first = run(show, var_dir)
    assert first.returncode == 0, first.stderr
    key, debug = first.stdout.split()
    assert debug == "False" and key == (var_dir / "secret_key").read_text().strip()
    assert run(show, var_dir).stdout.split()[0] == key
    (var_dir / "secret_key").chmod(0o644)
    refused = run(show, var_dir)
    assert refused.returncode != 0 and "can be read by other users" in refused.stderr


def test_a_deployment_without_secret_key_refuses_to_start(tmp_path):
    result = run([PY, "manage.py", "check"], tmp_path / "var",
                 DATABASE_URL="postgres://nobody@127.0.0.1:1/none")
    assert result.returncode != 0 and "SECRET_KEY is required" in result.stderr
    assert not (tmp_path / "var" / "secret_key").exists()


def test_compose_requires_secret_key_for_every_app_service():
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    for name, service in compose["services"].items():
        if service.get("build"):
            assert service["environment"]["SECRET_KEY"].startswith("${SECRET_KEY:?"), name


@pytest.mark.slow
def test_make_run_serves_static_files_and_error_pages_without_debug(tmp_path):
    """What `make run` starts (manage.py runportal), in a clean environment: DEBUG off, static files
    collected and served by WhiteNoise, the favicon at the root, 404s in the site's layout."""
    import signal
    import socket
    import time
    import urllib.error
    import urllib.request

    with socket.socket() as s, socket.socket() as s2:
        s.bind(("127.0.0.1", 0))
        s2.bind(("127.0.0.1", 0))
        port, lis_port = s.getsockname()[1], s2.getsockname()[1]
    var_dir = tmp_path / "var"
    log = tmp_path / "portal.log"
    env = clean_env(var_dir, STATIC_ROOT=str(tmp_path / "static"), AUTO_CLASSIFY_UPLOADS="false",
                    LIS_LISTEN_PORT=str(lis_port))
    proc = subprocess.Popen([PY, "manage.py", "runportal", "--no-demo", "--addrport", f"127.0.0.1:{port}"], cwd=REPO,
                            env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)

    def get(path):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    try:
        deadline = time.time() + 180
        while True:
            try:
                status, _, _ = get("/accounts/login/")
                break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None and time.time() < deadline, log.read_text()[-3000:]
                time.sleep(0.5)
        assert status == 200
        status, headers, body = get("/static/css/app.css")
        assert status == 200 and b".topbar" in body, log.read_text()[-2000:]
        assert (tmp_path / "static" / "css" / "app.css").exists()  # collected, as in production
        status, headers, body = get("/favicon.ico")
        assert status == 200 and body[:4] == b"\x00\x00\x01\x00"
        status, _, body = get("/no-such-page/")
        assert status == 404 and b'<header class="topbar">' in body and b"URLconf" not in body
        assert stat.S_IMODE((var_dir / "secret_key").stat().st_mode) == 0o600
        # The LIS order listener runs beside them (its own process, started with the web server and
        # ready on its own time: wait for its port): it answers what is no HL7 message with an AR.
        from hl7.client import MLLPClient

        listener_deadline = time.time() + 60
        while True:
            try:
                client = MLLPClient("127.0.0.1", lis_port)
                break
            except ConnectionRefusedError:
                assert proc.poll() is None and time.time() < listener_deadline, log.read_text()[-3000:]
                time.sleep(0.5)
        with client:
            answer = client.send_message("not an order")
        assert b"MSA|AR|" in answer, log.read_text()[-2000:]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
