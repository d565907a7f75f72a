"""The fused step (NumPy, CuPy): the same results as the pure step, on preallocated buffers.

`backprop.training.fused.FusedStep` re-states the training step with in-place kernels; these tests hold
it to the pure step of `backprop.training.trainer` (which JAX compiles and which the gradient tests check
against jax.grad) for every activation, loss and optimizer, and check its own contract: refused
steps change nothing, foreign params and state are copied in, epochs equal a loop of steps,
and Ctrl-C lands between steps.
"""

from __future__ import annotations

import os
import signal
import threading

import numpy as np
import pytest

import backprop as bp
from backprop import optim
from backprop.backends import get_backend, probe
from backprop.backends._base import to_host
from backprop.core.activations import ACTIVATIONS
from backprop.core.losses import LOSSES, get_loss
from backprop.training import fused
from backprop.training.fused import FusedStep, supports
from backprop.training.trainer import Trainer, TrainingDivergedError, _pure_step, compiled_step

WRITABLE = [name for name in ("numpy", "cupy") if probe(name).available]
if not WRITABLE:  # pragma: no cover - numpy is a core dependency
    pytest.skip("no backend with writable arrays", allow_module_level=True)


def _optimizer_classes() -> list[type]:
    """Every optimizer class of `backprop.optim`, found by walking Optimizer's subclasses."""
    found, todo = [], [optim.Optimizer]
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if cls.__module__ == optim.__name__ and cls is not optim.Optimizer:
            found.append(cls)
    return sorted(found, key=lambda c: c.__name__)


def _variants(cls) -> dict:
    """Configurations of ``cls`` that switch on each of its hyperparameters, a schedule and clipping."""
    hyper = set(cls.hyperparameters)
    name = cls.__name__.lower()
    variants = {
        name: lambda: cls(0.01),
        f"{name}-clip-cosine": lambda: cls(optim.cosine_decay(0.05, 5), clip_norm=0.05),
    }
    if "momentum" in hyper:
        variants[f"{name}-momentum-step-decay"] = lambda: cls(optim.step_decay(0.05, 2), momentum=0.5)
    if "nesterov" in hyper:
        variants[f"{name}-nesterov"] = lambda: cls(0.05, momentum=0.9, nesterov=True)
    if "weight_decay" in hyper:
        variants[f"{name}-weight-decay"] = lambda: cls(0.05, weight_decay=0.1)
    return variants


FAST_OPTIMIZERS = [cls for cls in _optimizer_classes() if "_step_inplace" in vars(cls)]
OPTIMIZERS = {key: make for cls in _optimizer_classes() for key, make in _variants(cls).items()}
FAST_ACTIVATIONS = sorted(name for name, a in ACTIVATIONS.items() if a.f_into is not None and a.df_into is not None)
NETWORKS = (  # (activation, loss, output activation): every in-place form, found by introspection, and fallbacks
    [(name, "squared_error", None) for name in FAST_ACTIVATIONS]  # each hidden activation's f_into and df_into
    + [("tanh", "squared_error", name) for name in FAST_ACTIVATIONS]  # the squared error through each output
    + [("relu", loss, None) for loss in LOSSES if loss != "squared_error"]  # the cross-entropies
    + [("gelu", "softmax_cross_entropy", None), ("elu", "squared_error", "softplus")]  # no in-place form
)


def test_the_parity_grid_covers_every_in_place_form():
    """A new in-place form cannot go untested: every optimizer class with its own ``_step_inplace``
    and every loss layer with a ``delta_kernel`` appear in the grids above."""
    assert {type(make()) for make in OPTIMIZERS.values()} >= set(FAST_OPTIMIZERS) >= {optim.SGD, optim.Adam}
    links = {(loss, output or "identity") for _, loss, output in NETWORKS}
    for loss in LOSSES:
        for output in ACTIVATIONS:
            if loss == "squared_error" and get_loss(loss, output).delta_kernel() is not None:
                assert (loss, output) in links
        if loss != "squared_error" and get_loss(loss).delta_kernel() is not None:
            assert any(n[1] == loss for n in NETWORKS)


def _targets(loss: str, rng, n: int, k: int):
    if loss == "softmax_cross_entropy":
        return rng.integers(0, k, n)
    if loss == "binary_cross_entropy":
        return rng.integers(0, 2, (n, k))
    return rng.normal(size=(n, k))


