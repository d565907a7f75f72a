"""Activation functions f and their derivatives f′, written against the array API standard.

Each activation gives ``f(xp, z)`` and ``df(xp, z, h)`` where ``h = f(z)`` is the cached forward
output: where f′ is cheaper from the output (sigmoid h(1−h), tanh 1−h², elu h+1) it uses it.
All functions are numerically stable for large |z| (no overflow in exp).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

LEAKY_SLOPE = 0.01
GELU_C = math.sqrt(2.0 / math.pi)
GELU_A = 0.044715


@dataclasses.dataclass(frozen=True)
class Activation:
    """An elementwise non-linearity: ``f(xp, z)``, ``df(xp, z, h)`` and the weight init it suits."""

    name: str
    f: Callable[[Any, Any], Any]
    df: Callable[[Any, Any, Any], Any]
    init: str  # "glorot" (saturating or linear units) or "he" (rectifier-like units)


def sigmoid(xp, z):
    """σ(z) = 1 / (1 + e^(−z)) = ½ (1 + tanh(z/2)): no exp to overflow, and one pass fewer than a where."""
    return 0.5 * xp.tanh(0.5 * z) + 0.5


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
        Activation("identity", lambda xp, z: z, _identity_df, "glorot"),
        Activation("sigmoid", sigmoid, lambda xp, z, h: h * (1.0 - h), "glorot"),
        Activation("tanh", lambda xp, z: xp.tanh(z), lambda xp, z, h: 1.0 - h * h, "glorot"),
        Activation("relu", lambda xp, z: xp.maximum(z, 0.0), lambda xp, z, h: _step(xp, z), "he"),
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
