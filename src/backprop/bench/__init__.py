"""Benchmarks of one training step: the grid, the contenders and the timer.

One place for what the pytest-benchmark suite in ``benchmarks/`` and ``backprop bench`` measure,
so the two cannot drift apart.  The subject is one full training step in float32 — forward,
hand-written backward, optimizer update — with the device synchronised inside the timed call.

The grid: `NETWORKS` × batch sizes (`CPU_BATCH_SIZES`, plus 8192 and 65536 on a GPU, see
`default_batch_sizes`) × backends.  Each cell is measured for several contenders, each a
callable that runs ONE step and synchronises (see `build`):

``backprop``
    the library's own compiled step, `backprop.training.trainer.Trainer.step`, fed back its own outputs
    (on JAX the parameters and optimizer state are donated, as in training).
``matmul_floor``
    only the matrix products that a step needs, into preallocated outputs where the backend
    allows (``out=`` on NumPy and CuPy; one ``jax.jit`` of just the products on JAX): per layer
    the forward H·W, the weight gradient Hᵀ·δ and, for every layer but the first, δ·Wᵀ.  It is
    what the BLAS (cuBLAS, XLA) sets as the limit; `step_flops` counts its FLOPs.
``jax_grad`` (JAX backends only)
    ``jax.jit`` of ``jax.value_and_grad`` of an independent JAX loss of the same network plus the
    same `backprop.optim` update, in float32 at the same matmul precision.
``torch`` (only when ``import torch`` works; never required)
    eager autograd and ``torch.optim`` on the same device, with the same initial weights, the
    same threads (CPU) and the same effective matmul precision.

`measure` warms every contender up (compilation), then times them interleaved, round after
round, until a time budget is spent, and reports the median round.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import gc
import importlib
import importlib.metadata
import math
import os
import platform
import statistics
import time
import tracemalloc
from typing import Any, Callable, Sequence

import numpy as np

from ..backends import BACKENDS, Backend, get_backend, probe, to_host
from ..gradcheck import reference_loss
from ..core.mlp import MLP

# -- the grid --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Network:
    """A benchmark network: an `MLP` configuration without regularisation (mean reduction)."""

    name: str
    layer_sizes: tuple
    activation: str
    output_activation: str | None
    loss: str
    sgd_lr: float = 0.01  # stable for thousands of steps on one batch (wide diverges at 0.01)

    def model(self) -> MLP:
        return MLP(list(self.layer_sizes), activation=self.activation,
                   output_activation=self.output_activation, loss=self.loss)

    @property
    def description(self) -> str:
        loss = "softmax CE" if self.loss == "softmax_cross_entropy" else self.loss.replace("_", " ")
        return f"{'-'.join(map(str, self.layer_sizes))} {self.activation}, {loss}"


NETWORKS: dict[str, Network] = {
    n.name: n
    for n in (
        Network("seed", (2, 3, 1), "sigmoid", "sigmoid", "squared_error"),
        Network("digits", (64, 128, 10), "sigmoid", None, "softmax_cross_entropy"),
        Network("mnist", (784, 512, 256, 10), "sigmoid", None, "softmax_cross_entropy"),
        Network("wide", (1024, 4096, 4096, 1024), "relu", None, "squared_error", sgd_lr=1e-4),
    )
}
CPU_BATCH_SIZES = (1, 2, 32, 256, 2048)
GPU_BATCH_SIZES = CPU_BATCH_SIZES + (8192, 65536)
CONTENDERS = ("backprop", "matmul_floor", "jax_grad", "torch")
OPTIMIZERS = ("sgd", "adam")
QUICK_NETWORKS = ("seed", "digits", "mnist")
QUICK_BATCH_SIZES = (1, 32, 256)
# Cells above this many FLOPs per step on a CPU are "huge" (wide at batch 2048: ~0.3 TFLOP, seconds
# per step); the pytest-benchmark suite skips them unless asked (--bench-huge / BACKPROP_BENCH_HUGE=1).
HUGE_CPU_FLOPS = 50e9


def step_flops(layer_sizes: Sequence[int], batch: int) -> int:
    """The matrix-product FLOPs of one training step of an MLP on ``batch`` rows.

    Per layer of fan_in × fan_out: the forward H·W, the weight gradient Hᵀ·δ and the input
    gradient δ·Wᵀ, each 2·n·fan_in·fan_out; the first layer skips δ·Wᵀ (nothing needs ∂L/∂X):

        FLOPs = 2·n·Σ_l fan_in_l·fan_out_l·3 − 2·n·fan_in_0·fan_out_0

    Element-wise work (activations, loss, bias, update) is not counted: GFLOP/s figures are
    "matrix-product FLOPs per second", the same count for every contender.
    """
    pairs = list(zip(layer_sizes[:-1], layer_sizes[1:]))
    return 2 * batch * (3 * sum(a * b for a, b in pairs) - pairs[0][0] * pairs[0][1])


def is_gpu(backend: Backend) -> bool:
    """Whether the backend computes on a GPU."""
    return backend.device_name.split(":")[0] in ("gpu", "cuda", "rocm")


def default_batch_sizes(backend: Backend) -> tuple:
    """1, 2, 32, 256, 2048, and on a GPU also 8192 and 65536."""
    return GPU_BATCH_SIZES if is_gpu(backend) else CPU_BATCH_SIZES


def is_huge(network: str, batch: int, backend: Backend) -> bool:
    """Whether a cell is too expensive for a default CPU run of the pytest suite (see HUGE_CPU_FLOPS)."""
    return not is_gpu(backend) and step_flops(NETWORKS[network].layer_sizes, batch) > HUGE_CPU_FLOPS


def torch_unavailable() -> str | None:
    """None when ``import torch`` works, else why not (torch is an optional contender)."""
    try:
        import torch  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install
        return f"torch is not importable ({type(exc).__name__}: {exc})"
    return None


def contender_unavailable(name: str, backend: Backend) -> str | None:
    """None when contender ``name`` can run on ``backend``, else the reason it cannot."""
    if name not in CONTENDERS:
        raise ValueError(f"unknown contender {name!r}; valid contenders: {', '.join(CONTENDERS)}")
    if name == "jax_grad" and backend.name != "jax":
        return "jax_grad runs on the jax backend only"
    if name == "torch":
        return torch_unavailable()
    return None


def selected_backends() -> list[str]:
    """The backends to benchmark by default: BACKPROP_BACKEND alone when set, else all of BACKENDS."""
    name = os.environ.get("BACKPROP_BACKEND", "").strip().lower()
    return [name] if name else list(BACKENDS)


def load_backend(name: str) -> Backend:
    """The backend ``name`` in float32 (BACKPROP_DEVICE applies; BACKPROP_DTYPE does not)."""
    return get_backend(name, dtype="float32")


# -- the contenders --------------------------------------------------------------------------


@dataclasses.dataclass(eq=False)
class Contender:
    """One way of running a training step of one cell.

    ``step()`` runs ONE step and synchronises the device; it returns the loss (a device scalar;
    for ``backprop`` the step's [loss, correct, ok] array, see `loss_of`) or None (matmul_floor).  ``params()``: the current parameters as NumPy arrays, W of shape
    (fan_in, fan_out) then b, layer by layer (None for matmul_floor).  ``flops``: the FLOPs of
    one step, counted from the products the contender actually runs for matmul_floor.
    ``info``: facts worth recording (library versions, precision).
    """

    name: str
    network: Network
    batch: int
    backend: Backend
    step: Callable[[], Any]
    params: Callable[[], list] | None = None
    flops: int = 0
    info: dict = dataclasses.field(default_factory=dict)
    close: Callable[[], None] | None = dataclasses.field(default=None, repr=False)

    def __call__(self):
        return self.step()

    def warmup(self, calls: int = 2) -> float:
        """Run ``calls`` steps (the first compiles on JAX); returns the seconds of the last one."""
        seconds = 0.0
        for _ in range(max(1, calls)):
            start = time.perf_counter()
            self.step()
            seconds = time.perf_counter() - start
        return seconds

    def release(self) -> None:
        """Drop the contender's arrays and give cached device memory back (CuPy pool, torch cache)."""
        if self.close is not None:
            self.close()
        self.step = self.params = self.close = None
        release_memory(self.backend)


def release_memory(backend: Backend | None = None) -> None:
    """Collect garbage and empty the CuPy and torch CUDA caches (so cells do not starve each other)."""
    gc.collect()
    if backend is not None and backend.name == "cupy":
        import cupy

        cupy.get_default_memory_pool().free_all_blocks()
    torch = _loaded("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def needed_bytes(layer_sizes: Sequence[int], batch: int, state_bytes: int, itemsize: int = 4) -> int:
    """What a training step cannot do without: parameters + gradients + the optimizer state
    (``state_bytes``) + one batch's activations (H_0 and Y, then Z_l and H_(l+1) for every layer;
    δ_l can be written over Z_l)."""
    sizes = list(layer_sizes)
    params = sum((fan_in + 1) * fan_out for fan_in, fan_out in zip(sizes[:-1], sizes[1:]))
    activations = batch * (sizes[0] + 2 * sum(sizes[1:-1]) + 2 * sizes[-1])
    return itemsize * (2 * params + activations) + state_bytes


class StepMemory:
    """The peak memory of a step on the backend's device, counting everything allocated since this
    object was made that is still held: NumPy through tracemalloc (NumPy reports its buffers to
    it), CuPy through its memory pool, which keeps the blocks freed during a step, so its size
    after the step bounds the step's peak.  On JAX `peak` is None: XLA's peak statistic counts
    from the start of the process, not per step."""

    def __init__(self, backend: Backend):
        self.kind = {"numpy": "tracemalloc", "cupy": "cupy memory pool"}.get(backend.name)
        self._tracing = self.kind == "tracemalloc" and not tracemalloc.is_tracing()
        if self._tracing:
            tracemalloc.start()
        release_memory(backend)

    def settle(self) -> None:
        """Forget what the set-up freed (initial parameters copied into the step's buffers)."""
        gc.collect()
        if self.kind == "tracemalloc":
            tracemalloc.reset_peak()
        elif self.kind is not None:
            import cupy

            cupy.get_default_memory_pool().free_all_blocks()

    def peak(self) -> int | None:
        """The peak since `settle`."""
        if self.kind == "tracemalloc":
            return tracemalloc.get_traced_memory()[1]
        if self.kind is not None:
            import cupy

            return int(cupy.get_default_memory_pool().total_bytes())
        return None

    def stop(self) -> None:
        """Stop tracing, if this object started it (also when building or stepping failed)."""
        if self._tracing:
            tracemalloc.stop()
            self._tracing = False


def _loaded(module: str):
    """The module if it has already been imported, else None (never imports it)."""
    import sys

    return sys.modules.get(module)


def make_optimizer(name: str = "sgd", network: Network | None = None):
    """The optimizer every contender uses: SGD (lr = network.sgd_lr, 0.01 but 1e-4 for wide) or
    Adam (lr = 1e-3), without momentum, weight decay or clipping."""
    from ..core import optim

    if name == "sgd":
        return optim.SGD(lr=network.sgd_lr if network is not None else 0.01)
    if name == "adam":
        return optim.Adam(lr=1e-3)
    raise ValueError(f"unknown optimizer {name!r}; valid optimizers: {', '.join(OPTIMIZERS)}")


def make_data(network: Network, batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded float32 inputs and raw targets (integer labels for softmax CE) on the host."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((batch, network.layer_sizes[0]), dtype=np.float32)
    n_out = network.layer_sizes[-1]
    if network.loss == "softmax_cross_entropy":
        return X, rng.integers(0, n_out, size=batch)
    if network.output_activation == "sigmoid" or network.loss == "binary_cross_entropy":
        return X, rng.random((batch, n_out), dtype=np.float32)
    return X, rng.standard_normal((batch, n_out), dtype=np.float32)


def encode_targets(network: Network, y: np.ndarray) -> np.ndarray:
    """`make_data`'s targets as the float32 (n, n_outputs) matrix the losses see (one-hot labels for softmax CE)."""
    if network.loss == "softmax_cross_entropy":
        return np.eye(network.layer_sizes[-1], dtype=np.float32)[y]
    return np.asarray(y, dtype=np.float32).reshape(len(y), network.layer_sizes[-1])


def effective_matmul_precision(backend: Backend) -> str:
    """What float32 matrix products really compute in on this backend: "float32" or "tf32".

    JAX on a GPU rounds float32 products to TF32 unless BACKPROP_MATMUL_PRECISION=highest
    (its "default" precision leans to speed); CuPy computes in full float32 unless CUPY_TF32=1;
    CPUs compute in float32.
    """
    if not is_gpu(backend):
        return "float32"
    if backend.name == "jax":
        from ..backends.jax import matmul_precision

        return "float32" if matmul_precision() == "highest" else "tf32"
    return "tf32" if os.environ.get("CUPY_TF32", "0").strip() not in ("", "0") else "float32"


def _host_params(backend: Backend, params) -> list:
    return [np.array(backend.to_numpy(a)) for layer in params for a in layer]


def build_backprop(network: Network, batch: int, backend: Backend, optimizer: str = "sgd", seed: int = 0) -> Contender:
    """The library's compiled step (`Trainer.step`), fed back its own params and state."""
    from ..core.optim import tree_leaves
    from ..training.trainer import Trainer

    memory = StepMemory(backend)
    try:
        trainer = Trainer(network.model(), make_optimizer(optimizer, network), backend=backend, seed=seed)
        _, X, Y = trainer.model.prepare(trainer.params, *make_data(network, batch, seed))
        box = {"params": trainer.params, "state": trainer.opt_state}
        trainer.params = trainer.opt_state = None  # donated on JAX: only the returned ones are valid
        step_fn = trainer.step

        def step():
            params, state, stats = step_fn(box["params"], box["state"], X, Y)
            box["params"], box["state"] = params, state
            backend.synchronize(params, state, stats)
            return stats  # [loss, correct, ok]

        info = {}
        if memory.kind is not None:  # the peak of a step, against what a step needs (+ the batch it is fed)
            step()
            memory.settle()
            step()
            peak = memory.peak()
            state_bytes = sum(int(a.nbytes) for a in tree_leaves(box["state"]))
            need = needed_bytes(network.layer_sizes, batch, state_bytes, X.itemsize) + int(X.nbytes) + int(Y.nbytes)
            info["memory"] = {"peak_bytes": peak, "needed_bytes": need, "ratio": peak / need, "measured_with": memory.kind}
    finally:
        memory.stop()

    def close():
        box.clear()

    return Contender("backprop", network, batch, backend, step, lambda: _host_params(backend, box["params"]),
                     step_flops(network.layer_sizes, batch), info=info, close=close)


def loss_of(result) -> float:
    """The loss in what a contender's ``step()`` returned (a scalar, or backprop's stats array)."""
    return float(to_host(result).reshape(-1)[0])


def _random_like_pool(shape: tuple, pool: np.ndarray) -> np.ndarray:
    """A float32 array of ``shape`` filled from a random pool (fast for GiB-sized operands)."""
    return np.resize(pool, shape)


def build_matmul_floor(network: Network, batch: int, backend: Backend, optimizer: str = "sgd", seed: int = 0) -> Contender:
    """Only the matrix products of one step, into preallocated outputs where the backend allows."""
    pool = np.random.default_rng(seed).standard_normal(1 << 16, dtype=np.float32) * np.float32(0.1)
    pairs = list(zip(network.layer_sizes[:-1], network.layer_sizes[1:]))
    # Operands: H_l (n × fan_in), W_l (fan_in × fan_out), δ_l (n × fan_out); products per layer:
    # Z = H W, dW = Hᵀ δ, and dH = δ Wᵀ except for the first layer.
    H = [backend.asarray(_random_like_pool((batch, a), pool)) for a, _ in pairs]
    W = [backend.asarray(_random_like_pool((a, b), pool)) for a, b in pairs]
    D = [backend.asarray(_random_like_pool((batch, b), pool)) for _, b in pairs]
    shapes = []  # (m, k, n) of every product
    for l, (a, b) in enumerate(pairs):
        shapes += [(batch, a, b), (a, batch, b)] + ([(batch, b, a)] if l > 0 else [])
    flops = sum(2 * m * k * n for m, k, n in shapes)
    info = {"products": len(shapes)}

    if backend.name == "jax":
        import jax

        def products(H, W, D):
            out = []
            for l in range(len(W)):
                out += [H[l] @ W[l], H[l].T @ D[l]] + ([D[l] @ W[l].T] if l > 0 else [])
            return tuple(out)

        compiled = jax.jit(products)
        H, W, D = tuple(H), tuple(W), tuple(D)

        def step():
            jax.block_until_ready(compiled(H, W, D))

        info["outputs"] = "allocated by XLA (one jit of the products)"
    elif backend.name in ("numpy", "cupy"):
        lib = np if backend.name == "numpy" else importlib.import_module("cupy")
        calls = []
        with contextlib.nullcontext() if backend.name == "numpy" else backend.device:
            for l in range(len(W)):
                calls.append((H[l], W[l], lib.empty((batch, W[l].shape[1]), dtype=lib.float32)))
                calls.append((H[l].T, D[l], lib.empty(W[l].shape, dtype=lib.float32)))
                if l > 0:
                    calls.append((D[l], W[l].T, lib.empty(H[l].shape, dtype=lib.float32)))
        matmul = lib.matmul

        def step():
            for a, b, out in calls:
                matmul(a, b, out=out)
            backend.synchronize()

        info["outputs"] = "preallocated (out=)"
    else:  # array_api_strict and any other: the standard has no out=
        xp = backend.xp
        calls = []
        for l in range(len(W)):
            calls += [(H[l], W[l]), (H[l].T, D[l])] + ([(D[l], W[l].T)] if l > 0 else [])

        def step():
            for a, b in calls:
                xp.matmul(a, b)
            backend.synchronize()

        info["outputs"] = "allocated (the array API has no out=)"

    return Contender("matmul_floor", network, batch, backend, step, None, flops, info)


def build_jax_grad(network: Network, batch: int, backend: Backend, optimizer: str = "sgd", seed: int = 0) -> Contender:
    """jax.jit(value_and_grad(independent loss) + the same backprop.optim update), donated."""
    if backend.name != "jax":
        raise ValueError("jax_grad runs on the jax backend only")
    import jax

    model, opt = network.model(), make_optimizer(optimizer, network)
    params = model.init(seed, backend)
    _, X, Y = model.prepare(params, *make_data(network, batch, seed))
    loss_fn = reference_loss(model.config, precision=None)  # the library step's matmul precision

    def step_fn(params, state, X, Y):
        loss, grads = jax.value_and_grad(loss_fn)(params, X, Y)
        params, state = opt.update(params, grads, state)
        return params, state, loss

    compiled = jax.jit(step_fn, donate_argnums=(0, 1))
    box = {"params": params, "state": opt.init(params)}

    def step():
        box["params"], box["state"], loss = compiled(box["params"], box["state"], X, Y)
        jax.block_until_ready((box["params"], box["state"], loss))
        return loss

    return Contender("jax_grad", network, batch, backend, step, lambda: _host_params(backend, box["params"]),
                     step_flops(network.layer_sizes, batch), {"jax": jax.__version__}, close=box.clear)


def _cpu_threads() -> int:
    """The BLAS thread count NumPy uses (threadpoolctl), else the CPUs this process may use."""
    try:
        from ..backends.numpy import blas_info

        threads = [lib["num_threads"] for lib in blas_info() if lib.get("num_threads")]
        if threads:
            return int(threads[0])
    except Exception:
        pass
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _torch_matmul_precision(torch, tf32: bool) -> str:
    """Make torch's CUDA float32 matmuls TF32 or true float32, through whichever API this torch has."""
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):  # torch >= 2.9 (the older flags are deprecated there)
        matmul.fp32_precision = "tf32" if tf32 else "ieee"
        return f"cuda.matmul.fp32_precision={matmul.fp32_precision}"
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    return f"float32_matmul_precision={torch.get_float32_matmul_precision()}"


def build_torch(network: Network, batch: int, backend: Backend, optimizer: str = "sgd", seed: int = 0) -> Contender:
    """torch eager autograd + torch.optim on the backend's device, same weights, data and precision."""
    import torch

    gpu = is_gpu(backend)
    if gpu:
        index = int(backend.device_name.split(":")[1]) if ":" in backend.device_name else 0
        device = torch.device("cuda", index)
        precision = _torch_matmul_precision(torch, effective_matmul_precision(backend) == "tf32")
    else:
        device = torch.device("cpu")
        torch.set_num_threads(_cpu_threads())
        precision = "float32 (CPU)"
    model = network.model()
    host = [np.array(backend.to_numpy(a), dtype=np.float32) for layer in model.init(seed, backend) for a in layer]
    acts = {"sigmoid": torch.nn.Sigmoid, "relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "identity": torch.nn.Identity}
    layers = []
    for l, (a, b) in enumerate(zip(network.layer_sizes[:-1], network.layer_sizes[1:])):
        linear = torch.nn.Linear(a, b)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(np.ascontiguousarray(host[2 * l].T)))
            linear.bias.copy_(torch.from_numpy(host[2 * l + 1]))
        layers.append(linear)
        if l < model.n_layers - 1:
            layers.append(acts[network.activation]())
    net = torch.nn.Sequential(*layers).to(device=device, dtype=torch.float32)
    X_host, y_host = make_data(network, batch, seed)
    X = torch.from_numpy(X_host).to(device)
    Y = torch.from_numpy(encode_targets(network, y_host)).to(device)
    if optimizer == "sgd":
        opt = torch.optim.SGD(net.parameters(), lr=network.sgd_lr)
    elif optimizer == "adam":
        opt = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
    else:
        raise ValueError(f"unknown optimizer {optimizer!r}; valid optimizers: {', '.join(OPTIMIZERS)}")
    F = torch.nn.functional
    out_act = {"sigmoid": torch.sigmoid, None: lambda z: z, "identity": lambda z: z}[network.output_activation]
    n = float(batch)

    def loss_fn(z):
        if network.loss == "squared_error":
            return 0.5 * torch.sum((out_act(z) - Y) ** 2) / n
        if network.loss == "binary_cross_entropy":
            return F.binary_cross_entropy_with_logits(z, Y, reduction="sum") / n
        return -torch.sum(Y * F.log_softmax(z, dim=1)) / n

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(X))
        loss.backward()
        opt.step()
        if gpu:
            torch.cuda.synchronize(device)
        return loss.detach()

    def params():
        out = []
        for module in net:
            if isinstance(module, torch.nn.Linear):
                out += [module.weight.detach().cpu().numpy().T.copy(), module.bias.detach().cpu().numpy().copy()]
        return out

    info = {"torch": torch.__version__, "torch_cuda": torch.version.cuda, "device": str(device),
            "threads": torch.get_num_threads(), "matmul_precision": precision}
    return Contender("torch", network, batch, backend, step, params, step_flops(network.layer_sizes, batch), info)


BUILDERS = {
    "backprop": build_backprop,
    "matmul_floor": build_matmul_floor,
    "jax_grad": build_jax_grad,
    "torch": build_torch,
}


def build(contender: str, network: str | Network, batch: int, backend: Backend | str,
          optimizer: str = "sgd", seed: int = 0) -> Contender:
    """Contender ``contender`` for one cell (network, batch, backend), ready to `warmup` and time."""
    if isinstance(network, str):
        if network not in NETWORKS:
            raise ValueError(f"unknown network {network!r}; valid networks: {', '.join(NETWORKS)}")
        network = NETWORKS[network]
    if not (isinstance(batch, int) and batch >= 1):
        raise ValueError(f"batch size must be an integer >= 1, got {batch!r}")
    backend = load_backend(backend) if isinstance(backend, str) else backend
    if contender not in BUILDERS:
        raise ValueError(f"unknown contender {contender!r}; valid contenders: {', '.join(CONTENDERS)}")
    return BUILDERS[contender](network, batch, backend, optimizer, seed)


# -- timing ----------------------------------------------------------------------------------


@dataclasses.dataclass
class Timing:
    """Per-step seconds of one contender in one cell: the statistics over rounds.

    A round is ``iterations`` consecutive synchronised steps (more than one only for steps
    shorter than ``min_round``), its time divided by ``iterations``.
    """

    median: float
    q1: float
    q3: float
    min: float
    max: float
    mean: float
    rounds: int
    iterations: int
    warmup_s: float

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1

    @classmethod
    def of(cls, times: list[float], iterations: int, warmup_s: float) -> "Timing":
        ordered = sorted(times)
        if len(ordered) >= 2:
            q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
        else:
            q1 = q3 = ordered[0]
        return cls(statistics.median(ordered), q1, q3, ordered[0], ordered[-1], statistics.fmean(ordered),
                   len(ordered), iterations, warmup_s)


def measure(contenders: Sequence[Contender], budget_s: float = 2.0, min_rounds: int = 3,
            max_rounds: int = 1000, warmup: int = 2, min_round_s: float = 1e-3) -> dict[str, Timing]:
    """Time the contenders of one cell side by side; {name: Timing}.

    Each is warmed up first (``warmup`` steps: compilation, caches, allocator).  Then rounds
    run interleaved — one round of each contender in turn, the order rotated every time — until
    ``budget_s`` seconds of rounds have passed and every contender has ``min_rounds`` rounds
    (a slow cell overruns the budget rather than report fewer), or all reach ``max_rounds``.
    """
    warm, iterations, times = {}, {}, {}
    for c in contenders:
        start = time.perf_counter()
        last = c.warmup(warmup)
        warm[c.name] = time.perf_counter() - start
        iterations[c.name] = max(1, min(1000, math.ceil(min_round_s / max(last, 1e-9))))
        times[c.name] = []
    order = list(contenders)
    start = time.perf_counter()
    k = 0
    while True:
        todo = [c for c in order[k % len(order):] + order[: k % len(order)] if len(times[c.name]) < max_rounds]
        if not todo:
            break
        for c in todo:
            n = iterations[c.name]
            t0 = time.perf_counter()
            for _ in range(n):
                c.step()
            times[c.name].append((time.perf_counter() - t0) / n)
        k += 1
        if time.perf_counter() - start >= budget_s and all(len(t) >= min_rounds for t in times.values()):
            break
    return {c.name: Timing.of(times[c.name], iterations[c.name], warm[c.name]) for c in contenders}


# -- the grid runner -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Cell:
    network: str
    batch: int
    backend: str

    @property
    def id(self) -> str:
        return f"{self.network}-b{self.batch}-{self.backend}"


def result_row(cell: Cell, backend: Backend, name: str, t: Timing, flops: int, info: dict) -> dict:
    return {
        "network": cell.network,
        "layer_sizes": list(NETWORKS[cell.network].layer_sizes),
        "batch": cell.batch,
        "backend": cell.backend,
        "device": backend.device_name,
        "contender": name,
        "flops": flops,
        "median_s": t.median,
        "q1_s": t.q1,
        "q3_s": t.q3,
        "iqr_s": t.iqr,
        "min_s": t.min,
        "max_s": t.max,
        "mean_s": t.mean,
        "rounds": t.rounds,
        "iterations": t.iterations,
        "warmup_s": t.warmup_s,
        "samples_per_s": cell.batch / t.median,
        "gflops": flops / t.median / 1e9,
        "info": info,
    }


def add_ratios(rows: list[dict]) -> None:
    """Add ``ratios`` to every row: {other contender: this median ÷ its median} within the cell (>1: slower)."""
    cells: dict[tuple, list] = {}
    for row in rows:
        cells.setdefault((row["network"], row["batch"], row["backend"]), []).append(row)
    for group in cells.values():
        for row in group:
            row["ratios"] = {o["contender"]: row["median_s"] / o["median_s"] for o in group if o is not row}


def run_cell(cell: Cell, backend: Backend, contenders: Sequence[str], optimizer: str = "sgd",
             budget_s: float = 2.0, min_rounds: int = 3, log: Callable[[str], None] | None = None):
    """Build, measure and release the contenders of one cell; (rows, skipped)."""
    built, skipped = [], []
    try:
        for name in contenders:
            try:
                built.append(build(name, cell.network, cell.batch, backend, optimizer))
            except Exception as exc:  # e.g. out of device memory: record it, measure the others
                skipped.append({"cell": cell.id, "contender": name, "reason": f"{type(exc).__name__}: {exc}"})
        ok = []
        for c in built:  # a contender that fails its first steps is recorded and left out
            try:
                c.warmup(1)
                ok.append(c)
            except Exception as exc:
                skipped.append({"cell": cell.id, "contender": c.name, "reason": f"{type(exc).__name__}: {exc}"})
        if not ok:
            return [], skipped
        timings = measure(ok, budget_s=budget_s, min_rounds=min_rounds, warmup=1)
        rows = [result_row(cell, backend, c.name, timings[c.name], c.flops, c.info) for c in ok]
        add_ratios(rows)
        return rows, skipped
    finally:
        for c in built:
            c.release()
        release_memory(backend)


# -- the environment -------------------------------------------------------------------------


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list | None:
    """The 1, 5 and 15 minute load averages (other work on the machine skews every number)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def device_description(backend: Backend) -> dict:
    """The backend's device in words: name, kind (CPU model or GPU name) and matmul precision."""
    entry = {"backend": backend.name, "device": backend.device_name, "dtype": backend.dtype_name,
             "matmul": effective_matmul_precision(backend)}
    if backend.name == "cupy":
        import cupy

        index = int(backend.device_name.split(":")[1])
        props = cupy.cuda.runtime.getDeviceProperties(index)
        name = props["name"]
        entry["kind"] = name.decode() if isinstance(name, bytes) else str(name)
        entry["cuda_runtime"] = cupy.cuda.runtime.runtimeGetVersion()
        entry["cuda_driver"] = cupy.cuda.runtime.driverGetVersion()
    elif backend.name == "jax" and backend.device.platform != "cpu":
        entry["kind"] = str(getattr(backend.device, "device_kind", backend.device.platform))
    else:
        entry["kind"] = cpu_model()
        entry["threads"] = _cpu_threads() if backend.name != "jax" else os.cpu_count()
    return entry


ENV_VARS = ("BACKPROP_BACKEND", "BACKPROP_DEVICE", "BACKPROP_MATMUL_PRECISION", "CUPY_TF32", "NVIDIA_TF32_OVERRIDE",
            "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_CORETYPE",
            "XLA_FLAGS", "XLA_PYTHON_CLIENT_PREALLOCATE", "CUDA_VISIBLE_DEVICES")


def environment() -> dict:
    """Date, host, versions, BLAS (threadpoolctl: library, kernel, threads), environment variables."""
    from .. import __version__
    from ..backends.jax import matmul_precision
    from ..backends.numpy import blas_info

    try:
        blas = blas_info()
    except Exception as exc:  # threadpoolctl missing or broken: say so, do not fail the run
        blas = [{"error": f"{type(exc).__name__}: {exc}"}]
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": {
            "hostname": platform.node(),
            "platform": platform.platform(),
            "machine": platform.machine(),
            "cpu": cpu_model(),
            "cpu_count": os.cpu_count(),
            "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "load_average": load_average(),
        },
        "versions": {
            "backprop": __version__,
            "python": platform.python_version(),
            **{d: _version(d) for d in ("numpy", "jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda13-plugin", "cupy",
                                        "cupy-cuda12x", "cupy-cuda13x", "torch", "array-api-compat",
                                        "array-api-strict", "threadpoolctl", "pytest-benchmark")},
        },
        "blas": blas,
        "matmul_precision": matmul_precision(),
        "environment": {k: os.environ.get(k) for k in ENV_VARS},
    }


