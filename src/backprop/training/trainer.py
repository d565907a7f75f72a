"""The Trainer: minibatch training with the hand-written backward pass.

One training step is one pure function, compiled by the backend where it can (``jax.jit`` with
the parameters and optimizer state donated on JAX):

    loss, grads = forward + loss layer + backward(params, X, Y)
    params, state = optimizer.update(params, grads, state)

and it refuses to take a step whose loss or new parameters are not finite, so a diverging run
stops with `TrainingDivergedError` and keeps the last finite parameters.  On NumPy and CuPy the
same step runs fused into preallocated buffers (`backprop.training.fused`).  Data stay where the
caller put them: NumPy data are sliced on the host and each batch is moved to the device, so a
data set larger than device memory still trains; arrays of the backend are sliced on the device.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import numbers
import os
from collections.abc import Callable, Sequence
from typing import NamedTuple

import array_api_compat.numpy as npx
import numpy as np
from array_api_compat import device as device_of

from ..backends import get_backend, threads, to_host
from ..core.losses import labels_in_range, one_hot
from ..core.mlp import MLP
from ..core.optim import OPTIMIZERS, Adam, Optimizer, from_config, get_optimizer
from ..core.tree import tree_flatten, tree_unflatten
from ..core.validation import (
    as_matrix,
    as_targets,
    check_finite,
    check_label_range,
    host_array,
    is_sparse,
    matrix_metadata,
    targets_metadata,
    whole_number,
)
from . import checkpoint, fused
from .callbacks import Callback
from .distributed import data_parallel
from .fused import EpochTotals
from .interrupt import deferred_interrupt
from .replay import replay_if_not_finite
from .scaling import FIELDS as scaling_fields
from .scaling import Scaling


class TrainingDivergedError(FloatingPointError, ValueError):
    """The loss or the parameters became NaN/inf; the trainer keeps the last finite parameters.

    A ValueError too, so callers that handle bad input (e.g. values too large for the dtype) catch it.
    """


def _finite_probe(xp, params):
    """A scalar that is finite exactly when every parameter is (Σ of all entries; NaN/inf propagate)."""
    return sum(xp.sum(W) + xp.sum(b) for W, b in params)


@dataclasses.dataclass(frozen=True)
class _StepKey:
    """What a compiled step depends on: the model's and the optimizer's types and configs, the
    backend (and the epoch's unroll).  The objects ride along, outside the key, to build it."""

    model_type: type
    model_config: str
    optimizer_type: type
    optimizer_config: str
    backend: object
    unroll: int = 0
    check_finite: bool = True
    model: MLP = dataclasses.field(default=None, compare=False)
    optimizer: object = dataclasses.field(default=None, compare=False)

    @classmethod
    def of(cls, model: MLP, optimizer, backend, unroll: int = 0, check_finite: bool = True) -> _StepKey:
        return cls(
            type(model),
            json.dumps(model.config, sort_keys=True),
            type(optimizer),
            json.dumps(optimizer.config, sort_keys=True),
            backend,
            unroll,
            check_finite,
            model,
            optimizer,
        )


def compiled_step(model: MLP, optimizer, backend, check_finite: bool = True) -> Callable:
    """The compiled step ``(params, state, X, Y, W=None, count_correct=True) -> (params, state,
    stats)``, where ``stats`` is one array [loss, correct, ok] (ok 1 or 0): one output, one
    transfer to the host, instead of three.  Without ``count_correct`` (a static argument: one
    compilation each) the correct rows are not counted (correct = 0).

    Y: the encoded targets (n, n_outputs), or for the softmax cross-entropy the integer class
    labels (n,), one-hot encoded inside the step; labels out of range refuse the step (ok = 0),
    as a non-finite loss or update does.  Without ``check_finite`` nothing is refused (ok = 1)
    and the update is taken whatever it holds.

    Steps are cached by `_StepKey` (model and optimizer types and configs, backend), so trainers of
    the same network (cross-validation, grid searches) share one compilation.
    """
    return _cached_step(_StepKey.of(model, optimizer, backend, check_finite=check_finite))


@functools.lru_cache(maxsize=64)
def _cached_step(key: _StepKey) -> Callable:
    return _build_step(key.model, key.optimizer, key.backend, key.check_finite)


def _plain_step(model: MLP, optimizer, xp) -> Callable:
    """The step without safeguards, pure: ``(params, state, X, Y, W=None, count_correct=True) ->
    (params, state, loss, correct)``; W: None or the rows' sample weights (`MLP.value_and_grad`);
    correct is 0 without ``count_correct``."""
    link = model.loss_layer

    def step(params, state, X, Y, W=None, count_correct=True):
        loss, grads, intermediates = model.value_and_grad(xp, params, X, Y, W)
        params, state = optimizer.update(params, grads, state)
        count = link.classification and count_correct
        correct = link.count_correct(xp, intermediates.H[-1], Y) if count else loss * 0
        return params, state, loss, correct

    return step


def _pure_step(model: MLP, optimizer, backend) -> Callable:
    """The step as a pure function that refuses a non-finite update (the loss or the new
    parameters): it returns ``ok`` and the old params and state then; ``active`` (a 0-d bool)
    can veto the update, as ``ok`` does; ``W``: None or the rows' sample weights; correct is 0
    without ``count_correct``."""
    xp, plain = backend.xp, _plain_step(model, optimizer, backend.xp)

    def step(params, state, X, Y, active=None, W=None, count_correct=True):
        new_params, new_state, loss, correct = plain(params, state, X, Y, W, count_correct)
        ok = xp.isfinite(loss + _finite_probe(xp, new_params))
        keep = ok if active is None else ok & active
        params, state = backend.select(keep, (new_params, new_state), (params, state))
        return params, state, loss, correct, ok

    return step


def _build_step(model: MLP, optimizer, backend, check_finite: bool = True) -> Callable:
    pure, plain, xp = _pure_step(model, optimizer, backend), _plain_step(model, optimizer, backend.xp), backend.xp
    n_outputs = model.layer_sizes[-1]

    def step(params, state, X, Y, W=None, count_correct=True):
        valid = None
        if Y.ndim == 1:  # integer class labels (the shape is static: one compilation each)
            valid = labels_in_range(xp, Y, n_outputs) if check_finite else None
            Y = one_hot(xp, Y, n_outputs, X.dtype)
        if check_finite:
            params, state, loss, correct, ok = pure(params, state, X, Y, valid, W, count_correct)
            ok = ok if valid is None else ok & valid
        else:
            params, state, loss, correct = plain(params, state, X, Y, W, count_correct)
            ok = xp.asarray(True)
        return params, state, xp.stack([loss, xp.astype(correct, loss.dtype), xp.astype(ok, loss.dtype)])

    return backend.jit(step, donate_argnums=(0, 1), static_argnames=("count_correct",))


MAX_SCAN_BYTES = 1 << 28  # the data of whole compiled epochs are staged on the device: at most 256 MiB


def compiled_epoch(model: MLP, optimizer, backend) -> Callable:
    """JAX only: a whole epoch of full batches as compiled ``lax.scan``s of the step.

    ``(params, state, X, Y, index, W=None) -> (params, state, losses, corrects, first_bad)`` for
    the rows ``index`` (n_batches, batch) of the data (X, Y) on the device, gathered inside the
    compiled epoch, with W None or the rows' sample weights (n,), gathered alike.  One dispatch
    per epoch instead of one per step.
    After a refused (non-finite) step no later step of the epoch updates anything, and
    ``first_bad`` is its index (−1 when every step was finite).

    The epoch follows the replay policy (`backprop.training.replay`): the plain step (loss,
    hand-written gradient, update) runs first, without the finiteness check and keep-or-update
    that a refused step needs, which XLA compiles into much less work per step, with its inputs
    kept; when a loss or the final parameters are not finite, the epoch runs again from them with
    the safeguards, which refuse the first bad step as step-by-step training does.
    """
    from ..backends.jax import epoch_unroll

    return _cached_epoch(_StepKey.of(model, optimizer, backend, epoch_unroll(backend.device.platform)))


@functools.lru_cache(maxsize=64)
def _cached_epoch(key: _StepKey) -> Callable:
    model, optimizer, backend, unroll = key.model, key.optimizer, key.backend, key.unroll
    import jax

    step, plain_step, xp = _pure_step(model, optimizer, backend), _plain_step(model, optimizer, backend.xp), backend.xp

    def plain(carry, batch):
        params, state, loss, correct = plain_step(*carry, *batch)  # batch: (X, Y) or (X, Y, W)
        return (params, state), (loss, correct)

    def batches(A, index):  # rows index (n_batches, batch) of A as (n_batches, batch, columns...)
        return xp.reshape(xp.take(A, xp.reshape(index, (-1,)), axis=0), (*index.shape, *A.shape[1:]))

    def data(X, Y, W, index):  # the scanned batches: (Xs, Ys), and Ws with sample weights
        return (batches(X, index), batches(Y, index)) + (() if W is None else (batches(W, index),))

    def optimistic(params, state, X, Y, index, W=None):
        (params, state), (losses, corrects) = jax.lax.scan(plain, (params, state), data(X, Y, W, index), unroll=unroll)
        finite = xp.all(xp.isfinite(losses)) & xp.isfinite(_finite_probe(xp, params))
        return params, state, losses, corrects, finite

    def checked(params, state, X, Y, index, W=None):
        def body(carry, batch):
            params, state, first_bad, i = carry
            W = batch[2] if len(batch) == 3 else None
            params, state, loss, correct, ok = step(params, state, batch[0], batch[1], active=first_bad < 0, W=W)
            first_bad = xp.where((first_bad < 0) & ~ok, i, first_bad)
            return (params, state, first_bad, i + 1), (loss, correct)

        start = (params, state, xp.asarray(-1), xp.asarray(0))
        (params, state, first_bad, _), (losses, corrects) = jax.lax.scan(
            body, start, data(X, Y, W, index), unroll=unroll
        )
        return params, state, losses, corrects, first_bad

    fast, safe = jax.jit(optimistic), jax.jit(checked, donate_argnums=(0, 1))  # fast keeps its inputs

    def epoch(params, state, X, Y, index, W=None):
        def unchecked():
            new_params, new_state, losses, corrects, finite = fast(params, state, X, Y, index, W)
            return (new_params, new_state, losses, corrects, -1), bool(finite)

        return replay_if_not_finite(unchecked, lambda: safe(params, state, X, Y, index, W))

    return epoch


def _diverged(where: str, loss: float) -> TrainingDivergedError:
    return TrainingDivergedError(
        f"training diverged at {where}: the loss ({loss}) or the updated parameters are not finite; "
        f"the parameters of the last finite step are kept (try a smaller learning rate)"
    )


def _check_checkpoint(meta, tensors: dict) -> MLP:
    """The model a checkpoint's metadata describes, after checking the metadata against the tensors
    the file holds (before anything the size of the network is allocated): every layer's W and b of
    the shapes ``layer_sizes`` says, finite parameters and optimizer state, a whole number of epochs
    and steps, and a history of lists.  ValueError or TypeError naming the first inconsistency."""
    if not isinstance(meta, dict) or not isinstance(meta.get("model"), dict):
        raise ValueError("the metadata has no model description")
    sizes = meta["model"].get("layer_sizes")
    if not isinstance(sizes, list) or len(sizes) < 2 or not all(type(s) is int and s >= 1 for s in sizes):
        raise ValueError(f"layer_sizes must be a list of at least two positive integers, got {sizes!r}")
    for l, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        for name, shape in ((f"params.{l}.W", (fan_in, fan_out)), (f"params.{l}.b", (fan_out,))):
            stored = tensors.get(name)
            if stored is None or tuple(stored.shape) != shape:
                got = "missing" if stored is None else f"of shape {tuple(stored.shape)}"
                raise ValueError(f"layer_sizes {sizes} needs {name} of shape {shape}; the file's is {got}")
    expected = {f"params.{l}.{p}" for l in range(len(sizes) - 1) for p in "Wb"}
    expected |= {f"scaling.{field}" for field in scaling_fields}
    extra = sorted(n for n in tensors if n not in expected and not n.startswith("opt_state."))
    if extra:
        raise ValueError(f"unexpected tensors {extra[:3]}")
    for name, array in tensors.items():
        if not np.issubdtype(array.dtype, np.floating) or not np.isfinite(array).all():
            raise ValueError(f"{name} is not a finite floating-point array")
    for key in ("epoch", "steps"):
        if type(meta.get(key)) is not int or meta[key] < 0:
            raise ValueError(f"{key} must be a whole number >= 0, got {meta.get(key)!r}")
    history = meta.get("history")
    if not isinstance(history, dict) or not all(isinstance(v, list) for v in history.values()):
        raise ValueError("history must map names to lists")
    if not isinstance(meta.get("rng_state"), dict):
        raise ValueError(f"rng_state must be a generator state, got {type(meta.get('rng_state')).__name__}")
    return MLP(**meta["model"])


def _leaf_like(stored: np.ndarray, fresh, name: str, backend):
    """A stored optimizer-state array on the backend, shaped as a fresh state's (a 0-d count comes
    back from safetensors as shape (1,)); ValueError when the shapes disagree."""
    if tuple(stored.shape) != tuple(fresh.shape):
        if stored.size != 1 or math.prod(fresh.shape) != 1:
            raise ValueError(f"{name} has shape {tuple(stored.shape)}, expected {tuple(fresh.shape)}")
        stored = stored.reshape(fresh.shape)
    return backend.asarray(stored)


_OUTPUT = "the network's output (X or the parameters are too large for the dtype?)"  # MLP.predict's wording
_LOSS = "the loss (X, y or the parameters are too large for the dtype?)"  # MLP.loss_and_grad's


def _optimizer(optimizer) -> Optimizer:
    """An `Optimizer` from an optimizer, a name (`get_optimizer`, with its defaults) or None (Adam(1e-3))."""
    if optimizer is None:
        return Adam(1e-3)
    if isinstance(optimizer, str):
        return get_optimizer(optimizer)
    if not isinstance(optimizer, Optimizer):
        raise TypeError(
            f"optimizer must be a backprop.optim optimizer or the name of one ({', '.join(OPTIMIZERS)}), "
            f"got {optimizer!r}"
        )
    return optimizer


def _callbacks(callbacks) -> list[Callback]:
    """``callbacks`` (a sequence of them, or one) as a list of `Callback` instances; TypeError otherwise."""
    if isinstance(callbacks, Callback):
        return [callbacks]
    try:
        callbacks = list(callbacks)
    except TypeError:
        raise TypeError(
            f"callbacks must be a list of backprop.callbacks.Callback instances, got {type(callbacks).__name__}"
        ) from None
    for cb in callbacks:
        if not isinstance(cb, Callback):
            raise TypeError(f"callbacks must be backprop.callbacks.Callback instances, got {type(cb).__name__}")
    return callbacks


class _Specialized(NamedTuple):
    """`Trainer.train_step`'s fast path: the trainer's step (``source``) compiled ahead of time
    (``step``, `Backend.specialize`) for one signature of (X, y), arrays of types ``X_type`` and
    ``y_type``."""

    source: Callable
    X_type: type
    y_type: type
    step: Callable


class Trainer:
    """Train an `MLP` with an optimizer from `backprop.optim`.

    ``optimizer``: an optimizer, its name ("adam", "sgd", ... with its default hyperparameters) or
    None (Adam(1e-3)).  ``backend``: a Backend, a name or None (``BACKPROP_BACKEND``).  ``seed``
    (an integer >= 0, or None for fresh entropy) fixes the initial weights and the shuffling: the
    same seed on the same backend gives identical results.
    Attributes: ``params``, ``opt_state``, ``history`` (per-epoch lists), ``epoch``, ``steps``.
    ``compile_epochs`` (default True): on JAX, `fit` runs each epoch's full batches as one
    compiled ``lax.scan`` of the step (one dispatch per epoch) unless a callback has a per-batch
    hook, training is data-parallel, or the epoch's data exceed `MAX_SCAN_BYTES`; with the fused
    step (NumPy, CuPy) it runs each epoch's steps in one call of `backprop.training.fused.FusedStep.epoch`.
    ``devices`` (JAX backend only): None, "all", N, a list of JAX devices or a Mesh with a "data"
    axis -- data-parallel training over them, see `backprop.training.distributed` (``parallel``).
    ``blas_threads`` (NumPy backend): None picks NumPy's BLAS thread count per batch size, the
    fastest measured the first time that batch size trains, unless ``BACKPROP_BLAS_THREADS`` (an
    integer >= 1, or "auto") sets one; an integer >= 1 runs every step at that count.  The count is
    set around each epoch (or step) and the caller's own restored after it; an automatic choice
    never exceeds the count in force (a caller's ``threadpoolctl.threadpool_limits`` included).
    The thread count can change results by BLAS rounding, so runs are bit-identical across
    processes with a fixed count.  See `backprop.training.fused`.
    """

    def __init__(
        self,
        model: MLP,
        optimizer=None,
        backend=None,
        seed: int = 0,
        devices=None,
        blas_threads: int | None = None,
        check_finite: bool = True,
        scaling: Scaling | None = None,
    ):
        if not isinstance(model, MLP):
            raise TypeError(f"model must be a backprop.MLP, got {type(model).__name__}")
        self.model = model
        self.optimizer = _optimizer(optimizer)
        seed = None if seed is None else whole_number(seed, "seed", 0)
        threads.setting(blas_threads)  # a bad argument or BACKPROP_BLAS_THREADS fails before any work
        self.backend = get_backend(backend)
        self.parallel = data_parallel(devices, self.backend)
        if self.parallel is not None:
            self.backend = self.parallel.backend
        self.seed = seed
        self.rng = self.backend.rng(seed)
        self._params, self._handed = model.init(seed, self.backend), None
        self.opt_state = self.optimizer.init(self._params)
        self.history: dict[str, list] = {}
        self.epoch = 0
        self.steps = 0
        self.stop_training = False
        self.compile_epochs = True
        self._blas_threads = blas_threads
        if not isinstance(check_finite, (bool, np.bool_)):
            raise TypeError(f"check_finite must be True or False, got {check_finite!r}")
        self.check_finite = bool(check_finite)
        self._input_kinds: dict = {}  # `_step_inputs`: (type, shape, dtype) of X and y -> what they are
        self._specialized: _Specialized | None = None  # `train_step`'s step for the last batches' signature
        self.scaling = scaling
        fused_step = self.parallel is None and fused.supports(self.backend, self.optimizer)
        if fused_step:
            self.step = fused.FusedStep(model, self.optimizer, self.backend, blas_threads)  # its own buffers
            self.step.check_finite = self.check_finite
        else:
            self.step = compiled_step(model, self.optimizer, self.backend, self.check_finite)
        if self.parallel is not None:
            self._params, self.opt_state = self.parallel.replicate((self._params, self.opt_state))
            self.step = self.parallel.wrap_step(self.step)

    @property
    def scaling(self) -> Scaling | None:
        """The standardisation of the inputs (and regression targets) applied to the data of every
        entry point, saved in checkpoints; None: the data go in as given.  See `backprop.training.scaling`."""
        return self._scaling

    @scaling.setter
    def scaling(self, value: Scaling | None) -> None:
        if value is not None:
            if not isinstance(value, Scaling):
                raise TypeError(f"scaling must be a backprop.training.scaling.Scaling or None, got {type(value)}")
            model = self.model
            value.check(model.layer_sizes[0], model.layer_sizes[-1], not model.loss_layer.classification)
        self._scaling = value
        self._specialized = None  # the batches are scaled from now: checked by `_step_inputs`

    @property
    def blas_threads(self) -> int | None:
        """The ``blas_threads`` argument (None: automatic, or ``BACKPROP_BLAS_THREADS``)."""
        return self._blas_threads

    @blas_threads.setter
    def blas_threads(self, value: int | None) -> None:
        """Change it for the next steps (``BACKPROP_BLAS_THREADS`` is read again)."""
        if isinstance(self.step, fused.FusedStep):
            self.step.blas_threads = value
        else:
            threads.setting(value)
        self._blas_threads = value

    def _local_params(self):
        """The parameters on this process's device (a local replica when training on several)."""
        return self._params if self.parallel is None else self.parallel.local(self._params)

    # -- the step ----------------------------------------------------------------------------
    def run_epoch(
        self,
        X,
        Y,
        batches: Sequence,
        interrupted: Callable[[], bool] = lambda: False,
        count_correct: bool = True,
        on_step: Callable[[int, float], None] | None = None,
        sample_weight=None,
    ) -> EpochTotals:
        """The one epoch loop (of `fit` and of the scikit-learn estimators): a step on the rows
        ``batches[b]`` (index arrays) of the validated (X, Y), for b = 0, 1, ... in turn.

        ``sample_weight``: None, or one finite weight per row of X (a 1-D array of the step's dtype,
        where X is): each step's loss is then its batch's weighted mean (`MLP.value_and_grad`;
        scale = 1/Σw over the batch), and the totals' loss is Σ over the steps of the batch loss ×
        the batch's rows, as without weights (scikit-learn's sum for ``loss_curve_``).  Not with
        data-parallel training.

        The steps run as one call where they can: the fused step's `epoch` (NumPy, CuPy), or on
        JAX one compiled epoch (`compiled_epoch`) of the leading batches of equal size when X and Y
        are on the device already (the rest one step at a time); else, and whenever ``on_step`` is
        given (it is called with (b, loss) after each step) or ``compile_epochs`` is off, one step at
        a time.  Returns `EpochTotals` of the steps taken: it stops at the first refused (non-finite)
        step, whose index is ``first_bad``, and when ``interrupted()`` turns true between steps.
        """
        weight = sample_weight
        if weight is not None and self.parallel is not None:
            raise ValueError("sample_weight is not supported with data-parallel training (devices=...)")
        if on_step is None and self.compile_epochs and isinstance(self.step, fused.FusedStep):
            self._handed = None
            self._params, self.opt_state, totals = self.step.epoch(
                self._params,
                self.opt_state,
                X,
                Y,
                batches,
                should_stop=interrupted,
                count_correct=count_correct,
                sample_weight=weight,
            )
            self.steps += totals.steps
            return totals
        scans = on_step is None and (weight is None or self.backend.is_native(weight))
        lead = self._scan_batches(X, Y, batches) if scans else 0
        head = self._compiled_epoch(X, Y, batches[:lead], weight) if lead else EpochTotals(0.0, 0, 0, -1, math.nan)
        if head.first_bad >= 0 or interrupted():
            return head
        return self._stepwise(X, Y, batches, lead, head, interrupted, on_step, weight)

    def _compiles_epochs(self, X, Y) -> bool:
        """Whether epochs over (X, Y) run as compiled JAX epochs: one device, data of at most MAX_SCAN_BYTES."""
        itemsize = np.dtype(self.backend.dtype_name).itemsize
        return (
            self.compile_epochs
            and self.backend.name == "jax"
            and self.parallel is None
            and X.shape[0] * (X.shape[1] + Y.shape[1]) * itemsize <= MAX_SCAN_BYTES
        )

    def _scan_batches(self, X, Y, batches: Sequence) -> int:
        """How many leading batches (of one size) run as one compiled JAX epoch (0: none)."""
        if not (batches and self._compiles_epochs(X, Y) and self.backend.is_native(X) and self.backend.is_native(Y)):
            return 0
        size = len(batches[0])
        return next((b for b, index in enumerate(batches) if len(index) != size), len(batches))

    def _compiled_epoch(self, X, Y, batches: Sequence, weight=None) -> EpochTotals:
        """The batches (all of one size) as one compiled epoch on the device (``weight``: the rows'
        sample weights on the device, or None)."""
        run = compiled_epoch(self.model, self.optimizer, self.backend)
        index = self.backend.asarray(np.stack(batches).astype(np.int32))
        self._handed = None
        self._params, self.opt_state, losses, corrects, first_bad = run(
            self._params, self.opt_state, X, Y, index, weight
        )
        losses, corrects, first_bad = self.backend.to_numpy(losses), self.backend.to_numpy(corrects), int(first_bad)
        done = len(losses) if first_bad < 0 else first_bad
        self.steps += done
        scale = self.model.scale(len(batches[0]))
        return EpochTotals(
            float(np.sum(losses[:done], dtype=np.float64) / scale),
            int(np.sum(corrects[:done], dtype=np.float64)),
            done,
            first_bad,
            float(losses[first_bad]) if first_bad >= 0 else math.nan,
        )

    def _stepwise(
        self, X, Y, batches, start: int, totals: EpochTotals, interrupted, on_step, weight=None
    ) -> EpochTotals:
        """Batches ``start``... one step at a time, added to ``totals`` (``weight``: the rows' sample
        weights, or None)."""
        loss_sum, correct_sum, steps = totals.loss, totals.correct, totals.steps
        procs = 1 if self.parallel is None else self.parallel.process_count
        for b in range(start, len(batches)):
            index = batches[b]
            Xb, Yb = self._batch(X, index, train=True), self._batch(Y, index, train=True)
            self._handed = None
            if weight is None:
                self._params, self.opt_state, stats = self.step(self._params, self.opt_state, Xb, Yb)
            else:
                Wb = self._batch(weight, index)
                self._params, self.opt_state, stats = self.step(self._params, self.opt_state, Xb, Yb, Wb)
            loss, correct, ok = (float(v) for v in to_host(stats))
            if not ok:
                return EpochTotals(loss_sum, correct_sum, steps, b, loss)
            self.steps += 1
            steps += 1
            loss_sum += loss / self.model.scale(len(index) * procs)
            correct_sum += int(correct)
            if on_step is not None:
                on_step(b, loss)
            if interrupted():
                break
        return EpochTotals(loss_sum, correct_sum, steps, -1, math.nan)

    def train_step(self, X_batch, y_batch) -> float:
        """One step (forward, hand-written backward, update) on one batch; returns its loss.

        For your own loop: per call only what the inputs' metadata tell is checked (shapes,
        dtypes, and the range of integer labels held on the host); the labels are one-hot encoded
        inside the step.  The values are checked by the step itself, which refuses a non-finite
        loss or update (and, compiled, labels out of range) and leaves the parameters as they
        were: the inputs are then examined, and a ValueError names X or y and the problem (NaN,
        values too large for the dtype, labels out of range), else `TrainingDivergedError`.
        With ``Trainer(check_finite=False)`` no step is refused (see `Trainer`).

        On JAX, batches of the backend's arrays that the step takes as they are (X in the
        backend's dtype on its device; labels, or targets in its dtype) run the step compiled ahead
        of time for their shapes and dtypes (`Backend.specialize`), which checks that metadata
        itself: a loop over such batches runs no Python check per call.
        """
        stats = self._specialized_step(X_batch, y_batch)
        if stats is None:
            stats = self._checked_step(X_batch, y_batch)
        self._handed = None
        loss, _, ok = to_host(stats).tolist()
        if not ok:
            self._check_data(X_batch, y_batch)  # raises, naming X or y, when the input is the cause
            raise _diverged(f"step {self.steps}", loss)
        self.steps += 1
        return loss

    def _specialized_step(self, X, y):
        """The stats of the step on (X, y) run by `_Specialized` when X and y are arrays of the
        types it was compiled for; None, with nothing run, otherwise or when it refuses their
        shapes, dtypes or device (as it does before running anything)."""
        fast = self._specialized
        if fast is None or type(X) is not fast.X_type or type(y) is not fast.y_type or fast.source is not self.step:
            return None
        try:  # no reference to the old parameters outlives the call: they are freed while the step runs
            self._params, self.opt_state, stats = fast.step(self._params, self.opt_state, X, y)
        except (TypeError, ValueError):  # another signature: `_checked_step` checks it
            return None
        return stats

    def _checked_step(self, X_batch, y_batch):
        """The stats of the step on (X, y) checked by `_step_inputs`; when those are arrays the step
        takes as they are, the step is then specialised to their signature for the next calls."""
        X, Y, as_given = self._step_inputs(X_batch, y_batch)
        step = self.step
        try:
            if self.parallel is None:  # the loss is all it returns: no need to count the correct rows
                self._params, self.opt_state, stats = step(self._params, self.opt_state, X, Y, count_correct=False)
            else:
                self._params, self.opt_state, stats = step(self._params, self.opt_state, X, Y)
        except IndexError:  # labels far out of range, met by the NumPy step's one-hot gather
            self._check_data(X_batch, y_batch)
            raise
        if as_given and self.parallel is None:
            specialized = self.backend.specialize(step, self._params, self.opt_state, X, Y, count_correct=False)
            self._specialized = None if specialized is None else _Specialized(step, type(X), type(Y), specialized)
        return stats

    def _step_inputs(self, X, y):
        """(X, Y, as_given) for one `train_step`: X and Y checked from their metadata only and moved
        to the backend's device, Y the integer labels themselves for the softmax cross-entropy (encoded by
        the step; their range checked here unless the compiled step checks it: labels on the
        device); as_given: whether they are X and y themselves, taken by the step as they are.
        What the metadata say is remembered per (type, shape, dtype) of X and y, so a loop over
        batches of one shape checks them once."""
        if self.parallel is not None or self._scaling is not None:  # batches placed, or scaled, as in fit
            X, Y = self._check_data(X, y)
            return self.backend.asarray(X), self.backend.asarray(Y), False
        try:
            key = (type(X), X.shape, X.dtype, type(y), y.shape, y.dtype)
        except AttributeError:  # lists, ...: checked every time
            key = None
        kind = self._input_kinds.get(key)
        if kind is None:
            kind = self._input_kind(X, y)
            if key is not None:
                if len(self._input_kinds) >= 8:
                    self._input_kinds.clear()
                self._input_kinds[key] = kind
        backend = self.backend
        if kind == "ready" and device_of(X) == backend.device and device_of(y) == backend.device:
            return X, y, True
        if kind == "targets":
            Y = self._on_device(y)
            return self._on_device(X), Y if len(Y.shape) == 2 else backend.xp.reshape(Y, (Y.shape[0], 1)), False
        on_host = kind == "host labels"
        if on_host:
            y = np.asarray(y)
        if not self._step_refuses_labels(on_host):
            check_label_range(y, self.model.layer_sizes[-1], np if on_host else backend.xp)
        return self._on_device(X), backend.asarray(y), False

    def _step_refuses_labels(self, on_host: bool) -> bool:
        """Whether the step itself refuses integer labels out of range, so `train_step` need not
        check them first: never without ``check_finite``; the compiled step those on the device
        (in the graph; int64 labels on the host could wrap into range on their way to a JAX
        without x64); the NumPy fused step those on the host (NaN rows, `backprop.core.losses.one_hot_table`)."""
        step = self.step
        if not self.check_finite:
            return False
        if isinstance(step, fused.FusedStep):
            return on_host and step.lib is np
        return not on_host

    def _input_kind(self, X, y) -> str:
        """What `train_step` does with (X, y), from their metadata (which it checks): "ready" (the
        backend's arrays that go to the step as they are when X is on the backend's device: X in
        the backend's dtype, y targets in it or labels the step refuses itself when out of range),
        else "host labels", "device labels" (integer labels, on the host or a backend array) or "targets"."""
        model, backend = self.model, self.backend
        matrix_metadata(X, model.layer_sizes[0])
        _, labels = targets_metadata(model.loss_layer, y, X.shape[0], model.layer_sizes[-1])
        native = backend.is_native(X) and backend.is_native(y) and X.dtype == backend.dtype
        if not labels:
            return "ready" if native and len(y.shape) == 2 and y.dtype == backend.dtype else "targets"
        on_host = isinstance(y, np.ndarray) or not backend.is_native(y)
        if native and self._step_refuses_labels(on_host):
            return "ready"
        return "host labels" if on_host else "device labels"

    def _on_device(self, A):
        """Floating ``A`` as the backend's array in its dtype; a conversion that overflows gives ±inf,
        which the step refuses (and `train_step` then names)."""
        backend = self.backend
        if backend.is_native(A) and type(A) is not np.ndarray:  # (already there: asarray returns A itself)
            return backend.asarray(A)  # nothing converted on the host
        with np.errstate(over="ignore"):
            return backend.asarray(A)

    def snapshot(self):
        """A copy of the current parameters that later steps cannot overwrite or donate."""
        xp = self.backend.xp
        return tuple((xp.asarray(W, copy=True), xp.asarray(b, copy=True)) for W, b in self._params)

    @property
    def params(self):
        """The current parameters ((W, b), ...), a value that later steps never change: the steps
        run on the trainer's own arrays (written in place by the fused step, donated on JAX), and
        what is handed out is a copy of them, made when first read after a step."""
        if self._handed is None and self._params is not None:
            self._handed = self.snapshot()
        return self._handed

    @params.setter
    def params(self, value) -> None:
        """Parameters to continue from; on JAX the trainer keeps a copy, since its steps donate theirs."""
        self._handed = value
        self._params = value
        if value is not None and self.backend.name == "jax":
            self._params = self.snapshot()

    # -- data --------------------------------------------------------------------------------
    def _home(self, X):
        """(xp, like) of where X lives: the backend for its own arrays, else NumPy on the host."""
        if self.backend.is_native(X) and not isinstance(X, np.ndarray):
            return self.backend.xp, self._local_params()[0][0]
        return npx, np.empty(0, dtype=np.dtype(self.backend.dtype_name))

    def _check_X(self, X, name: str = "X"):
        xp, like = self._home(X)
        if self._scaling is not None and xp is npx:  # standardised on the host, in float64, before the dtype
            matrix_metadata(X, self.model.layer_sizes[0], name)
            X = self._scaling.inputs(np, host_array(X, name).astype(np.float64))
        X = as_matrix(X, xp, like, self.model.layer_sizes[0], name=name)
        return X if self._scaling is None or xp is npx else self._scaling.inputs(xp, X)

    def _check_data(self, X, y, name: str = "X"):
        """Validated (X, Y) kept where they are: NumPy on the host, backend arrays on the device."""
        xp, like = self._home(X)
        model, y_name = self.model, "y" if name == "X" else f"{name} y"
        Xc, scaling = self._check_X(X, name), self._scaling
        if scaling is not None and scaling.y_mean is not None and xp is npx:  # standardised on the host, in
            # float64, before the dtype (as X): a target beyond float32 (1e39) trains on its standardised form
            shape, _ = targets_metadata(model.loss_layer, y, Xc.shape[0], model.layer_sizes[-1], y_name)
            y = scaling.targets(np, host_array(y, y_name).astype(np.float64).reshape(shape))
        Yc = as_targets(model.loss_layer, y, Xc.shape[0], model.layer_sizes[-1], xp, like, name=y_name)
        return Xc, Yc if scaling is None or xp is npx else scaling.targets(xp, Yc)

    def _batch(self, A, index, train: bool = False):
        if train and self.parallel is not None:
            return self.parallel.place_batch(A, index)
        if isinstance(A, np.ndarray):
            return self.backend.asarray(A[index] if index is not None else A)
        if is_sparse(A):  # a scipy.sparse X: the rows densified on the host
            return self.backend.asarray((A[index] if index is not None else A).toarray())
        xp = self.backend.xp
        return xp.take(A, self.backend.asarray(index), axis=0) if index is not None else A

    def _batches(self, n: int, batch_size: int, shuffle: bool) -> list:
        """An epoch's batches: index arrays of batch_size rows of a permutation, the last one partial."""
        order = self.rng.numpy.permutation(n) if shuffle else np.arange(n)
        return [order[start : start + batch_size] for start in range(0, n, batch_size)]

    # -- training ----------------------------------------------------------------------------
    def fit(
        self,
        X,
        y,
        epochs: int = 10,
        batch_size: int = 32,
        validation_data: tuple | None = None,
        validation_split: float = 0.0,
        shuffle: bool = True,
        callbacks: Sequence[Callback] = (),
        progress: bool | None = None,
    ) -> dict:
        """Train for ``epochs`` more epochs of minibatches; returns the history (per-epoch lists).

        ``epochs`` and ``batch_size``: integers (Python or NumPy, not bool).  ``validation_split``
        holds out the last fraction of (X, y) (before shuffling); ``validation_data`` =
        (X_val, y_val) is used instead when given.  ``callbacks``: `Callback` instances (a list,
        or one).  History keys: "loss", "val_loss", and "accuracy"/"val_accuracy" for
        classification losses.  Ctrl-C stops after the current step: callbacks' ``on_train_end``
        still run (a `ModelCheckpoint` saves), the parameters and history are those of the last
        completed step, and KeyboardInterrupt is re-raised.  On JAX a compiled epoch is one
        dispatch, so Ctrl-C lands when the epoch ends (``compile_epochs = False``: after the next step).
        ``progress``: a tqdm bar on stderr; None (default) shows it when stderr is a terminal, True
        always, False never.
        """
        if progress is not None and not isinstance(progress, (bool, np.bool_)):
            raise TypeError(f"progress must be True, False or None, got {progress!r}")
        epochs, batch_size = whole_number(epochs, "epochs", 0), whole_number(batch_size, "batch_size", 1)
        real = isinstance(validation_split, numbers.Real) and not isinstance(validation_split, (bool, np.bool_))
        if not (real and 0.0 <= validation_split < 1.0):
            raise ValueError(f"validation_split must be a number in [0, 1), got {validation_split!r}")
        callbacks = _callbacks(callbacks)
        X, Y = self._check_data(X, y)
        if validation_data is not None:
            if len(validation_data) != 2:
                raise ValueError("validation_data must be a pair (X_val, y_val)")
            val = self._check_data(*validation_data, name="validation_data")
        elif validation_split > 0:
            n_val = int(math.floor(X.shape[0] * validation_split))
            if n_val < 1 or n_val >= X.shape[0]:
                raise ValueError(f"validation_split={validation_split} leaves no samples for validation or training")
            cut = X.shape[0] - n_val
            X, Y, val = X[:cut, ...], Y[:cut, ...], (X[cut:, ...], Y[cut:, ...])
        else:
            val = None
        return self._fit(X, Y, epochs, batch_size, val, shuffle, callbacks, progress)

    def _fit(self, X, Y, epochs, batch_size, val, shuffle, callbacks, progress) -> dict:
        from tqdm.auto import tqdm

        n = X.shape[0]
        if self.parallel is not None:
            batch_size = self.parallel.local_batch_size(batch_size, n)
        per_batch_hooks = any(type(cb).on_batch_end is not Callback.on_batch_end for cb in callbacks)
        if not per_batch_hooks and self._compiles_epochs(X, Y):
            X, Y = self.backend.asarray(X), self.backend.asarray(Y)  # on the device once per fit (`run_epoch`)
        self.stop_training = False
        for cb in callbacks:
            cb.on_train_begin(self)
        disable = None if progress is None else not progress  # tqdm: None = off unless stderr is a TTY
        bar = tqdm(total=epochs * math.ceil(n / batch_size), disable=disable, unit="step")
        try:
            with deferred_interrupt() as interrupted:
                self._epochs(X, Y, epochs, batch_size, val, shuffle, callbacks, bar, per_batch_hooks, interrupted)
                if interrupted():
                    raise KeyboardInterrupt
        finally:
            bar.close()
            for cb in callbacks:
                cb.on_train_end(self)
        return self.history

    def _epochs(self, X, Y, epochs, batch_size, val, shuffle, callbacks, bar, per_batch_hooks, interrupted):
        n, classification = X.shape[0], self.model.loss_layer.classification
        procs = 1 if self.parallel is None else self.parallel.process_count
        for _ in range(epochs):
            epoch = self.epoch
            for cb in callbacks:
                cb.on_epoch_begin(self, epoch)

            def on_step(b, loss, epoch=epoch):
                bar.set_postfix(epoch=epoch, loss=f"{loss:.4g}", refresh=False)
                bar.update(1)
                for cb in callbacks:
                    cb.on_batch_end(self, epoch, b, loss)

            steps = self.steps
            totals = self.run_epoch(
                X, Y, self._batches(n, batch_size, shuffle), interrupted, on_step=on_step if per_batch_hooks else None
            )
            if not per_batch_hooks:
                bar.update(self.steps - steps)
            if totals.first_bad >= 0:
                raise _diverged(f"epoch {epoch}, batch {totals.first_bad}", totals.bad_loss)
            if interrupted():
                raise KeyboardInterrupt
            logs = {"loss": totals.loss / (n * procs)}
            bar.set_postfix(epoch=epoch, loss=f"{logs['loss']:.4g}")
            if classification:
                logs["accuracy"] = totals.correct / (n * procs)
            if val is not None:
                logs.update({f"val_{k}": v for k, v in self._evaluate(*val).items()})
            for key, value in logs.items():
                self.history.setdefault(key, []).append(value)
            self.epoch += 1
            for cb in callbacks:
                cb.on_epoch_end(self, epoch, logs)
            if self.stop_training or interrupted():
                break

    # -- inference ---------------------------------------------------------------------------
    def _evaluate(self, X, Y, batch_size: int = 4096) -> dict:
        model, xp, params = self.model, self.backend.xp, self._local_params()
        total_loss = total_correct = 0.0
        for start in range(0, X.shape[0], batch_size):
            index = np.arange(start, min(start + batch_size, X.shape[0]))
            Xb, Yb = self._batch(X, index), self._batch(Y, index)
            loss, output = model.value(xp, params, Xb, Yb)
            total_loss += float(loss) / model.scale(len(index))
            total_correct += (
                float(model.loss_layer.count_correct(xp, output, Yb)) if model.loss_layer.classification else 0.0
            )
        count = X.shape[0]
        if self.parallel is not None and self.parallel.process_count > 1:  # sums over the processes
            penalty = float(model.penalty(xp, params, 1.0)) if model.alpha else 0.0
            total_loss, total_correct, count = self.parallel.evaluation_sums(
                total_loss, total_correct, count, penalty, batch_size
            )
        if not math.isfinite(total_loss):  # checked after the sums: every process raises alike
            raise ValueError(f"{_LOSS} contains NaN or infinity")
        logs = {"loss": total_loss / count}
        if model.loss_layer.classification:
            logs["accuracy"] = total_correct / count
        return logs

    def evaluate(self, X, y, batch_size: int = 4096) -> dict:
        """{"loss": mean loss per example, "accuracy": ... (classification)} on (X, y), in batches
        of ``batch_size`` (an integer >= 1) rows.  ValueError when the loss is not finite (finite X,
        y and parameters whose forward pass overflows the dtype), as `MLP.loss_and_grad` gives."""
        batch_size = whole_number(batch_size, "batch_size", 1)
        return self._evaluate(*self._check_data(X, y), batch_size=batch_size)

    def predict(self, X, batch_size: int = 4096) -> np.ndarray:
        """ŷ for the rows of X as a NumPy array, in batches of ``batch_size`` (an integer >= 1) rows:
        for the cross-entropies the class probabilities (softmax: one row per example summing to 1;
        binary: one probability per output), not the labels (`predict_classes` gives those); for the
        squared error the output, in the targets' own units when `scaling` standardises them.
        ValueError when an output is not finite, as `MLP.predict` gives."""
        batch_size = whole_number(batch_size, "batch_size", 1)
        X = self._check_X(X)
        xp, loss_layer, params = self.backend.xp, self.model.loss_layer, self._local_params()
        outputs = []
        for start in range(0, X.shape[0], batch_size):
            Xb = self._batch(X, np.arange(start, min(start + batch_size, X.shape[0])))
            output = self.backend.to_numpy(loss_layer.output(xp, self.model.forward(xp, params, Xb)[1][-1]))
            check_finite(np, output, _OUTPUT)
            outputs.append(output)
        output = np.concatenate(outputs, axis=0)
        return output if self._scaling is None else self._scaling.outputs(output)

    def predict_classes(self, X, batch_size: int = 4096) -> np.ndarray:
        """The predicted classes of the rows of X (what scikit-learn's and Keras's ``predict`` give
        a classifier): for the softmax cross-entropy the index of the most probable class, shape
        (n,); for the binary cross-entropy 1 where a probability exceeds ½, else 0, one column per
        output.  TypeError for the squared error, which has no classes."""
        if not self.model.loss_layer.classification:
            raise TypeError("predict_classes needs a classification loss; this network's is the squared error")
        probabilities = self.predict(X, batch_size)
        if self.model.loss_layer.name == "softmax_cross_entropy":
            return np.argmax(probabilities, axis=1)
        return (probabilities > 0.5).astype(np.int64)

    # -- checkpoints -------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write parameters, optimizer state, the `scaling` (when set) and everything needed to resume
        to one .safetensors file."""
        tensors = {}
        for l, (W, b) in enumerate(self._params):
            tensors[f"params.{l}.W"], tensors[f"params.{l}.b"] = self.backend.to_numpy(W), self.backend.to_numpy(b)
        leaves, structure = tree_flatten(self.opt_state)
        tensors.update({f"opt_state.{i}": self.backend.to_numpy(a) for i, a in enumerate(leaves)})
        if self._scaling is not None:
            tensors.update(self._scaling.tensors())
        checkpoint.save(
            path,
            tensors,
            {
                "model": self.model.config,
                "optimizer": self.optimizer.config,
                "opt_state_structure": structure,
                "epoch": self.epoch,
                "steps": self.steps,
                "seed": self.seed,
                "rng_state": self.rng.state,
                "history": self.history,
                "backend": {
                    "name": self.backend.name,
                    "device": self.backend.device_name,
                    "dtype": self.backend.dtype_name,
                },
            },
        )

    @classmethod
    def load(cls, path: str | os.PathLike, backend=None, devices=None) -> Trainer:
        """A Trainer restored from `save`'s file, on ``backend`` (None: ``BACKPROP_BACKEND``), ready to resume
        (on ``devices``: see `Trainer`)."""
        if devices is not None:  # a bad devices value is the caller's error, not the file's
            data_parallel(devices, get_backend(backend))
        tensors, meta = checkpoint.load(path)
        try:
            model = _check_checkpoint(meta, tensors)
            trainer = cls(model, from_config(meta["optimizer"]), backend=backend, seed=meta["seed"], devices=devices)
            params = tuple(
                (trainer.backend.asarray(tensors[f"params.{l}.W"]), trainer.backend.asarray(tensors[f"params.{l}.b"]))
                for l in range(model.n_layers)
            )
            fresh, _ = tree_flatten(trainer.opt_state)
            if len(fresh) != sum(name.startswith("opt_state.") for name in tensors):
                raise ValueError(f"the {trainer.optimizer.name} state has {len(fresh)} arrays, the file another number")
            leaves = [
                _leaf_like(tensors[f"opt_state.{i}"], leaf, f"opt_state.{i}", trainer.backend)
                for i, leaf in enumerate(fresh)
            ]
            opt_state = tree_unflatten(meta["opt_state_structure"], leaves, like=trainer.opt_state)
            if tree_flatten(opt_state)[1] != tree_flatten(trainer.opt_state)[1]:
                raise ValueError(f"opt_state_structure does not match the {trainer.optimizer.name} state")
            trainer.rng.state = meta["rng_state"]
            trainer.scaling = Scaling.from_tensors(tensors)
        except (KeyError, TypeError, ValueError, RecursionError) as exc:
            raise checkpoint.CheckpointError(
                f"checkpoint {os.fspath(path)!r} does not describe a valid trainer: {exc}"
            ) from None
        trainer.params, trainer.opt_state = params, opt_state
        if trainer.parallel is not None:
            trainer.params, trainer.opt_state = trainer.parallel.replicate((params, opt_state))
        trainer.epoch, trainer.steps, trainer.history = meta["epoch"], meta["steps"], meta["history"]
        return trainer
