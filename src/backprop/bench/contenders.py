"""The contenders: the ways of running one training step of a cell that are timed side by side.

Each is built by `build` as a `Contender`, whose ``step()`` runs ONE step and synchronises the
device; see the package docstring for what each contender computes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..backends import Backend, one_call_logistic, threads, to_host
from ..core.tree import tree_leaves
from ..gradcheck import reference_loss
from ..training.fused import FusedStep
from ..training.trainer import Trainer
from .environment import cpu_threads, effective_matmul_precision, is_gpu
from .grid import Network, get_network, load_backend, step_flops
from .memory import StepMemory, needed_bytes, release_memory
from .workload import encode_targets, make_data, make_optimizer

CONTENDERS = ("backprop", "train_step", "matmul_floor", "jax_grad", "torch")


@dataclasses.dataclass(eq=False)
class Contender:
    """One way of running a training step of one cell.

    ``step()`` runs ONE step and synchronises the device; it returns the loss (a device scalar;
    for ``backprop`` the step's [loss, correct, ok] array, see `loss_of`) or None (matmul_floor).
    ``params()``: the current parameters as NumPy arrays, W of shape (fan_in, fan_out) then b,
    layer by layer (None for matmul_floor).  ``flops``: the FLOPs of one step, counted from the
    products the contender actually runs for matmul_floor.  ``info``: facts worth recording
    (library versions, precision, peak memory).  ``blas_threads``: NumPy's BLAS thread count
    that `warmup` and the timer (`backprop.bench.timing`) set around its steps (None: as they
    are); ``threads()``: the thread count it ran with, for the report (None: not applicable).
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
    blas_threads: int | None = None
    threads: Callable[[], int | None] | None = dataclasses.field(default=None, repr=False)

    def __call__(self):
        return self.step()

    def ran_with(self) -> int | None:
        """The thread count it ran with: ``blas_threads`` when set, else ``threads()``."""
        if self.blas_threads is not None:
            return self.blas_threads
        return self.threads() if self.threads is not None else None

    def warmup(self, calls: int = 2) -> float:
        """Run ``calls`` steps (the first compiles on JAX); returns the seconds of the fastest one."""
        seconds = math.inf
        with threads.running_at(self.blas_threads):
            for _ in range(max(1, calls)):
                start = time.perf_counter()
                self.step()
                seconds = min(seconds, time.perf_counter() - start)
        return seconds

    def release(self) -> None:
        """Drop the contender's arrays and give cached device memory back (CuPy pool, torch cache)."""
        if self.close is not None:
            self.close()
        self.step = self.params = self.close = None
        release_memory(self.backend)


def loss_of(result) -> float:
    """The loss in what a contender's ``step()`` returned (a scalar, or backprop's stats array)."""
    return float(to_host(result).reshape(-1)[0])


def torch_unavailable() -> str | None:
    """None when ``import torch`` works, else why not (torch is an optional contender)."""
    try:
        import torch  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install
        return f"torch is not importable ({type(exc).__name__}: {exc})"
    return None


def contender_unavailable(name: str, backend: Backend) -> str | None:
    """None when contender ``name`` can run on ``backend``, else the reason it cannot."""
    _check_contender(name)
    if name == "jax_grad" and backend.name != "jax":
        return "jax_grad runs on the jax backend only"
    if name == "torch":
        return torch_unavailable()
    return None


def _check_contender(name: str) -> None:
    if name not in CONTENDERS:
        raise ValueError(f"unknown contender {name!r}; valid contenders: {', '.join(CONTENDERS)}")


def build(
    contender: str,
    network: str | Network,
    batch: int,
    backend: Backend | str,
    optimizer: str = "sgd",
    seed: int = 0,
    blas_threads: int | None = None,
) -> Contender:
    """Contender ``contender`` for one cell (network, batch, backend), ready to `warmup` and time.

    ``blas_threads`` (NumPy's BLAS; None: each contender's default): the backprop step's
    ``Trainer(blas_threads=...)`` (None: its automatic choice), the count matmul_floor's rounds
    run at (None: the count in force); the other contenders ignore it."""
    network = get_network(network)
    if not (isinstance(batch, int) and batch >= 1):
        raise ValueError(f"batch size must be an integer >= 1, got {batch!r}")
    backend = load_backend(backend) if isinstance(backend, str) else backend
    _check_contender(contender)
    if contender in ("backprop", "train_step", "matmul_floor"):
        return BUILDERS[contender](network, batch, backend, optimizer, seed, blas_threads=threads.check(blas_threads))
    return BUILDERS[contender](network, batch, backend, optimizer, seed)


def feedback_step(step_fn: Callable, box: dict, X, Y, backend: Backend) -> Callable[[], Any]:
    """A ``step()`` that calls the compiled ``step_fn(params, state, X, Y) -> (params, state, out)`` once,
    fed back its own outputs (``box`` holds the current "params" and "state"), and synchronises the
    device; ``step()`` returns ``out``."""

    def step():
        params, state, out = step_fn(box["params"], box["state"], X, Y)
        box["params"], box["state"] = params, state
        backend.synchronize(params, state, out)
        return out

    return step


def _params_on_host(backend: Backend, params) -> list:
    """Copies of the parameters' arrays on the host, W then b, layer by layer."""
    return [np.array(backend.to_numpy(leaf)) for leaf in tree_leaves(params)]


# -- backprop --------------------------------------------------------------------------------


def build_backprop(
    network: Network,
    batch: int,
    backend: Backend,
    optimizer: str = "sgd",
    seed: int = 0,
    blas_threads: int | None = None,
) -> Contender:
    """The library's compiled step (`Trainer.step`, at ``Trainer(blas_threads=...)``), fed back its
    own params and state; on NumPy and CuPy ``info["memory"]`` compares the step's peak memory with
    what a step needs (`needed_bytes`).  ``threads()``: the BLAS thread count its step chose (NumPy)."""
    threads.libraries()  # found once per process: not the step's memory
    if backend.inplace is not None:
        one_call_logistic(backend.inplace)  # imported once per process (SciPy's expit): not the step's memory
    memory = StepMemory(backend)
    try:
        trainer, chosen_threads = _library_trainer(network, batch, backend, optimizer, seed, blas_threads)
        _, X, Y = trainer.model.prepare(trainer.params, *make_data(network, batch, seed))
        box = {"params": trainer.params, "state": trainer.opt_state}
        trainer.params = trainer.opt_state = None  # donated on JAX: only the returned ones are valid
        step = feedback_step(trainer.step, box, X, Y, backend)  # returns the stats [loss, correct, ok]
        info = {}
        if memory.kind is not None:
            info["memory"] = _step_memory(memory, step, box, network, X, Y)
            box["params"] = trainer.model.init(seed, backend)  # the measured steps undone: the seeded weights
            box["state"] = trainer.optimizer.init(box["params"])
    finally:
        memory.stop()
    return Contender(
        "backprop",
        network,
        batch,
        backend,
        step,
        lambda: _params_on_host(backend, box["params"]),
        step_flops(network.layer_sizes, batch),
        info=info,
        close=box.clear,
        threads=chosen_threads,
    )


def _library_trainer(
    network: Network, batch: int, backend: Backend, optimizer: str, seed: int, blas_threads: int | None
) -> tuple[Trainer, Callable[[], int | None] | None]:
    """The Trainer that the library's contenders step, and the ``threads()`` of their report: the
    BLAS thread count its fused step chose for ``batch`` (None where the step is not the fused one)."""
    trainer = Trainer(
        network.model(), make_optimizer(optimizer, network), backend=backend, seed=seed, blas_threads=blas_threads
    )
    fused = trainer.step if isinstance(trainer.step, FusedStep) else None
    return trainer, (lambda: fused.threads(batch)) if fused is not None else None


def _step_memory(memory: StepMemory, step: Callable, box: dict, network: Network, X, Y) -> dict:
    """The peak memory of a step, against what a step needs plus the batch it is fed."""
    step()
    memory.settle()
    step()
    peak = memory.peak()
    state_bytes = sum(int(a.nbytes) for a in tree_leaves(box["state"]))
    need = needed_bytes(network.layer_sizes, X.shape[0], state_bytes, X.itemsize) + int(X.nbytes) + int(Y.nbytes)
    return {"peak_bytes": peak, "needed_bytes": need, "ratio": peak / need, "measured_with": memory.kind}


def build_train_step(
    network: Network,
    batch: int,
    backend: Backend,
    optimizer: str = "sgd",
    seed: int = 0,
    blas_threads: int | None = None,
) -> Contender:
    """`Trainer.train_step(X, y)` as a user's own loop calls it: the raw batch (X and integer labels
    or targets, on the backend's device) checked (on JAX by the step compiled for its signature),
    encoded and stepped per call, the loss read back.  Beside ``backprop`` (the same step fed
    prepared arrays), its ratio is what `train_step` adds per call."""
    trainer, chosen_threads = _library_trainer(network, batch, backend, optimizer, seed, blas_threads)
    X, y = make_data(network, batch, seed)
    X, y = backend.asarray(X), backend.asarray(y)
    return Contender(
        "train_step",
        network,
        batch,
        backend,
        lambda: trainer.train_step(X, y),
        lambda: _params_on_host(backend, trainer.params),
        step_flops(network.layer_sizes, batch),
        threads=chosen_threads,
    )


# -- matmul_floor ----------------------------------------------------------------------------


def build_matmul_floor(
    network: Network,
    batch: int,
    backend: Backend,
    optimizer: str = "sgd",
    seed: int = 0,
    blas_threads: int | None = None,
) -> Contender:
    """Only the matrix products of one step, into preallocated outputs where the backend allows;
    on NumPy its rounds run at ``blas_threads`` (None: the count in force), which it reports."""
    pairs = list(zip(network.layer_sizes[:-1], network.layer_sizes[1:]))
    pool = np.random.default_rng(seed).standard_normal(1 << 16, dtype=np.float32) * np.float32(0.1)
    # Operands: H_l (n × fan_in), W_l (fan_in × fan_out), δ_l (n × fan_out), filled from the pool
    # (fast for GiB-sized operands).
    H = [backend.asarray(np.resize(pool, (batch, a))) for a, _ in pairs]
    W = [backend.asarray(np.resize(pool, (a, b))) for a, b in pairs]
    D = [backend.asarray(np.resize(pool, (batch, b))) for _, b in pairs]
    if backend.name == "jax":
        step, outputs = _jitted_products(H, W, D), "allocated by XLA (one jit of the products)"
    elif backend.inplace is not None:  # numpy, cupy, torch
        step, outputs = _preallocated_products(backend, H, W, D), "preallocated (out=)"
    else:  # array_api_strict and any other: the standard has no out=
        step, outputs = _allocated_products(backend, H, W, D), "allocated (the array API has no out=)"
    shapes = _product_shapes(pairs, batch)
    flops = sum(2 * m * k * n for m, k, n in shapes)
    info = {"products": len(shapes), "outputs": outputs}
    numpy = backend.name == "numpy"
    return Contender(
        "matmul_floor",
        network,
        batch,
        backend,
        step,
        None,
        flops,
        info,
        blas_threads=blas_threads if numpy else None,
        threads=threads.current if numpy else None,
    )


def _operands(H: list, W: list, D: list) -> list[tuple]:
    """The (left, right) operands of every product of a step: per layer Z = H W, dW = Hᵀ δ, and
    dH = δ Wᵀ except for the first layer."""
    pairs = []
    for layer in range(len(W)):
        pairs += [(H[layer], W[layer]), (H[layer].T, D[layer])] + ([(D[layer], W[layer].T)] if layer > 0 else [])
    return pairs


def _product_shapes(pairs: list[tuple], batch: int) -> list[tuple]:
    """(m, k, n) of every product in `_operands` order, for layers of (fan_in, fan_out) ``pairs``."""
    shapes = []
    for layer, (a, b) in enumerate(pairs):
        shapes += [(batch, a, b), (a, batch, b)] + ([(batch, b, a)] if layer > 0 else [])
    return shapes


def _jitted_products(H: list, W: list, D: list) -> Callable[[], None]:
    import jax

    compiled = jax.jit(lambda H, W, D: tuple(a @ b for a, b in _operands(H, W, D)))
    H, W, D = tuple(H), tuple(W), tuple(D)

    def step():
        jax.block_until_ready(compiled(H, W, D))

    return step


def _preallocated_products(backend: Backend, H: list, W: list, D: list) -> Callable[[], None]:
    lib = backend.inplace  # numpy, cupy, or torch under NumPy's names
    with contextlib.nullcontext() if backend.name == "numpy" else backend.device:
        calls = [(a, b, lib.empty((a.shape[0], b.shape[1]), dtype=lib.float32)) for a, b in _operands(H, W, D)]
    matmul = lib.matmul

    def step():
        for a, b, out in calls:
            matmul(a, b, out=out)
        backend.synchronize()

    return step


def _allocated_products(backend: Backend, H: list, W: list, D: list) -> Callable[[], None]:
    xp, calls = backend.xp, _operands(H, W, D)

    def step():
        for a, b in calls:
            xp.matmul(a, b)
        backend.synchronize()

    return step


# -- jax_grad --------------------------------------------------------------------------------


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

    box = {"params": params, "state": opt.init(params)}
    step = feedback_step(jax.jit(step_fn, donate_argnums=(0, 1)), box, X, Y, backend)  # returns the loss
    return Contender(
        "jax_grad",
        network,
        batch,
        backend,
        step,
        lambda: _params_on_host(backend, box["params"]),
        step_flops(network.layer_sizes, batch),
        {"jax": jax.__version__},
        close=box.clear,
    )


# -- torch -----------------------------------------------------------------------------------


def build_torch(network: Network, batch: int, backend: Backend, optimizer: str = "sgd", seed: int = 0) -> Contender:
    """torch eager autograd + torch.optim on the backend's device, same weights, data and precision."""
    import torch

    device, precision = _torch_device(torch, backend)
    opt = make_optimizer(optimizer, network)
    net = _torch_network(torch, network, _params_on_host(backend, network.model().init(seed, backend)), device)
    torch_opt = _torch_optimizer(torch, opt, net.parameters())
    X_host, y_host = make_data(network, batch, seed)
    X = torch.from_numpy(X_host).to(device)
    loss_fn = _torch_loss(torch, network, torch.from_numpy(encode_targets(network, y_host)).to(device))

    def step():
        torch_opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(X))
        loss.backward()
        torch_opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return loss.detach()

    def params():
        return [
            a
            for linear in net
            if isinstance(linear, torch.nn.Linear)
            for a in (linear.weight.detach().cpu().numpy().T.copy(), linear.bias.detach().cpu().numpy().copy())
        ]

    info = {
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "torch_device": str(device),  # (not "device": the row has its own, the backend's)
        "threads": torch.get_num_threads(),
        "matmul_precision": precision,
    }
    torch_threads = (lambda: info["threads"]) if device.type == "cpu" else None
    return Contender(
        "torch",
        network,
        batch,
        backend,
        step,
        params,
        step_flops(network.layer_sizes, batch),
        info,
        threads=torch_threads,
    )


