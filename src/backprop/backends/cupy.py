"""CuPy on an NVIDIA GPU, through array-api-compat's ``cupy`` namespace."""

from __future__ import annotations

import math

from ._base import Backend, parse_device

PACKAGE = "cupy"


def _gpu_count() -> int:
    import cupy

    return cupy.cuda.runtime.getDeviceCount()


def probe() -> str | None:
    try:
        import cupy  # noqa: F401
    except ImportError:
        return 'CuPy is not installed: pip install "backprop[cupy]"'
    try:
        count = _gpu_count()
    except Exception as exc:  # CUDA driver/runtime missing or broken
        return f"CuPy is installed but no usable CUDA GPU was found ({type(exc).__name__}: {exc})"
    if count == 0:
        return "CuPy is installed but no CUDA GPU is visible"
    return None


def logistic():
    """(expit, most): the logistic σ as one ufunc that writes into ``out=``, and the largest array (in
    entries) for which it beats the fused step's four calls (see `backprop.backends.one_call_logistic`)."""
    from cupyx.scipy.special import expit

    return expit, math.inf  # one kernel launch instead of four, at every size


def load(device: str | None, dtype: str) -> Backend:
    import array_api_compat.cupy as xp
    import cupy

    _, index = parse_device(device or "gpu", ("gpu",), "cupy")
    count = _gpu_count()
    if index >= count:
        raise ValueError(f"device 'gpu:{index}' does not exist: CuPy sees {count} GPU(s), gpu:0..gpu:{count - 1}")
    gpu = cupy.cuda.Device(index)

    def to_device(host, device):
        with device:
            return cupy.asarray(host)

    def synchronize(*arrays):
        with gpu:
            cupy.cuda.get_current_stream().synchronize()

    return Backend(
        name="cupy",
        xp=xp,
        device=gpu,
        device_name=f"gpu:{index}",
        dtype=getattr(xp, dtype),
        dtype_name=dtype,
        array_type=cupy.ndarray,
        _to_device=to_device,
        _to_numpy=cupy.asnumpy,
        _synchronize=synchronize,
        inplace=cupy,
    )


def devices() -> list[str]:
    return [f"gpu:{i}" for i in range(_gpu_count())]
