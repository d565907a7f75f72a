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

Sample weights.  With a weight wᵢ per row (any real numbers: scikit-learn allows negative ones),
the loss is the weighted sum of the rows' losses ℓᵢ (the bracketed per-row terms above):

    L = scale · Σᵢ wᵢ ℓᵢ,   scale = 1 / Σᵢ wᵢ for "mean" (1 for "sum"),

the weighted mean over the batch (scikit-learn's ``np.average(..., weights=w)``; the L2 penalty
keeps its scale · (alpha/2) Σ‖W‖², now alpha / (2 Σ w) as in scikit-learn).  Row i's logits Zᵢ
enter only ℓᵢ, so ∂L/∂Zᵢ = scale · wᵢ · ∂ℓᵢ/∂Zᵢ: with rᵢ = scale · wᵢ,

    δᵢ = rᵢ ∂ℓᵢ/∂Zᵢ = rᵢ (ŷᵢ − yᵢ) ⊙ f′(Zᵢ) (squared error),  rᵢ (σ(Zᵢ) − yᵢ),  rᵢ (softmax(Zᵢ) − yᵢ),

the unweighted δ with its scalar scale replaced by the per-row factor rᵢ.  Everything after the
loss layer is linear in δ and unchanged (dW = Hᵀδ, db = 1ᵀδ, dH = δWᵀ, ...): a weight is a
per-row scale of δ.  Unit weights give scale = 1/n and rᵢ = scale, the unweighted δ bit for bit.
A batch whose weights sum to zero has no mean: scale = 1/0 makes its loss non-finite, and the
training step refuses it.

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


def one_hot(xp, labels, n_classes: int, dtype):
    """Y_ik = [labels_i = k]: the softmax cross-entropy's targets for integer class labels (a
    label outside 0..n_classes − 1 gives a row of zeros: check the range first)."""
    classes = xp.arange(n_classes, dtype=labels.dtype, device=device_of(labels))
    return xp.astype(xp.expand_dims(labels, axis=1) == classes, dtype)


def one_hot_into(lib, labels, table, out) -> None:
    """`one_hot` written into ``out`` (n, k), from ``table`` = `one_hot_table`: on NumPy the rows
    table[labels] (one gather); elsewhere labels == arange(k) (``table``'s first row holds 0..k−1)."""
    if lib is np:
        lib.take(table, labels, axis=0, out=out)
    else:
        lib.equal(labels[:, None], table[0], out=out)


def one_hot_table(lib, n_classes: int, dtype):
    """What `one_hot_into` reads.  On NumPy: the k × k identity over k rows of NaN, so that a label
    outside 0..k−1 gives a row of NaN (−k..−1 and k..2k−1, NumPy's negative indices wrapping into
    the NaN rows) or an IndexError (beyond), never a valid-looking row: the step's loss is then
    NaN and the step refused, with no range check before it.  Elsewhere: arange(k) as one row (a
    label out of range gives a row of zeros there: check the range first)."""
    if lib is np:
        return np.concatenate([np.eye(n_classes, dtype=dtype), np.full((n_classes, n_classes), np.nan, dtype=dtype)])
    return lib.arange(n_classes)[None, :]


