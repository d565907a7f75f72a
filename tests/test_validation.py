"""Bad input to MLP(...), loss_and_grad and predict is a ValueError/TypeError naming the problem,
and the caller's arrays are never modified."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from backprop import MLP, get_backend
from backprop.backends import available_backends

N, D = 5, 3  # one set of shapes throughout: eager JAX compiles every op once per shape
LABELS = np.array([0, 2, 1, 1, 0])


def models():
    return {
        "squared_error": MLP([D, 4, 2]),
        "binary_cross_entropy": MLP([D, 4, 2], activation="tanh", loss="binary_cross_entropy"),
        "softmax_cross_entropy": MLP([D, 4, 3], activation="tanh", loss="softmax_cross_entropy"),
    }


def good_targets(loss: str):
    rng = np.random.default_rng(0)
    return {
        "squared_error": rng.normal(size=(N, 2)),
        "binary_cross_entropy": rng.uniform(size=(N, 2)),
        "softmax_cross_entropy": LABELS,
    }[loss]


@pytest.fixture(params=["squared_error", "binary_cross_entropy", "softmax_cross_entropy"])
def loss(request):
    return request.param


@pytest.fixture
def setup(backend, loss):
    """(backend, model, params, X, y) with valid X and y for the loss."""
    model = models()[loss]
    X = np.random.default_rng(1).normal(size=(N, D))
    return backend, model, model.init(0, backend), X, good_targets(loss)


def raises(exc, message):
    return pytest.raises(exc, match=re.escape(message))


# -- valid input is accepted -----------------------------------------------------------------


def test_valid_inputs_are_accepted(setup):
    b, model, params, X, y = setup
    for X_ok in (X, X.tolist(), b.asarray(X), X.astype(np.float32), X.astype(np.float16)):
        loss, grads = model.loss_and_grad(params, X_ok, y)
        assert math.isfinite(float(b.to_numpy(loss)))
        assert tuple(model.predict(params, X_ok).shape) == (N, model.layer_sizes[-1])
    model.loss_and_grad(params, X, b.asarray(y))


def test_accepted_target_encodings(backend):
    m = models()
    X = np.random.default_rng(1).normal(size=(N, D))
    soft, bce = m["softmax_cross_entropy"], m["binary_cross_entropy"]
    p = soft.init(0, backend)
    base = soft.loss(p, X, LABELS)
    one_hot = np.eye(3)[LABELS]
    for y in (
        LABELS.astype(np.uint8),
        LABELS.astype(np.int32),
        LABELS.tolist(),
        one_hot,
        one_hot.astype(int),
        one_hot.astype(bool),
        backend.asarray(LABELS),
    ):
        np.testing.assert_allclose(backend.to_numpy(soft.loss(p, X, y)), backend.to_numpy(base), rtol=1e-6)
    soft.loss(p, X, np.full((N, 3), 1 / 3))  # probability rows
    p = bce.init(0, backend)
    zero_one = np.random.default_rng(2).integers(0, 2, size=(N, 2))
    base = bce.loss(p, X, zero_one.astype(float))
    for y in (zero_one, zero_one.astype(bool)):
        np.testing.assert_allclose(backend.to_numpy(bce.loss(p, X, y)), backend.to_numpy(base), rtol=1e-6)
    one_output = MLP([D, 1], loss="binary_cross_entropy")
    one_output.loss(one_output.init(0, backend), X, zero_one[:, 0])  # 1-D y for one output


# -- shapes ----------------------------------------------------------------------------------


def test_different_lengths(setup):
    b, model, params, X, y = setup
    with raises(ValueError, f"X and y have different lengths: {N} samples in X, {N - 1} in y"):
        model.loss_and_grad(params, X, y[:-1])
    with raises(ValueError, f"X and y have different lengths: {N - 1} samples in X, {N} in y"):
        model.loss_and_grad(params, b.asarray(X[:-1]), y)


def test_wrong_feature_count(setup):
    b, model, params, X, y = setup
    for bad in (X[:, :2], np.ones((N, D + 1))):
        message = f"X has {bad.shape[1]} features, but the network expects {D}"
        with raises(ValueError, message):
            model.loss_and_grad(params, bad, y)
        with raises(ValueError, message):
            model.predict(params, b.asarray(bad))
        with raises(ValueError, message):
            model.logits(params, bad)


@pytest.mark.parametrize("shape", [(D,), (N, D, 1), (1, N, D), ()])
def test_X_not_2d(setup, shape):
    b, model, params, _, y = setup
    X = np.ones(shape)
    message = f"X must be 2-D (n_samples, n_features), got {len(shape)}-D shape {shape}"
    with raises(ValueError, message):
        model.loss_and_grad(params, X, y)
    with raises(ValueError, message):
        model.predict(params, X)
    if shape:
        with raises(ValueError, message):
            model.predict(params, b.asarray(X))


def test_X_none(setup):
    _, model, params, _, y = setup
    with raises(ValueError, "X must be 2-D"):
        model.loss_and_grad(params, None, y)


def test_zero_rows(setup):
    b, model, params, X, y = setup
    with raises(ValueError, "X has 0 samples; at least one is needed"):
        model.loss_and_grad(params, X[:0], y[:0])
    with raises(ValueError, "X has 0 samples; at least one is needed"):
        model.predict(params, b.asarray(X[:0]))


def test_y_wrong_shape(setup, loss):
    b, model, params, X, y = setup
    n_out = model.layer_sizes[-1]
    with raises(ValueError, f"y must be 1-D or 2-D, got 3-D shape ({N}, {n_out}, 1)"):
        model.loss_and_grad(params, X, np.zeros((N, n_out, 1)))
    with raises(ValueError, "y must be 1-D or 2-D, got 0-D shape ()"):
        model.loss_and_grad(params, X, np.float64(0.5))
    with raises(ValueError, f"y has {n_out + 1} columns, but the network has {n_out} outputs"):
        model.loss_and_grad(params, X, np.full((N, n_out + 1), 1 / (n_out + 1)))
    if loss != "softmax_cross_entropy":  # there a 1-D y is labels
        with raises(ValueError, f"y is 1-D but the network has {n_out} outputs; pass shape ({N}, {n_out})"):
            model.loss_and_grad(params, X, np.full(N, 0.5))


# -- values ----------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [-1, 3, 2**40], ids=["negative", "n_classes", "huge"])
def test_labels_out_of_range(backend, bad):
    model = models()["softmax_cross_entropy"]
    params = model.init(0, backend)
    X = np.ones((N, D))
    labels = LABELS.copy()
    labels[1] = bad
    low, high = int(labels.min()), int(labels.max())
    message = f"y has labels out of range [{low}, {high}]; the network has 3 classes 0..2"
    with raises(ValueError, message):
        model.loss_and_grad(params, X, labels)
    if bad != 2**40:  # a backend array may not hold it (JAX without x64 has no int64)
        with raises(ValueError, message):
            model.loss_and_grad(params, X, backend.asarray(labels))


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_X(setup, value):
    b, model, params, X, y = setup
    X = X.copy()
    X[2, 1] = value
    with raises(ValueError, "X contains NaN or infinity"):
        model.loss_and_grad(params, X, y)
    with raises(ValueError, "X contains NaN or infinity"):
        model.predict(params, b.asarray(X))


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_y(setup, loss, value):
    b, model, params, X, y = setup
    y = np.eye(3)[LABELS] if loss == "softmax_cross_entropy" else y.copy()
    y[3, 0] = value
    with raises(ValueError, "y contains NaN or infinity"):
        model.loss_and_grad(params, X, y)
    with raises(ValueError, "y contains NaN or infinity"):
        model.loss_and_grad(params, X, b.asarray(y))


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")
def test_values_too_large_for_float32(backend, loss):
    """Finite float64 values that overflow float32 name the dtype and the remedy, in X and in y,
    never "contains NaN or infinity" for finite data."""
    model = models()[loss]
    params = model.init(0, backend)
    X = np.random.default_rng(1).normal(size=(N, D))
    X[:, 1] = -1e39
    with raises(
        ValueError, "X has values too large for float32 (the backend's dtype); rescale it or use BACKPROP_DTYPE"
    ):
        model.predict(params, X)
    if loss == "squared_error":
        y = good_targets(loss)
        y[2, 0] = 1e39
        with raises(ValueError, "y has values too large for float32 (the backend's dtype)"):
            model.loss_and_grad(params, X[:, [0, 2, 2]], y)


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")
def test_values_too_large_for_float64():
    """float64 is the widest dtype a backend has: the remedy is only to rescale."""
    b = get_backend("numpy", dtype="float64")
    model = models()["squared_error"]
    X = np.full((N, D), np.longdouble("1e400"))
    if not np.isfinite(X).all():
        pytest.skip("this platform's long double is float64")
    with raises(ValueError, "X has values too large for float64 (the backend's dtype); rescale it") as error:
        model.predict(model.init(0, b), X)
    assert "BACKPROP_DTYPE" not in str(error.value)


def test_sparse_and_nullable_pandas_inputs(backend):
    """scipy.sparse matrices and pandas objects of nullable dtypes (Float64, Int64, boolean) are read
    as NumPy arrays of their values; a missing value (pd.NA) is named as such."""
    pd = pytest.importorskip("pandas")
    scipy_sparse = pytest.importorskip("scipy.sparse")
    soft = models()["softmax_cross_entropy"]
    params = soft.init(0, backend)
    X = np.random.default_rng(1).normal(size=(N, D))
    X[X < 0] = 0.0
    want = backend.to_numpy(soft.loss(params, X, LABELS))
    for X_other in (scipy_sparse.csr_matrix(X), scipy_sparse.coo_array(X), pd.DataFrame(X).astype("Float64")):
        for y_other in (LABELS, pd.Series(LABELS, dtype="Int64")):
            np.testing.assert_allclose(backend.to_numpy(soft.loss(params, X_other, y_other)), want, rtol=1e-6)
        np.testing.assert_array_equal(
            backend.to_numpy(soft.predict(params, X_other)), backend.to_numpy(soft.predict(params, X))
        )
    mixed = pd.DataFrame(
        {"a": X[:, 0], "b": pd.array(X[:, 1], dtype="Float32"), "c": pd.array(X[:, 2] > 0, dtype="boolean")}
    )
    soft.predict(params, mixed)
    bce = models()["binary_cross_entropy"]
    zero_one = pd.DataFrame(np.eye(2, dtype=bool)[LABELS % 2]).astype("boolean")
    bce.loss(bce.init(0, backend), X, zero_one)
    missing = pd.DataFrame(X).astype("Float64")
    missing.iloc[2, 0] = pd.NA
    with raises(ValueError, "X has missing values (pandas NA); fill or drop them first"):
        soft.predict(params, missing)
    with raises(ValueError, "y has missing values (pandas NA)"):
        soft.loss(params, X, pd.Series(LABELS, dtype="Int64").where(LABELS != 1, pd.NA))
    with raises(TypeError, "X must be a floating-point array, got dtype int64"):
        soft.predict(params, pd.DataFrame(X.astype(int)).astype("Int64"))


def test_softmax_rows_must_sum_to_one(backend):
    model = models()["softmax_cross_entropy"]
    params = model.init(0, backend)
    X = np.ones((N, D))
    y = np.eye(3)[LABELS]
    y[0] = [0.5, 0.2, 0.2]
    with raises(ValueError, "each row of a 2-D y must sum to 1 (one-hot or class probabilities)"):
        model.loss_and_grad(params, X, y)
    with raises(ValueError, "each row of a 2-D y must sum to 1"):
        model.loss_and_grad(params, X, np.ones((N, 3), dtype=int))
    with raises(ValueError, "y must lie in [0, 1] for softmax_cross_entropy"):
        model.loss_and_grad(params, X, np.tile([1.5, -0.5, 0.0], (N, 1)))


@pytest.mark.parametrize("bad", [-0.1, 1.5, 2])
def test_binary_targets_outside_unit_interval(backend, bad):
    model = models()["binary_cross_entropy"]
    params = model.init(0, backend)
    y = np.full((N, 2), 0.5) if not isinstance(bad, int) else np.ones((N, 2), dtype=int)
    y[4, 1] = bad
    with raises(ValueError, "y must lie in [0, 1] for binary_cross_entropy"):
        model.loss_and_grad(params, np.ones((N, D)), y)


# -- dtypes ----------------------------------------------------------------------------------

BAD_X = {
    "int": (np.ones((N, D), dtype=np.int64), TypeError, "X must be a floating-point array, got dtype int64"),
    "bool": (np.ones((N, D), dtype=bool), TypeError, "X must be a floating-point array, got dtype bool"),
    "object": (np.ones((N, D)).astype(object), TypeError, "X must be a floating-point array, got dtype object"),
    "string": (np.ones((N, D)).astype(str), TypeError, "X must be a floating-point array, got dtype <U"),
    "complex": (np.ones((N, D), dtype=complex), TypeError, "X must be real-valued, got complex dtype complex128"),
    "int list": ([[1, 2, 3]] * N, TypeError, "X must be a floating-point array, got dtype int"),
    "ragged": ([[1.0, 2.0, 3.0], [1.0]] + [[0.0] * D] * (N - 2), TypeError, "X could not be read as an array"),
}


@pytest.mark.parametrize("kind", list(BAD_X))
def test_X_dtype(setup, kind):
    b, model, params, _, y = setup
    X, exc, message = BAD_X[kind]
    with raises(exc, message):
        model.loss_and_grad(params, X, y)
    with raises(exc, message):
        model.predict(params, X)
    if kind in ("int", "bool"):  # the backend's own integer/boolean arrays too
        with raises(TypeError, "X must be a floating-point array, got dtype"):
            model.loss_and_grad(params, b.asarray(X), y)


def test_convert_hint_in_dtype_error(setup):
    _, model, params, _, y = setup
    with raises(TypeError, "convert it first, e.g. X.astype('float32')"):
        model.loss_and_grad(params, np.ones((N, D), dtype=np.int32), y)


@pytest.mark.parametrize("kind", ["int", "bool", "object", "string", "complex"])
def test_squared_error_y_dtype(backend, kind):
    model = models()["squared_error"]
    params = model.init(0, backend)
    y = {
        "int": np.ones((N, 2), dtype=int),
        "bool": np.ones((N, 2), dtype=bool),
        "object": np.ones((N, 2)).astype(object),
        "string": np.ones((N, 2)).astype(str),
        "complex": np.ones((N, 2), dtype=complex),
    }[kind]
    message = "y must be real-valued" if kind == "complex" else "y must be a floating-point array, got dtype"
    with raises(TypeError, message):
        model.loss_and_grad(params, np.ones((N, D)), y)


@pytest.mark.parametrize("kind", ["object", "string", "complex"])
def test_binary_cross_entropy_y_dtype(backend, kind):
    model = models()["binary_cross_entropy"]
    params = model.init(0, backend)
    y = {
        "object": np.ones((N, 2)).astype(object),
        "string": np.ones((N, 2)).astype(str),
        "complex": np.ones((N, 2), dtype=complex),
    }[kind]
    message = "y must be real-valued" if kind == "complex" else "y must be numeric for binary_cross_entropy, got dtype"
    with raises(TypeError, message):
        model.loss_and_grad(params, np.ones((N, D)), y)


@pytest.mark.parametrize("kind", ["float", "native float", "bool", "string", "object"])
def test_softmax_labels_must_be_integers(backend, kind):
    model = models()["softmax_cross_entropy"]
    params = model.init(0, backend)
    y = {
        "float": LABELS.astype(float),
        "native float": backend.asarray(LABELS.astype(float)),
        "bool": LABELS.astype(bool),
        "string": LABELS.astype(str),
        "object": LABELS.astype(object),
    }[kind]
    with raises(TypeError, "y must hold integer class labels for softmax_cross_entropy, got dtype"):
        model.loss_and_grad(params, np.ones((N, D)), y)


# -- the constructor -------------------------------------------------------------------------

LAYER_SIZES_MESSAGE = "layer_sizes must be at least two positive integers (n_features, ..., n_outputs)"


@pytest.mark.parametrize(
    "sizes",
    [
        [3],
        [],
        [3, 0, 1],
        [3, -2, 1],
        [0, 1],
        [3, 2.5, 1],
        [3, 2.0, 1],
        [3, True, 1],
        [3, "4", 1],
        "34",
        None,
        3,
        [3, None],
    ],
    ids=repr,
)
def test_bad_layer_sizes(sizes):
    with raises(ValueError, LAYER_SIZES_MESSAGE):
        MLP(sizes)


def test_numpy_integer_layer_sizes_are_plain_ints():
    model = MLP(np.array([3, 4, 2]))
    assert model.layer_sizes == (3, 4, 2) and all(type(s) is int for s in model.layer_sizes)
    assert MLP([3, np.int64(2)]).config["layer_sizes"] == [3, 2]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(activation="foo"), "unknown activation 'foo'; valid activations: elu, gelu, identity, leaky_relu, relu"),
        (dict(activation=None), "unknown activation None; valid activations"),
        (dict(output_activation="foo"), "unknown activation 'foo'; valid activations"),
        (dict(output_activation="softmax"), "unknown activation 'softmax'"),
        (
            dict(loss="hinge"),
            "unknown loss 'hinge'; valid losses: squared_error, binary_cross_entropy, softmax_cross_entropy",
        ),
        (dict(reduction="max"), "unknown reduction 'max'; valid reductions: mean, sum"),
        (dict(reduction=None), "unknown reduction None; valid reductions: mean, sum"),
        (dict(init="xavier"), "unknown init 'xavier'; valid inits: auto, glorot_uniform, he_normal, sklearn"),
        (dict(alpha=-1e-3), "alpha must be a finite number >= 0, got -0.001"),
        (dict(alpha=float("nan")), "alpha must be a finite number >= 0, got nan"),
        (dict(alpha=float("inf")), "alpha must be a finite number >= 0, got inf"),
        (dict(alpha="0.1"), "alpha must be a finite number >= 0, got '0.1'"),
        (dict(alpha=None), "alpha must be a finite number >= 0, got None"),
        (
            dict(loss="binary_cross_entropy", output_activation="relu"),
            "loss 'binary_cross_entropy' works on logits with a sigmoid output; "
            "output_activation must be None or 'sigmoid'",
        ),
        (
            dict(loss="softmax_cross_entropy", output_activation="sigmoid"),
            "loss 'softmax_cross_entropy' works on logits with a softmax output; "
            "output_activation must be None or 'softmax'",
        ),
    ],
    ids=lambda v: repr(v) if isinstance(v, dict) else "",
)
def test_bad_constructor_arguments(kwargs, message):
    with raises(ValueError, message):
        MLP([3, 4, 2], **kwargs)


def test_softmax_needs_two_outputs():
    with raises(ValueError, "softmax_cross_entropy needs at least 2 outputs (one per class)"):
        MLP([3, 1], loss="softmax_cross_entropy")


def test_constructor_accepts_aliases_and_links():
    assert MLP([3, 2], activation="Swish").activation.name == "silu"
    assert MLP([3, 2], activation="logistic").activation.name == "sigmoid"
    assert (
        MLP([3, 2], loss="SOFTMAX_CROSS_ENTROPY", output_activation="softmax").loss_layer.name
        == "softmax_cross_entropy"
    )
    assert MLP([3, 2], loss="binary_cross_entropy", output_activation="logistic").config["output_activation"] is None
    assert MLP([3, 2], alpha=np.float32(0.5)).alpha == 0.5
    assert MLP([3, 2], alpha=0).alpha == 0.0


# -- the params ------------------------------------------------------------------------------


def test_wrong_number_of_layers(setup):
    b, model, params, X, y = setup
    with raises(ValueError, "params must be a sequence of 2 (W, b) pairs, got 1"):
        model.loss_and_grad(params[:1], X, y)
    with raises(ValueError, "params must be a sequence of 2 (W, b) pairs, got 3"):
        model.predict(params + params[:1], X)
    with raises(ValueError, "params must be a sequence of 2 (W, b) pairs, got dict"):
        model.loss_and_grad({"W0": params[0][0]}, X, y)
    with raises(ValueError, "params must be a sequence of 2 (W, b) pairs, got"):
        model.loss_and_grad(params[0][0], X, y)


def test_layer_not_a_pair(setup):
    b, model, params, X, y = setup
    (W0, b0), (W1, b1) = params
    with raises(ValueError, "params[0] must be a (W, b) pair, got 3 items"):
        model.loss_and_grad(((W0, b0, b0), (W1, b1)), X, y)
    with raises(ValueError, "params[1] must be a (W, b) pair, got 1 items"):
        model.loss_and_grad(((W0, b0), (W1,)), X, y)
    with raises(ValueError, "params[0] must be a (W, b) pair, got"):
        model.predict((W0, (W1, b1)), X)


def test_wrong_shapes(setup):
    b, model, params, X, y = setup
    (W0, b0), (W1, b1) = params
    n_out = model.layer_sizes[-1]
    with raises(ValueError, f"layer 0: W has shape (4, {D}) and b (4,), expected ({D}, 4) and (4,)"):
        model.loss_and_grad(((W0.T, b0), (W1, b1)), X, y)
    with raises(ValueError, f"layer 1: W has shape (4, {n_out}) and b (4,), expected (4, {n_out}) and ({n_out},)"):
        model.loss_and_grad(((W0, b0), (W1, b0)), X, y)


def test_params_must_be_arrays_of_one_backend(setup):
    b, model, params, X, y = setup
    (W0, b0), (W1, b1) = params
    as_lists = tuple((b.to_numpy(W).tolist(), b.to_numpy(v).tolist()) for W, v in params)
    with raises(TypeError, "params must be arrays of one array-API backend"):
        model.loss_and_grad(as_lists, X, y)
    for other in available_backends():
        if other in (b.name, "cupy"):
            continue
        foreign = get_backend(other, dtype=b.dtype_name).asarray(b.to_numpy(b1))
        with raises(TypeError, "params must be arrays of one array-API backend"):
            model.loss_and_grad(((W0, b0), (W1, foreign)), X, y)


def test_params_must_be_floating(setup):
    b, model, params, X, y = setup
    (W0, b0), (W1, b1) = params
    W_int = b.asarray(np.ones(tuple(W0.shape), dtype=np.int32))
    with raises(TypeError, "layer 0: params must be real floating-point arrays"):
        model.loss_and_grad(((W_int, b0), (W1, b1)), X, y)
    with raises(TypeError, "layer 1: params must be real floating-point arrays"):
        model.predict(((W0, b0), (W1, b.asarray(np.ones(tuple(b1.shape), dtype=bool)))), X)


# -- the caller's arrays are left alone ------------------------------------------------------


def test_inputs_not_modified(backend, loss):
    check_inputs_not_modified(backend, loss)


def test_inputs_not_modified_float64_numpy(loss):
    """NumPy in float64: the caller's float64 arrays are native and used without a copy."""
    check_inputs_not_modified(get_backend("numpy", dtype="float64"), loss)


