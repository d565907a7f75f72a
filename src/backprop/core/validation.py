"""Input checks: every public entry point turns bad input into a ValueError/TypeError naming the problem.

The checks run once per call of a public function, never inside the compiled training step.
Arrays of any backend, lists, pandas objects (nullable dtypes such as Float64 too) and scipy.sparse
matrices (densified) are accepted and moved to the namespace ``xp`` and the device/dtype of
``like`` (a parameter array).
"""

from __future__ import annotations

import numbers
import sys
from typing import Any

import numpy as np
from array_api_compat import array_namespace
from array_api_compat import device as device_of

from ..backends import to_host
from .losses import one_hot


def _native(x: Any, xp) -> bool:
    try:
        return array_namespace(x) is xp
    except TypeError:
        return False


def _from_pandas(x: Any, name: str) -> np.ndarray | None:
    """A pandas object with nullable numeric columns (Float64, Int64, boolean...) as a NumPy array of
    their NumPy dtypes; None for any other object.  ValueError when it holds missing values (pd.NA)."""
    if not type(x).__module__.startswith("pandas") or not hasattr(x, "isna"):
        return None
    dtypes = list(x.dtypes) if hasattr(x, "columns") else [x.dtype]
    numpy_dtypes = [getattr(d, "numpy_dtype", d) for d in dtypes]
    if all(isinstance(d, np.dtype) for d in dtypes) or not all(isinstance(d, np.dtype) for d in numpy_dtypes):
        return None  # plain NumPy columns, or other extension dtypes (strings, categories): as NumPy reads them
    if bool(np.asarray(x.isna()).any()):
        raise ValueError(f"{name} has missing values (pandas NA); fill or drop them first")
    return x.to_numpy(dtype=np.result_type(*numpy_dtypes))


def is_sparse(x: Any) -> bool:
    """Whether ``x`` is a scipy.sparse matrix or array (never when scipy.sparse has not been imported)."""
    sparse = sys.modules.get("scipy.sparse")
    return sparse is not None and sparse.issparse(x)


def _host_view(x: Any, name: str) -> np.ndarray:
    if is_sparse(x):
        return x.toarray()
    host = _from_pandas(x, name)
    if host is not None:
        return host
    try:
        return to_host(x)
    except Exception as exc:
        raise TypeError(f"{name} could not be read as an array ({type(exc).__name__}: {exc})") from None


def host_array(x: Any, name: str = "input") -> np.ndarray:
    """``x`` (a NumPy array, list, pandas object, scipy.sparse matrix, any backend's array) as a NumPy array."""
    return _host_view(x, name)


def whole_number(value: Any, name: str, minimum: int) -> int:
    """``value`` as an int: a Python or NumPy integer (not a bool) >= ``minimum``; else ValueError naming ``name``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def array_dtype(x: Any, name: str = "input") -> np.dtype:
    """The NumPy dtype matching ``x``'s (for any backend's array, list or pandas object)."""
    dtype = getattr(x, "dtype", None)
    if dtype is not None:
        try:
            return np.dtype(getattr(dtype, "_np_dtype", dtype))
        except TypeError:
            pass
    return _host_view(x, name).dtype


def to_namespace(x: Any, xp, like, dtype=None):
    """``x`` as an ``xp`` array on ``like``'s device (in ``dtype`` when given)."""
    if _native(x, xp):
        return x if dtype is None or x.dtype == dtype else xp.astype(x, dtype)
    host = _host_view(x, "input")
    return xp.asarray(host, dtype=dtype, device=device_of(like))


def check_finite(xp, a, name: str) -> None:
    """Raise ValueError when ``a`` holds NaN or ±inf."""
    if not bool(xp.all(xp.isfinite(a))):
        raise ValueError(f"{name} contains NaN or infinity")


def check_converted(xp, a, source: Any, name: str) -> None:
    """Raise ValueError when ``a``, ``source`` converted to the backend's dtype, holds NaN or ±inf:
    that ``name`` has values too large for that dtype when ``source`` itself is finite (the
    conversion overflowed, e.g. float64 1e39 in float32), else that it contains NaN or infinity."""
    try:
        check_finite(xp, a, name)
    except ValueError:
        dtype = array_dtype(a)
        if array_dtype(source, name) != dtype and np.isfinite(_host_view(source, name)).all():
            remedy = "rescale it" if dtype.itemsize >= 8 else "rescale it or use BACKPROP_DTYPE=float64"
            raise ValueError(f"{name} has values too large for {dtype} (the backend's dtype); {remedy}") from None
        raise


def to_dtype(x: Any, xp, like, name: str):
    """``to_namespace(x, xp, like, like.dtype)``, checked by `check_converted` (values that overflow
    the dtype in the conversion are refused, not turned into ±inf)."""
    with np.errstate(over="ignore"):  # the overflow is reported by the check below
        a = to_namespace(x, xp, like, like.dtype)
    check_converted(xp, a, x, name)
    return a


def _shape(x: Any, name: str) -> tuple[int, ...]:
    shape = getattr(x, "shape", None)
    return tuple(shape) if shape is not None else _host_view(x, name).shape


