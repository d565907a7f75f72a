"""`Trainer.train_step`, the step for one's own loop: metadata-only checks per call, labels encoded
inside the step, bad values refused by the step and then named, and the ``check_finite`` opt-out."""

from __future__ import annotations

import numpy as np
import pytest

from backprop import MLP, Trainer, TrainingDivergedError, optim
from backprop.backends import get_backend, probe
from backprop.core.validation import as_targets

BACKENDS = [
    pytest.param(name, marks=pytest.mark.skipif(not probe(name).available, reason=str(probe(name).reason)))
    for name in ("numpy", "jax", "torch", "array_api_strict")
]


def _data(loss: str, n: int = 12, n_in: int = 5, n_out: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, n_in)).astype(np.float32)
    if loss == "softmax_cross_entropy":
        return X, rng.integers(0, n_out, size=n)
    if loss == "binary_cross_entropy":
        return X, (rng.random((n, n_out)) > 0.5).astype(np.float32)
    return X, rng.standard_normal((n, n_out)).astype(np.float32)


def _trainer(backend: str, loss: str = "softmax_cross_entropy", n_out: int = 3, **kwargs) -> Trainer:
    model = MLP([5, 7, n_out], activation="tanh", loss=loss)
    return Trainer(model, optim.SGD(lr=0.1, momentum=0.9), backend=backend, seed=1, **kwargs)


def _host(trainer: Trainer) -> list[np.ndarray]:
    return [trainer.backend.to_numpy(a).copy() for layer in trainer.params for a in layer]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "binary_cross_entropy", "squared_error"])
def test_train_step_equals_the_step_on_encoded_targets(backend, loss):
    """Labels encoded inside the step give the same losses and parameters as targets encoded on the host."""
    X, y = _data(loss)
    fast, reference = _trainer(backend, loss), _trainer(backend, loss)
    model = reference.model
    for _ in range(3):
        loss_fast = fast.train_step(X, y)
        like = reference.params[0][0]
        Y = as_targets(model.loss_layer, y, X.shape[0], 3, reference.backend.xp, like)
        reference.params, reference.opt_state, stats = reference.step(
            reference.params, reference.opt_state, reference.backend.asarray(X), Y
        )
        assert loss_fast == pytest.approx(float(reference.backend.to_numpy(stats)[0]), rel=1e-6)
    for a, b in zip(_host(fast), _host(reference)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert fast.steps == 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_output_regression_takes_a_1d_y(backend):
    X, y = _data("squared_error", n_out=1)
    t = _trainer(backend, "squared_error", n_out=1)
    first = t.train_step(X, y[:, 0])
    assert np.isfinite(first) and t.train_step(X, y[:, 0]) < first


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("where", "value", "message"),
    [("X", np.nan, "X contains NaN or infinity"), ("X", np.inf, "X contains NaN or infinity")],
)
def test_non_finite_X_is_refused_and_named(backend, where, value, message):
    X, y = _data("softmax_cross_entropy")
    t = _trainer(backend)
    t.train_step(X, y)
    before = _host(t)
    X = X.copy()
    X[3, 2] = value
    with pytest.raises(ValueError, match=message):
        t.train_step(X, y)
    assert t.steps == 1
    for a, b in zip(before, _host(t)):
        np.testing.assert_array_equal(a, b)
    assert np.isfinite(t.train_step(*_data("softmax_cross_entropy")))  # the trainer goes on


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_finite_regression_targets_are_named(backend):
    X, y = _data("squared_error")
    y[0, 0] = np.nan
    t = _trainer(backend, "squared_error")
    with pytest.raises(ValueError, match="y contains NaN or infinity"):
        t.train_step(X, y)
    assert t.steps == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_values_too_large_for_the_dtype_are_named(backend):
    if get_backend(backend).dtype_name != "float32":
        pytest.skip("needs the float32 default dtype")
    X, y = _data("softmax_cross_entropy")
    X = X.astype(np.float64)
    X[0, 0] = 1e39
    with pytest.raises(ValueError, match="X has values too large for float32"):
        _trainer(backend).train_step(X, y)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", [3, 5, -1, -3, 100, -100])
