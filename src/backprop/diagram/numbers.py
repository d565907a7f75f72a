"""The numbers of one forward and backward pass, and how they are written on a drawing.

`collect` takes everything a diagram shows from one ``model.loss_and_grad(params, X, y,
return_intermediates=True)`` call and returns it as host float64 arrays in a `Numbers`.  `fmt`
writes a number as drawn (4 significant digits, minus sign U+2212) and `parse_number` reads it
back; `sub` writes subscripts, `scale_text` the loss scale.  `check_limits` refuses networks and
batches larger than `MAX_UNITS` units a layer, `MAX_BATCH` examples or `MAX_LAYERS` weight layers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from ..backends import to_host

MAX_UNITS = 8
MAX_BATCH = 4
MAX_LAYERS = 6

_SUB = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")


def sub(k: int) -> str:
    """``k`` in Unicode subscript digits (W₁₂)."""
    return str(k).translate(_SUB)


def fmt(value: float) -> str:
    """A number as drawn: 4 significant digits, the minus sign U+2212, ``e-5`` style exponents."""
    v = float(value)
    if v == 0.0:
        return "0"
    if not math.isfinite(v):
        return str(v)
    s = f"{v:.4g}"
    if "e" in s:
        mantissa, exponent = s.split("e")
        s = f"{mantissa}e{int(exponent)}"
    return s.replace("-", "−")


def parse_number(text: str) -> float:
    """The float a drawn label stands for (the inverse of `fmt`, up to its rounding)."""
    return float(str(text).strip().replace("−", "-"))


def check_limits(layer_sizes: Sequence[int], n_samples: int) -> None:
    """Raise ValueError when a network or batch is too large to draw legibly."""
    sizes = list(layer_sizes)
    problems = []
    widest = max(sizes)
    if widest > MAX_UNITS:
        problems.append(f"layer {sizes.index(widest)} has {widest} units")
    if n_samples > MAX_BATCH:
        problems.append(f"the batch has {n_samples} examples")
    if len(sizes) - 1 > MAX_LAYERS:
        problems.append(f"the network has {len(sizes) - 1} weight layers")
    if problems:
        raise ValueError(
            f"network {'-'.join(map(str, sizes))} with a batch of {n_samples} is too large to draw "
            f"({'; '.join(problems)}); the limits are {MAX_UNITS} units a layer, a batch of {MAX_BATCH} "
            f"and {MAX_LAYERS} weight layers"
        )


def scale_text(scale: float, n: int) -> str:
    """The loss scale s as written: "1", "1/n" for the mean over n examples, else `fmt`."""
    return "1" if scale == 1.0 else f"1/{n}" if abs(scale * n - 1) < 1e-12 else fmt(scale)


def _host(a) -> np.ndarray | None:
    return None if a is None else np.asarray(to_host(a), dtype=np.float64)


@dataclasses.dataclass
class Numbers:
    """Host copies of everything drawn, all taken from one ``loss_and_grad`` call.

    ``H``, ``Z``, ``delta``, ``dH``: the `Intermediates`; ``dW``, ``db``: the gradients;
    ``W``, ``b``: the parameters; ``Y``: the encoded targets; ``contrib[l][i, a, b]`` =
    H[l][i, a]·δ_l[i, b]; ``terms[l][i, a, b]`` = δ_l[i, b]·W_l[a, b] (l > 0);
    ``fprime[l]`` = f′(Z[l−1]) (l > 0); ``out_fprime`` = f′ of the output activation (None when
    δ = ∂L/∂ŷ or fused); ``penalty[l]`` = the L2 term of dW_l (None when alpha = 0).
    """

    loss: float
    scale: float
    H: list
    Z: list
    delta: list
    dH: list
    dW: list
    db: list
    W: list
    b: list
    Y: np.ndarray
    contrib: list
    terms: list
    fprime: list
    out_fprime: np.ndarray | None
    penalty: list

    @property
    def n_layers(self) -> int:
        return len(self.W)

    @property
    def n_samples(self) -> int:
        return self.H[0].shape[0]

    @property
    def sizes(self) -> list[int]:
        return [self.W[0].shape[0]] + [W.shape[1] for W in self.W]


def collect(model, params, X, y) -> Numbers:
    """The numbers of one forward and backward pass of ``model``, for drawing."""
    xp, _, Y = model.prepare(params, X, y)
    loss, grads, inter = model.loss_and_grad(params, X, y, return_intermediates=True)
    H, Z, delta, dH = inter
    L = len(params)
    scale = model.scale(H[0].shape[0])
    # The arrows' labels: products of the library's arrays, in its namespace.
    contrib = [xp.expand_dims(H[l], axis=2) * xp.expand_dims(delta[l], axis=1) for l in range(L)]
    terms = [None] + [xp.expand_dims(delta[l], axis=1) * xp.expand_dims(params[l][0], axis=0) for l in range(1, L)]
    fprime = [None] + [model.activation.df(xp, Z[l - 1], H[l]) for l in range(1, L)]
    out_act = model.loss_layer.activation
    out_fprime = None
    if model.loss_layer.name == "squared_error" and out_act.name != "identity":
        out_fprime = out_act.df(xp, Z[L - 1], H[L])
    penalty = [(model.alpha * scale) * W if model.alpha else None for W, _ in params]
    return Numbers(
        loss=float(_host(loss)),
        scale=scale,
        H=[_host(h) for h in H],
        Z=[_host(z) for z in Z],
        delta=[_host(d) for d in delta],
        dH=[_host(d) for d in dH],
        dW=[_host(g[0]) for g in grads],
        db=[_host(g[1]) for g in grads],
        W=[_host(p[0]) for p in params],
        b=[_host(p[1]) for p in params],
        Y=_host(Y),
        contrib=[_host(c) for c in contrib],
        terms=[_host(t) for t in terms],
        fprime=[_host(f) for f in fprime],
        out_fprime=_host(out_fprime),
        penalty=[_host(p) for p in penalty],
    )
