"""Activation functions f and their derivatives f′, written against the array API standard.

Each activation gives ``f(xp, z)`` and ``df(xp, z, h)`` where ``h = f(z)`` is the cached forward
output: where f′ is cheaper from the output (sigmoid h(1−h), tanh 1−h², elu h+1) it uses it.
All functions are numerically stable for large |z| (no overflow in exp).

Beside each equation may sit its in-place form, for backends whose arrays can be written (NumPy,
CuPy: ``lib`` is that library), used by the fused step (`backprop.training.fused`):

    f_into(lib, Z, out, T)     out = f(Z); Z may be overwritten, T (Z's shape) is scratch
    df_into(lib, D, H, T, Z)   D ⊙= f′, from H = f(Z) or T (see ``mask_in_scratch``); the fused step
                               writes δ over Z, so Z no longer holds the pre-activation here

An activation without them runs its array-API form and the result is copied in.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from ..backends import one_call_logistic, one_call_logistic_derivative

LEAKY_SLOPE = 0.01
GELU_C = math.sqrt(2.0 / math.pi)
GELU_A = 0.044715


@dataclasses.dataclass(frozen=True)
class Activation:
    """An elementwise non-linearity: ``f(xp, z)``, ``df(xp, z, h)``, the weight init it suits and,
    optionally, their in-place forms (see the module docstring).  ``mask_in_scratch``: ``f_into``
    leaves in T what ``df_into`` reads, so each layer keeps its own T from the forward pass to the
    backward pass (otherwise one scratch buffer serves every layer)."""

    name: str
    f: Callable[[Any, Any], Any]
    df: Callable[[Any, Any, Any], Any]
    init: str  # "glorot" (saturating or linear units) or "he" (rectifier-like units)
    f_into: Callable | None = dataclasses.field(default=None, repr=False)
    df_into: Callable | None = dataclasses.field(default=None, repr=False)
    mask_in_scratch: bool = False


def sigmoid(xp, z):
    """σ(z) = 1 / (1 + e^(−z)), accurate to the dtype's last bits over its whole range: with
    e = e^(−|z|) (never overflows), σ = 1 / (1 + e) for z ≥ 0 and e / (1 + e) for z < 0, so a
    probability near 0 keeps its relative accuracy down to the smallest subnormal instead of
    rounding to 0 (the form ½ tanh(z/2) + ½ gives exactly 0 from z ≈ −17 in float32)."""
    e = xp.exp(-xp.abs(z))
    return xp.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def sigmoid_into(lib, Z, out, T):
    """σ(Z) = 1 / (1 + e^(−Z)) in place: for large −Z, e^(−Z) = inf and σ = 0 (the fused step runs
    with floating-point warnings off).  NumPy's float32 exp is cheaper than its tanh, so this form
    differs from `sigmoid`'s.  Where the backend has a one-call logistic ufunc for arrays of this
    size (`backprop.backends.one_call_logistic`), that one call replaces the four."""
    expit, most = one_call_logistic(lib)
    if Z.shape[0] * Z.shape[1] <= most:  # (Z is 2-D; torch has no .size attribute)
        expit(Z, out=out)
        return
    lib.negative(Z, out=Z)
    lib.exp(Z, out=Z)
    lib.add(Z, 1.0, out=Z)
    lib.divide(1.0, Z, out=out)


def _sigmoid_df_into(lib, D, H, T, Z):
    """δ ⊙= h (1 − h); one call where the backend has one for it (`backprop.backends.one_call_logistic_derivative`)."""
    kernel = one_call_logistic_derivative(lib)
    if kernel is not None:
        kernel(D, H)
        return
    lib.subtract(1.0, H, out=T)
    lib.multiply(T, H, out=T)
    lib.multiply(D, T, out=D)


def _tanh_df_into(lib, D, H, T, Z):
    """δ ⊙= 1 − h²."""
    lib.multiply(H, H, out=T)
    lib.subtract(1.0, T, out=T)
    lib.multiply(D, T, out=D)


def _relu_into(lib, Z, out, T):
    """max(Z, 0) as Z ⊙ [Z > 0], keeping the mask [Z > 0] in T for the derivative (one comparison
    for both passes).  Only where Z = −inf (an overflow) does this differ: NaN instead of 0, and
    the step is refused."""
    lib.greater(Z, 0.0, out=T)
    lib.multiply(Z, T, out=out)


def _relu_df_into(lib, D, H, T, Z):
    """δ ⊙= [z > 0], the mask `_relu_into` left in T."""
    lib.multiply(D, T, out=D)


def softplus(xp, z):
    """log(1 + e^z) = max(z, 0) + log1p(e^(−|z|))."""
    return xp.maximum(z, 0.0) + xp.log1p(xp.exp(-xp.abs(z)))


def _step(xp, z):
    """1 where z > 0, else 0, in z's dtype."""
    return xp.astype(z > 0, z.dtype)