# -- reporting -------------------------------------------------------------------------------


def format_seconds(s: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if s >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"


def format_rate(x: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def format_tables(report: dict) -> str:
    """One plain-text table per backend: median, IQR, rounds, samples/s, GFLOP/s and the ratios."""
    lines = []
    env = report.get("environment", {})
    blas = ", ".join(f"{b.get('internal_api')} {b.get('version')} kernel={b.get('architecture')} threads={b.get('num_threads')}"
                     for b in env.get("blas", []) if "error" not in b) or "none found"
    host = env.get("host", {})
    versions = env.get("versions", {})
    lines.append(f"backprop bench {env.get('date', '')} on {host.get('hostname', '')}: {host.get('cpu', '')}, "
                 f"{host.get('cpus_usable')} CPUs, load average {host.get('load_average')} at the start, "
                 f"{report.get('load_average_end')} at the end")
    lines.append("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v))
    lines.append(f"numpy BLAS: {blas}; optimizer: {report.get('settings', {}).get('optimizer', '?')}")
    rows = report.get("results", [])
    any_memory = False
    for backend in report.get("backends", []):
        order = {name: i for i, name in enumerate(NETWORKS)}
        mine = sorted((r for r in rows if r["backend"] == backend["backend"]),
                      key=lambda r: (order.get(r["network"], len(order)), r["batch"], CONTENDERS.index(r["contender"])))
        if not mine:
            continue
        lines.append("")
        where = f"{backend['device']} ({backend.get('kind', '?')}" + (f", {backend['threads']} threads)" if backend.get("threads") else ")")
        lines.append(f"{backend['backend']} on {where}, {backend['dtype']}, matmul in {backend['matmul']}")
        others = [c for c in CONTENDERS if any(r["contender"] == c for r in mine)]
        memory = any(_memory_ratio(r) is not None for r in mine)
        any_memory |= memory
        head = (f"{'network':<8}{'batch':>7}  {'contender':<13}{'median':>10}{'IQR':>10}{'rounds':>7}"
                f"{'samples/s':>11}{'GFLOP/s':>9}" + "".join(f"{'÷' + ('floor' if c == 'matmul_floor' else c):>11}" for c in others)
                + (f"{'mem÷need':>10}" if memory else ""))
        lines += [head, "-" * len(head)]
        for r in mine:
            ratios = "".join(f"{(format(r['ratios'][c], '.2f') if c in r['ratios'] else '-'):>11}" for c in others)
            mem = _memory_ratio(r)
            lines.append(f"{r['network']:<8}{r['batch']:>7}  {r['contender']:<13}{format_seconds(r['median_s']):>10}"
                         f"{format_seconds(r['iqr_s']):>10}{r['rounds']:>7}{format_rate(r['samples_per_s']):>11}"
                         f"{r['gflops']:>9.3g}{ratios}"
                         + (f"{(format(mem, '.2f') if mem is not None else '-'):>10}" if memory else ""))
    if report.get("skipped"):
        lines.append("")
        lines.append("not measured:")
        lines += [f"  {s['cell']} {s['contender']}: {s['reason']}" for s in report["skipped"]]
    lines.append("")
    lines.append("÷X = this row's median step time ÷ contender X's in the same cell (>1: slower than X). "
                 "GFLOP/s counts matrix-product FLOPs only.")
    if any_memory:
        lines.append("mem÷need = the step's peak memory (tracemalloc on NumPy, the memory pool on CuPy) ÷ parameters, "
                     "gradients, optimizer state and one batch's activations, plus the batch the benchmark feeds it.")
    return "\n".join(lines)


def _memory_ratio(row: dict) -> float | None:
    return (row.get("info") or {}).get("memory", {}).get("ratio")


def plot(report: dict, path: str) -> bool:
    """samples/s against batch size, log-log, one panel per network, one line per backend × contender."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = report.get("results", [])
    networks = [n for n in NETWORKS if any(r["network"] == n for r in rows)]
    if not networks:
        return False
    cols = min(2, len(networks))
    nrows = math.ceil(len(networks) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(6.5 * cols, 4.5 * nrows), squeeze=False)
    styles = {"backprop": "-", "matmul_floor": ":", "jax_grad": "--", "torch": "-."}
    markers = {"backprop": "o", "matmul_floor": "", "jax_grad": "s", "torch": "^"}
    colours = {name: f"C{i}" for i, name in enumerate(BACKENDS)}
    for ax, network in zip(axes.flat, networks):
        for backend in BACKENDS:
            for contender in CONTENDERS:
                pts = sorted((r["batch"], r["samples_per_s"]) for r in rows
                             if r["network"] == network and r["backend"] == backend and r["contender"] == contender)
                if pts:
                    ax.plot(*zip(*pts), styles[contender], marker=markers[contender], color=colours[backend],
                            label=f"{backend} {contender}", markersize=4)
        ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel="samples / s",
               title=f"{network}: {NETWORKS[network].description}")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(networks):]:
        ax.set_visible(False)
    env = report.get("environment", {})
    fig.suptitle(f"one training step, float32 — {env.get('date', '')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def backend_status(names: Sequence[str]) -> dict[str, str | None]:
    """{name: None if usable else the reason}, for backend names (unknown names raise ValueError)."""
    return {name: probe(name).reason for name in names}