def labels_in_range(xp, labels, n_classes: int):
    """A 0-d bool: whether every label lies in 0..n_classes − 1 (computed where the labels are)."""
    return xp.all((labels >= 0) & (labels < n_classes))


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

    def __call__(self, xp, Z, Y, scale, weight=None) -> LossOutput:
        """The loss layer on logits Z and targets Y; ``weight``: None, or the rows' weights w (n,),
        which make the loss scale · Σᵢ wᵢ ℓᵢ and δᵢ = scale · wᵢ ∂ℓᵢ/∂Zᵢ (see the module docstring)."""
        if weight is not None:
            return self._weighted(xp, Z, Y, scale * weight)
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

    def _weighted(self, xp, Z, Y, r) -> LossOutput:
        """`__call__` with the per-row factors rᵢ = scale · wᵢ: L = Σᵢ rᵢ ℓᵢ, δᵢ = rᵢ ∂ℓᵢ/∂Zᵢ."""
        R = r[:, None]
        if self.name == "squared_error":
            Yhat = self.activation.f(xp, Z)
            diff = Yhat - Y
            dYhat = R * diff
            delta = dYhat if self.activation.name == "identity" else dYhat * self.activation.df(xp, Z, Yhat)
            return LossOutput(0.5 * xp.sum(r * xp.sum(diff * diff, axis=1)), delta, Yhat, dYhat)
        if self.name == "binary_cross_entropy":
            Yhat = sigmoid(xp, Z)
            return LossOutput(xp.sum(r * xp.sum(softplus(xp, Z) - Y * Z, axis=1)), R * (Yhat - Y), Yhat, None)
        logp = log_softmax(xp, Z)
        Yhat = xp.exp(logp)
        return LossOutput(-xp.sum(r * xp.sum(Y * logp, axis=1)), R * (Yhat - Y), Yhat, None)

    def delta_kernel(self, weighted: bool = False) -> Callable | None:
        """The in-place form of `__call__` for this loss and output activation, or None:
        ``kernel(lib, Z, Y, scale, dscale, count, plan) -> (loss, correct)`` writes δ over Z, with the
        loss scaled by ``scale`` and δ by ``dscale``, and counts the correct rows when ``count``.
        ``plan`` holds the fused step's scratch: ``E`` (two arrays of Z's shape), ``ones_out`` (ones
        per column), ``rows`` (three per-row vectors), ``column`` (rows[0] as a column), ``classes``
        and ``hits`` (the accuracy count's), and for the weighted kernels ``S`` (one more array of
        Z's shape).  ``weighted``: the form with sample weights, ``kernel(lib, Z, Y, scale, dscale,
        count, plan, w)``: loss scale · Σᵢ wᵢ ℓᵢ and δᵢ = dscale · wᵢ ∂ℓᵢ/∂Zᵢ (unit weights give
        the unweighted δ bit for bit)."""
        link = self.activation
        if self.name == "softmax_cross_entropy":
            return softmax_cross_entropy_weighted_into if weighted else softmax_cross_entropy_into
        if self.name == "squared_error" and link.name == "identity":
            return squared_error_weighted_into if weighted else squared_error_into
        if self.name == "squared_error" and link.f_into is not None and link.df_into is not None:
            return squared_error_through(link.f_into, link.df_into, weighted)
        return None


def softmax_cross_entropy_into(lib, Z, Y, scale, dscale, count, plan):
    """L = −scale Σ y log softmax(Z);  δ = dscale (softmax(Z) − y), in place.

    On NumPy, Z is shifted by its largest entry, so no exponential overflows.  Should a row lie
    so far below it that its exponentials leave the normal range, every row is shifted by its
    own largest entry instead (the textbook form; NumPy's reduction along rows is slow over few
    columns).  Elsewhere (CuPy, torch) every row is shifted by its own largest entry at once: one
    reduction kernel, where testing the row sums would stop the GPU to read them back.
    """
    E, ones = plan.E[0], plan.ones_out  # row sums as products: cheaper than sum(axis=1) over few columns
    total, log_total, y_sum = plan.rows
    _shifted_exp(lib, Z, E, ones, total)
    lib.dot(Y, ones, out=y_sum)
    lib.log(total, out=log_total)
    loss = -scale * (lib.vdot(Y, Z) - lib.vdot(y_sum, log_total))  # Σ y (z − shift − log Σ e^(z − shift))
    lib.divide(dscale, total, out=total)
    E *= plan.column  # dscale · ŷ, ŷ = softmax(Z) (plan.column is total[:, None])
    correct = _count_correct(lib, E, Y, plan) if count else 0
    lib.multiply(Y, dscale, out=Z)
    lib.subtract(E, Z, out=Z)
    return loss, correct


def _shifted_exp(lib, Z, E, ones, total) -> None:
    """E = exp(Z − shift), total = its row sums, then Z −= shift: the shift of `softmax_cross_entropy_into`."""
    shift = Z.max() if lib is np else lib.max(Z, axis=1, keepdims=True)
    lib.subtract(Z, shift, out=E)
    lib.exp(E, out=E)
    lib.dot(E, ones, out=total)
    if lib is np and total.min() < _TINY_SQRT[Z.dtype.char]:
        shift = Z.max(axis=1, keepdims=True)
        lib.subtract(Z, shift, out=E)
        lib.exp(E, out=E)
        lib.dot(E, ones, out=total)
    Z -= shift