def test_labels_out_of_range_are_named_on_the_host_and_on_the_device(backend, bad):
    X, y = _data("softmax_cross_entropy")
    y[5] = bad
    t = _trainer(backend)
    before = _host(t)
    with pytest.raises(ValueError, match=r"y has labels out of range .* 3 classes 0\.\.2"):
        t.train_step(X, y)
    device_y = t.backend.asarray(y.astype(np.int32))  # checked by the step itself where it is compiled
    with pytest.raises(ValueError, match=r"y has labels out of range"):
        t.train_step(t.backend.asarray(X), device_y)
    assert t.steps == 0
    for a, b in zip(before, _host(t)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
def test_metadata_errors_name_the_problem(backend):
    X, y = _data("softmax_cross_entropy")
    t = _trainer(backend)
    with pytest.raises(ValueError, match="X has 4 features, but the network expects 5"):
        t.train_step(X[:, :4], y)
    with pytest.raises(ValueError, match="X and y have different lengths"):
        t.train_step(X, y[:-1])
    with pytest.raises(TypeError, match="y must hold integer class labels"):
        t.train_step(X, y.astype(np.float32))
    with pytest.raises(TypeError, match="X must be a floating-point array"):
        t.train_step(X.astype(np.int64), y)
    with pytest.raises(ValueError, match="y has 2 columns, but the network has 3 outputs"):
        t.train_step(X, np.zeros((12, 2), np.float32))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_diverging_step_raises_training_diverged(backend):
    X, y = _data("squared_error")
    t = Trainer(MLP([5, 7, 3], activation="relu", loss="squared_error"), optim.SGD(lr=1e30), backend=backend)
    with pytest.raises(TrainingDivergedError):
        for _ in range(5):
            t.train_step(X * 1e3, y)
    assert all(np.isfinite(a).all() for a in _host(t))


@pytest.mark.parametrize("backend", BACKENDS)
def test_check_finite_false_takes_every_step(backend):
    X, y = _data("softmax_cross_entropy")
    X[0, 0] = np.nan
    t = _trainer(backend, check_finite=False)
    loss = t.train_step(X, y)  # nothing refused: the user opted out
    assert np.isnan(loss) and t.steps == 1
    assert any(np.isnan(a).any() for a in _host(t))
    checked = _trainer(backend)
    with pytest.raises(ValueError, match="X contains NaN"):
        checked.train_step(X, y)


def test_check_finite_must_be_a_bool():
    with pytest.raises(TypeError, match="check_finite must be True or False"):
        _trainer("numpy", check_finite="no")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", [3, -1, 100])
def test_labels_out_of_range_are_named_without_the_finiteness_check(backend, bad):
    """check_finite=False takes every step, but labels, on the host or on the device, are still
    checked before it (the step would not refuse them)."""
    X, y = _data("softmax_cross_entropy")
    y[0] = bad
    t = _trainer(backend, check_finite=False)
    with pytest.raises(ValueError, match="y has labels out of range"):
        t.train_step(X, y)
    with pytest.raises(ValueError, match="y has labels out of range"):
        t.train_step(t.backend.asarray(X), t.backend.asarray(y.astype(np.int32)))
    assert t.steps == 0


def _device_batches(trainer: Trainer, loss: str = "softmax_cross_entropy", count: int = 3) -> list[tuple]:
    """Batches of the backend's arrays, X in its dtype and the labels as the backend makes them:
    what a loop over data already on the device passes (on JAX, the step is then compiled for them)."""
    backend = trainer.backend
    return [tuple(backend.asarray(a) for a in _data(loss, seed=seed)) for seed in range(count)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "squared_error"])
