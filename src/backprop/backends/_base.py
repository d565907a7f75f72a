"""What every backend shares: the `Backend` record, device-name parsing and the seeded generator.

The array API standard gives the core its array functions; it has no random numbers, no
compilation, no device synchronisation and no way back to NumPy.  Those live here and in the
per-backend modules beside this one.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

import numpy as np
from array_api_compat import device as device_of

DTYPES = ("float32", "float64")

_DEVICE_RE = re.compile(r"^(cpu|gpu|tpu)(?::(\d+))?$")


def parse_device(name: str, kinds: tuple[str, ...], backend: str, single: bool = False) -> tuple[str, int]:
    """Split a device name such as ``"gpu:1"`` into ``("gpu", 1)``.

    Raises ValueError naming the valid forms when the name is malformed, of a kind that this
    backend cannot place arrays on, or (``single``: the backend has one device) indexed past 0.
    """
    valid = ", ".join(f"'{k}'" + ("" if single else f", '{k}:N'") for k in kinds)
    match = _DEVICE_RE.match(str(name).strip().lower())
    if match is None or match.group(1) not in kinds or (single and int(match.group(2) or 0) != 0):
        raise ValueError(f"unknown device {name!r} for backend {backend!r}; valid devices: {valid}")
    return match.group(1), int(match.group(2) or 0)


def to_host(x: Any) -> np.ndarray:
    """Any array (NumPy, CuPy, JAX, torch, array_api_strict), list or pandas object as a NumPy array."""
    if isinstance(x, np.ndarray):
        return x
    if type(x).__module__.startswith("cupy"):
        return x.get()
    if type(x).__module__.startswith("torch"):  # on the host, out of autograd, first (a CUDA tensor has no __array__)
        return x.detach().cpu().numpy()
    return np.asarray(x)


class Generator:
    """A seeded random-number generator that gives the same numbers on every backend.

    The numbers are drawn on the host with NumPy's PCG64 in float64, then rounded to the
    backend's dtype and moved to its device, so ``seed=0`` means the same initial weights on
    NumPy, CuPy, JAX and array_api_strict.
    """

    def __init__(self, backend: Backend, seed: int | None):
        self.backend = backend
        self.numpy = np.random.Generator(np.random.PCG64(seed))

    def normal(self, shape, mean: float = 0.0, std: float = 1.0):
        """Samples of N(mean, std²) with the given shape."""
        return self.backend.asarray(self.numpy.normal(mean, std, size=shape))

    def uniform(self, shape, low: float = 0.0, high: float = 1.0):
        """Samples of U[low, high) with the given shape."""
        return self.backend.asarray(self.numpy.uniform(low, high, size=shape))

    def permutation(self, n: int):
        """A random permutation of 0..n-1 as an int64 array on the device."""
        return self.backend.asarray(self.numpy.permutation(n))

    @property
    def state(self) -> dict:
        """The generator state as a JSON-serialisable dict (for checkpoints)."""
        return self.numpy.bit_generator.state

    @state.setter
    def state(self, value: dict) -> None:
        self.numpy.bit_generator.state = value


def _host_dtype(dtype) -> np.dtype:
    """The NumPy dtype of a dtype name or of an array library's dtype (``torch.float32`` → float32)."""
    try:
        return np.dtype(getattr(dtype, "_np_dtype", dtype))
    except TypeError:
        return np.dtype(str(dtype).rsplit(".", 1)[-1])


