"""The multilayer perceptron and its hand-written, batched backward pass.

Layers are numbered l = 0 … L−1; layer l maps H[l] to H[l+1]:

    Z[l] = H[l] W_l + b_l,    H[l+1] = f(Z[l])        (H[0] = X, H[L] = ŷ from the loss layer)

The loss layer gives δ = ∂L/∂Z[L−1]; `backward` then walks down the layers with the five steps
of the derivation.  Parameters are a plain tuple of (W, b) pairs of arrays of any array-API
backend; every function here is pure, so a training step can be compiled (``jax.jit``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from array_api_compat import array_namespace

from ..backends import to_host
from .activations import get_activation
from .dense import dense_backward, dense_forward
from .losses import REDUCTIONS, get_loss
from .validation import as_matrix, as_targets, check_finite, to_namespace

INITS = ("auto", "glorot_uniform", "he_normal", "sklearn")

Params = tuple  # ((W_0, b_0), (W_1, b_1), ...)


class Intermediates(NamedTuple):
    """Every quantity of one forward and backward pass (0-based layers, see the module docstring).

    ``H[l]``: input of layer l (H[0] = X, H[L] = ŷ); ``Z[l]``: pre-activation of layer l;
    ``delta[l]`` = ∂L/∂Z[l]; ``dH[l]`` = ∂L/∂H[l] for l = 1 … L (dH[0] is None: the gradient
    with respect to X is not needed; dH[L] = ∂L/∂ŷ is None where the loss fuses δ).
    """

    H: tuple
    Z: tuple
    delta: tuple
    dH: tuple


def backward(xp, params: Params, H: Sequence, Z: Sequence, delta, activation):
    """The backward pass from δ = ∂L/∂Z of the output layer down to the first layer.

    For l = L−1 … 0:
        (1) dW_l = H[l]ᵀ δ      (2) db_l = Σᵢ δᵢ      (3) dH[l] = δ W_lᵀ
        (4) δ ← dH[l] ⊙ f′(Z[l−1])                   (5) repeat one layer down.

    Returns ``(grads, deltas, dH)``: ((dW, db) per layer), δ per layer, and dH per layer input.
    """
    L = len(params)
    grads, deltas, dH = [None] * L, [None] * L, [None] * (L + 1)
    for l in reversed(range(L)):  # (5)
        deltas[l] = delta
        dW, db, dH[l] = dense_backward(xp, H[l], params[l][0], delta, input_grad=l > 0)  # (1) (2) (3)
        grads[l] = (dW, db)
        if l > 0:
            delta = dH[l] * activation.df(xp, Z[l - 1], H[l])  # (4)
    return tuple(grads), tuple(deltas), dH


class MLP:
    """A multilayer perceptron trained by a hand-written backward pass.

    ``layer_sizes``: (n_features, hidden…, n_outputs).  ``activation``: the hidden layers' f.
    ``output_activation``: ŷ = f(Z) for squared_error (default identity); the cross-entropies fix
    their own link (sigmoid, softmax) and take None.  ``loss``: squared_error,
    binary_cross_entropy or softmax_cross_entropy (see `backprop.core.losses` for the formulas).
    ``reduction``: "mean" (scale = 1/n over the batch) or "sum" (scale = 1).
    ``alpha``: L2 penalty scale · (alpha/2) Σ_l ‖W_l‖²_F on the weights, not the biases, so its
    gradient adds scale · alpha · W_l to dW_l (with "mean" this is scikit-learn's scaling).
    ``init``: "auto" (He normal before rectifier-like units, Glorot uniform otherwise; zero
    biases), "glorot_uniform", "he_normal" or "sklearn" (scikit-learn's uniform ±√(k/(fan_in+fan_out)),
    k = 2 for logistic units and 6 otherwise, for weights and biases).
    """

    def __init__(
        self,
        layer_sizes: Sequence[int],
        activation: str = "relu",
        output_activation: str | None = None,
        loss: str = "squared_error",
        alpha: float = 0.0,
        reduction: str = "mean",
        init: str = "auto",
    ):
        try:
            sizes = tuple(layer_sizes) if not isinstance(layer_sizes, (str, bytes)) else ()
        except TypeError:  # not a sequence (None, a bare int...)
            sizes = ()
        if len(sizes) < 2 or not all(
            isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 1 for s in sizes
        ):
            raise ValueError(
                f"layer_sizes must be at least two positive integers (n_features, ..., n_outputs), got {layer_sizes!r}"
            )
        sizes = tuple(int(s) for s in sizes)  # NumPy integers (e.g. y.max() + 1) as plain ints
        if isinstance(alpha, bool) or not (isinstance(alpha, numbers.Real) and math.isfinite(alpha) and alpha >= 0):
            raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"unknown reduction {reduction!r}; valid reductions: {', '.join(REDUCTIONS)}")
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; valid inits: {', '.join(INITS)}")
        self.layer_sizes = sizes
        self.activation = get_activation(activation)
        self.loss_layer = get_loss(loss, output_activation)
        if self.loss_layer.name == "softmax_cross_entropy" and sizes[-1] < 2:
            raise ValueError("softmax_cross_entropy needs at least 2 outputs (one per class)")
        self.alpha = float(alpha)
        self.reduction = reduction
        self.init_scheme = init

    # -- description -------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        """The number of weight layers L."""
        return len(self.layer_sizes) - 1

    @property
    def n_params(self) -> int:
        return sum((a + 1) * b for a, b in zip(self.layer_sizes[:-1], self.layer_sizes[1:]))

    @property
    def config(self) -> dict:
        """The constructor arguments as a JSON-serialisable dict (``MLP(**model.config)`` rebuilds it)."""
        squared = self.loss_layer.name == "squared_error"
        return {
            "layer_sizes": list(self.layer_sizes),
            "activation": self.activation.name,
            "output_activation": self.loss_layer.activation.name if squared else None,
            "loss": self.loss_layer.name,
            "alpha": self.alpha,
            "reduction": self.reduction,
            "init": self.init_scheme,
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
        return f"MLP({args})"

    # -- parameters --------------------------------------------------------------------------
    def init(self, seed: int | None = 0, backend=None) -> Params:
        """Seeded initial parameters ((W, b) per layer, W of shape (fan_in, fan_out)).

        The numbers are drawn on the host (see `backprop.backends.Generator`), so a seed gives
        the same initial weights on every backend.  ``backend``: a Backend, a name or None (env).
        """
        from ..backends import get_backend

        backend = get_backend(backend)
        rng = backend.rng(seed)
        params = []
        for l, (fan_in, fan_out) in enumerate(zip(self.layer_sizes[:-1], self.layer_sizes[1:])):
            following = self.activation if l < self.n_layers - 1 else self.loss_layer.activation
            scheme = self.init_scheme
            if scheme == "auto":
                scheme = "he_normal" if following.init == "he" else "glorot_uniform"
            if scheme == "he_normal":
                W, b = rng.normal((fan_in, fan_out), std=math.sqrt(2.0 / fan_in)), None
            elif scheme == "glorot_uniform":
                bound = math.sqrt(6.0 / (fan_in + fan_out))
                W, b = rng.uniform((fan_in, fan_out), -bound, bound), None
            else:  # sklearn
                bound = math.sqrt((2.0 if self.activation.name == "sigmoid" else 6.0) / (fan_in + fan_out))
                W, b = rng.uniform((fan_in, fan_out), -bound, bound), rng.uniform((fan_out,), -bound, bound)
            params.append(
                (W, b if b is not None else backend.xp.zeros(fan_out, dtype=backend.dtype, device=backend.device))
            )
        return tuple(params)

    def check_params(self, params: Params):
        """The array namespace of ``params`` after checking their layout against the network."""
        if not isinstance(params, (tuple, list)) or len(params) != self.n_layers:
            got = len(params) if isinstance(params, (tuple, list)) else type(params).__name__
            raise ValueError(f"params must be a sequence of {self.n_layers} (W, b) pairs, got {got}")
        for l, layer in enumerate(params):
            if not isinstance(layer, (tuple, list)) or len(layer) != 2:
                got = f"{len(layer)} items" if isinstance(layer, (tuple, list)) else type(layer).__name__
                raise ValueError(f"params[{l}] must be a (W, b) pair, got {got}")
        try:
            xp = array_namespace(*(a for layer in params for a in layer))
        except TypeError as exc:
            raise TypeError(f"params must be arrays of one array-API backend ({exc})") from None
        for l, ((W, b), fan_in, fan_out) in enumerate(zip(params, self.layer_sizes[:-1], self.layer_sizes[1:])):
            if not (xp.isdtype(W.dtype, "real floating") and xp.isdtype(b.dtype, "real floating")):
                raise TypeError(
                    f"layer {l}: params must be real floating-point arrays, got W {W.dtype} and b {b.dtype}"
                )
            if tuple(W.shape) != (fan_in, fan_out) or tuple(b.shape) != (fan_out,):
                raise ValueError(
                    f"layer {l}: W has shape {tuple(W.shape)} and b {tuple(b.shape)}, "
                    f"expected ({fan_in}, {fan_out}) and ({fan_out},)"
                )
        return xp

    # -- forward and backward ----------------------------------------------------------------
    def forward(self, xp, params: Params, X):
        """The forward pass: lists H (H[0] = X, hidden outputs) and Z (every layer), no loss."""
        H, Z = [X], []
        for l, (W, b) in enumerate(params):
            Z.append(dense_forward(H[-1], W, b))
            if l < len(params) - 1:
                H.append(self.activation.f(xp, Z[-1]))
        return H, Z

    def scale(self, n_samples: int, weight_sum=None):
        """The reduction factor: 1/n for "mean" (1/Σw, the weighted mean, given the sum of the rows'
        weights: a number, or an array inside a compiled step; a zero sum gives inf), 1 for "sum"."""
        if self.reduction != "mean":
            return 1.0
        if weight_sum is None:
            return 1.0 / n_samples
        if isinstance(weight_sum, numbers.Real) and weight_sum == 0:
            return math.inf  # no weighted mean: the step's loss is not finite, and it is refused
        return 1.0 / weight_sum

    def penalty(self, xp, params: Params, scale: float):
        """The L2 term scale · (alpha/2) Σ_l ‖W_l‖²_F."""
        return 0.5 * self.alpha * scale * sum(xp.sum(W * W) for W, _ in params)

    def total_loss(self, data_loss, penalty):
        """The loss reported for a batch: the loss layer's value plus the L2 penalty."""
        return data_loss + penalty if self.alpha else data_loss

    def value(self, xp, params: Params, X, Y, weight=None):
        """(loss, ŷ) for checked, encoded inputs: the forward pass and the loss layer only (pure);
        ``weight``: None or the rows' weights (see `value_and_grad`)."""
        scale = self.scale(X.shape[0]) if weight is None else self.scale(X.shape[0], xp.sum(weight))
        out = self.loss_layer(xp, self.forward(xp, params, X)[1][-1], Y, scale, weight)
        return self.total_loss(out.value, self.penalty(xp, params, scale) if self.alpha else 0.0), out.output

    def value_and_grad(self, xp, params: Params, X, Y, weight=None):
        """Loss, gradients and `Intermediates` for checked, encoded inputs (pure; no input checks).

        ``weight``: None, or the rows' sample weights w (n,) of X's dtype: the loss becomes the
        weighted mean scale · Σᵢ wᵢ ℓᵢ with scale = 1/Σw ("mean"; 1 for "sum"), the L2 term keeps
        scale · (alpha/2) Σ‖W‖², and the loss layer's δ rows are scaled by wᵢ (`backprop.core.losses`);
        the backward pass is unchanged.  This is the training step's computation; use
        `loss_and_grad` for raw user input.
        """
        scale = self.scale(X.shape[0]) if weight is None else self.scale(X.shape[0], xp.sum(weight))
        H, Z = self.forward(xp, params, X)
        out = self.loss_layer(xp, Z[-1], Y, scale, weight)
        grads, deltas, dH = backward(xp, params, H, Z, out.delta, self.activation)
        loss = self.total_loss(out.value, self.penalty(xp, params, scale) if self.alpha else 0.0)
        if self.alpha:
            grads = tuple((dW + (self.alpha * scale) * W, db) for (dW, db), (W, _) in zip(grads, params))
        dH[-1] = out.output_grad
        return loss, grads, Intermediates(tuple(H) + (out.output,), tuple(Z), deltas, tuple(dH))

    # -- public, checked entry points --------------------------------------------------------
    def prepare(self, params: Params, X, y=None):
        """(xp, X, Y): checked inputs moved to the params' backend, y encoded for the loss."""
        xp = self.check_params(params)
        like = params[0][0]
        X = as_matrix(X, xp, like, self.layer_sizes[0])
        if y is None:
            return xp, X, None
        return xp, X, as_targets(self.loss_layer, y, X.shape[0], self.layer_sizes[-1], xp, like)

    def logits(self, params: Params, X):
        """Z of the output layer (pre-activation) for the rows of X."""
        xp, X, _ = self.prepare(params, X)
        return self.forward(xp, params, X)[1][-1]

    def predict(self, params: Params, X):
        """ŷ: the network's output (class probabilities for the cross-entropy losses)."""
        xp, X, _ = self.prepare(params, X)
        output = self.loss_layer.output(xp, self.forward(xp, params, X)[1][-1])
        check_finite(xp, output, "the network's output (X or the parameters are too large for the dtype?)")
        return output

    def prepare_weight(self, params: Params, sample_weight, n_samples: int):
        """``sample_weight`` as a 1-D array of the params' backend, device and dtype: ValueError
        unless it holds ``n_samples`` finite real numbers (any sign, as scikit-learn allows)."""
        host = to_host(sample_weight)
        if host.ndim != 1 or host.shape[0] != n_samples:
            raise ValueError(
                f"sample_weight must be 1-D with {n_samples} entries (one per row of X), got shape {host.shape}"
            )
        if host.dtype.kind not in "fiub":
            raise TypeError(f"sample_weight must hold real numbers, got dtype {host.dtype}")
        check_finite(np, host, "sample_weight")
        like = params[0][0]
        weight = to_namespace(host, array_namespace(like), like, dtype=like.dtype)
        check_finite(array_namespace(like), weight, "sample_weight (converted to the parameters' dtype)")
        return weight

    def loss(self, params: Params, X, y, sample_weight=None):
        """The loss (with the L2 penalty) on (X, y), the weighted mean with ``sample_weight``."""
        xp, X, Y = self.prepare(params, X, y)
        weight = None if sample_weight is None else self.prepare_weight(params, sample_weight, X.shape[0])
        return self.value(xp, params, X, Y, weight)[0]

    def loss_and_grad(self, params: Params, X, y, return_intermediates: bool = False, sample_weight=None):
        """``(loss, grads)`` with grads shaped like params; ``(loss, grads, Intermediates)`` on request.

        X: (n_samples, n_features) floats; y: targets for the loss (see `backprop.core.validation.as_targets`);
        ``sample_weight``: None or one real weight per row (see `value_and_grad`).
        """
        xp, X, Y = self.prepare(params, X, y)
        weight = None if sample_weight is None else self.prepare_weight(params, sample_weight, X.shape[0])
        loss, grads, intermediates = self.value_and_grad(xp, params, X, Y, weight)
        check_finite(xp, loss, "the loss (X, y or the parameters are too large for the dtype?)")
        return (loss, grads, intermediates) if return_intermediates else (loss, grads)
