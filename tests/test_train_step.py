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