def _leaves(tree):
    """The arrays of a tree as NumPy copies."""
    return [np.array(to_host(a)) for a in optim.tree_leaves(tree)]


@pytest.fixture(params=WRITABLE)
def backend64(request, monkeypatch):
    monkeypatch.setenv("BACKPROP_DTYPE", "float64")
    return get_backend(request.param)


@pytest.mark.parametrize("network", NETWORKS, ids=lambda n: "-".join(str(p) for p in n))
@pytest.mark.parametrize("opt", OPTIMIZERS)
def test_fused_step_equals_the_pure_step(backend64, network, opt):
    activation, loss, output = network
    model = bp.MLP([5, 7, 6, 3], activation=activation, output_activation=output, loss=loss, alpha=0.01)
    optimizer = OPTIMIZERS[opt]()
    params = model.init(1, backend64)
    pure, fused = _pure_step(model, optimizer, backend64), FusedStep(model, optimizer, backend64)
    rng = np.random.default_rng(0)
    expected = actual = (params, optimizer.init(params))
    for n in (8, 8, 3, 8, 1):  # batch sizes change: buffers are planned per size
        _, X, Y = model.prepare(params, rng.normal(size=(n, 5)), _targets(loss, rng, n, 3))
        *expected, loss_pure, correct_pure, ok_pure = pure(*expected, X, Y)
        *actual, (loss_fused, correct_fused, ok_fused) = fused(*actual, X, Y)
        assert bool(ok_pure) and ok_fused
        np.testing.assert_allclose(float(loss_fused), float(loss_pure), rtol=1e-12)
        assert float(correct_fused) == float(correct_pure)
        for want, got in zip(_leaves(expected), _leaves(actual), strict=True):
            assert want.shape == got.shape
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("network", NETWORKS[:4], ids=lambda n: "-".join(str(p) for p in n))
def test_plain_sgd_with_the_rate_folded_into_delta_equals_the_pure_step(backend64, network):
    """Plain SGD without L2: η rides in on δ (the update is p − η g in one pass)."""
    activation, loss, output = network
    model = bp.MLP([4, 9, 3], activation=activation, output_activation=output, loss=loss)
    optimizer = optim.SGD(0.05)
    fused = FusedStep(model, optimizer, backend64)
    assert fused._lr_in_delta
    params = model.init(2, backend64)
    pure = _pure_step(model, optimizer, backend64)
    rng = np.random.default_rng(7)
    expected = actual = (params, optimizer.init(params))
    for n in (6, 6, 2):
        _, X, Y = model.prepare(params, rng.normal(size=(n, 4)), _targets(loss, rng, n, 3))
        *expected, loss_pure, _, _ = pure(*expected, X, Y)
        *actual, (loss_fused, _, ok) = fused(*actual, X, Y)
        assert ok and float(loss_fused) == pytest.approx(float(loss_pure), rel=1e-12)
    for want, got in zip(_leaves(expected), _leaves(actual), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13)


def test_the_sklearn_estimators_optimizer_is_fused(backend64):
    """scikit-learn's SGD keeps its rate in the state; the fused step reads it from there."""
    from backprop.sklearn import _StateRateSGD

    model = bp.MLP([4, 6, 2], activation="relu", loss="softmax_cross_entropy")
    optimizer = _StateRateSGD(momentum=0.9, nesterov=True)
    assert supports(backend64, optimizer)
    params = model.init(0, backend64)
    state = optimizer.init_with_rate(params, 0.05)
    pure, fused = _pure_step(model, optimizer, backend64), FusedStep(model, optimizer, backend64)
    _, X, Y = model.prepare(params, np.random.default_rng(1).normal(size=(10, 4)), np.arange(10) % 2)
    expected = actual = (params, state)
    for _ in range(3):
        expected = pure(*expected, X, Y)[:2]
        actual = fused(*actual, X, Y)[:2]
    for want, got in zip(_leaves(expected), _leaves(actual), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12)


