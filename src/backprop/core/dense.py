"""The dense (fully connected) layer: its forward map and its three gradients.

For a batch H (n × fan_in), weights W (fan_in × fan_out) and bias b (fan_out):

    forward:   Z = H W + b
    backward:  from δ = ∂L/∂Z (n × fan_out)
               (1) dW = Hᵀ δ          — each example adds its outer product hᵢ δᵢᵀ
               (2) db = Σᵢ δᵢ         — the column sums of δ
               (3) dH = δ Wᵀ          — the gradient passed to the layer below
"""

from __future__ import annotations


def dense_forward(H, W, b):
    """Z = H W + b."""
    return H @ W + b


def dense_backward(xp, H, W, delta, input_grad: bool = True):
    """(dW, db, dH) = (Hᵀ δ, Σᵢ δᵢ, δ Wᵀ); dH is None when ``input_grad`` is False (first layer)."""
    dW = H.T @ delta
    db = xp.sum(delta, axis=0)
    dH = delta @ W.T if input_grad else None
    return dW, db, dH
