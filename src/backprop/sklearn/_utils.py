"""Small helpers of the estimators: inputs from any array library, the random state, host copies."""

from __future__ import annotations

import functools
import numbers

import numpy as np
from sklearn.utils import check_random_state

from ..backends import to_host
from ..core.tree import tree_map
from ..core.validation import is_sparse

_FLOAT_DTYPES = (np.float64, np.float32)


def _host_input(a):
    """Arrays of another array library (CuPy, JAX, array_api_strict) as NumPy; others unchanged."""
    if a is not None and not isinstance(a, np.ndarray) and hasattr(a, "__array_namespace__"):
        return to_host(a)
    return a


def _as_dtype(a, dtype: str, name: str):
    """The validated (finite) host array ``a`` in the network's ``dtype``; a scipy.sparse matrix
    stays sparse (its stored values converted).  ValueError when its values are too large for that
    dtype (e.g. float64 1e39 in float32), naming the remedy."""
    if is_sparse(a):
        if a.dtype == dtype:
            return a
        _as_dtype(a.data, dtype, name)  # the check
        return a.astype(dtype)
    with np.errstate(over="ignore"):  # the overflow is reported by the check
        converted = np.asarray(a, dtype=dtype)
    if converted.dtype != a.dtype and not np.isfinite(converted).all():
        # only a conversion can make the finite values of ``a`` overflow
        raise ValueError(
            f"{name} has values too large for {converted.dtype} (the network's dtype); rescale it or train in "
            "float64 (dtype='float64', or dtype=None with float64 X)"
        )
    return converted


CHUNK_BYTES = 1 << 23  # rows of a sparse X are densified (predict, L-BFGS) in chunks of at most 8 MiB


def _chunk_rows(X, itemsize: int) -> int:
    """How many rows of X are densified at a time: those of at most CHUNK_BYTES (at least one)."""
    return max(1, CHUNK_BYTES // max(1, X.shape[1] * itemsize))


def _random_state(estimator):
    """``check_random_state(estimator.random_state)``, draw for draw.

    An integer seed's generator is restored from the state saved at its first seeding instead of
    seeded anew on every call (see docs/benchmarks.md); None and a caller's RandomState are
    returned by check_random_state as they are.
    """
    seed = estimator.random_state
    if not isinstance(seed, numbers.Integral):
        return check_random_state(seed)
    saved = estimator.__dict__.get("_seeded")
    if saved is None or saved[0] != seed:
        generator = check_random_state(seed)
        estimator._seeded = (seed, generator, generator.get_state())
        return generator
    _, generator, state = saved  # this estimator's own generator, never the caller's
    generator.set_state(state)
    return generator


@functools.lru_cache(maxsize=16)
def _param_names(cls) -> tuple[str, ...]:
    """The constructor parameters of an estimator class (scikit-learn inspects its signature anew on every call)."""
    return tuple(cls._get_param_names())


def _host_copy(backend, tree):
    """A tree of backend arrays (parameters, optimizer state) as writable NumPy copies: never a view
    of the trainer's buffers, which the fused step writes in place."""
    return tree_map(lambda a: np.array(backend.to_numpy(a), copy=True), tree)


def _host_params(backend, params) -> tuple[list, list]:
    """((W, b), ...) on the backend as (coefs, intercepts), lists of writable NumPy arrays."""
    host = _host_copy(backend, params)
    return [W for W, _ in host], [b for _, b in host]