def check_float_kind(kind: str, name: str, dtype: Any) -> None:
    """Raise TypeError unless ``kind`` (NumPy's dtype kind letter) is real floating."""
    if kind == "c":
        raise TypeError(f"{name} must be real-valued, got complex dtype {dtype}")
    if kind != "f":
        raise TypeError(
            f"{name} must be a floating-point array, got dtype {dtype}; convert it first, e.g. {name}.astype('float32')"
        )


def matrix_metadata(X: Any, n_columns: int | None = None, name: str = "X") -> np.dtype:
    """Check what ``X``'s metadata tell: 2-D (n_samples, n_features), ≥ 1 row, ``n_columns``
    columns, a real floating dtype (which it returns).  Its values are not read."""
    shape = _shape(X, name)
    if len(shape) != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got {len(shape)}-D shape {shape}")
    if shape[0] == 0:
        raise ValueError(f"{name} has 0 samples; at least one is needed")
    if n_columns is not None and shape[1] != n_columns:
        raise ValueError(f"{name} has {shape[1]} features, but the network expects {n_columns}")
    dtype = array_dtype(X, name)
    check_float_kind(dtype.kind, name, dtype)
    return dtype


def as_matrix(X: Any, xp, like, n_columns: int | None = None, name: str = "X"):
    """``X`` checked as a finite, floating, 2-D (n_samples, n_features) array with ≥ 1 row."""
    matrix_metadata(X, n_columns, name)
    return to_dtype(X, xp, like, name)


def targets_metadata(loss, y: Any, n_samples: int, n_outputs: int, name: str = "y") -> tuple[tuple, bool]:
    """Check what ``y``'s metadata tell for ``loss`` (see `as_targets`): ((n_samples, n_outputs),
    False) for target rows, (shape, True) for integer class labels; their values are not read."""
    shape = _shape(y, name)
    if len(shape) not in (1, 2):
        raise ValueError(f"{name} must be 1-D or 2-D, got {len(shape)}-D shape {shape}")
    if shape[0] != n_samples:
        raise ValueError(f"X and {name} have different lengths: {n_samples} samples in X, {shape[0]} in {name}")
    dtype = array_dtype(y, name)
    kind = dtype.kind
    if loss.name == "softmax_cross_entropy" and len(shape) == 1:
        if kind not in "iu":
            raise TypeError(f"{name} must hold integer class labels for softmax_cross_entropy, got dtype {dtype}")
        return shape, True
    if len(shape) == 1:
        if n_outputs != 1:
            raise ValueError(
                f"{name} is 1-D but the network has {n_outputs} outputs; pass shape ({n_samples}, {n_outputs})"
            )
        shape = (n_samples, 1)
    elif shape[1] != n_outputs:
        raise ValueError(f"{name} has {shape[1]} columns, but the network has {n_outputs} outputs")
    if loss.name == "squared_error" or kind == "c":
        check_float_kind(kind, name, dtype)
    elif kind not in "fiub":
        raise TypeError(f"{name} must be numeric for {loss.name}, got dtype {dtype}")
    return shape, False


def check_label_range(labels, n_classes: int, xp, name: str = "y") -> None:
    """Raise ValueError unless every integer label lies in 0..n_classes − 1."""
    if xp is np and labels.dtype.kind in "iu" and labels.size:  # one reduction: as unsigned, a negative label is huge
        if int(labels.view(labels.dtype.str.replace("i", "u")).max()) < n_classes:
            return
    low, high = int(xp.min(labels)), int(xp.max(labels))
    if low < 0 or high >= n_classes:
        raise ValueError(
            f"{name} has labels out of range [{low}, {high}]; the network has {n_classes} classes 0..{n_classes - 1}"
        )


def as_targets(loss, y: Any, n_samples: int, n_outputs: int, xp, like, name: str = "y"):
    """``y`` checked and encoded as an (n_samples, n_outputs) float array for ``loss``.

    squared_error: floats; binary_cross_entropy: values in [0, 1] (bool/int 0/1 accepted);
    softmax_cross_entropy: integer labels in [0, n_outputs) (1-D) or rows of class probabilities.
    A 1-D y stands for one output column (or for labels with softmax_cross_entropy).
    """
    shape, labels = targets_metadata(loss, y, n_samples, n_outputs, name)
    if labels:
        # the range is checked on the host for host data: moving int64 labels to a backend
        # without 64-bit integers (JAX without x64) would wrap out-of-range labels into range
        host = None if _native(y, xp) else _host_view(y, name)
        check_label_range(y if host is None else host, n_outputs, xp if host is None else np, name)
        return one_hot(xp, to_namespace(y if host is None else host, xp, like), n_outputs, like.dtype)
    Y = xp.reshape(to_dtype(y, xp, like, name), shape)
    if loss.name != "squared_error" and not bool(xp.all((Y >= 0) & (Y <= 1))):
        raise ValueError(f"{name} must lie in [0, 1] for {loss.name}")
    if loss.name == "softmax_cross_entropy":
        rows = xp.sum(Y, axis=1)
        if not bool(xp.all(xp.abs(rows - 1.0) <= 1e-3)):
            raise ValueError(f"each row of a 2-D {name} must sum to 1 (one-hot or class probabilities)")
    return Y
