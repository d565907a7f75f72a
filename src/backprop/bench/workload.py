"""What every contender of a cell computes: the same seeded batch and the same optimizer."""

from __future__ import annotations

import numpy as np

from ..core import optim
from .grid import Network

OPTIMIZERS = ("sgd", "adam")


def make_optimizer(name: str = "sgd", network: Network | None = None) -> optim.Optimizer:
    """The optimizer every contender uses: SGD (lr = network.sgd_lr, 0.01 but 1e-4 for wide) or
    Adam (lr = 1e-3), without momentum, weight decay or clipping."""
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
