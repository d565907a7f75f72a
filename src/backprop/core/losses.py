"""The loss layer: the loss value and the δ that starts the backward pass.

With n examples in the batch, ``scale`` is 1/n for ``reduction="mean"`` (the default) and 1 for
``reduction="sum"`` (the classic derivation).  Z are the output layer's pre-activations
(logits), Y the encoded targets (same shape as Z), ŷ the network's output:

- ``squared_error``: ŷ = f(Z) for the chosen output activation f,
  L = scale · ½ Σᵢₖ (ŷᵢₖ − yᵢₖ)²,  ∂L/∂ŷ = scale · (ŷ − y),  δ = ∂L/∂ŷ ⊙ f′(Z).
- ``binary_cross_entropy`` (on logits): ŷ = σ(Z),
  L = scale · Σᵢₖ [softplus(Zᵢₖ) − yᵢₖ Zᵢₖ] = −scale · Σ [y log ŷ + (1 − y) log(1 − ŷ)],
  δ = scale · (σ(Z) − y)  (fused: the stable form).
- ``softmax_cross_entropy`` (on logits; integer labels or one-hot/probability rows): ŷ = softmax(Z),
  L = −scale · Σᵢₖ yᵢₖ log softmax(Z)ᵢₖ,  δ = scale · (softmax(Z) − y)  (fused).

Each function here is pure and uses only the array API standard.  Beside them sit the in-place
forms of the loss layer for the fused step (`Loss.delta_kernel`): they write δ over Z and return
(loss, correct) on backends whose arrays can be written (NumPy, CuPy: ``lib``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
from array_api_compat import device as device_of

from .activations import Activation, get_activation, sigmoid, softplus

LOSSES = ("squared_error", "binary_cross_entropy", "softmax_cross_entropy")
REDUCTIONS = ("mean", "sum")


class LossOutput(NamedTuple):
    """What the loss layer hands the backward pass."""

    value: Any  # the scalar loss (without the L2 penalty)
    delta: Any  # δ = ∂L/∂Z of the output layer
    output: Any  # ŷ
    output_grad: Any  # ∂L/∂ŷ, or None where δ is fused (cross-entropies)


def log_softmax(xp, z):
    """log softmax(z) along axis 1 = z − max(z) − log Σ exp(z − max(z))."""
    shifted = z - xp.max(z, axis=1, keepdims=True)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=1, keepdims=True))


def first_argmax(xp, A):
    """argmax along axis 1 (the first of tied largest entries) from two plain reductions:
    min{j : A_ij = max_k A_ik}, which XLA compiles into less work than argmax's paired (value,
    index) reduction.  A row holding NaN gets index n_columns, matching no class."""
    columns, device = A.shape[1], device_of(A)
    j = xp.arange(columns, dtype=xp.int32, device=device)
    tops = A == xp.max(A, axis=1, keepdims=True)
    return xp.min(xp.where(tops, j, xp.asarray(columns, dtype=xp.int32, device=device)), axis=1)


@dataclasses.dataclass(frozen=True)
class Loss:
    """A loss with its output link: ``output(xp, Z)`` gives ŷ, ``__call__`` gives a `LossOutput`."""

    name: str
    activation: Activation  # the output activation (the link for the cross-entropies)

    @property
    def classification(self) -> bool:
        return self.name != "squared_error"

    def output(self, xp, Z):
        """ŷ for the logits Z."""
        return self.activation.f(xp, Z)

    def count_correct(self, xp, output, Y):
        """The number of rows whose predicted class is right (softmax: argmax; sigmoid: every label > ½)."""
        if self.name == "softmax_cross_entropy":
            hits = first_argmax(xp, output) == first_argmax(xp, Y)
        else:
            hits = xp.all((output > 0.5) == (Y > 0.5), axis=1)
        return xp.sum(xp.astype(hits, output.dtype))

    def __call__(self, xp, Z, Y, scale) -> LossOutput:
        if self.name == "squared_error":
            Yhat = self.activation.f(xp, Z)
            diff = Yhat - Y
            dYhat = scale * diff
            delta = dYhat if self.activation.name == "identity" else dYhat * self.activation.df(xp, Z, Yhat)
            return LossOutput(0.5 * scale * xp.sum(diff * diff), delta, Yhat, dYhat)
        if self.name == "binary_cross_entropy":
            Yhat = sigmoid(xp, Z)
            return LossOutput(scale * xp.sum(softplus(xp, Z) - Y * Z), scale * (Yhat - Y), Yhat, None)
        logp = log_softmax(xp, Z)
        Yhat = xp.exp(logp)
        return LossOutput(-scale * xp.sum(Y * logp), scale * (Yhat - Y), Yhat, None)

    def delta_kernel(self) -> Callable | None:
        """The in-place form of `__call__` for this loss and output activation, or None:
        ``kernel(lib, Z, Y, scale, dscale, count, plan) -> (loss, correct)`` writes δ over Z, with the
        loss scaled by ``scale`` and δ by ``dscale``, and counts the correct rows when ``count``.
        ``plan`` holds the fused step's scratch: ``E`` (two arrays of Z's shape), ``ones_out`` (ones
        per column), ``rows`` (three per-row vectors), ``column`` (rows[0] as a column), ``classes``
        and ``hits`` (the accuracy count's)."""
        link = self.activation
        if self.name == "softmax_cross_entropy":
            return softmax_cross_entropy_into
        if self.name == "squared_error" and link.name == "identity":
            return squared_error_into
        if self.name == "squared_error" and link.f_into is not None and link.df_into is not None:
            return squared_error_through(link.f_into, link.df_into)
        return None


def softmax_cross_entropy_into(lib, Z, Y, scale, dscale, count, plan):
    """L = −scale Σ y log softmax(Z);  δ = dscale (softmax(Z) − y), in place.

    On NumPy, Z is shifted by its largest entry, so no exponential overflows.  Should a row lie
    so far below it that its exponentials leave the normal range, every row is shifted by its
    own largest entry instead (the textbook form; NumPy's reduction along rows is slow over few
    columns).  Elsewhere (CuPy) every row is shifted by its own largest entry at once: one
    reduction kernel, where testing the row sums would stop the GPU to read them back.
    """
    E, ones = plan.E[0], plan.ones_out  # row sums as products: cheaper than sum(axis=1) over few columns
    total, log_total, y_sum = plan.rows
    shift = Z.max() if lib is np else Z.max(axis=1, keepdims=True)
    lib.subtract(Z, shift, out=E)
    lib.exp(E, out=E)
    lib.dot(E, ones, out=total)
    if lib is np and total.min() < _TINY_SQRT[Z.dtype.char]:
        shift = Z.max(axis=1, keepdims=True)
        lib.subtract(Z, shift, out=E)
        lib.exp(E, out=E)
        lib.dot(E, ones, out=total)
    Z -= shift
    lib.dot(Y, ones, out=y_sum)
    lib.log(total, out=log_total)
    loss = -scale * (lib.vdot(Y, Z) - lib.vdot(y_sum, log_total))  # Σ y (z − shift − log Σ e^(z − shift))
    lib.divide(dscale, total, out=total)
    E *= plan.column  # dscale · ŷ, ŷ = softmax(Z) (plan.column is total[:, None])
    correct = 0
    if count:  # rows whose largest output is the target's largest
        predicted, target = plan.classes
        lib.argmax(E, axis=1, out=predicted)
        lib.argmax(Y, axis=1, out=target)
        lib.equal(predicted, target, out=plan.hits)
        correct = lib.count_nonzero(plan.hits)
    lib.multiply(Y, dscale, out=Z)
    lib.subtract(E, Z, out=Z)
    return loss, correct


_TINY_SQRT = {np.dtype(t).char: float(np.finfo(t).tiny) ** 0.5 for t in (np.float32, np.float64)}


def squared_error_into(lib, Z, Y, scale, dscale, count, plan):
    """L = scale · ½ Σ (ŷ − y)², ŷ = Z;  δ = dscale (ŷ − y), in place."""
    lib.subtract(Z, Y, out=Z)
    loss = 0.5 * scale * lib.vdot(Z, Z)
    lib.multiply(Z, dscale, out=Z)
    return loss, 0


def squared_error_through(f_into: Callable, df_into: Callable) -> Callable:
    """The in-place squared error of ŷ = f(Z) for an output activation with in-place forms."""

    def squared_error(lib, Z, Y, scale, dscale, count, plan):
        """L = scale · ½ Σ (ŷ − y)², ŷ = f(Z);  δ = dscale (ŷ − y) ⊙ f′(Z), in place."""
        Yhat, T = plan.E
        f_into(lib, Z, Yhat, T)
        lib.subtract(Yhat, Y, out=Z)
        loss = 0.5 * scale * lib.vdot(Z, Z)
        lib.multiply(Z, dscale, out=Z)
        df_into(lib, Z, Yhat, T, None)  # Z holds δ here: the in-place forms read H = ŷ or T
        return loss, 0

    return squared_error


SOFTMAX = Activation("softmax", lambda xp, z: xp.exp(log_softmax(xp, z)), None, "glorot")
_LINKS = {"binary_cross_entropy": get_activation("sigmoid"), "softmax_cross_entropy": SOFTMAX}


def get_loss(name: str, output_activation: str | None = None) -> Loss:
    """The loss ``name`` with its output activation.

    ``squared_error`` takes any activation (default identity).  The cross-entropies work on
    logits and fix their link: ``output_activation`` must be None or that link
    (sigmoid/logistic for binary_cross_entropy, softmax for softmax_cross_entropy).
    """
    key = str(name).lower()
    if key not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid losses: {', '.join(LOSSES)}")
    if key == "squared_error":
        return Loss(key, get_activation(output_activation or "identity"))
    link = _LINKS[key]
    if output_activation is not None:
        given = "softmax" if str(output_activation).lower() == "softmax" else get_activation(output_activation).name
        if given != link.name:
            raise ValueError(
                f"loss {key!r} works on logits with a {link.name} output; output_activation must be None "
                f"or {link.name!r}, got {output_activation!r}"
            )
    return Loss(key, link)
