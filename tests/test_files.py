import json
import os
import stat

import pytest

from hbacli.files import atomic_write_json, atomic_write_text


def test_atomic_write_replaces_whole_file_with_normal_permissions(tmp_path):
    path = tmp_path / "out" / "result.json"
    atomic_write_json(path, {"a": 1})
    atomic_write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert [p.name for p in path.parent.iterdir()] == ["result.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_failed_write_leaves_old_file_and_no_temp(tmp_path):
    path = tmp_path / "result.json"
    atomic_write_text(path, "old")
    with pytest.raises(ValueError):
        atomic_write_json(path, {"x": float("nan")})  # NaN is refused before anything is written
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_atomic_write_works_without_os_fchmod(tmp_path, monkeypatch):
    """Windows has os.fchmod only from Python 3.13: the write must not depend on it."""
    monkeypatch.delattr(os, "fchmod", raising=False)
    path = tmp_path / "out" / "result.json"
    atomic_write_json(path, {"a": 1})
    atomic_write_text(path, "replaced\n")
    assert path.read_text() == "replaced\n"
    assert [p.name for p in path.parent.iterdir()] == ["result.json"]
    if os.name == "posix":   # the fallback still gives the usual permissions, not mkstemp's 0600
        umask = os.umask(0)
        os.umask(umask)
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    else:
        assert os.access(path, os.W_OK)
