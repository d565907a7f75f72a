"""NumPy on the CPU, through array-api-compat's standard-conforming ``numpy`` namespace."""

from __future__ import annotations

import numpy as np

from ._base import Backend, parse_device

PACKAGE = "numpy"
# SciPy's expit is not vectorised, but it is one call where the fused step's sigmoid makes four, each
# with its per-call overhead: up to this many entries it is the faster (docs/benchmarks.md, "one-call sigmoid").
LOGISTIC_MAX = 512


def probe() -> str | None:
    """None when usable here, else the reason it is not."""
    try:
        import array_api_compat.numpy  # noqa: F401
    except ImportError as exc:  # pragma: no cover - a core dependency
        return f"array-api-compat is not importable ({exc}); reinstall backprop"
    return None


def logistic():
    """(expit, most): the logistic σ as one ufunc that writes into ``out=``, and the largest array (in
    entries) for which it beats the fused step's four calls (see `backprop.backends.one_call_logistic`)."""
    from scipy.special import expit  # SciPy comes with scikit-learn, a dependency

    return expit, LOGISTIC_MAX


def load(device: str | None, dtype: str) -> Backend:
    import array_api_compat.numpy as xp

    parse_device(device or "cpu", ("cpu",), "numpy", single=True)
    return Backend(
        name="numpy",
        xp=xp,
        device="cpu",
        device_name="cpu",
        dtype=getattr(xp, dtype),
        dtype_name=dtype,
        array_type=np.ndarray,
        _to_device=lambda host, device: np.asarray(host),
        _to_numpy=np.asarray,
        inplace=np,
    )


def devices() -> list[str]:
    return ["cpu"]


def blas_info() -> list[dict]:
    """NumPy's BLAS libraries (name, version, kernel, threads) from threadpoolctl."""
    from threadpoolctl import threadpool_info

    return [
        {k: lib.get(k) for k in ("internal_api", "version", "architecture", "num_threads", "filepath")}
        for lib in threadpool_info()
        if lib.get("user_api") == "blas"
    ]
