"""NumPy on the CPU, through array-api-compat's standard-conforming ``numpy`` namespace."""

from __future__ import annotations

import numpy as np

from ._base import Backend, parse_device

PACKAGE = "numpy"


def probe() -> str | None:
    """None when usable here, else the reason it is not."""
    try:
        import array_api_compat.numpy  # noqa: F401
    except ImportError as exc:  # pragma: no cover - a core dependency
        return f"array-api-compat is not importable ({exc}); reinstall backprop"
    return None


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
