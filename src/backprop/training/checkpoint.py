"""Checkpoint files: one ``.safetensors`` file with the tensors and a JSON header, written atomically.

Tensors are NumPy arrays (``safetensors.numpy``); the metadata is one JSON document stored under
the header key ``"backprop"`` together with a SHA-256 checksum of every tensor (name, dtype,
shape, bytes) and of the metadata itself, so a truncated or accidentally damaged file is refused.
The checksum has no key: it does not protect against a deliberate edit whose author recomputes
it.  Such a file is held to the trainer's own checks instead (`Trainer.load`), which refuse every
inconsistency with `CheckpointError` before allocating anything the file does not contain.
Nothing is ever pickled.  A write goes to a temporary file in the same folder, is flushed to
disk, then renamed over the target: a crash mid-save leaves the previous file intact.  The
temporary file is named ``.tmp-<target name>-<pid>-<8 hex digits>.safetensors``, so that a later
save of the same target can recognise, and remove, what a killed writer left behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import time

import numpy as np

FORMAT = "backprop-checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be trusted: missing, truncated, corrupted or of another format."""


def checksum(tensors: dict[str, np.ndarray], metadata: dict) -> str:
    """SHA-256 over the metadata (canonical JSON) and every tensor's name, dtype, shape and bytes."""
    digest = hashlib.sha256(json.dumps(metadata, sort_keys=True).encode())
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


STALE_AFTER_S = 3600  # a temporary file untouched this long is stale, whoever wrote it
DEAD_PID_AFTER_S = 60  # ... and one whose pid is no live process here (it may be another host's)


def _kind(mode: int) -> str:
    """What a non-regular file is, in words, from its ``st_mode``."""
    for test, kind in [
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ]:
        if test(mode):
            return kind
    return "not a regular file"


def _temp_prefix(target: str) -> str:
    """The start of the temporary file names of saves of ``target``, the name cut to stay within NAME_MAX."""
    return f".tmp-{target[:48]}-"


def _pid_alive(pid: int) -> bool:
    if os.name != "posix":  # os.kill(pid, 0) terminates the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _remove_stale_temp_files(folder: str, target: str) -> None:
    """Remove the regular files in ``folder`` named as `save`'s temporary files of ``target`` that are stale:
    untouched for `STALE_AFTER_S`, or for `DEAD_PID_AFTER_S` when their pid is not a live process here.
    Nothing else is touched; best effort, errors are ignored."""
    scheme = re.compile(rf"{re.escape(_temp_prefix(target))}([1-9][0-9]*)-[0-9a-f]{{8}}\.safetensors")
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        match = scheme.fullmatch(entry.name)
        if match is None:
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            age = now - entry.stat(follow_symlinks=False).st_mtime
            if age > STALE_AFTER_S or (age > DEAD_PID_AFTER_S and not _pid_alive(int(match.group(1)))):
                os.unlink(entry.path)
        except OSError:
            continue


def _check_target(path: str) -> int | None:
    """The mode of the regular, writable file at ``path`` that `save` may replace (None: nothing there)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(f"cannot save checkpoint to {path!r}: it is a directory")
    if stat.S_ISLNK(mode):
        raise OSError(f"cannot save checkpoint to {path!r}: it is a symbolic link (save to its target instead)")
    if not stat.S_ISREG(mode):
        raise OSError(f"cannot save checkpoint to {path!r}: it is {_kind(mode)}, not a regular file")
    if not mode & 0o222:  # the bits, not os.access: root may write anything
        raise PermissionError(f"cannot save checkpoint to {path!r}: it is read-only (mode {stat.S_IMODE(mode):o})")
    return mode


def save(path: str | os.PathLike, tensors: dict[str, np.ndarray], metadata: dict) -> None:
    """Write ``tensors`` and ``metadata`` (JSON-serialisable) to ``path`` atomically.

    Only a regular file is replaced: a directory, FIFO, device or socket at ``path`` raises
    `OSError` (`IsADirectoryError` for a directory) naming it, and so does a symbolic link, which is
    never written through (pass the link's target instead).  A read-only existing file (no write bit
    in its mode, checked on the bits so that root is refused too) raises `PermissionError`.  The new
    file keeps an existing file's permission bits; a new file gets ``0o666`` less the umask.  After a
    successful save, stale temporary files of earlier saves of the same target are removed (see
    `_remove_stale_temp_files`); a failed save removes its own temporary file and nothing else.
    """
    from safetensors.numpy import save as to_bytes

    path = os.fspath(path)
    existing = _check_target(path)
    tensors = {name: np.ascontiguousarray(a) for name, a in tensors.items()}
    header = {"format": FORMAT, "metadata": metadata, "sha256": checksum(tensors, metadata)}
    data = to_bytes(tensors, metadata={"backprop": json.dumps(header)})
    folder, target = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f"{_temp_prefix(target)}{os.getpid()}-{os.urandom(4).hex()}.safetensors")
    # the kernel reduces 0o666 by the umask (or a default ACL); an existing file's bits are copied over
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            if existing is not None:
                os.fchmod(f.fileno(), stat.S_IMODE(existing))
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    _remove_stale_temp_files(folder, target)


def load(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """(tensors, metadata) from ``path``, after verifying the format and the checksum.

    A symbolic link is followed.  Before anything is read: `FileNotFoundError` when nothing is there
    (or a link points nowhere), `IsADirectoryError` for a directory, `OSError` for a FIFO, device or
    socket (never opened: a FIFO would block), `PermissionError` when the file cannot be read.
    """
    from safetensors import safe_open

    path = os.fspath(path)
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        if os.path.islink(path):
            raise FileNotFoundError(f"checkpoint {path!r} is a symbolic link to a missing file") from None
        raise FileNotFoundError(f"checkpoint {path!r} does not exist") from None
    except PermissionError:
        raise PermissionError(
            f"checkpoint {path!r} cannot be read: permission denied on a folder of its path"
        ) from None
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(f"checkpoint {path!r} is a directory, not a checkpoint file")
    if not stat.S_ISREG(mode):  # never opened: reading a FIFO would block, a device never ends
        raise OSError(f"checkpoint {path!r} is {_kind(mode)}, not a regular file")
    try:
        os.close(os.open(path, os.O_RDONLY))
    except PermissionError:
        raise PermissionError(f"checkpoint {path!r} cannot be read: permission denied") from None
    try:
        with safe_open(path, framework="numpy") as f:
            raw = (f.metadata() or {}).get("backprop")
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except Exception as exc:  # safetensors reports truncation/corruption with its own error types
        raise CheckpointError(f"checkpoint {path!r} is truncated or corrupted: {exc}") from None
    try:
        header = json.loads(raw)
    except (TypeError, ValueError, RecursionError):
        raise CheckpointError(
            f"checkpoint {path!r} has no readable backprop metadata (not a backprop checkpoint, or corrupted)"
        ) from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path!r} is not a {FORMAT} file")
    if header.get("sha256") != checksum(tensors, header.get("metadata")):
        raise CheckpointError(f"checkpoint {path!r} failed its checksum: the file is corrupted or was modified")
    return tensors, header["metadata"]
