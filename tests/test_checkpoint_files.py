"""Checkpoint files on disk: what `checkpoint.save` refuses to replace, the permission bits it keeps,
the stale temporary files it removes, and the errors `checkpoint.load` gives for what is not a checkpoint.

None of these tests touches /dev/null: the special files are a FIFO, a socket, a directory and a
symlink made in ``tmp_path`` (and /dev/zero, only read)."""

from __future__ import annotations

import os
import re
import socket
import stat
import threading
import time

import numpy as np
import pytest

from backprop.training import checkpoint

TENSORS = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
META = {"epoch": 1}
ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def temp_files(folder) -> list[str]:
    return sorted(p for p in os.listdir(folder) if p.startswith(".tmp-"))


def dead_pid() -> int:
    """A pid no process can have: one past the kernel's largest."""
    try:
        with open("/proc/sys/kernel/pid_max") as f:
            return int(f.read()) + 1
    except OSError:
        return 2**22 + 1  # Linux's largest possible pid_max is 2**22


def special(tmp_path, kind: str) -> str:
    """A ``kind`` of non-regular file in ``tmp_path``: a directory, a FIFO or a (bound) Unix socket."""
    path = str(tmp_path / "m.safetensors")
    if kind == "directory":
        os.mkdir(path)
    elif kind == "FIFO":
        os.mkfifo(path)
    else:
        sock = socket.socket(socket.AF_UNIX)
        try:
            sock.bind(path)
        except OSError as exc:  # AF_UNIX paths are limited to ~107 bytes
            pytest.skip(f"cannot bind a Unix socket at {path!r}: {exc}")
        finally:
            sock.close()
    return path


# -- save: only a regular file is replaced ---------------------------------------------------------
@pytest.mark.parametrize("kind", ["directory", "FIFO", "socket"])
def test_save_refuses_to_replace_a_non_regular_file(tmp_path, kind):
    path = special(tmp_path, kind)
    before = os.lstat(path).st_mode
    with pytest.raises(OSError, match=rf"{re.escape(repr(path))}.* is a {kind}"):
        checkpoint.save(path, TENSORS, META)
    assert stat.S_IFMT(os.lstat(path).st_mode) == stat.S_IFMT(before)  # still what it was
    assert temp_files(tmp_path) == []


def test_save_refuses_a_symlink_and_leaves_link_and_target_alone(tmp_path):
    target, link = tmp_path / "real.safetensors", tmp_path / "m.safetensors"
    checkpoint.save(target, TENSORS, META)
    before = target.read_bytes()
    link.symlink_to(target)
    with pytest.raises(OSError, match=r"m\.safetensors.* is a symbolic link"):
        checkpoint.save(link, {"w": np.zeros(3, np.float32)}, META)
    assert os.path.islink(link) and os.readlink(link) == str(target)
    assert target.read_bytes() == before
    assert temp_files(tmp_path) == []


def test_save_refuses_a_dangling_symlink(tmp_path):
    link = tmp_path / "m.safetensors"
    link.symlink_to(tmp_path / "nowhere.safetensors")
    with pytest.raises(OSError, match="is a symbolic link"):
        checkpoint.save(link, TENSORS, META)
    assert os.path.islink(link) and not (tmp_path / "nowhere.safetensors").exists()


# -- save: permission bits --------------------------------------------------------------------------
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o600, 0o664])
def test_save_keeps_the_existing_files_mode(tmp_path, mode):
    path = tmp_path / "m.safetensors"
    checkpoint.save(path, TENSORS, META)
    os.chmod(path, mode)
    checkpoint.save(path, {"w": np.ones(2, np.float32)}, META)
    assert stat.S_IMODE(os.stat(path).st_mode) == mode
    np.testing.assert_array_equal(checkpoint.load(path)[0]["w"], np.ones(2, np.float32))


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077, 0o002])
def test_a_new_file_gets_the_umasks_usual_mode(tmp_path, umask):
    old = os.umask(umask)
    try:
        checkpoint.save(tmp_path / "m.safetensors", TENSORS, META)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "m.safetensors").st_mode) == 0o666 & ~umask


def test_save_refuses_a_read_only_file(tmp_path):
    # The mode bits are checked, not os.access: this holds as root too.
    path = tmp_path / "m.safetensors"
    checkpoint.save(path, TENSORS, META)
    before = path.read_bytes()
    os.chmod(path, 0o444)
    with pytest.raises(PermissionError, match=r"m\.safetensors.* is read-only"):
        checkpoint.save(path, {"w": np.zeros(3, np.float32)}, META)
    assert path.read_bytes() == before
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o444
    assert temp_files(tmp_path) == []


# -- save: temporary files ---------------------------------------------------------------------------
def test_temporary_file_names_the_target_and_the_pid(tmp_path, monkeypatch):
    seen = []

    def crash(src, dst):
        seen.append(os.path.basename(src))
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(tmp_path / "m.safetensors", TENSORS, META)
    assert re.fullmatch(rf"\.tmp-m\.safetensors-{os.getpid()}-[0-9a-f]{{8}}\.safetensors", seen[0]), seen
    assert temp_files(tmp_path) == []


