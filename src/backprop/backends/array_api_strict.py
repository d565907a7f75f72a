"""array_api_strict: the standard's strict reference implementation (CPU, via NumPy).

Running the core on it proves that the core uses nothing outside the array API standard.
"""

from __future__ import annotations

import numpy as np

from ._base import Backend, parse_device

PACKAGE = "array_api_strict"


def probe() -> str | None:
    try:
        import array_api_strict  # noqa: F401
    except ImportError:
        return 'array_api_strict is not installed: pip install "backprop[test]"'
    return None


def load(device: str | None, dtype: str) -> Backend:
    import array_api_strict as xp

    parse_device(device or "cpu", ("cpu",), "array_api_strict", single=True)
    cpu = xp.Device("CPU_DEVICE")
    return Backend(
        name="array_api_strict",
        xp=xp,
        device=cpu,
        device_name="cpu",
        dtype=getattr(xp, dtype),
        dtype_name=dtype,
        array_type=type(xp.asarray(0.0)),
        _to_device=lambda host, device: xp.asarray(host, device=device),
        _to_numpy=lambda x: np.asarray(x),
    )


def devices() -> list[str]:
    return ["cpu"]
