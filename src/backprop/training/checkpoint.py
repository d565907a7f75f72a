"""Checkpoint files: one ``.safetensors`` file with the tensors and a JSON header, written atomically.

Tensors are NumPy arrays (``safetensors.numpy``); the metadata is one JSON document stored under
the header key ``"backprop"`` together with a SHA-256 checksum of every tensor (name, dtype,
shape, bytes) and of the metadata itself, so a truncated or accidentally damaged file is refused.
The checksum has no key: it does not protect against a deliberate edit whose author recomputes
it.  Such a file is held to the trainer's own checks instead (`Trainer.load`), which refuse every
inconsistency with `CheckpointError` before allocating anything the file does not contain.
Nothing is ever pickled.  A write goes to a temporary file in the same folder, is flushed to
disk, then renamed over the target: a crash mid-save leaves the previous file intact.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile

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


def save(path: str | os.PathLike, tensors: dict[str, np.ndarray], metadata: dict) -> None:
    """Write ``tensors`` and ``metadata`` (JSON-serialisable) to ``path`` atomically."""
    from safetensors.numpy import save as to_bytes

    tensors = {name: np.ascontiguousarray(a) for name, a in tensors.items()}
    header = {"format": FORMAT, "metadata": metadata, "sha256": checksum(tensors, metadata)}
    data = to_bytes(tensors, metadata={"backprop": json.dumps(header)})
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
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


def load(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """(tensors, metadata) from ``path``, after verifying the format and the checksum."""
    from safetensors import safe_open

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
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
