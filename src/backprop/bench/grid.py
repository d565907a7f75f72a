"""The grid of the step benchmarks: networks × batch sizes × backends, and the FLOP count of a cell."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

from ..backends import BACKENDS, Backend, get_backend
from ..core.mlp import MLP
from .environment import is_gpu


@dataclasses.dataclass(frozen=True)
class Network:
    """A benchmark network: an `MLP` configuration without regularisation (mean reduction)."""

    name: str
    layer_sizes: tuple
    activation: str
    output_activation: str | None
    loss: str
    sgd_lr: float = 0.01  # stable for thousands of steps on one batch (wide diverges at 0.01)

    def model(self) -> MLP:
        return MLP(
            list(self.layer_sizes), activation=self.activation, output_activation=self.output_activation, loss=self.loss
        )

    @property
    def description(self) -> str:
        loss = "softmax CE" if self.loss == "softmax_cross_entropy" else self.loss.replace("_", " ")
        return f"{'-'.join(map(str, self.layer_sizes))} {self.activation}, {loss}"


NETWORKS: dict[str, Network] = {
    n.name: n
    for n in (
        Network("seed", (2, 3, 1), "sigmoid", "sigmoid", "squared_error"),
        Network("digits", (64, 128, 10), "sigmoid", None, "softmax_cross_entropy"),
        Network("mnist", (784, 512, 256, 10), "sigmoid", None, "softmax_cross_entropy"),
        Network("wide", (1024, 4096, 4096, 1024), "relu", None, "squared_error", sgd_lr=1e-4),
    )
}
CPU_BATCH_SIZES = (1, 2, 32, 256, 2048)
GPU_BATCH_SIZES = CPU_BATCH_SIZES + (8192, 65536)
QUICK_NETWORKS = ("seed", "digits", "mnist")
QUICK_BATCH_SIZES = (1, 32, 256)
# Cells above this many FLOPs per step on a CPU are "huge" (wide at batch 2048: ~0.3 TFLOP per step);
# the pytest-benchmark suite skips them unless asked (--bench-huge / BACKPROP_BENCH_HUGE=1).
HUGE_CPU_FLOPS = 50e9


def get_network(network: str | Network) -> Network:
    """The network named ``network`` in `NETWORKS` (a `Network` is returned as it is)."""
    if isinstance(network, Network):
        return network
    if network not in NETWORKS:
        raise ValueError(f"unknown network {network!r}; valid networks: {', '.join(NETWORKS)}")
    return NETWORKS[network]


def step_flops(layer_sizes: Sequence[int], batch: int) -> int:
    """The matrix-product FLOPs of one training step of an MLP on ``batch`` rows.

    Per layer of fan_in × fan_out: the forward H·W, the weight gradient Hᵀ·δ and the input
    gradient δ·Wᵀ, each 2·n·fan_in·fan_out; the first layer skips δ·Wᵀ (nothing needs ∂L/∂X):

        FLOPs = 2·n·Σ_l fan_in_l·fan_out_l·3 − 2·n·fan_in_0·fan_out_0

    Element-wise work (activations, loss, bias, update) is not counted: GFLOP/s figures are
    "matrix-product FLOPs per second", the same count for every contender.
    """
    pairs = list(zip(layer_sizes[:-1], layer_sizes[1:]))
    return 2 * batch * (3 * sum(a * b for a, b in pairs) - pairs[0][0] * pairs[0][1])


def default_batch_sizes(backend: Backend) -> tuple:
    """1, 2, 32, 256, 2048, and on a GPU also 8192 and 65536."""
    return GPU_BATCH_SIZES if is_gpu(backend) else CPU_BATCH_SIZES


def is_huge(network: str, batch: int, backend: Backend) -> bool:
    """Whether a cell is too expensive for a default CPU run of the pytest suite (see HUGE_CPU_FLOPS)."""
    return not is_gpu(backend) and step_flops(NETWORKS[network].layer_sizes, batch) > HUGE_CPU_FLOPS


def selected_backends() -> list[str]:
    """The backends to benchmark by default: BACKPROP_BACKEND alone when set, else all of BACKENDS."""
    name = os.environ.get("BACKPROP_BACKEND", "").strip().lower()
    return [name] if name else list(BACKENDS)


def load_backend(name: str) -> Backend:
    """The backend ``name`` in float32 (BACKPROP_DEVICE applies; BACKPROP_DTYPE does not)."""
    return get_backend(name, dtype="float32")