def _torch_device(torch, backend: Backend) -> tuple:
    """The torch device of the backend's device, and the float32 matmul precision set there:
    the backend's effective one on a GPU, the backend's BLAS thread count on a CPU.  On the torch
    backend, its own device (and threads: the library's step and this one share torch's settings)."""
    if backend.name == "torch":
        if backend.device.type == "cuda":
            return backend.device, _torch_matmul_precision(torch, effective_matmul_precision(backend) == "tf32")
        return backend.device, f"float32 ({backend.device.type.upper()})"
    if is_gpu(backend):
        index = int(backend.device_name.split(":")[1]) if ":" in backend.device_name else 0
        tf32 = effective_matmul_precision(backend) == "tf32"
        return torch.device("cuda", index), _torch_matmul_precision(torch, tf32)
    torch.set_num_threads(cpu_threads())
    return torch.device("cpu"), "float32 (CPU)"


def _torch_matmul_precision(torch, tf32: bool) -> str:
    """Make torch's CUDA float32 matmuls TF32 or true float32, through whichever API this torch has."""
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):  # torch >= 2.9 (the older flags are deprecated there)
        matmul.fp32_precision = "tf32" if tf32 else "ieee"
        return f"cuda.matmul.fp32_precision={matmul.fp32_precision}"
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    return f"float32_matmul_precision={torch.get_float32_matmul_precision()}"


