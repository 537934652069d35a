"""The helpers the benchmark scripts share (benchmarks/common.py) and the environments the portal
benchmarks build from them: pure, no database, no data set."""
import argparse
import subprocess
from pathlib import Path

from benchmarks import common, export, portal


def _pbc(tmp_path, layout):
    for cls, names in layout.items():
        (tmp_path / cls).mkdir()
        for name in names:
            (tmp_path / cls / name).write_bytes(b"x")
    return tmp_path


def test_pbc_test_split_is_the_documented_hash_rule():
    # sha256("split0:" + name) % 5 == 0; pinned so the split of the published figures cannot drift
    assert [i for i in range(30) if common.is_pbc_test(f"cell_{i}.jpg")] == [4, 9, 12, 13, 18, 22]


def test_pbc_split_gives_sorted_classes_and_splits_every_jpg_once(tmp_path):
    names = [f"cell_{i}.jpg" for i in range(15)]
    pbc = _pbc(tmp_path, {"monocyte": names[:8], "basophil": names[8:] + ["notes.txt"]})
    (pbc / "README.md").write_text("not a class")
    classes, train, test = common.pbc_split(pbc)
    assert classes == ["basophil", "monocyte"]
    assert sorted(p.name for p, _ in train + test) == sorted(names)
    assert {p.name for p, _ in test} == {"cell_4.jpg", "cell_9.jpg", "cell_12.jpg", "cell_13.jpg"}
    assert all(p.parent.name == c for p, c in train + test)
    assert [c for _, c in train] == sorted(c for _, c in train)  # class by class, in class order


def test_domain_arguments_default_to_the_shared_data_and_the_named_work_folder():
    ap = argparse.ArgumentParser()
    common.add_domain_arguments(ap, work="ood")
    args = ap.parse_args([])
    assert Path(args.pbc) == common.SHARED / "pbc-dev" and Path(args.bccd) == common.SHARED / "bccd-dev"
    assert Path(args.work) == common.REPO / "var" / "bench" / "ood"
    assert Path(args.cache_dir) == common.REPO / "var" / "feature-cache"
    assert args.threads is None
    assert ap.parse_args(["--threads", "3", "--work", "w"]).threads == 3


def test_parts_and_records_of_a_part():
    assert common.parts_of("each") == ["tune", "test", "all"]
    assert common.parts_of("test") == ["test"]
    recs = [{"split": "tune", "n": 1}, {"split": "test", "n": 2}, {"split": "tune", "n": 3}]
    assert [r["n"] for r in common.in_part(recs, "tune")] == [1, 3]
    assert common.in_part(recs, "all") == recs


def test_table_header_is_a_blank_line_the_header_and_a_rule(capsys):
    common.print_table_header("a  bc")
    assert capsys.readouterr().out == "\na  bc\n-----\n"


def test_bench_env_is_production_like_without_the_cache_server(monkeypatch, tmp_path):
    monkeypatch.setenv("CACHE_URL", "redis://example.invalid/1")
    monkeypatch.setenv("KEEP_ME", "1")
    env = common.bench_env("postgres://db/x", tmp_path)
    assert "CACHE_URL" not in env and env["KEEP_ME"] == "1"
    assert env["DATABASE_URL"] == "postgres://db/x" and env["DEBUG"] == "false"
    assert env["LEUKOPORTAL_VAR_DIR"] == str(tmp_path) and env["MEDIA_ROOT"] == str(tmp_path / "media")
    assert env["ALLOWED_HOSTS"] == "127.0.0.1,localhost" and env["AUTO_CLASSIFY_UPLOADS"] == "false"
    assert common.bench_env("postgres://db/x", tmp_path, ALLOWED_HOSTS="h", EXTRA="e")["ALLOWED_HOSTS"] == "h"


def test_portal_and_export_environments_differ_only_where_they_must(monkeypatch):
    monkeypatch.delenv("DJANGO_SETTINGS_MODULE", raising=False)
    p = common.bench_env("postgres://db/x", portal.VAR)
    e = export.export_env("postgres://db/x")
    assert p["LEUKOPORTAL_VAR_DIR"].endswith("bench") and e["LEUKOPORTAL_VAR_DIR"].endswith("bench-export")
    assert e["ALLOWED_HOSTS"] == "testserver,127.0.0.1,localhost"  # the export's child uses the test client
    assert e["DJANGO_SETTINGS_MODULE"] == "leukoportal.settings" and "DJANGO_SETTINGS_MODULE" not in p
    same = set(p) - {"LEUKOPORTAL_VAR_DIR", "MEDIA_ROOT", "ALLOWED_HOSTS"}
    assert {k: p[k] for k in same} == {k: e[k] for k in same}


def test_manage_runs_the_projects_manage_py_with_the_environment(monkeypatch):
    calls = []

    def run(cmd, **kw):
        calls.append((cmd, kw))
        return subprocess.CompletedProcess(cmd, 0, stdout="42\n")

    monkeypatch.setattr(common.subprocess, "run", run)
    assert common.manage({"A": "1"}, "migrate", "--noinput") is None
    assert common.manage({"A": "1"}, "shell", "-c", "print(42)", capture=True) == "42\n"
    (cmd, kw), (_, kw2) = calls
    assert cmd == [common.PY, "manage.py", "migrate", "--noinput"]
    assert kw["cwd"] == common.REPO and kw["env"] == {"A": "1"} and kw["check"] is True
    assert not kw["capture_output"] and kw2["capture_output"]
