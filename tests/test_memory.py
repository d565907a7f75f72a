"""Host memory of training on NumPy, seen through tracemalloc (NumPy reports its array buffers to it).

* Nothing accumulates from step to step: 10,000 steps retain no more memory than the first
  few, through whole fused epochs, fused steps one at a time, and the pure array-API step.
* A fused epoch runs in constant memory: its bookkeeping is running sums, not per-step lists.
* A step's peak is at most 1.3 × what backprop needs: parameters + gradients + optimizer state
  + one batch's activations (H_0 and Y, Z_l and H_(l+1) per layer).  The benchmark measures the
  same bound for device memory on a GPU.
"""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pytest

import backprop as bp
from backprop import optim
from backprop.bench import needed_bytes
from backprop.optim import tree_leaves
from backprop.training.fused import FusedStep
from backprop.training.trainer import Trainer, compiled_step

STEPS = 10_000
# NumPy keeps a cache of small freed buffers, which tracemalloc still counts: a few KiB that come
# and go.  A leak of one small object per step (32 bytes or more) would add 320 KB per 10,000 steps.
SLACK = 64 * 1024


@pytest.fixture
def traced():
    gc.collect()
    tracemalloc.start()
    yield
    tracemalloc.stop()


def _current() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def _small_data(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2)).astype(np.float32)
    return X, X.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("path", ["fused-epochs", "fused-step-by-step", "pure-step"])
def test_10000_steps_retain_no_memory(traced, path):
    """Train the 2-3-1 network for an epoch of 10,000 steps twice: the second retains nothing more."""
    X, y = _small_data(STEPS)
    model, optimizer = bp.MLP([2, 3, 1], activation="sigmoid", output_activation="sigmoid"), optim.SGD(0.05)
    trainer = Trainer(model, optimizer, backend="numpy", seed=0)
    trainer.compile_epochs = path == "fused-epochs"
    if path == "pure-step":  # the array-API step that JAX compiles, run eagerly on NumPy
        trainer.step = compiled_step(model, optimizer, trainer.backend)
    trainer.fit(X, y, epochs=1, batch_size=1, progress=False)  # plans, caches, the first history entries
    before = _current()
    trainer.fit(X, y, epochs=1, batch_size=1, progress=False)
    grown = _current() - before
    assert trainer.steps == 2 * STEPS and np.isfinite(trainer.history["loss"][-1])
    assert grown < SLACK, f"{grown} bytes retained by {STEPS} steps ({grown / STEPS:.1f} per step)"


def test_a_fused_epoch_runs_in_constant_memory(traced):
    """10,000 steps in one `FusedStep.epoch` call peak no higher than a few steps would."""
    X, Y = _small_data(STEPS)
    model = bp.MLP([2, 3, 1], activation="tanh")
    backend = bp.backends.get_backend("numpy")
    step = FusedStep(model, optim.Adam(1e-3), backend)
    params = model.init(0, backend)
    params, state, _ = step.epoch(params, step.optimizer.init(params), X, Y, [np.arange(2)])
    before = _current()
    tracemalloc.reset_peak()
    params, state, totals = step.epoch(params, state, X, Y, (np.array([i]) for i in range(STEPS)))
    peak = tracemalloc.get_traced_memory()[1] - before
    assert totals.steps == STEPS and totals.first_bad == -1 and float(state[0]) == STEPS + 1
    assert peak < SLACK, f"an epoch of {STEPS} steps peaked {peak} bytes above its start"


CELLS = {  # the benchmark's optimizers on mnist-shaped networks
    "mnist-sigmoid-sgd-1024": ([784, 512, 256, 10], "sigmoid", optim.SGD(0.1), 1024),
    "mnist-relu-adam-256": ([784, 512, 256, 10], "relu", optim.Adam(1e-3), 256),
    "wide-relu-sgd-momentum-64": ([1024, 2048, 2048, 10], "relu", optim.SGD(0.01, momentum=0.9), 64),
}


@pytest.mark.parametrize("cell", list(CELLS))
def test_a_step_peaks_within_1_3x_of_what_backprop_needs(cell):
    sizes, activation, optimizer, n = CELLS[cell]
    model = bp.MLP(sizes, activation=activation, loss="softmax_cross_entropy")
    backend = bp.backends.get_backend("numpy")
    rng = np.random.default_rng(0)
    params = model.init(0, backend)
    _, X, Y = model.prepare(params, rng.normal(size=(n, sizes[0])), rng.integers(0, sizes[-1], n))
    state = optimizer.init(params)
    gc.collect()
    tracemalloc.start()
    try:
        step = FusedStep(model, optimizer, backend)
        params, state, _ = step(params, state, X, Y)  # copies params and state in, plans the buffers
        gc.collect()
        tracemalloc.reset_peak()
        params, state, (loss, _, ok) = step(params, state, X, Y)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert ok and np.isfinite(float(loss))
    needed = needed_bytes(sizes, n, sum(a.nbytes for a in tree_leaves(state)), X.itemsize)
    assert peak <= 1.3 * needed, f"peak {peak / 1e6:.2f} MB, needed {needed / 1e6:.2f} MB ({peak / needed:.2f}×)"


def _transient_bytes(model, optimizer, n: int) -> int:
    """The peak of a step's allocations beyond what is held, after its first step at batch size n."""
    backend = bp.backends.get_backend("numpy")
    rng = np.random.default_rng(0)
    params = model.init(0, backend)
    k = model.layer_sizes[-1]
    y = rng.integers(0, k, n) if model.loss_layer.classification else rng.normal(size=(n, k))
    _, X, Y = model.prepare(params, rng.normal(size=(n, model.layer_sizes[0])), y)
    step, state = FusedStep(model, optimizer, backend), optimizer.init(params)
    params, state, _ = step(params, state, X, Y)
    gc.collect()
    tracemalloc.start()
    try:
        held = tracemalloc.get_traced_memory()[0]
        params, state, stats = step(params, state, X, Y)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert stats[2] == 1.0
    return peak - held


@pytest.mark.parametrize(
    "activation, loss, optimizer",
    [
        ("relu", "softmax_cross_entropy", optim.Adam(1e-3)),  # with the accuracy count
        ("sigmoid", "softmax_cross_entropy", optim.SGD(0.1)),
        ("tanh", "squared_error", optim.SGD(0.1, momentum=0.9, nesterov=True)),
    ],
    ids=["relu-softmax-adam", "sigmoid-softmax-sgd", "tanh-squared-nesterov"],
)
def test_a_step_allocates_nothing_that_grows_with_the_batch(activation, loss, optimizer):
    """Every array a step needs is planned per batch size: its transient allocations (NumPy's
    constant-size ufunc buffers) are the same at batch 256 and 8192, where one per-row vector
    would add 32 KB."""
    model = bp.MLP([64, 128, 10], activation=activation, loss=loss, alpha=1e-4)
    small, large = _transient_bytes(model, optimizer, 256), _transient_bytes(model, optimizer, 8192)
    assert large - small < 4 * 1024, f"transient bytes: {small} at batch 256, {large} at batch 8192"
