"""Atomic writes: all or nothing, ordinary file permissions."""

import os

import pytest

from povid_eval.core.io import atomic_write_bytes, atomic_write_text


def test_atomic_write_has_umask_permissions_and_leaves_no_temp(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a" / "x.txt", "hello\n")
    finally:
        os.umask(old)
    path = tmp_path / "a" / "x.txt"
    assert path.read_text() == "hello\n" and (path.stat().st_mode & 0o777) == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["x.txt"]


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "x.bin"
    atomic_write_bytes(path, b"old")
    with pytest.raises(TypeError):
        atomic_write_bytes(path, "not bytes")
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["x.bin"]