def test_a_loop_over_device_batches_equals_the_checked_steps(backend, loss):
    """Batches already on the device (on JAX run by the step compiled for their signature, with no
    Python check per call) give the losses and parameters of the same batches from the host."""
    on_device, from_host = _trainer(backend, loss), _trainer(backend, loss)
    batches = _device_batches(on_device, loss, count=4)
    for X, y in batches:
        host = [on_device.backend.to_numpy(a) for a in (X, y)]
        assert on_device.train_step(X, y) == pytest.approx(from_host.train_step(*host), rel=1e-6)
    for a, b in zip(_host(on_device), _host(from_host)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert on_device.steps == from_host.steps == 4
    if backend == "jax":
        assert on_device._specialized is not None  # the loop ran the compiled fast path
        assert from_host._specialized is None  # host arrays always go through the checks


@pytest.mark.parametrize("backend", BACKENDS)
def test_after_device_batches_any_other_batch_is_still_checked(backend):
    """Once a loop over device batches runs without per-call checks, a batch of another shape or
    dtype, labels out of range (also int64 labels from the host that would wrap into int32 range)
    and non-finite values still get their checks and errors, and refused batches change nothing."""
    t = _trainer(backend)
    (X, y), *_ = batches = _device_batches(t)
    for batch in batches:
        t.train_step(*batch)
    xp, before = t.backend.xp, _host(t)
    with pytest.raises(ValueError, match="X has 4 features, but the network expects 5"):
        t.train_step(X[:, :4], y)
    with pytest.raises(TypeError, match="y must hold integer class labels"):
        t.train_step(X, xp.astype(y, t.backend.dtype))
    with pytest.raises(ValueError, match="y has labels out of range"):
        t.train_step(X, xp.where(y == 1, y + 3, y))
    wrapping = np.asarray(t.backend.to_numpy(y), dtype=np.int64) + 2**32  # in range once wrapped to int32
    with pytest.raises(ValueError, match="y has labels out of range"):
        t.train_step(X, wrapping)
    with pytest.raises(ValueError, match="X contains NaN or infinity"):
        t.train_step(xp.where(X > 1.0, xp.nan, X), y)
    assert t.steps == 3
    for a, b in zip(before, _host(t)):
        np.testing.assert_array_equal(a, b)
    loss = t.train_step(X[:5, :], y[:5])  # a partial batch, then the full one again
    assert np.isfinite(loss) and np.isfinite(t.train_step(X, y)) and t.steps == 5


def test_a_replaced_step_or_a_new_scaling_is_used_by_the_next_device_batch():
    """The fast path belongs to the step it was compiled from and to unscaled batches: replacing
    ``trainer.step`` or setting ``scaling`` takes effect on the next call."""
    pytest.importorskip("jax")
    from backprop.training.scaling import Scaling
    from backprop.training.trainer import compiled_step

    t = _trainer("jax")
    (X, y), *_ = batches = _device_batches(t)
    for batch in batches:
        t.train_step(*batch)
    t.step = compiled_step(t.model, t.optimizer, t.backend, check_finite=False)
    nan_X = t.backend.xp.where(X > 1.0, t.backend.xp.nan, X)
    assert np.isnan(t.train_step(nan_X, y))  # the unchecked step took it
    scaled, reference = _trainer("jax"), _trainer("jax")
    for batch in batches:
        scaled.train_step(*batch)
        reference.train_step(*batch)
    host_X = t.backend.to_numpy(X)
    scaling = Scaling.of(host_X.mean(axis=0), host_X.std(axis=0))
    scaled.scaling = scaling
    loss = scaled.train_step(X, y)
    expected = reference.train_step(scaling.inputs(np, host_X.astype(np.float64)).astype(np.float32), y)
    assert loss == pytest.approx(expected, rel=1e-5)


def test_specialize_refuses_other_signatures_before_running():
    """`Backend.specialize` on JAX: the function compiled for its arguments, refusing other shapes
    and dtypes with a TypeError before running (donated arguments stay valid); None elsewhere."""
    pytest.importorskip("jax")
    backend = get_backend("jax")
    xp = backend.xp
    double = backend.jit(lambda a, b: (2 * a, a + b), donate_argnums=(0,))
    a, b = backend.asarray(np.ones((2, 3))), backend.asarray(np.arange(6.0).reshape(2, 3))
    compiled = backend.specialize(double, a, b)
    for bad in (xp.ones((3, 3), dtype=backend.dtype), xp.ones((2, 3), dtype=xp.float16)):
        with pytest.raises(TypeError):
            compiled(a, bad)
        assert not a.is_deleted()
    twice, total = compiled(a, b)
    np.testing.assert_array_equal(backend.to_numpy(twice), 2.0)
    np.testing.assert_array_equal(backend.to_numpy(total), np.arange(6.0).reshape(2, 3) + 1)
    assert backend.specialize(lambda a: a, a) is None  # not a function jax.jit made
    assert get_backend("numpy").specialize(double, a, b) is None