def test_save_removes_its_own_stale_temporary_files_and_nothing_else(tmp_path):
    path, dead, alive = tmp_path / "m.safetensors", dead_pid(), os.getpid()
    long_ago, hours_ago = time.time() - 120, time.time() - 2 * 3600

    def make(name: str, mtime: float | None = None) -> str:
        (tmp_path / name).write_bytes(b"half a checkpoint")
        if mtime is not None:
            os.utime(tmp_path / name, (mtime, mtime))
        return name

    stale = [
        make(f".tmp-m.safetensors-{dead}-0123abcd.safetensors", long_ago),  # its writer is gone
        make(f".tmp-m.safetensors-{alive}-89abcdef.safetensors", hours_ago),  # untouched for hours
    ]
    kept = [
        make(f".tmp-m.safetensors-{alive}-00000000.safetensors"),  # a save in progress
        make(f".tmp-m.safetensors-{dead}-11111111.safetensors"),  # just written: pid could be another host's
        make(f".tmp-other.safetensors-{dead}-22222222.safetensors", hours_ago),  # another target's
        make(".tmp-abcd1234.safetensors", hours_ago),  # not the naming scheme
        make(f".tmp-m.safetensors-{dead}-33333333.safetensors.bak", hours_ago),
        make(f".tmp-m.safetensors-{dead}-nothex00.safetensors", hours_ago),
        make("notes.txt", hours_ago),
    ]
    os.mkdir(tmp_path / f".tmp-m.safetensors-{dead}-44444444.safetensors")  # a directory: never removed
    kept.append(f".tmp-m.safetensors-{dead}-44444444.safetensors")
    checkpoint.save(path, TENSORS, META)
    left = set(os.listdir(tmp_path))
    assert not left & set(stale), left & set(stale)
    assert set(kept) <= left, set(kept) - left
    assert "m.safetensors" in left


def test_a_failed_save_removes_no_stale_files(tmp_path, monkeypatch):
    name = f".tmp-m.safetensors-{dead_pid()}-0123abcd.safetensors"
    (tmp_path / name).write_bytes(b"x")
    os.utime(tmp_path / name, (time.time() - 7200, time.time() - 7200))

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(tmp_path / "m.safetensors", TENSORS, META)
    assert temp_files(tmp_path) == [name]


# -- load: what went wrong ---------------------------------------------------------------------------
def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.safetensors.* does not exist"):
        checkpoint.load(tmp_path / "nope.safetensors")


def test_load_dangling_symlink(tmp_path):
    (tmp_path / "m.safetensors").symlink_to(tmp_path / "gone.safetensors")
    with pytest.raises(FileNotFoundError, match=r"m\.safetensors.* symbolic link to a missing file"):
        checkpoint.load(tmp_path / "m.safetensors")


def test_load_follows_a_symlink_to_a_checkpoint(tmp_path):
    checkpoint.save(tmp_path / "real.safetensors", TENSORS, META)
    (tmp_path / "m.safetensors").symlink_to(tmp_path / "real.safetensors")
    tensors, meta = checkpoint.load(tmp_path / "m.safetensors")
    np.testing.assert_array_equal(tensors["w"], TENSORS["w"])
    assert meta == META


def test_load_directory(tmp_path):
    with pytest.raises(IsADirectoryError, match=rf"{re.escape(repr(str(tmp_path)))} is a directory"):
        checkpoint.load(tmp_path)


def test_load_fifo_is_refused_without_opening_it(tmp_path):
    path = str(tmp_path / "m.safetensors")
    os.mkfifo(path)
    result = []

    def attempt():
        try:
            checkpoint.load(path)
        except Exception as exc:
            result.append(exc)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout=10)
    if thread.is_alive():  # blocked opening the FIFO: release it so the thread ends, then fail
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("checkpoint.load opened a FIFO for reading and blocked")
    assert len(result) == 1 and isinstance(result[0], OSError), result
    assert not isinstance(result[0], FileNotFoundError)
    assert re.search(r"m\.safetensors.* is a FIFO, not a regular file", str(result[0])), result[0]


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero here")
def test_load_character_device():
    with pytest.raises(OSError, match=r"'/dev/zero' is a character device, not a regular file") as info:
        checkpoint.load("/dev/zero")
    assert not isinstance(info.value, FileNotFoundError)


@pytest.mark.skipif(ROOT, reason="root reads files whatever their mode bits, so permission denied cannot happen")
def test_load_permission_denied(tmp_path):
    path = tmp_path / "m.safetensors"
    checkpoint.save(path, TENSORS, META)
    os.chmod(path, 0)
    try:
        with pytest.raises(PermissionError, match=r"m\.safetensors.* permission denied"):
            checkpoint.load(path)
    finally:
        os.chmod(path, 0o600)