def check_inputs_not_modified(b, loss):
    dtype = b.dtype_name
    model = MLP(models()[loss].layer_sizes, activation="tanh", loss=loss, alpha=0.5)
    params = model.init(0, b)
    np_dtype = np.float32 if dtype == "float32" else np.float64
    X = np.random.default_rng(1).normal(size=(N, D)).astype(np_dtype)
    y = good_targets(loss)
    if y.dtype.kind == "f":
        y = y.astype(np_dtype)
    X0, y0 = X.copy(), y.copy()
    params0 = [(b.to_numpy(W).copy(), b.to_numpy(v).copy()) for W, v in params]
    # NumPy arrays: with a matching dtype the library may use them without copying
    model.loss_and_grad(params, X, y, return_intermediates=True)
    model.predict(params, X)
    np.testing.assert_array_equal(X, X0)
    np.testing.assert_array_equal(y, y0)
    assert X.dtype == X0.dtype and y.dtype == y0.dtype
    # the backend's own arrays
    Xb, yb = b.asarray(X), b.asarray(y)
    model.loss_and_grad(params, Xb, yb)
    np.testing.assert_array_equal(b.to_numpy(Xb), X0)
    np.testing.assert_array_equal(b.to_numpy(yb), y0.astype(np_dtype) if y0.dtype.kind == "f" else y0)
    # and the params
    for (W, v), (W0, v0) in zip(params, params0):
        np.testing.assert_array_equal(b.to_numpy(W), W0)
        np.testing.assert_array_equal(b.to_numpy(v), v0)


def test_alpha_must_not_be_a_bool():
    with pytest.raises(ValueError, match="alpha must be a finite number >= 0, got True"):
        MLP([2, 1], alpha=True)
