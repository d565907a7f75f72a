"""Gradient checking against ``jax.grad`` of an independent JAX implementation, in float64.

The reference below is written from the definitions (jax.nn activations, jnp log-softmax,
log-sigmoid cross-entropy), not from the library's forward pass, and differentiated by JAX's
autodiff: it is the oracle, never used for training.  The relative error of a tensor is
max|g − g_ref| / max|g_ref| (a norm-wise error, so entries that are ~0 do not blow it up).

A second, independent oracle: ``reference="torch"`` differentiates the same definitions written
with torch.nn.functional by ``torch.autograd`` (float64, on the CPU), so on the torch backend the
pass is checked by an autodiff that shares nothing with JAX (`torch_reference_loss`).
"""

from __future__ import annotations

import dataclasses
import functools
import json

import numpy as np

from .backends import to_host

DEFAULT_RTOL = {"float64": 1e-10, "float32": 1e-4}
REFERENCES = ("jax", "torch")  # the autodiff oracles: jax.grad, torch.autograd


def _jax():
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        raise ImportError('check_gradients needs JAX as its reference: pip install "backprop[jax]"') from None
    return jax, jnp


def reference_loss(config: dict, precision="highest"):
    """A JAX function loss(params, X, Y) of the network described by ``config`` (an MLP's config).

    ``precision``: the matmul precision (``"highest"`` for gradient checks; None follows JAX's
    default, as the library's own step does, for benchmarks).
    """
    jax, jnp = _jax()
    acts = {
        "identity": lambda z: z,
        "sigmoid": jax.nn.sigmoid,
        "tanh": jnp.tanh,
        "relu": jax.nn.relu,
        "leaky_relu": lambda z: jnp.where(z > 0, z, 0.01 * z),
        "elu": jax.nn.elu,
        "softplus": jax.nn.softplus,
        "silu": jax.nn.silu,
        "gelu": lambda z: jax.nn.gelu(z, approximate=True),
    }
    hidden, loss, alpha = acts[config["activation"]], config["loss"], config["alpha"]
    output = acts[config["output_activation"] or "identity"]

    def loss_fn(params, X, Y):
        h = X
        for l, (W, b) in enumerate(params):
            z = jnp.matmul(h, W, precision=precision) + b
            h = hidden(z) if l < len(params) - 1 else z
        if loss == "squared_error":
            data = 0.5 * jnp.sum((output(h) - Y) ** 2)
        elif loss == "binary_cross_entropy":
            data = -jnp.sum(Y * jax.nn.log_sigmoid(h) + (1 - Y) * jax.nn.log_sigmoid(-h))
        else:
            data = -jnp.sum(Y * jax.nn.log_softmax(h, axis=1))
        penalty = 0.5 * alpha * sum(jnp.sum(W**2) for W, _ in params)
        scale = 1.0 / X.shape[0] if config["reduction"] == "mean" else 1.0
        return scale * (data + penalty)

    return loss_fn


def _torch():
    try:
        import torch
    except ImportError:
        raise ImportError('the torch.autograd reference needs PyTorch: pip install "backprop[torch]"') from None
    return torch


def torch_reference_loss(config: dict):
    """The loss of `reference_loss`, written independently with torch.nn.functional, as a
    function loss(params, X, Y) of float64 torch tensors (the oracle that ``torch.autograd``
    differentiates for ``check_gradients(..., reference="torch")``).  Softplus is
    logaddexp(z, 0), exact at every z (torch's F.softplus switches to z above 20)."""
    torch = _torch()
    F = torch.nn.functional
    acts = {
        "identity": lambda z: z,
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
        "relu": F.relu,
        "leaky_relu": lambda z: F.leaky_relu(z, 0.01),
        "elu": F.elu,
        "softplus": lambda z: torch.logaddexp(z, torch.zeros_like(z)),
        "silu": F.silu,
        "gelu": lambda z: F.gelu(z, approximate="tanh"),
    }
    hidden, loss, alpha = acts[config["activation"]], config["loss"], config["alpha"]
    output = acts[config["output_activation"] or "identity"]

    def loss_fn(params, X, Y):
        h = X
        for l, (W, b) in enumerate(params):
            z = h @ W + b
            h = hidden(z) if l < len(params) - 1 else z
        if loss == "squared_error":
            data = 0.5 * torch.sum((output(h) - Y) ** 2)
        elif loss == "binary_cross_entropy":
            data = -torch.sum(Y * F.logsigmoid(h) + (1 - Y) * F.logsigmoid(-h))
        else:
            data = -torch.sum(Y * F.log_softmax(h, dim=1))
        penalty = 0.5 * alpha * sum(torch.sum(W**2) for W, _ in params)
        scale = 1.0 / X.shape[0] if config["reduction"] == "mean" else 1.0
        return scale * (data + penalty)

    return loss_fn


