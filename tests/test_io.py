"""Atomic writes: all or nothing, ordinary file permissions; staging folders a kill leaves are removed later."""

import os
import time

import pytest

from povid_eval.core import io, paths
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


def _aged(folder):
    """Make a folder look untouched for a minute (remove_stale_staging skips fresh ones)."""
    past = time.time() - 60
    os.utime(folder, (past, past))
    return folder


def test_stale_staging_is_removed_and_a_held_one_kept(tmp_path):
    """A staging folder nobody holds (its owner was killed) goes; one a live build holds, or one just made,
    stays; an ``.old-`` one whose target is missing is put back first."""
    out = tmp_path / "w"
    dead = tmp_path / ".w.tmp-dead"
    (dead / "img").mkdir(parents=True)
    _aged(dead)
    fresh = tmp_path / ".w.tmp-fresh"
    fresh.mkdir()
    held, fd = io._held_folder(".w.tmp-", tmp_path)
    _aged(held)
    old = tmp_path / ".w.old-x"
    (old / "w").mkdir(parents=True)
    (old / "w" / "manifest.json").write_text("{}")
    _aged(old)
    (tmp_path / ".v.tmp-dead").mkdir()
    _aged(tmp_path / ".v.tmp-dead")
    try:
        removed = io.remove_stale_staging(out)
    finally:
        os.close(fd)
    assert removed == [dead, old]
    assert (out / "manifest.json").read_text() == "{}"  # the previous version, back in place
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([".v.tmp-dead", ".w.tmp-fresh", held.name, "w"])


def test_staging_dir_is_removed_unless_moved_into_place(tmp_path):
    out = tmp_path / "w"
    with pytest.raises(RuntimeError), io.staging_dir(out) as tmp:
        (tmp / "half").write_text("x")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    for text in ("one", "two"):
        with io.staging_dir(out) as tmp:
            (tmp / "f").write_text(text)
    assert (out / "f").read_text() == "two" and [p.name for p in tmp_path.iterdir()] == ["w"]


def test_replace_dir_puts_the_old_folder_back_when_the_new_cannot_go_in(tmp_path, monkeypatch):
    out = tmp_path / "w"
    out.mkdir()
    (out / "f").write_text("old")
    new = tmp_path / ".w.tmp-1"
    new.mkdir()
    real = os.replace
    calls = []

    def failing(src, dst):
        calls.append(src)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(io.os, "replace", failing)
    with pytest.raises(OSError):
        io.replace_dir(new, out)
    assert (out / "f").read_text() == "old"


def test_the_next_writer_removes_a_killed_writers_temp_files(tmp_path):
    """atomic_write_bytes killed between write and rename leaves .NAME.XXXX.tmp; whoever takes the folder's
    writer lock next removes it (a file just written is spared, and so is everything else)."""
    (tmp_path / "metrics.json").write_text("{}")
    stale = tmp_path / ".metrics.json.k1ll3d.tmp"
    stale.write_text('{"half')
    _aged(stale)
    fresh = tmp_path / ".samples.json.n0w.tmp"
    fresh.write_text("x")
    with paths.writer_lock(tmp_path, "a test"):
        assert sorted(p.name for p in tmp_path.iterdir()) == [paths.LOCK, fresh.name, "metrics.json"]