@dataclasses.dataclass(frozen=True, eq=False)
class Backend:
    """One array library on one device with one floating dtype.

    Attributes: ``name`` (``"numpy"``, ``"cupy"``, ``"jax"``, ``"torch"``, ``"array_api_strict"``), ``xp`` (the
    array-API namespace the core computes with), ``device`` (the library's device object),
    ``device_name`` (``"cpu"``, ``"gpu:0"``...), ``dtype`` (an ``xp`` dtype), ``dtype_name`` and
    ``array_type`` (the class of the backend's arrays).  ``inplace``: the array library whose
    functions write into ``out=`` arrays (numpy, cupy; on torch `backprop.backends.torch.InPlace`,
    torch under NumPy's names) for the fused step (`backprop.training.fused`),
    None where arrays are immutable (JAX) or the standard's functions are all there is.
    """

    name: str
    xp: Any
    device: Any
    device_name: str
    dtype: Any
    dtype_name: str
    array_type: type
    _to_device: Callable[[np.ndarray, Any], Any] = dataclasses.field(repr=False)
    _to_numpy: Callable[[Any], np.ndarray] = dataclasses.field(repr=False)
    _jit: Callable[..., Any] | None = dataclasses.field(default=None, repr=False)
    _synchronize: Callable[..., None] | None = dataclasses.field(default=None, repr=False)
    _select: Callable[[Any, Any, Any], Any] | None = dataclasses.field(default=None, repr=False)
    _specialize: Callable[..., Any] | None = dataclasses.field(default=None, repr=False)
    _move: Callable[[Any, Any], Any] | None = dataclasses.field(default=None, repr=False)
    inplace: Any = dataclasses.field(default=None, repr=False)

    def asarray(self, x: Any, dtype: Any = None):
        """``x`` as an array of this backend on its device.

        Floating data take the backend's dtype unless ``dtype`` (a name or an ``xp`` dtype) is
        given; integer, boolean and complex data keep their dtype.  Arrays of another backend,
        lists and pandas objects are accepted and moved through the host.
        """
        if self.is_native(x):
            if dtype is None and x.dtype == self.dtype and device_of(x) == self.device:
                return x
            if dtype is None and self.xp.isdtype(x.dtype, "real floating"):
                dtype = self.dtype
            elif isinstance(dtype, str):
                dtype = getattr(self.xp, dtype)
            if self._move is not None and device_of(x) != self.device:  # where xp.asarray cannot move it
                x = self._move(x, self.device)
            return self.xp.asarray(x, dtype=dtype, device=self.device)
        host = to_host(x)
        if dtype is None and host.dtype.kind == "f":
            dtype = self.dtype
        if dtype is not None:
            host = host.astype(_host_dtype(dtype), copy=False)
        return self._to_device(host, self.device)

    def is_native(self, x: Any) -> bool:
        """Whether ``x`` is already an array of this backend."""
        return isinstance(x, self.array_type)

    def to_numpy(self, x: Any) -> np.ndarray:
        """A NumPy array with the values of ``x`` (copied to the host when needed)."""
        return self._to_numpy(x)

    def rng(self, seed: int | None = 0) -> Generator:
        """A seeded generator (``normal``, ``uniform``, ``permutation``); see `Generator`."""
        return Generator(self, seed)

    def jit(self, fn: Callable, **kwargs) -> Callable:
        """``fn`` compiled where the backend can (``jax.jit(fn, **kwargs)`` on JAX), else ``fn``."""
        return fn if self._jit is None else self._jit(fn, **kwargs)

    def specialize(self, fn: Callable, *args: Any, **kwargs: Any) -> Callable | None:
        """``fn``, a `jit`-compiled function, compiled ahead of time for exactly these arguments
        (JAX's ``fn.lower(*args, **kwargs).compile()``; keyword arguments are ``fn``'s static ones):
        a callable of the positional arguments that refuses, with a TypeError or ValueError raised
        before anything runs, arguments of another structure, shape, dtype or device — a check made
        by the library itself, in compiled code, not per call in Python.  Arrays of another library
        may be converted by it (NumPy int64 into int32, say): callers pass only arrays of the
        types it was compiled with.  None where the backend compiles nothing."""
        return None if self._specialize is None else self._specialize(fn, *args, **kwargs)

    def select(self, pred: Any, if_true: Any, if_false: Any) -> Any:
        """``if_true`` where the 0-d boolean ``pred`` holds, else ``if_false`` (nested tuples of arrays).

        A Python branch where the backend runs eagerly; a branch-free ``where`` on JAX, so it
        can be compiled inside a step.
        """
        if self._select is not None:
            return self._select(pred, if_true, if_false)
        return if_true if bool(pred) else if_false

    def synchronize(self, *arrays: Any) -> None:
        """Block until the device has finished the work producing ``arrays`` (all work on CuPy)."""
        if self._synchronize is not None:
            self._synchronize(*arrays)

    def __repr__(self) -> str:
        return f"Backend(name={self.name!r}, device={self.device_name!r}, dtype={self.dtype_name!r})"
