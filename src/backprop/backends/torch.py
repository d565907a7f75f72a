"""PyTorch (CPU, CUDA or Apple's MPS) through array-api-compat's ``torch`` namespace.

Tensors in, tensors out: the core computes with ``array_api_compat.torch``; NumPy data are moved
to the device per batch, as on the other backends, and the seeded initial weights are drawn on the
host (`backprop.backends.Generator`), so a seed gives the same weights as on NumPy.  Device names:
``cpu``, ``cuda``/``cuda:N`` (``gpu``/``gpu:N`` are accepted as the same), ``mps``; by default the
first CUDA GPU where there is one, else the CPU.

The fused step (`backprop.training.fused`) writes into preallocated tensors through `InPlace`, a
small namespace that gives torch the NumPy names and calling conventions that the in-place forms
use (``lib.dot(a, b, out=)`` for every pairing of 1-D and 2-D operands, ``lib.copyto``, ``axis=``,
``np.intp``...), each mapped onto the torch function that writes into ``out=``.
"""

from __future__ import annotations

import copy
import math
import re

import numpy as np

from ._base import Backend

PACKAGE = "torch"
_DEVICE_RE = re.compile(r"^(cpu|cuda|gpu|mps)(?::(\d+))?$")
_VALID = "'cpu', 'cuda', 'cuda:N' (or 'gpu', 'gpu:N'), 'mps'"


