"""The backend shim: picks an array library, a device and a dtype, and fills the standard's gaps.

``get_backend()`` reads ``BACKPROP_BACKEND`` (numpy, cupy, jax, torch, array_api_strict; default numpy),
``BACKPROP_DEVICE`` (cpu, gpu, gpu:1, ...; default: the backend's default device) and
``BACKPROP_DTYPE`` (float32 or float64; default float32).  Each backend lives in its own module
here with ``probe()`` (why it is unusable, or None), ``load(device, dtype)`` and ``devices()``.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import os

from ._base import DTYPES, Backend, Generator, to_host

BACKENDS = ("numpy", "cupy", "jax", "torch", "array_api_strict")

__all__ = [
    "BACKENDS",
    "DTYPES",
    "Backend",
    "BackendUnavailableError",
    "Generator",
    "Probe",
    "available_backends",
    "get_backend",
    "one_call_logistic",
    "probe",
    "to_host",
]


class BackendUnavailableError(RuntimeError):
    """The backend's package is installed but cannot run here (e.g. CuPy without a GPU)."""


@dataclasses.dataclass(frozen=True)
class Probe:
    """Whether a backend is usable here (``available``) and, if not, ``reason``."""

    name: str
    available: bool
    reason: str | None


def _check_name(name: str) -> str:
    name = str(name).strip().lower()
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; valid backends: {', '.join(BACKENDS)}")
    return name


def _module(name: str):
    return importlib.import_module(f"{__name__}.{name}")


def probe(name: str) -> Probe:
    """Say whether backend ``name`` can be used here and, if not, why (never raises for a known name)."""
    name = _check_name(name)
    reason = _module(name).probe()
    return Probe(name, reason is None, reason)


def available_backends() -> list[str]:
    """The names of the backends usable on this machine, in `BACKENDS` order."""
    return [name for name in BACKENDS if probe(name).available]


def get_backend(name: str | None = None, device: str | None = None, dtype: str | None = None) -> Backend:
    """The backend ``name`` on ``device`` computing in ``dtype``; None reads the environment.

    Raises ValueError for an unknown backend, device or dtype (listing the valid ones),
    ImportError naming the pip extra when the backend's package is missing, and
    BackendUnavailableError when it is installed but cannot run here.
    """
    if isinstance(name, Backend):
        return name
    name = _check_name(name or os.environ.get("BACKPROP_BACKEND") or "numpy")
    device = device or os.environ.get("BACKPROP_DEVICE") or None
    dtype = str(dtype or os.environ.get("BACKPROP_DTYPE") or "float32").strip().lower()
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; valid dtypes: {', '.join(DTYPES)}")
    return _load(name, device, dtype)


@functools.cache
def _load(name: str, device: str | None, dtype: str) -> Backend:
    module = _module(name)
    reason = module.probe()
    if reason is not None:
        if importlib.util.find_spec(module.PACKAGE) is None:
            raise ImportError(f"backend {name!r} is unavailable: {reason}")
        raise BackendUnavailableError(f"backend {name!r} is unavailable: {reason}")
    return module.load(device, dtype)


@functools.lru_cache(maxsize=len(BACKENDS))
def one_call_logistic_derivative(lib):
    """``kernel(D, H)``: δ ⊙= h (1 − h), the logistic's derivative from its output, as one call
    that writes into D, for the array library ``lib``; None where the backend's module names none
    (``logistic_derivative()``: torch's ``sigmoid_backward``), and the three elementwise calls run."""
    name = getattr(lib, "__name__", None)
    loader = getattr(_module(name), "logistic_derivative", None) if name in BACKENDS else None
    return loader() if loader is not None else None


@functools.lru_cache(maxsize=len(BACKENDS))
def one_call_logistic(lib) -> tuple:
    """``(expit, most)``: the logistic sigmoid 1 / (1 + e^(−z)) as one call that writes into
    ``out=``, for the array library ``lib`` (the numpy or cupy module, torch's `InPlace`), and the largest array (in
    entries) on which it beats four elementwise calls; (None, -1) where the library has none.  The
    backend's module names it with ``logistic()``: SciPy's expit on NumPy, for small arrays only
    (it is not vectorised); cupyx's on CuPy, torch.sigmoid on torch, one kernel at every size."""
    name = getattr(lib, "__name__", None)
    loader = getattr(_module(name), "logistic", None) if name in BACKENDS else None
    return loader() if loader is not None else (None, -1)