def _setup(backend, optimizer=None, alpha=0.0, activation="tanh"):
    model = bp.MLP([3, 4, 2], activation=activation, loss="squared_error", alpha=alpha)
    optimizer = optimizer or optim.Adam(0.01)
    params = model.init(0, backend)
    _, X, Y = model.prepare(params, np.random.default_rng(2).normal(size=(6, 3)), np.ones((6, 2)))
    return model, optimizer, params, X, Y


def test_a_refused_step_changes_nothing(backend64):
    """A non-finite loss changes neither the parameters nor the optimizer's slots."""
    model, optimizer, params, X, Y = _setup(backend64, optim.Adam(0.01))
    step = FusedStep(model, optimizer, backend64)
    params, state = step(params, optimizer.init(params), X, Y)[:2]  # one finite step
    before = _leaves(params) + _leaves(state)
    new_params, new_state, (loss, _, ok) = step(params, state, X * float("inf"), Y)
    assert not ok and not np.isfinite(float(loss))
    for want, got in zip(before, _leaves(new_params) + _leaves(new_state), strict=True):
        np.testing.assert_array_equal(got, want)


def test_an_update_that_overflows_keeps_the_parameters(backend64):
    """Finite loss and gradients (about 1e100), but η · g ≈ 1e400 overflows: the step is refused."""
    model, optimizer, params, X, Y = _setup(backend64, optim.SGD(1e300), activation="identity")
    step = FusedStep(model, optimizer, backend64)
    new_params, _, (loss, _, ok) = step(params, optimizer.init(params), X * 1e50, Y)
    assert np.isfinite(float(loss)) and not ok
    for want, got in zip(_leaves(params), _leaves(new_params), strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("sizes", [[3, 4, 2], [300, 250, 7]], ids=["one-dot", "by-rows"])
def test_the_finiteness_probe_sums_every_parameter(backend64, sizes):
    """Σ of a flat buffer (one dot with ones, or by rows of SUM_ROW over a zero-padded buffer
    above DOT_SUM_MAX) is exact, and one non-finite entry anywhere (the first, one in the last,
    partial row, the last) makes the step's check fail."""
    model = bp.MLP(sizes, activation="tanh", loss="squared_error")
    step = FusedStep(model, optim.SGD(0.1), backend64)
    assert (step.size > fused.DOT_SUM_MAX) == (sizes[0] == 300) and step.size % fused.SUM_ROW
    flat = step._buffers[0]
    values = np.random.default_rng(0).integers(-8, 9, step.size).astype(np.float64)  # exact sums
    flat[...] = backend64.asarray(values)
    assert float(step._sums[0]()) == values.sum()
    for index in (0, step.size - 3, step.size - 1):
        for bad in (np.inf, np.nan):
            flat[index] = bad
            assert not step._finite(0.0, 0)
            flat[index] = values[index]
    assert step._finite(0.0, 0) and not step._finite(np.nan, 0)


def test_a_step_reads_its_batch_in_place_or_copies_it_the_same(backend64):
    """A C-contiguous batch of the step's dtype is read where it is (never written); any other
    (Fortran order, a strided view) is copied into the plan's buffer first: the same results (to
    rounding where the products take the bias from the copy, `bias_in_products`)."""
    model, optimizer, params, X, Y = _setup(backend64, optim.SGD(0.1))
    host = np.array(to_host(X))
    results = []
    for batch in (X, backend64.asarray(np.asfortranarray(host)), backend64.asarray(np.repeat(host, 2, axis=0))[::2]):
        step = FusedStep(model, optimizer, backend64)
        new_params, _, stats = step(params, optimizer.init(params), batch, Y)
        results.append(_leaves(new_params) + [stats])
        np.testing.assert_array_equal(np.array(to_host(batch)), host)
    rtol = 1e-13 if getattr(backend64.inplace, "bias_in_products", False) else 0.0
    for other in results[1:]:
        for want, got in zip(results[0], other, strict=True):
            np.testing.assert_allclose(got, want, rtol=rtol, atol=0.0)


def test_foreign_params_and_state_are_copied_in(backend64):
    model, optimizer, params, X, Y = _setup(backend64, alpha=0.1)
    step = FusedStep(model, optimizer, backend64)
    pure = _pure_step(model, optimizer, backend64)
    step(params, optimizer.init(params), X, Y)  # the buffers now hold a step of their own
    other = (model.init(7, backend64), optimizer.init(params))  # not the step's buffers
    before = _leaves(other)
    expected = pure(*other, X, Y)[:2]
    got = step(*other, X, Y)[:2]
    assert got[0] is step._params[step._cur] and got[0] is not other[0]  # the step's views, not the inputs
    for want, have in zip(before, _leaves(other), strict=True):
        np.testing.assert_array_equal(have, want)  # copied in, never written
    for want, have in zip(_leaves(expected), _leaves(got), strict=True):
        np.testing.assert_allclose(have, want, rtol=1e-12)


def test_a_fused_step_needs_writable_arrays():
    """JAX's arrays are immutable: a clear error."""
    model = bp.MLP([3, 4, 2])
    assert supports(get_backend("numpy"), optim.SGD(0.1))
    if probe("jax").available:
        with pytest.raises(ValueError, match=r"no fused step on the jax backend"):
            FusedStep(model, optim.SGD(0.1), get_backend("jax"))


class SignSGD(optim.SGD):
    """p ← p − η sign(g): a subclass that restates `_step` and has no in-place form of its own."""

    def _step(self, xp, params, grads, lr, t, buffers):
        return optim.tree_map(lambda p, g: p - lr * xp.sign(g), params, grads), buffers


class Lion(optim.Optimizer):
    """An optimizer of one's own with a state of its own: Lion (Chen et al., 2023) without decay."""

    name, hyperparameters, State = "lion", ("beta1", "beta2"), optim.SGDState

    def __init__(self, lr=1e-3, beta1=0.9, beta2=0.99):
        super().__init__(lr, None)
        self.beta1, self.beta2 = beta1, beta2

    def init(self, params):
        return optim.SGDState(self._count(params), optim.tree_map(lambda a: a * 0.0, params))

    def _step(self, xp, params, grads, lr, t, buffers):
        (m,) = buffers
        direction = optim.tree_map(lambda m, g: xp.sign(self.beta1 * m + (1 - self.beta1) * g), m, grads)
        m = optim.tree_map(lambda m, g: self.beta2 * m + (1 - self.beta2) * g, m, grads)
        return optim.tree_map(lambda p, d: p - lr * d, params, direction), (m,)


@pytest.mark.parametrize("make", [lambda: SignSGD(0.1), lambda: Lion(0.05)], ids=["SignSGD", "Lion"])
def test_an_optimizer_without_its_own_in_place_form_runs_its_own_step(backend_name, make):
    """On every backend the trainer's step applies the optimizer's own ``_step``: a subclass that
    restates the math never inherits its parent's in-place form (one SignSGD step moves every
    weight by exactly η, where SGD's would move it by η |g|)."""
    optimizer = make()
    assert optimizer.inplace_step() is None
    model = bp.MLP([4, 5, 3], activation="tanh", loss="softmax_cross_entropy")
    trainer = Trainer(model, optimizer, backend=backend_name, seed=0)
    if backend_name in WRITABLE:
        assert isinstance(trainer.step, FusedStep)
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(16, 4)), rng.integers(0, 3, 16)
    before = [np.array(to_host(a), dtype=np.float64) for a in optim.tree_leaves(trainer.params)]
    pure_params, pure_state = trainer.snapshot(), optimizer.init(trainer.snapshot())
    _, Xb, Yb = model.prepare(pure_params, X, y)
    for _ in range(3):
        trainer.train_step(X, y)
        loss, grads = model.value_and_grad(trainer.backend.xp, pure_params, Xb, Yb)[:2]
        pure_params, pure_state = optimizer.update(pure_params, grads, pure_state)
    got = [np.array(to_host(a), dtype=np.float64) for a in optim.tree_leaves(trainer.params)]
    want = [np.array(to_host(a), dtype=np.float64) for a in optim.tree_leaves(pure_params)]
    for w, g in zip(want, got, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
    if isinstance(optimizer, SignSGD):  # after one step from fresh weights: |Δw| = η wherever g ≠ 0
        fresh = Trainer(model, optimizer, backend=backend_name, seed=0)
        fresh.train_step(X, y)
        moved = [
            np.abs(np.array(to_host(a), dtype=np.float64) - b) for a, b in zip(optim.tree_leaves(fresh.params), before)
        ]
        assert all(np.allclose(m[m > 1e-6], 0.1, rtol=1e-5) for m in moved)
        assert max(float(m.max()) for m in moved) == pytest.approx(0.1, rel=1e-5)


def test_mis_shaped_params_or_state_are_refused(backend64):
    model, optimizer, params, X, Y = _setup(backend64)
    step = FusedStep(model, optimizer, backend64)
    wrong = ((params[0][0][:2], params[0][1]), params[1])
    with pytest.raises(ValueError, match=r"layer 0: W has shape \(2, 4\)"):
        step(wrong, optimizer.init(params), X, Y)
    count, m, v = optimizer.init(params)
    bad_m = ((m[0][0], m[0][1][:1]), m[1])
    with pytest.raises(ValueError, match=r"optimizer state entry 1: an array of shape \(1,\), expected \(4,\)"):
        step(params, (count, bad_m, v), X, Y)


def test_an_epoch_equals_its_steps_and_stops_on_request(backend64):
    model, optimizer, params, _, _ = _setup(backend64)
    rng = np.random.default_rng(3)
    X, Y = rng.normal(size=(40, 3)), rng.normal(size=(40, 2))
    batches = [rng.permutation(40)[:8] for _ in range(4)] + [np.arange(5)]
    stepwise, whole = FusedStep(model, optimizer, backend64), FusedStep(model, optimizer, backend64)
    state = optimizer.init(params)
    expected, losses = (params, state), []
    for index in batches:
        *expected, (loss, _, _) = stepwise(*expected, backend64.asarray(X[index]), backend64.asarray(Y[index]))
        losses.append(float(loss))
    Xh, Yh = X.astype(np.float64), Y.astype(np.float64)
    got_params, got_state, totals = whole.epoch(params, state, Xh, Yh, batches)
    assert totals.first_bad == -1 and totals.steps == len(batches) and np.isnan(totals.bad_loss)
    # the summed per-example loss: each batch's mean loss times its size
    assert totals.loss == pytest.approx(sum(loss * len(index) for loss, index in zip(losses, batches)), rel=1e-12)
    for want, have in zip(_leaves(expected), _leaves((got_params, got_state)), strict=True):
        np.testing.assert_array_equal(have, want)
    assert float(got_state[0]) == len(batches)
    calls = []
    stopped = FusedStep(model, optimizer, backend64).epoch(
        params, state, Xh, Yh, batches, should_stop=lambda: calls.append(1) or len(calls) == 2
    )
    assert stopped[2].steps == 2 and float(stopped[1][0]) == 2


def test_an_epoch_stops_at_the_first_refused_step(backend64):
    model, optimizer, params, _, _ = _setup(backend64)
    X, Y = np.ones((12, 3)), np.ones((12, 2))
    X[8] = np.nan
    batches = [np.arange(0, 4), np.arange(4, 8), np.arange(8, 12), np.arange(0, 4)]
    step = FusedStep(model, optimizer, backend64)
    kept = step.epoch(params, optimizer.init(params), X, Y, batches[:2])[:2]
    kept = (_leaves(kept[0]), _leaves(kept[1]))
    new_params, new_state, totals = FusedStep(model, optimizer, backend64).epoch(
        params, optimizer.init(params), X, Y, batches
    )
    assert totals.first_bad == 2 and totals.steps == 2 and not np.isfinite(totals.bad_loss)
    for want, have in zip(kept[0] + kept[1], _leaves(new_params) + _leaves(new_state), strict=True):
        np.testing.assert_array_equal(have, want)


def test_an_epoch_whose_only_fault_is_an_overflowing_update_is_refused(backend64):
    """A finite loss (about 1e200), but η · g (about 1e400) overflows: the epoch (unchecked first
    on NumPy, then replayed with checks) refuses that step and keeps the parameters."""
    model, optimizer, params, X, Y = _setup(backend64, optim.SGD(1e300), activation="identity")
    X, Y = np.array(to_host(X)) * 1e50, np.array(to_host(Y))
    new_params, _, totals = FusedStep(model, optimizer, backend64).epoch(
        params, optimizer.init(params), X, Y, [np.arange(len(X))]
    )
    assert totals.first_bad == 0 and totals.steps == 0 and np.isfinite(totals.bad_loss)
    for want, have in zip(_leaves(params), _leaves(new_params), strict=True):
        np.testing.assert_array_equal(have, want)


@pytest.mark.parametrize("name", WRITABLE)
def test_the_trainer_uses_the_fused_step_and_its_epochs(name):
    """fit through whole fused epochs equals fit step by step, bitwise; both match the pure step."""
    rng = np.random.default_rng(4)
    X, y = rng.normal(size=(90, 6)), rng.integers(0, 3, 90)
    model = bp.MLP([6, 16, 3], activation="sigmoid", loss="softmax_cross_entropy", alpha=1e-3)
    runs = []
    for whole in (True, False):
        trainer = Trainer(model, optim.Adam(1e-2), backend=name, seed=5)
        assert isinstance(trainer.step, FusedStep)
        trainer.compile_epochs = whole
        history = trainer.fit(X, y, epochs=3, batch_size=16, progress=False)
        runs.append((history, _leaves(trainer.params), trainer.steps, float(trainer.opt_state[0])))
    (h1, p1, s1, c1), (h2, p2, s2, c2) = runs
    assert h1.keys() == h2.keys() and s1 == s2 == c1 == c2 == 3 * 6
    for key in h1:
        np.testing.assert_allclose(h1[key], h2[key], rtol=1e-12)
    for a, b in zip(p1, p2, strict=True):
        np.testing.assert_array_equal(a, b)
    reference = Trainer(model, optim.Adam(1e-2), backend=name, seed=5)
    reference.step = compiled_step(model, reference.optimizer, reference.backend)  # the pure step
    reference.compile_epochs = False
    reference.fit(X, y, epochs=3, batch_size=16, progress=False)
    for a, b in zip(_leaves(reference.params), p1, strict=True):
        np.testing.assert_allclose(b, a, rtol=2e-4, atol=2e-6)


def test_ctrl_c_lands_between_steps_of_a_fused_epoch():
    """SIGINT in the middle of a fused epoch: KeyboardInterrupt after a whole step, a consistent
    trainer (steps = the optimizer's count) that trains on."""
    if threading.current_thread() is not threading.main_thread():  # pragma: no cover
        pytest.skip("signals reach the main thread only")
    rng = np.random.default_rng(5)
    X, y = rng.normal(size=(4000, 8)), rng.normal(size=(4000, 1))
    trainer = Trainer(bp.MLP([8, 32, 1], activation="tanh"), optim.Adam(1e-3), backend="numpy")
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            trainer.fit(X, y, epochs=100000, batch_size=2, progress=False)
    finally:
        timer.cancel()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert 0 < trainer.steps < 100000 * 2000
    assert float(trainer.opt_state[0]) == trainer.steps
    assert len(trainer.history.get("loss", [])) == trainer.epoch
    before = trainer.steps
    trainer.fit(X[:20], y[:20], epochs=1, batch_size=2, progress=False)
    assert trainer.steps == before + 10 and all(np.isfinite(a).all() for a in _leaves(trainer.params))


def test_divergence_in_a_fused_epoch_names_the_batch_and_keeps_finite_params():
    X, y = np.ones((10, 2)), np.ones((10, 1))
    X[7] = 1e30
    trainer = Trainer(bp.MLP([2, 3, 1], activation="relu"), optim.SGD(0.01), backend="numpy")
    with pytest.raises(TrainingDivergedError, match=r"epoch 0, batch 7"):
        trainer.fit(X, y, epochs=1, batch_size=1, shuffle=False, progress=False)
    assert trainer.steps == 7 and all(np.isfinite(a).all() for a in _leaves(trainer.params))


class _NotNumPy:
    """NumPy under another name: what the fused kernels do for a library other than NumPy
    (CuPy), checked without a GPU."""

    def __getattr__(self, name):
        return getattr(np, name)


@pytest.mark.parametrize("lib", [np, _NotNumPy()], ids=["numpy", "other-library"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("spread", [3.0, 1e4], ids=["shift-by-the-largest-logit", "rows-far-apart"])
def test_fused_softmax_cross_entropy_equals_the_loss_layer(dtype, spread, lib):
    """On NumPy, logits within a few units share one shift and rows 1e4 apart fall back to a
    shift per row; other libraries always shift each row by its own largest logit.  The loss is
    scaled by ``scale``, δ by ``dscale`` (plain SGD's η rides on it)."""
    from backprop.training.fused import _Plan

    rng = np.random.default_rng(6)
    Z = (rng.normal(size=(9, 4)) + spread * rng.integers(-1, 2, size=(9, 1))).astype(dtype)
    Y = np.eye(4, dtype=dtype)[rng.integers(0, 4, 9)]
    Y[0] = 0.25  # a probability row, not one-hot
    want = get_loss("softmax_cross_entropy")(bp.backends.get_backend("numpy").xp, Z, Y, 1 / 9)
    delta = Z.copy()
    plan = _Plan(np, bp.MLP([3, 5, 4], loss="softmax_cross_entropy"), 9, np.dtype(dtype), True)
    kernel = get_loss("softmax_cross_entropy").delta_kernel()
    loss, correct = kernel(lib, delta, Y, 1 / 9, 0.3 / 9, True, plan)
    rtol = 1e-6 if dtype == "float32" else 1e-13
    np.testing.assert_allclose(float(loss), float(want.value), rtol=rtol)
    np.testing.assert_allclose(delta, 0.3 * want.delta, rtol=rtol, atol=rtol / 9)
    assert np.isfinite(delta).all() and correct == int(np.sum(np.argmax(Z, 1) == np.argmax(Y, 1)))


def test_fused_relu_keeps_its_mask_and_refuses_an_overflowed_pre_activation():
    """relu = Z ⊙ [Z > 0] with the mask kept for the derivative; Z = −inf gives NaN (not 0)."""
    relu = ACTIVATIONS["relu"]
    assert relu.mask_in_scratch
    Z = np.array([[-2.0, 0.0, 3.0], [np.inf, -np.inf, 0.5]], dtype=np.float32)
    out, mask = np.empty_like(Z), np.empty_like(Z)
    with np.errstate(invalid="ignore"):
        relu.f_into(np, Z.copy(), out, mask)
    np.testing.assert_array_equal(out[0], [0.0, 0.0, 3.0])
    assert out[1, 0] == np.inf and np.isnan(out[1, 1]) and out[1, 2] == np.float32(0.5)
    D = np.full_like(Z, 2.0)
    relu.df_into(np, D, out, mask, None)
    np.testing.assert_array_equal(D, [[0.0, 0.0, 2.0], [2.0, 0.0, 2.0]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_sigmoid_takes_the_one_call_form_up_to_its_limit(dtype, monkeypatch, request):
    """σ runs as the backend's one-call ufunc (SciPy's expit on NumPy) for arrays of up to its
    limit, and as four NumPy calls above it; both give 1 / (1 + e^(−z)) to within two units in
    the last place, saturating at ±inf without NaN."""
    from backprop import backends
    from backprop.backends import numpy as numpy_backend

    expit, most = numpy_backend.logistic()
    assert most == 512 and expit(np.float32(0.0)) == 0.5
    assert backends.one_call_logistic(np) == (expit, 512)
    calls = []

    def spy(Z, out):
        calls.append(Z.size)
        return expit(Z, out=out)

    kernel = ACTIVATIONS["sigmoid"].f_into
    monkeypatch.setattr(numpy_backend, "logistic", lambda: (spy, 6))
    backends.one_call_logistic.cache_clear()
    request.addfinalizer(backends.one_call_logistic.cache_clear)
    rng = np.random.default_rng(0)
    for shape, one_call in (((2, 3), True), ((1, 6), True), ((7, 1), False), ((4, 300), False)):
        Z = (rng.normal(scale=20.0, size=shape)).astype(dtype)
        Z.flat[:3] = [np.inf, -np.inf, -200.0]
        out, T = np.empty_like(Z), np.empty_like(Z)
        calls.clear()
        with np.errstate(over="ignore"):
            kernel(np, Z.copy(), out, T)
            want = (1.0 / (1.0 + np.exp(-Z.astype(np.float64)))).astype(dtype)
        assert calls == ([Z.size] if one_call else [])
        assert not np.isnan(out).any() and out.flat[0] == 1.0 and out.flat[1] == 0.0
        np.testing.assert_array_max_ulp(out, want, maxulp=2)
