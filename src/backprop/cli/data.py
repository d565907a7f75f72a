"""Data sets for the command line: the embedded default (scikit-learn's digits) and user files.

A user file is a ``.npz`` with arrays ``X`` (n × features) and ``y`` (n or n × outputs), or a
``.csv`` of numbers with the target in the last column (an optional header row of names is skipped);
a CSV target column of text (class names such as ``cat``, ``dog``) is read as strings.
Every problem with a file is a `DataError` (a ValueError) with one clear line.
"""

from __future__ import annotations

import os
import warnings
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


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _read_csv(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) of a CSV file (UTF-8, an optional byte-order mark), by NumPy's reader: X the numbers of
    every column but the last, y the last column, as numbers, or as strings (class names) when none
    of its cells is a number.

    The first row is a header when every cell of it is a name (non-empty, not a number); any other
    cell that is not a number (a missing value, ``NA``, a typo) is a `DataError` naming its line and
    column, never a silently dropped row -- in the target column too, where numbers and text mix.
    """
    try:
        with open(path, encoding="utf-8-sig") as f:
            first = next((i, line) for i, line in enumerate(f, start=1) if line.strip())
    except StopIteration:
        raise DataError(f"{path}: the file is empty") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    cells = [cell.strip() for cell in first[1].split(",")]
    header = all(cell and not _is_number(cell) for cell in cells)
    skiprows, start = (first[0], first[0] + 1) if header else (0, 1)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "loadtxt: input contained no data")  # reported below
            table = np.loadtxt(path, delimiter=",", skiprows=skiprows, encoding="utf-8-sig", dtype=np.float64, ndmin=2)
    except ValueError:
        text_target = _read_text_target(path, skiprows, start)
        if text_target is None:  # a bad feature cell or a ragged line first, then one in the target column
            _raise_first_bad_cell(path, start, numeric_columns=len(cells) - 1)
            _raise_first_bad_cell(path, start)
            raise
        return text_target
    if table.shape[0] == 0:
        raise DataError(f"{path}: the file has a header but no data rows")
    if table.shape[1] < 2:
        raise DataError(f"{path}: needs at least 2 columns (features, then the target in the last column)")
    return table[:, :-1], table[:, -1]


def _read_text_target(path: str, skiprows: int, start: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(X, y) of a CSV whose last column is text (no cell of it a number: class names) and whose
    other columns are numbers, y as strings; None when the file is not of that kind (ragged rows, a
    target that mixes numbers and text), for the numeric reader's error.  A feature cell that is not
    a number is the same `DataError` as in an all-numeric file."""
    try:
        cells = np.loadtxt(
            path, delimiter=",", skiprows=skiprows, encoding="utf-8-sig", dtype=str, ndmin=2, quotechar='"'
        )
    except ValueError:
        return None
    cells = np.char.strip(cells)
    if cells.shape[0] == 0 or cells.shape[1] < 2 or any(_is_number(cell) for cell in cells[:, -1]):
        return None
    try:
        return cells[:, :-1].astype(np.float64), cells[:, -1]
    except ValueError:
        _raise_first_bad_cell(path, start, numeric_columns=cells.shape[1] - 1)
        raise


def _raise_first_bad_cell(path: str, start: int, numeric_columns: int | None = None) -> None:
    """A DataError naming the first cell from line ``start`` on that is not a number (among the first
    ``numeric_columns`` columns of each line; None: all), or the first line whose number of columns
    differs from the first data line's."""
    width = None
    with open(path, encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, start=1):
            if lineno < start or not line.strip():
                continue
            cells = line.rstrip("\r\n").split(",")
            for column, cell in enumerate(cells[:numeric_columns], start=1):
                if not _is_number(cell):
                    raise DataError(f"{path}: line {lineno}, column {column}: {cell.strip()!r} is not a number")
            width = width or len(cells)
            if len(cells) != width:
                raise DataError(f"{path}: line {lineno} has {len(cells)} columns, expected {width}")


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
        X, y = _read_csv(path)
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
    """classification when y holds labels (integers or strings), else regression (unless ``task`` says).

    The rule: strings, integers, and a 1-D float target whose values are all whole numbers are class
    labels; any other numeric target is regression.  A regression target of whole numbers (counts,
    scores such as scikit-learn's diabetes) is therefore guessed as classification; `backprop train`
    reports such a guess that cannot be split by class (a "class" with a single row) in one line that
    points to ``--task regression``, rather than guessing from how many classes there are.
    """
    if task not in TASKS:
        raise DataError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
    if task != "auto":
        return task
    if y.dtype.kind in "iubUSO":
        return "classification"
    return "classification" if y.ndim == 1 and np.all(np.isfinite(y)) and np.all(y == np.round(y)) else "regression"