def _torch_value_and_grad(config: dict, params, X, Y):
    """(loss, [[dW, db], ...]) of `torch_reference_loss` by torch.autograd, float64 on the CPU."""
    torch = _torch()
    tensor = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731 (a copy: the oracle owns its inputs)
    leaves = [[tensor(W).requires_grad_(), tensor(b).requires_grad_()] for W, b in params]
    loss = torch_reference_loss(config)(leaves, tensor(X), tensor(Y))
    grads = torch.autograd.grad(loss, [leaf for layer in leaves for leaf in layer])
    return float(loss.detach()), [[grads[2 * l].numpy(), grads[2 * l + 1].numpy()] for l in range(len(leaves))]


@dataclasses.dataclass
class GradCheckReport:
    """Per-tensor errors of the library's gradients against a float64 autodiff reference
    (``reference``: "jax" for jax.grad, "torch" for torch.autograd)."""

    rows: list  # (name, max_abs_error, max_rel_error)
    loss: float
    reference_loss: float
    rtol: float
    reference: str = "jax"

    @property
    def max_rel_error(self) -> float:
        return max(row[2] for row in self.rows)

    @property
    def passed(self) -> bool:
        return self.max_rel_error <= self.rtol and abs(self.loss - self.reference_loss) <= self.rtol * max(
            abs(self.reference_loss), 1e-30
        )

    def __str__(self) -> str:
        lines = [f"{'tensor':<8}{'max abs err':>14}{'max rel err':>14}"]
        lines += [f"{name:<8}{a:>14.3e}{r:>14.3e}" for name, a, r in self.rows]
        lines.append(
            f"loss {self.loss:.10g} ({self.reference} reference {self.reference_loss:.10g}); rtol {self.rtol:g}: "
            f"{'ok' if self.passed else 'MISMATCH'}"
        )
        return "\n".join(lines)


def relative_error(value: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(max |value − reference|, that divided by max |reference|)."""
    err = float(np.max(np.abs(value - reference), initial=0.0))
    return err, err / max(float(np.max(np.abs(reference), initial=0.0)), np.finfo(np.float64).tiny)


@functools.lru_cache(maxsize=64)
def _reference_value_and_grad(config_json: str):
    """jax.jit(jax.value_and_grad(reference loss)), compiled once per network configuration."""
    jax, _ = _jax()
    return jax.jit(jax.value_and_grad(reference_loss(json.loads(config_json))))


def check_gradients(model, params, X, y, rtol: float | None = None, reference: str = "jax") -> GradCheckReport:
    """Compare ``model.loss_and_grad(params, X, y)`` with an autodiff reference, in float64:
    ``reference="jax"`` (the default) is ``jax.grad`` of `reference_loss`, ``"torch"`` is
    ``torch.autograd`` of `torch_reference_loss`.

    The reference sees the same numbers (params, X and encoded y upcast to float64).  ``rtol``
    defaults to 1e-10 for float64 parameters and 1e-4 for float32.  Raises ImportError (naming
    the extra) when the reference's library is missing, ValueError for an unknown reference.
    """
    if reference not in REFERENCES:
        raise ValueError(f"unknown reference {reference!r}; valid references: {', '.join(REFERENCES)}")
    if reference == "jax":
        _jax()  # the missing extra is named before any work
    else:
        _torch()
    xp, Xb, Yb = model.prepare(params, X, y)
    loss, grads, _ = model.value_and_grad(xp, params, Xb, Yb)
    dtype = str(to_host(params[0][0]).dtype)
    rtol = DEFAULT_RTOL.get(dtype, 1e-4) if rtol is None else rtol
    as64 = lambda a: np.asarray(to_host(a), dtype=np.float64)  # noqa: E731
    if reference == "torch":
        host = [(as64(W), as64(b)) for W, b in params]
        ref_loss, ref_grads = _torch_value_and_grad(model.config, host, as64(Xb), as64(Yb))
    else:
        ref_loss, ref_grads = _jax_value_and_grad(model, params, Xb, Yb, as64)
    rows = []
    for l, ((dW, db), (rW, rb)) in enumerate(zip(grads, ref_grads)):
        rows.append((f"W{l}", *relative_error(as64(dW), rW)))
        rows.append((f"b{l}", *relative_error(as64(db), rb)))
    return GradCheckReport(rows, float(as64(loss)), ref_loss, rtol, reference)


def _jax_value_and_grad(model, params, Xb, Yb, as64):
    """(loss, [[dW, db], ...]) of `reference_loss` by jax.grad, float64 on the CPU."""
    jax, _ = _jax()
    with jax.enable_x64(True):
        cpu = jax.devices("cpu")[0]
        put = lambda a: jax.device_put(as64(a), cpu)  # noqa: E731
        ref_params = tuple((put(W), put(b)) for W, b in params)
        ref_loss, ref_grads = _reference_value_and_grad(json.dumps(model.config, sort_keys=True))(
            ref_params, put(Xb), put(Yb)
        )
        return float(ref_loss), [[np.asarray(g) for g in layer] for layer in ref_grads]