def _identity_df(xp, z, h):
    return xp.ones_like(z)


def _elu(xp, z):
    return xp.where(z > 0, z, xp.expm1(xp.minimum(z, 0.0)))


def _silu_df(xp, z, h):
    s = sigmoid(xp, z)
    return s * (1.0 + z * (1.0 - s))


def _gelu(xp, z):
    """GELU, tanh form: ½ z (1 + tanh(c (z + a z³))), c = √(2/π), a = 0.044715."""
    return 0.5 * z * (1.0 + xp.tanh(GELU_C * (z + GELU_A * z * z * z)))


def _gelu_df(xp, z, h):
    t = xp.tanh(GELU_C * (z + GELU_A * z * z * z))
    return 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * GELU_C * (1.0 + 3.0 * GELU_A * z * z)


ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in (
        Activation(
            "identity",
            lambda xp, z: z,
            _identity_df,
            "glorot",
            f_into=lambda lib, Z, out, T: lib.copyto(out, Z),
            df_into=lambda lib, D, H, T, Z: None,
        ),
        Activation(
            "sigmoid", sigmoid, lambda xp, z, h: h * (1.0 - h), "glorot", f_into=sigmoid_into, df_into=_sigmoid_df_into
        ),
        Activation(
            "tanh",
            lambda xp, z: xp.tanh(z),
            lambda xp, z, h: 1.0 - h * h,
            "glorot",
            f_into=lambda lib, Z, out, T: lib.tanh(Z, out=out),
            df_into=_tanh_df_into,
        ),
        Activation(
            "relu",
            lambda xp, z: xp.maximum(z, 0.0),
            lambda xp, z, h: _step(xp, z),
            "he",
            f_into=_relu_into,
            df_into=_relu_df_into,
            mask_in_scratch=True,
        ),
        Activation(
            "leaky_relu",
            lambda xp, z: xp.where(z > 0, z, LEAKY_SLOPE * z),
            lambda xp, z, h: (1.0 - LEAKY_SLOPE) * _step(xp, z) + LEAKY_SLOPE,
            "he",
        ),
        Activation("elu", _elu, lambda xp, z, h: xp.where(z > 0, xp.ones_like(z), h + 1.0), "he"),
        Activation("softplus", softplus, lambda xp, z, h: sigmoid(xp, z), "he"),
        Activation("silu", lambda xp, z: z * sigmoid(xp, z), _silu_df, "he"),
        Activation("gelu", _gelu, _gelu_df, "he"),
    )
}
ALIASES = {"logistic": "sigmoid", "linear": "identity", "swish": "silu"}


def get_activation(name: str) -> Activation:
    """The activation called ``name`` (aliases: logistic → sigmoid, linear → identity, swish → silu)."""
    if isinstance(name, Activation):
        return name
    key = ALIASES.get(str(name).lower(), str(name).lower())
    if key not in ACTIVATIONS:
        valid = ", ".join(sorted(ACTIVATIONS) + sorted(ALIASES))
        raise ValueError(f"unknown activation {name!r}; valid activations: {valid}")
    return ACTIVATIONS[key]
