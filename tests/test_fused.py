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
from backprop.training import fused
from backprop.backends import get_backend, probe
from backprop.backends._base import to_host
from backprop.training.fused import FusedStep, supports
from backprop.training.trainer import Trainer, TrainingDivergedError, _pure_step, compiled_step

WRITABLE = [name for name in ("numpy", "cupy") if probe(name).available]
if not WRITABLE:  # pragma: no cover - numpy is a core dependency
    pytest.skip("no backend with writable arrays", allow_module_level=True)

OPTIMIZERS = {
    "sgd": lambda: optim.SGD(0.1),
    "sgd-nesterov-wd": lambda: optim.SGD(0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    "sgd-momentum-cosine": lambda: optim.SGD(optim.cosine_decay(0.1, 5), momentum=0.5),
    "adam-clip": lambda: optim.Adam(0.01, clip_norm=0.05),
    "adamw-step-decay": lambda: optim.AdamW(optim.step_decay(0.01, 2), weight_decay=0.1),
    "rmsprop-momentum": lambda: optim.RMSprop(0.01, momentum=0.5),
    "rmsprop": lambda: optim.RMSprop(0.01),
}
NETWORKS = [  # (activation, loss, output activation): every fused kernel and the fallbacks
    ("sigmoid", "squared_error", None),
    ("tanh", "softmax_cross_entropy", None),
    ("relu", "binary_cross_entropy", None),
    ("identity", "squared_error", "tanh"),
    ("relu", "squared_error", "sigmoid"),
    ("sigmoid", "squared_error", "relu"),
    ("gelu", "softmax_cross_entropy", None),
    ("elu", "squared_error", None),
]


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
    (Fortran order, a strided view) is copied into the plan's buffer first: the same results."""
    model, optimizer, params, X, Y = _setup(backend64, optim.SGD(0.1))
    host = np.array(to_host(X))
    results = []
    for batch in (X, backend64.asarray(np.asfortranarray(host)), backend64.asarray(np.repeat(host, 2, axis=0))[::2]):
        step = FusedStep(model, optimizer, backend64)
        new_params, _, stats = step(params, optimizer.init(params), batch, Y)
        results.append(_leaves(new_params) + [stats])
        np.testing.assert_array_equal(np.array(to_host(batch)), host)
    for other in results[1:]:
        for want, got in zip(results[0], other, strict=True):
            np.testing.assert_array_equal(got, want)


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


def test_a_fused_step_needs_writable_arrays_and_a_known_optimizer():
    """JAX's arrays are immutable and an optimizer of one's own has no fused update: a clear error."""
    model = bp.MLP([3, 4, 2])

    class Custom(optim.Optimizer):
        name, hyperparameters = "custom", ()

    with pytest.raises(ValueError, match=r"no fused step for Custom on the numpy backend"):
        FusedStep(model, Custom(0.1, None), get_backend("numpy"))
    if probe("jax").available:
        with pytest.raises(ValueError, match=r"no fused step for SGD on the jax backend"):
            FusedStep(model, optim.SGD(0.1), get_backend("jax"))


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
        params, state, Xh, Yh, batches, should_stop=lambda: calls.append(1) or len(calls) == 2)
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
        params, optimizer.init(params), X, Y, batches)
    assert totals.first_bad == 2 and totals.steps == 2 and not np.isfinite(totals.bad_loss)
    for want, have in zip(kept[0] + kept[1], _leaves(new_params) + _leaves(new_state), strict=True):
        np.testing.assert_array_equal(have, want)


def test_an_epoch_whose_only_fault_is_an_overflowing_update_is_refused(backend64):
    """A finite loss (about 1e200), but η · g (about 1e400) overflows: the epoch (unchecked first
    on NumPy, then replayed with checks) refuses that step and keeps the parameters."""
    model, optimizer, params, X, Y = _setup(backend64, optim.SGD(1e300), activation="identity")
    X, Y = np.array(to_host(X)) * 1e50, np.array(to_host(Y))
    new_params, _, totals = FusedStep(model, optimizer, backend64).epoch(
        params, optimizer.init(params), X, Y, [np.arange(len(X))])
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
    from backprop.training.fused import LOSSES, _Plan
    from backprop.core.losses import get_loss

    rng = np.random.default_rng(6)
    Z = (rng.normal(size=(9, 4)) + spread * rng.integers(-1, 2, size=(9, 1))).astype(dtype)
    Y = np.eye(4, dtype=dtype)[rng.integers(0, 4, 9)]
    Y[0] = 0.25  # a probability row, not one-hot
    want = get_loss("softmax_cross_entropy")(bp.backends.get_backend("numpy").xp, Z, Y, 1 / 9)
    delta = Z.copy()
    plan = _Plan(np, bp.MLP([3, 5, 4], loss="softmax_cross_entropy"), 9, np.dtype(dtype), True)
    loss, correct = LOSSES[("softmax_cross_entropy", "softmax")](lib, delta, Y, 1 / 9, 0.3 / 9, True, plan)
    rtol = 1e-6 if dtype == "float32" else 1e-13
    np.testing.assert_allclose(float(loss), float(want.value), rtol=rtol)
    np.testing.assert_allclose(delta, 0.3 * want.delta, rtol=rtol, atol=rtol / 9)
    assert np.isfinite(delta).all() and correct == int(np.sum(np.argmax(Z, 1) == np.argmax(Y, 1)))


def test_fused_relu_keeps_its_mask_and_refuses_an_overflowed_pre_activation():
    """relu = Z ⊙ [Z > 0] with the mask kept for the derivative; Z = −inf gives NaN (not 0)."""
    from backprop.training.fused import DERIVATIVE, FORWARD

    Z = np.array([[-2.0, 0.0, 3.0], [np.inf, -np.inf, 0.5]], dtype=np.float32)
    out, mask = np.empty_like(Z), np.empty_like(Z)
    with np.errstate(invalid="ignore"):
        FORWARD["relu"](np, Z.copy(), out, mask)
    np.testing.assert_array_equal(out[0], [0.0, 0.0, 3.0])
    assert out[1, 0] == np.inf and np.isnan(out[1, 1]) and out[1, 2] == np.float32(0.5)
    D = np.full_like(Z, 2.0)
    DERIVATIVE["relu"](np, D, out, mask)
    np.testing.assert_array_equal(D, [[0.0, 0.0, 2.0], [2.0, 0.0, 2.0]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_sigmoid_takes_the_one_call_form_up_to_its_limit(dtype):
    """σ runs as the backend's one-call ufunc (SciPy's expit on NumPy) for arrays of up to its
    limit, and as four NumPy calls above it; both give 1 / (1 + e^(−z)) to within two units in
    the last place, saturating at ±inf without NaN."""
    import dataclasses

    backend = get_backend("numpy")
    expit, most = backend.logistic()
    assert most == 512 and expit(np.float32(0.0)) == 0.5
    calls = []

    def spy(Z, out):
        calls.append(Z.size)
        return expit(Z, out=out)

    kernel = fused._logistic_kernel(dataclasses.replace(backend, logistic=lambda: (spy, 6)))
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
