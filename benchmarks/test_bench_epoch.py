"""Whole training epochs of a small network, where per-step overhead is everything.

    pytest benchmarks/test_bench_epoch.py --benchmark-only

The 2-3-1 sigmoid network (the `seed` network of `backprop.bench`), squared error, SGD, at batch 2:
one round is one ``Trainer.fit`` epoch of 10,000 steps (20,000 rows) with progress off.  Per
backend, two contenders run side by side in group "seed-epoch-batch-2":

* ``whole-epochs``: the default -- on NumPy (and CuPy) the fused step's `FusedStep.epoch`, one call
  per epoch; on JAX one compiled ``lax.scan`` per epoch;
* ``step-by-step``: ``trainer.compile_epochs = False``, one step call (one dispatch on JAX) per batch.

The time per step is the round's time / 10,000 (``extra_info["steps"]``).  The issue's targets:
10 µs per step on NumPy and 0.1 µs on JAX's CPU for the whole-epoch path.
``BACKPROP_BENCH_EPOCH_STEPS`` sets another epoch length (the test suite's smoke run uses 100).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from backprop import optim
from backprop.backends import probe
from backprop.bench import NETWORKS
from backprop.training.trainer import Trainer

BACKENDS = [b for b in ("numpy", "jax", "cupy") if probe(b).available]
STEPS, BATCH = int(os.environ.get("BACKPROP_BENCH_EPOCH_STEPS", 10_000)), 2


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(STEPS * BATCH, 2)).astype(np.float32)
    return X, X.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("whole", [True, False], ids=["whole-epochs", "step-by-step"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_seed_epoch(benchmark, data, backend, whole):
    X, y = data
    trainer = Trainer(NETWORKS["seed"].model(), optim.SGD(0.01), backend=backend, seed=0)
    trainer.compile_epochs = whole
    trainer.fit(X[:20], y[:20], epochs=1, batch_size=BATCH, progress=False)  # compile, plan buffers
    trainer.fit(X, y, epochs=1, batch_size=BATCH, progress=False)  # warm the CPU up
    benchmark.group = "seed-epoch-batch-2"
    benchmark.name = f"{backend}[{'whole-epochs' if whole else 'step-by-step'}]"
    benchmark.extra_info.update(steps=STEPS, batch_size=BATCH)
    epochs = trainer.epoch
    benchmark.pedantic(
        trainer.fit,
        args=(X, y),
        kwargs=dict(epochs=1, batch_size=BATCH, progress=False),
        rounds=5 if whole else 2,
        iterations=1,
    )
    assert trainer.steps == (trainer.epoch - 1) * STEPS + 10 and trainer.epoch > epochs  # + the first fit: 10 steps
    assert np.isfinite(trainer.history["loss"][-1])
