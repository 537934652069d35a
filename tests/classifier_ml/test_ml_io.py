"""The shared pure helpers: atomic writes, sha256 of files and JSON, JSON-safe values."""
import hashlib
import json
import math

import numpy as np
import pytest

from classifier.ml.io import atomic_write, json_clean, json_sha256, sha256_file


def test_atomic_write_replaces_the_file_whole_and_leaves_no_temporary(tmp_path):
    dest = tmp_path / "out.bin"
    dest.write_bytes(b"old")
    assert atomic_write(dest, lambda tmp: tmp.write_bytes(b"new" * 1000)) == dest
    assert dest.read_bytes() == b"new" * 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_a_failed_atomic_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    dest = tmp_path / "out.bin"
    dest.write_bytes(b"old")

    def broken(tmp):
        tmp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(dest, broken)
    assert dest.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_atomic_write_may_name_the_file_after_its_content(tmp_path):
    final = atomic_write(lambda tmp: tmp_path / f"x-{sha256_file(tmp)[:8]}.bin", lambda tmp: tmp.write_bytes(b"abc"),
                         directory=tmp_path)
    assert final.name == f"x-{hashlib.sha256(b'abc').hexdigest()[:8]}.bin" and final.read_bytes() == b"abc"
    with pytest.raises(TypeError):
        atomic_write(lambda tmp: tmp_path / "y", lambda tmp: None)


def test_sha256_of_a_file_larger_than_one_chunk(tmp_path):
    data = bytes(range(256)) * 5000  # 1.2 MiB
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()


def test_json_sha256_ignores_key_order():
    assert json_sha256([[1, "a", "x"]]) == hashlib.sha256(json.dumps([[1, "a", "x"]]).encode()).hexdigest()
    assert json_sha256({"b": 1, "a": 2}) == json_sha256({"a": 2, "b": 1})


def test_json_clean_gives_builtins_and_no_nan():
    value = {1: (np.float32(0.5), np.int64(3), math.nan, -math.inf, np.float64("nan")), "ok": [True, np.bool_(False)],
             "arr": np.array(2.5), "s": "text"}
    clean = json_clean(value)
    assert clean == {"1": [0.5, 3, None, None, None], "ok": [True, False], "arr": 2.5, "s": "text"}
    assert type(clean["1"][1]) is int and type(clean["1"][0]) is float and type(clean["ok"][1]) is bool
    json.dumps(clean, allow_nan=False)
