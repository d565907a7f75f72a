"""Data sets for the command line: the embedded default (scikit-learn's digits) and user files.

A user file is a ``.npz`` with arrays ``X`` (n × features) and ``y`` (n or n × outputs), or a
``.csv`` of numbers with the target in the last column (an optional header row is skipped).
Every problem with a file is a `DataError` (a ValueError) with one clear line.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

TASKS = ("auto", "classification", "regression")


class DataError(ValueError):
    """A data file that cannot be used, with the reason."""


class Dataset(NamedTuple):
    X: np.ndarray
    y: np.ndarray
    name: str


def digits() -> Dataset:
    """scikit-learn's bundled digits: 1797 8×8 images (pixels scaled to [0, 1]), 10 classes."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return Dataset((X / 16.0).astype(np.float32), y.astype(np.int64), "digits")


def _read_csv(path: str) -> np.ndarray:
    with open(path, encoding="utf-8") as f:
        lines = [(i + 1, line.strip()) for i, line in enumerate(f) if line.strip()]
    if not lines:
        raise DataError(f"{path}: the file is empty")

    def numbers(lineno: int, line: str) -> list[float]:
        try:
            return [float(cell) for cell in line.split(",")]
        except ValueError:
            raise DataError(f"{path}: line {lineno} has a value that is not a number: {line[:80]!r}") from None

    try:
        numbers(*lines[0])
    except DataError:
        lines = lines[1:]  # a header row
    if not lines:
        raise DataError(f"{path}: the file has a header but no data rows")
    rows = [numbers(*entry) for entry in lines]
    width = len(rows[0])
    for (lineno, _), row in zip(lines, rows):
        if len(row) != width:
            raise DataError(f"{path}: line {lineno} has {len(row)} columns, expected {width}")
    if width < 2:
        raise DataError(f"{path}: needs at least 2 columns (features, then the target in the last column)")
    return np.asarray(rows, dtype=np.float64)


def load_file(path: str | os.PathLike) -> Dataset:
    """(X, y) from a .npz (arrays X and y) or .csv (target in the last column) file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npz":
        try:
            with np.load(path, allow_pickle=False) as data:
                missing = {"X", "y"} - set(data.files)
                if missing:
                    raise DataError(f"{path}: missing array(s) {', '.join(sorted(missing))}; a .npz needs X and y")
                X, y = np.asarray(data["X"]), np.asarray(data["y"])
        except DataError:
            raise
        except Exception as exc:
            raise DataError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc})") from None
    elif ext == ".csv":
        table = _read_csv(path)
        X, y = table[:, :-1], table[:, -1]
    else:
        raise DataError(f"{path}: unsupported file type {ext or '(none)'!r}; use .npz (X, y) or .csv")
    if X.ndim != 2:
        raise DataError(f"{path}: X must be 2-D (samples × features), got shape {X.shape}")
    if len(X) != len(y):
        raise DataError(f"{path}: X has {len(X)} rows but y has {len(y)}")
    if len(X) < 2:
        raise DataError(f"{path}: needs at least 2 samples, got {len(X)}")
    if X.dtype.kind not in "fiub":
        raise DataError(f"{path}: X must be numeric, got dtype {X.dtype}")
    X = X.astype(np.float64)
    if not np.isfinite(X).all():
        raise DataError(f"{path}: X contains NaN or infinity")
    return Dataset(X, y, os.path.basename(path))


def infer_task(y: np.ndarray, task: str = "auto") -> str:
    """classification when y holds labels (integers or strings), else regression (unless ``task`` says)."""
    if task not in TASKS:
        raise DataError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
    if task != "auto":
        return task
    if y.dtype.kind in "iubUSO":
        return "classification"
    return "classification" if y.ndim == 1 and np.all(np.isfinite(y)) and np.all(y == np.round(y)) else "regression"