def _count_correct(lib, E, Y, plan) -> int:
    """The rows whose largest output (E: the exponentials, any positive row scale) is the target's largest."""
    predicted, target = plan.classes
    lib.argmax(E, axis=1, out=predicted)
    lib.argmax(Y, axis=1, out=target)
    lib.equal(predicted, target, out=plan.hits)
    return lib.count_nonzero(plan.hits)


def softmax_cross_entropy_weighted_into(lib, Z, Y, scale, dscale, count, plan, w):
    """L = scale Σᵢ wᵢ ℓᵢ, ℓᵢ = −Σₖ yᵢₖ log softmax(Z)ᵢₖ;  δᵢ = dscale wᵢ (softmax(Zᵢ) − yᵢ), in place
    (shifted as `softmax_cross_entropy_into`; the correct rows counted before any row is scaled)."""
    E, YZ, ones = plan.E[0], plan.E[1], plan.ones_out
    total, log_total, y_sum = plan.rows
    _shifted_exp(lib, Z, E, ones, total)
    lib.dot(Y, ones, out=y_sum)
    lib.log(total, out=log_total)
    lib.multiply(Y, Z, out=YZ)
    lib.multiply(y_sum, log_total, out=log_total)
    lib.dot(YZ, ones, out=y_sum)
    lib.subtract(log_total, y_sum, out=log_total)  # ℓᵢ = Σₖ yᵢₖ log Σ e^(z − shift) − Σₖ yᵢₖ (zᵢₖ − shift)
    loss = scale * lib.vdot(w, log_total)
    correct = _count_correct(lib, E, Y, plan) if count else 0
    lib.multiply(w, dscale, out=y_sum)  # rᵢ = dscale wᵢ
    lib.divide(y_sum, total, out=total)
    E *= plan.column  # rᵢ ŷᵢ (plan.column is total[:, None])
    lib.multiply(Y, y_sum[:, None], out=Z)
    lib.subtract(E, Z, out=Z)
    return loss, correct


_TINY_SQRT = {np.dtype(t).char: float(np.finfo(t).tiny) ** 0.5 for t in (np.float32, np.float64)}


def squared_error_into(lib, Z, Y, scale, dscale, count, plan):
    """L = scale · ½ Σ (ŷ − y)², ŷ = Z;  δ = dscale (ŷ − y), in place."""
    lib.subtract(Z, Y, out=Z)
    loss = 0.5 * scale * lib.vdot(Z, Z)
    lib.multiply(Z, dscale, out=Z)
    return loss, 0


def squared_error_weighted_into(lib, Z, Y, scale, dscale, count, plan, w):
    """L = scale · ½ Σᵢ wᵢ Σₖ (ŷ − y)²ᵢₖ, ŷ = Z;  δᵢ = dscale wᵢ (ŷᵢ − yᵢ), in place."""
    lib.subtract(Z, Y, out=Z)
    return _weigh_squares(lib, Z, scale, dscale, plan, w), 0


def _weigh_squares(lib, D, scale, dscale, plan, w):
    """The loss scale · ½ Σᵢ wᵢ Σₖ Dᵢₖ² of the differences D, which become dscale wᵢ Dᵢ in place."""
    S, rows = plan.S, plan.rows[0]
    lib.multiply(D, w[:, None], out=S)
    loss = 0.5 * scale * lib.vdot(S, D)
    lib.multiply(w, dscale, out=rows)
    lib.multiply(D, plan.column, out=D)  # plan.column is rows[:, None]
    return loss


def squared_error_through(f_into: Callable, df_into: Callable, weighted: bool = False) -> Callable:
    """The in-place squared error of ŷ = f(Z) for an output activation with in-place forms
    (``weighted``: its form with sample weights, see `Loss.delta_kernel`)."""
    if weighted:

        def weighted_squared_error(lib, Z, Y, scale, dscale, count, plan, w):
            """L = scale · ½ Σᵢ wᵢ Σₖ (ŷ − y)²ᵢₖ, ŷ = f(Z);  δᵢ = dscale wᵢ (ŷᵢ − yᵢ) ⊙ f′(Zᵢ), in place."""
            Yhat, T = plan.E
            f_into(lib, Z, Yhat, T)
            lib.subtract(Yhat, Y, out=Z)
            loss = _weigh_squares(lib, Z, scale, dscale, plan, w)
            df_into(lib, Z, Yhat, T, None)  # Z holds δ here: the in-place forms read H = ŷ or T
            return loss, 0

        return weighted_squared_error

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