def probe() -> str | None:
    """None when usable here, else the reason it is not."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return 'PyTorch is not installed: pip install "backprop[torch]"'
    except Exception as exc:  # a broken install (a missing shared library...)
        return f"PyTorch is installed but cannot be imported ({type(exc).__name__}: {exc})"
    try:
        import array_api_compat.torch  # noqa: F401
    except ImportError as exc:  # pragma: no cover - array-api-compat is a core dependency
        return f"array-api-compat has no torch namespace ({exc}); upgrade array-api-compat"
    return None


def parse_device(name: str) -> tuple[str, int]:
    """``("cpu", 0)``, ``("cuda", N)`` or ``("mps", 0)`` for a device name; ValueError naming the valid forms."""
    match = _DEVICE_RE.match(str(name).strip().lower())
    if match is None or (match.group(1) in ("cpu", "mps") and int(match.group(2) or 0) != 0):
        raise ValueError(f"unknown device {name!r} for backend 'torch'; valid devices: {_VALID}")
    kind = "cuda" if match.group(1) == "gpu" else match.group(1)
    return kind, int(match.group(2) or 0)


def _device(torch, name: str | None):
    """The torch.device called ``name``, checked to exist here; None: the first CUDA GPU where torch
    sees one, else the CPU (as JAX picks its accelerator; MPS is used only when named: it has no float64)."""
    kind, index = parse_device(name or ("cuda" if torch.cuda.is_available() else "cpu"))
    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {name!r}: this PyTorch sees no CUDA GPU (torch {torch.__version__})")
        if index >= count:
            raise ValueError(
                f"device 'cuda:{index}' does not exist: PyTorch sees {count} GPU(s), cuda:0..cuda:{count - 1}"
            )
        return torch.device("cuda", index), f"cuda:{index}"
    if kind == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError("device 'mps': this PyTorch has no usable Apple MPS device")
        return torch.device("mps"), "mps"
    return torch.device("cpu"), "cpu"


def logistic():
    """(expit, most): the logistic σ as one call that writes into ``out=`` (``torch.sigmoid``, one
    kernel at every size), see `backprop.backends.one_call_logistic`."""
    import torch

    return torch.sigmoid, math.inf


def logistic_derivative():
    """δ ⊙= h (1 − h) in one kernel (aten's ``sigmoid_backward``, written into δ), see
    `backprop.backends.one_call_logistic_derivative`."""
    import torch

    kernel = torch.ops.aten.sigmoid_backward.grad_input
    return lambda D, H: kernel(D, H, grad_input=D)


class InPlace:
    """torch under the NumPy names of the functions the fused step's in-place forms call, on one
    device: each writes into ``out=`` where given.  ``__name__`` is "torch", so
    `backprop.backends.one_call_logistic` finds `logistic`."""

    __name__ = "torch"
    MAX_FROM = 2048  # entries from which `argmax` takes torch.max's indices (``max_indices``)
    NARROW_ROWS = 1024  # rows from which `dot` computes Aᵀ B of a narrow output as (Bᵀ A)ᵀ (``narrow_dot``)
    places_arrays = True  # every array is made on ``device`` here: the fused step enters no device context
    # Ways to compute the same values, each taken where it measured faster: on the CPU (MKL) all of
    # them; on a GPU none has been measured yet, so none is taken there (docs/benchmarks.md).
    # `choose` gives a copy with some of them set, to time one against the other
    # (`backprop.bench.choices`, ``backprop bench --choices``):
    #   bias_in_products  the fused step's products take the bias in a column of ones ([H 1] Θ,
    #                     [H 1]ᵀ δ) instead of the products of H alone and the bias passes
    #                     (`backprop.training.fused`)
    #   host_scalars      the finiteness test reads its 0-d results as Python numbers (no wait on the
    #                     CPU, where arithmetic on 0-d tensors costs more; on a GPU each read waits)
    #   max_indices       `argmax` takes torch.max's indices from `MAX_FROM` entries on
    #   narrow_dot        `dot` computes a narrow Aᵀ B the other way round from `NARROW_ROWS` rows on
    CHOICES = ("bias_in_products", "host_scalars", "max_indices", "narrow_dot")

    def __init__(self, torch, device):
        self.torch, self.device = torch, device
        on_cpu = device.type == "cpu"
        self._choose(**dict.fromkeys(self.CHOICES, on_cpu))
        self.float32, self.float64, self.intp, self.bool_ = torch.float32, torch.float64, torch.int64, torch.bool
        # the same calls under NumPy's names (a tensor first, or a scalar that torch accepts there)
        self.add, self.subtract, self.multiply, self.divide = torch.add, torch.sub, torch.mul, torch.div
        self.negative, self.exp, self.log, self.sqrt, self.tanh = (
            torch.neg,
            torch.exp,
            torch.log,
            torch.sqrt,
            torch.tanh,
        )
        self.greater, self.equal, self.isfinite, self.matmul = torch.gt, torch.eq, torch.isfinite, torch.matmul

    def __repr__(self) -> str:
        return f"InPlace(torch {self.torch.__version__}, {self.device})"

    def _choose(self, bias_in_products: bool, host_scalars: bool, max_indices: bool, narrow_dot: bool) -> None:
        self.bias_in_products, self.host_scalars = bias_in_products, host_scalars
        self.max_indices, self.narrow_dot = max_indices, narrow_dot
        self._max_from = self.MAX_FROM if max_indices else math.inf  # see `argmax`
        self._narrow_rows = self.NARROW_ROWS if narrow_dot else math.inf  # see `dot`

    def choices(self) -> dict[str, bool]:
        """{choice: whether it is taken here}, for every name in `CHOICES`."""
        return {name: getattr(self, name) for name in self.CHOICES}

    def choose(self, **choices: bool) -> InPlace:
        """A copy of this namespace with the named `CHOICES` set (the others as here); a step made
        on it computes the same values the other way.  ValueError for a name not in `CHOICES`."""
        unknown = sorted(set(choices) - set(self.CHOICES))
        if unknown:
            raise ValueError(f"unknown choice(s) {', '.join(map(repr, unknown))}; valid: {', '.join(self.CHOICES)}")
        other = copy.copy(self)
        other._choose(**{**self.choices(), **{name: bool(on) for name, on in choices.items()}})
        return other

    def dtype(self, name):
        """The torch dtype called ``name`` ("float32", "float64"), or ``name`` if it is one."""
        return getattr(self.torch, name) if isinstance(name, str) else name

    def _dtype(self, dtype):
        if dtype is None:
            return None
        if dtype is bool or dtype is np.bool_:
            return self.torch.bool
        if dtype is np.intp:
            return self.intp
        return self.dtype(dtype) if isinstance(dtype, str) else dtype

    def empty(self, shape, dtype=None):
        return self.torch.empty(shape, dtype=self._dtype(dtype), device=self.device)

    def zeros(self, shape, dtype=None):
        return self.torch.zeros(shape, dtype=self._dtype(dtype), device=self.device)

    def ones(self, shape, dtype=None):
        return self.torch.ones(shape, dtype=self._dtype(dtype), device=self.device)

    def arange(self, n, dtype=None):
        return self.torch.arange(n, dtype=self._dtype(dtype), device=self.device)

    def empty_like(self, a):
        return self.torch.empty_like(a)

    def asarray(self, a, dtype=None):
        """``a`` (a number, NumPy scalar or array, or a tensor) as a tensor on the device."""
        if isinstance(a, np.generic):
            a = a.item() if dtype is not None else np.asarray(a)
        if isinstance(a, np.ndarray):
            dtype = dtype if dtype is not None else getattr(self.torch, a.dtype.name)
        return self.torch.as_tensor(a, dtype=self._dtype(dtype), device=self.device)

    def maximum(self, a, b):
        """max(a, b) for a tensor ``a`` and a number ``b``."""
        return self.torch.clamp(a, min=b)

    def copyto(self, dst, src):
        dst.copy_(src)

    def dot(self, a, b, out=None):
        """NumPy's dot for 1-D and 2-D operands: mm, mv (either side) or dot, into ``out``.

        With ``narrow_dot`` (on the CPU), a product Aᵀ B (``a`` a transposed view) with a narrow
        output, 2 to 15 columns, summed over `NARROW_ROWS` rows or more, is computed the other way
        round, Bᵀ A, and copied transposed into ``out``, which MKL runs faster (the output layer's
        dΘ = [H 1]ᵀ δ of a classifier; docs/benchmarks.md)."""
        torch = self.torch
        if a.ndim == 2:
            if b.ndim != 2:
                return torch.mv(a, b, out=out)
            if out is not None and 2 <= out.shape[1] < 16 and self._narrow_rows <= a.shape[1] and a.stride(0) == 1:
                return out.copy_(torch.mm(b.T, a.T).T)
            return torch.mm(a, b, out=out)
        if b.ndim == 2:
            return torch.mv(b.T, a, out=out)
        return torch.dot(a, b, out=out)

    def vdot(self, a, b):
        """Σ a ⊙ b over every entry (a 0-d tensor), for contiguous a and b of any shape."""
        return self.torch.dot(a.reshape(-1), b.reshape(-1))

    def max(self, a, axis=None, keepdims=False):
        return self.torch.amax(a) if axis is None else self.torch.amax(a, dim=axis, keepdim=keepdims)

    def argmax(self, a, axis, out=None):
        """The index of the first largest entry along ``axis``: with ``max_indices`` (on the CPU),
        from `MAX_FROM` entries on, the indices of ``torch.max``, whose reduction along rows runs
        faster than ``argmax``'s there (below, ``argmax`` is the faster one; docs/benchmarks.md)."""
        if self._max_from <= a.numel():
            return self.torch.max(a, dim=axis, out=(self.torch.empty(0, dtype=a.dtype, device=a.device), out))[1]
        return self.torch.argmax(a, dim=axis, out=out)

    def count_nonzero(self, a):
        return self.torch.count_nonzero(a)

    def take(self, a, index, axis, out=None):
        return self.torch.index_select(a, axis, index, out=out)


_INPLACE: dict = {}


def inplace(torch, device) -> InPlace:
    """The one `InPlace` of ``device`` (one per device, so caches keyed on it stay small)."""
    key = str(device)
    if key not in _INPLACE:
        _INPLACE[key] = InPlace(torch, device)
    return _INPLACE[key]


def _from_host(torch, host: np.ndarray, device):
    """A NumPy array as a tensor on ``device`` (on the CPU sharing its memory where torch can)."""
    if not host.flags.writeable or any(s < 0 for s in host.strides):  # torch shares writable, forward strides
        host = host.copy()
    if host.dtype.kind == "u" and host.dtype != np.uint8:  # torch's wider unsigned types lack most ops
        host = host.astype(np.int64)
    tensor = torch.from_numpy(host)
    return tensor if device.type == "cpu" else tensor.to(device)


def _to_numpy(x) -> np.ndarray:
    """A tensor's values as a NumPy array (what is already on the host, as NumPy reads it)."""
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def load(device: str | None, dtype: str) -> Backend:
    import array_api_compat.torch as xp
    import torch

    dev, name = _device(torch, device)

    def synchronize(*arrays):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        elif dev.type == "mps":
            torch.mps.synchronize()

    return Backend(
        name="torch",
        xp=xp,
        device=dev,
        device_name=name,
        dtype=getattr(torch, dtype),
        dtype_name=dtype,
        array_type=torch.Tensor,
        _to_device=lambda host, device: _from_host(torch, host, device),
        _to_numpy=_to_numpy,
        _synchronize=synchronize if dev.type != "cpu" else None,
        inplace=inplace(torch, dev),
    )


def devices() -> list[str]:
    import torch

    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        found.append("mps")
    return found


def details() -> dict:
    """What `backprop info` reports of torch: its version, CUDA version and CPU threads."""
    import torch

    return {
        "version": torch.__version__,
        "cuda": torch.version.cuda,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
    }