def _torch_network(torch, network: Network, host_params: list, device):
    """``network`` as a float32 ``torch.nn.Sequential`` on ``device`` with the weights ``host_params``
    (W then b, layer by layer; torch keeps W transposed).  The output activation is in the loss."""
    hidden = {"sigmoid": torch.nn.Sigmoid, "relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "identity": torch.nn.Identity}[
        network.activation
    ]
    n_layers, layers = len(network.layer_sizes) - 1, []
    for layer, (W, b) in enumerate(zip(host_params[0::2], host_params[1::2])):
        linear = torch.nn.Linear(*W.shape)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(np.ascontiguousarray(W.T)))
            linear.bias.copy_(torch.from_numpy(b))
        layers += [linear] + ([hidden()] if layer < n_layers - 1 else [])
    return torch.nn.Sequential(*layers).to(device=device, dtype=torch.float32)


def _torch_optimizer(torch, opt, parameters):
    """The torch.optim counterpart of the backprop optimizer ``opt`` (SGD or Adam), same hyperparameters."""
    config = opt.config
    if config["name"] == "sgd":
        return torch.optim.SGD(parameters, lr=config["lr"])
    return torch.optim.Adam(parameters, lr=config["lr"], betas=(config["beta1"], config["beta2"]), eps=config["eps"])


def _torch_loss(torch, network: Network, Y) -> Callable:
    """The network's loss of the logits z against the encoded targets ``Y``, mean over the batch."""
    F = torch.nn.functional
    out = {"sigmoid": torch.sigmoid, None: lambda z: z, "identity": lambda z: z}[network.output_activation]
    n = float(Y.shape[0])

    def loss_fn(z):
        if network.loss == "squared_error":
            return 0.5 * torch.sum((out(z) - Y) ** 2) / n
        if network.loss == "binary_cross_entropy":
            return F.binary_cross_entropy_with_logits(z, Y, reduction="sum") / n
        return -torch.sum(Y * F.log_softmax(z, dim=1)) / n

    return loss_fn


BUILDERS = {
    "backprop": build_backprop,
    "train_step": build_train_step,
    "matmul_floor": build_matmul_floor,
    "jax_grad": build_jax_grad,
    "torch": build_torch,
}
