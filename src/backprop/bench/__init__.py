"""Benchmarks of one training step: the grid, the contenders and the timer.

One place for what the pytest-benchmark suite in ``benchmarks/`` and ``backprop bench`` measure,
so the two cannot drift apart.  The subject is one full training step in float32 — forward,
hand-written backward, optimizer update — with the device synchronised inside the timed call.

The grid: `NETWORKS` × batch sizes (`CPU_BATCH_SIZES`, plus 8192 and 65536 on a GPU, see
`default_batch_sizes`) × backends.  Each cell is measured for several contenders, each a
callable that runs ONE step and synchronises (see `build`):

``backprop``
    the library's own compiled step, `backprop.training.trainer.Trainer.step`, fed back its own outputs
    (on JAX the parameters and optimizer state are donated, as in training).
``train_step``
    `Trainer.train_step` on the raw batch (X and integer labels or targets, on the backend's
    device), as a user's own loop calls it: the step of ``backprop`` plus the per-call checks,
    the label encoding and reading the loss back.
``matmul_floor``
    only the matrix products that a step needs, into preallocated outputs where the backend
    allows (``out=`` on NumPy and CuPy; one ``jax.jit`` of just the products on JAX): per layer
    the forward H·W, the weight gradient Hᵀ·δ and, for every layer but the first, δ·Wᵀ.  It is
    what the BLAS (cuBLAS, XLA) sets as the limit; `step_flops` counts its FLOPs.  On NumPy,
    `run_cell` times it at every candidate BLAS thread count and reports the fastest, while
    ``backprop`` runs at the count its step chose (each row names its count).
``jax_grad`` (JAX backends only)
    ``jax.jit`` of ``jax.value_and_grad`` of an independent JAX loss of the same network plus the
    same `backprop.optim` update, in float32 at the same matmul precision.
``torch`` (only when ``import torch`` works; never required)
    eager autograd and ``torch.optim`` on the same device, with the same initial weights, the
    same threads (CPU) and the same effective matmul precision.

`measure` warms every contender up (compilation), then times them interleaved, round after
round in a shuffled order, each round after an untimed step, until a time budget is spent, and
reports the median round.

The package, one concept per module: `grid` (networks, batch sizes, FLOPs), `workload` (the
data and optimizer of a cell), `contenders` (`build` and the builders), `memory` (the peak
memory of a step), `timing` (`measure`), `cells` (`run_cell`: one cell into report rows),
`environment` (devices, precision, versions), `report` (the tables), `plot` (the figure),
`devices` (the device-count benchmark of the data-parallel step) and `choices` (the torch
backend's ways to compute the same step, each timed against the other: ``backprop bench
--choices``).
"""

from ..backends import BACKENDS, probe
from .cells import Cell, add_ratios, result_row, run_cell
from .contenders import (
    BUILDERS,
    CONTENDERS,
    Contender,
    build,
    build_backprop,
    build_jax_grad,
    build_matmul_floor,
    build_torch,
    contender_unavailable,
    feedback_step,
    loss_of,
    torch_unavailable,
)
from .environment import (
    ENV_VARS,
    cpu_model,
    cpu_threads,
    device_description,
    effective_matmul_precision,
    environment,
    is_gpu,
    load_average,
    usable_cpus,
)
from .grid import (
    CPU_BATCH_SIZES,
    GPU_BATCH_SIZES,
    HUGE_CPU_FLOPS,
    NETWORKS,
    QUICK_BATCH_SIZES,
    QUICK_NETWORKS,
    Network,
    default_batch_sizes,
    get_network,
    is_huge,
    load_backend,
    selected_backends,
    step_flops,
)
from .memory import StepMemory, needed_bytes, release_memory
from .plot import plot
from .report import format_rate, format_seconds, format_tables
from .timing import Timing, measure
from .workload import OPTIMIZERS, encode_targets, make_data, make_optimizer

__all__ = [
    "BACKENDS",
    "BUILDERS",
    "CONTENDERS",
    "CPU_BATCH_SIZES",
    "ENV_VARS",
    "GPU_BATCH_SIZES",
    "HUGE_CPU_FLOPS",
    "NETWORKS",
    "OPTIMIZERS",
    "QUICK_BATCH_SIZES",
    "QUICK_NETWORKS",
    "Cell",
    "Contender",
    "Network",
    "StepMemory",
    "Timing",
    "add_ratios",
    "build",
    "build_backprop",
    "build_jax_grad",
    "build_matmul_floor",
    "build_torch",
    "contender_unavailable",
    "cpu_model",
    "cpu_threads",
    "default_batch_sizes",
    "device_description",
    "effective_matmul_precision",
    "encode_targets",
    "environment",
    "feedback_step",
    "format_rate",
    "format_seconds",
    "format_tables",
    "get_network",
    "is_gpu",
    "is_huge",
    "load_average",
    "load_backend",
    "loss_of",
    "make_data",
    "make_optimizer",
    "measure",
    "needed_bytes",
    "plot",
    "probe",
    "release_memory",
    "result_row",
    "run_cell",
    "selected_backends",
    "step_flops",
    "torch_unavailable",
    "usable_cpus",
]
