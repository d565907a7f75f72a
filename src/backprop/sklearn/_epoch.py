"""One epoch of the Trainer's compiled steps over given batches of the (shuffled) samples.

NumPy, CuPy: the fused step runs the whole epoch in one call.  JAX, array_api_strict: one
compiled step per batch, with no host synchronisation inside the epoch.
"""

from __future__ import annotations

import contextlib

import numpy as np

from ..training.fused import FusedStep
from ..training.trainer import deferred_interrupt


def _run_epoch(backend, trainer, X, Y, order: np.ndarray, batches: list, shuffled: bool,
               interrupted) -> tuple[float, bool]:
    """Train on the rows ``order[batch]`` of (X, Y) (device arrays) for each batch, in turn.

    Returns (Σ batch loss × batch size, as scikit-learn sums it; whether every step was finite).
    Raises KeyboardInterrupt when ``interrupted()`` turns true during a fused epoch.
    """
    if isinstance(trainer.step, FusedStep):
        return _fused_epoch(trainer, X, Y, order, batches, interrupted)
    return _stepwise_epoch(backend, trainer, X, Y, order if shuffled else None, batches)


def _fused_epoch(trainer, X, Y, order, batches, interrupted) -> tuple[float, bool]:
    rows = [order[batch] for batch in batches]
    trainer.params, trainer.opt_state, totals = trainer.step.epoch(
        trainer.params, trainer.opt_state, X, Y, rows, should_stop=interrupted, count_correct=False)
    trainer.steps += totals.steps
    if interrupted():
        raise KeyboardInterrupt
    return totals.loss, totals.first_bad < 0


def _stepwise_epoch(backend, trainer, X, Y, order, batches) -> tuple[float, bool]:
    """``order`` None: the batches are slices of (X, Y) as they are."""
    xp = backend.xp
    index = None if order is None else backend.asarray(order)
    stats = []  # [loss, correct, ok] per step, brought to the host once per epoch
    for batch in batches:
        if index is None:
            Xb, Yb = X[batch, ...], Y[batch, ...]
        else:
            rows = index[batch]
            Xb, Yb = xp.take(X, rows, axis=0), xp.take(Y, rows, axis=0)
        trainer.params, trainer.opt_state, step_stats = trainer.step(trainer.params, trainer.opt_state, Xb, Yb)
        stats.append(step_stats)
        trainer.steps += 1
    stats = backend.to_numpy(xp.stack(stats)).astype(np.float64)
    sizes = np.array([batch.stop - batch.start for batch in batches], dtype=np.float64)
    return float(stats[:, 0] @ sizes), bool(np.all(stats[:, 2]))


def _interrupt_guard(trainer):
    """The context of an epoch loop; it yields ``interrupted()``.

    Fused step (NumPy, CuPy): Ctrl-C only sets a flag, read between two steps and between two
    epochs, since the fused step writes its buffers in place.  Otherwise Ctrl-C raises at once
    and ``interrupted()`` is always False.
    """
    return deferred_interrupt() if isinstance(trainer.step, FusedStep) else contextlib.nullcontext(lambda: False)
