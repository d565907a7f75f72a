"""backprop.sklearn trains the same model as scikit-learn's MLPs: the same coefs_ to 1e-8 in
float64 for every solver, the dtype of the data, scikit-learn's Adam, a diverging fit under early
stopping, sparse X kept sparse, and the user's labels in error messages."""

from __future__ import annotations

import pickle
import re
import tracemalloc
import warnings

import numpy as np
import pytest
import scipy.sparse
from sklearn import neural_network as skl
from sklearn.datasets import load_diabetes, load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network._stochastic_optimizers import AdamOptimizer
from sklearn.preprocessing import StandardScaler

from backprop import MLP, optim
from backprop.backends import get_backend
from backprop.sklearn import MLPClassifier, MLPRegressor
from backprop.training.fused import FusedStep
from backprop.training.trainer import Trainer, _pure_step


@pytest.fixture(scope="module")
def digits():
    """300 scaled rows of digits (float64), the labels, and two regression targets made from them."""
    X, y = load_digits(return_X_y=True)
    X = StandardScaler().fit_transform(X)[:300]
    Y = np.c_[X[:, 10] + X[:, 20], X[:, 30] * X[:, 40]]
    return X, y[:300], Y


def _max_difference(ours, ref) -> float:
    return max(
        float(np.max(np.abs(a - b))) for a, b in zip(ours.coefs_ + ours.intercepts_, ref.coefs_ + ref.intercepts_)
    )


# -- the same model: coefs_ equal to 1e-8 ----------------------------------------------------
SAME_MODEL = {  # (estimator, target, parameters)
    "adam": ("classifier", "y", dict(solver="adam")),
    "adam-binary-early-stopping": ("classifier", "binary", dict(solver="adam", early_stopping=True)),
    "adam-tanh-two-layers": ("classifier", "y", dict(solver="adam", activation="tanh", hidden_layer_sizes=(12, 7))),
    "sgd-nesterov": ("classifier", "y", dict(solver="sgd", learning_rate_init=0.05)),
    "sgd-momentum": ("classifier", "y", dict(solver="sgd", learning_rate_init=0.05, nesterovs_momentum=False)),
    "sgd-plain-logistic": ("classifier", "y", dict(solver="sgd", momentum=0.0, activation="logistic")),
    "sgd-invscaling": ("classifier", "y", dict(solver="sgd", learning_rate="invscaling", learning_rate_init=0.5)),
    "sgd-adaptive": (
        "classifier",
        "y",
        dict(solver="sgd", learning_rate="adaptive", learning_rate_init=0.05, tol=0.5, n_iter_no_change=2),
    ),
    "sgd-early-stopping": ("classifier", "y", dict(solver="sgd", early_stopping=True, learning_rate_init=0.05)),
    "lbfgs": ("classifier", "y", dict(solver="lbfgs")),
    "lbfgs-binary": ("classifier", "binary", dict(solver="lbfgs")),
    "regressor-adam": ("regressor", "Y", dict(solver="adam", learning_rate_init=0.01)),
    "regressor-sgd-early-stopping": (
        "regressor",
        "Y0",
        dict(solver="sgd", early_stopping=True, learning_rate_init=0.01),
    ),
    "regressor-lbfgs-two-outputs": ("regressor", "Y", dict(solver="lbfgs", max_iter=30)),
    "regressor-poisson-adam": ("regressor", "counts", dict(loss="poisson", solver="adam")),
    "regressor-poisson-lbfgs": ("regressor", "counts", dict(loss="poisson", solver="lbfgs")),
}


@pytest.mark.parametrize("config", list(SAME_MODEL), ids=list(SAME_MODEL))
def test_the_same_model_as_sklearn(config, digits):
    """float64 data, the same random_state: every solver's coefs_ and intercepts_ equal
    scikit-learn's to 1e-8, with the same loss curve, validation scores and iterations."""
    X, y, Y = digits
    kind, target, params = SAME_MODEL[config]
    target = {"y": y, "binary": y % 2 == 0, "Y": Y, "Y0": Y[:, 0], "counts": np.exp(0.3 * np.tanh(Y))}[target]
    kwargs = {**dict(hidden_layer_sizes=(20,), max_iter=8, random_state=0, batch_size=50, alpha=1e-3), **params}
    ours_cls, ref_cls = (MLPClassifier, skl.MLPClassifier) if kind == "classifier" else (MLPRegressor, skl.MLPRegressor)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = ours_cls(backend="numpy", **kwargs).fit(X, target)
        ref = ref_cls(**kwargs).fit(X, target)
    assert ours.coefs_[0].dtype == np.float64
    assert _max_difference(ours, ref) <= 1e-8
    assert ours.n_iter_ == ref.n_iter_ and ours.t_ == ref.t_
    assert ours.loss_ == pytest.approx(ref.loss_, rel=1e-9)
    if kwargs["solver"] != "lbfgs":
        np.testing.assert_allclose(ours.loss_curve_, ref.loss_curve_, rtol=1e-9)
        assert (ours.validation_scores_ is None) == (ref.validation_scores_ is None)
        if ref.validation_scores_ is not None:
            np.testing.assert_allclose(ours.validation_scores_, ref.validation_scores_, rtol=1e-9)
    predict = "predict_proba" if kind == "classifier" else "predict"
    np.testing.assert_allclose(getattr(ours, predict)(X), getattr(ref, predict)(X), rtol=0, atol=1e-8)


def test_the_same_adam_model_on_every_backend(backend_name, digits):
    """scikit-learn's Adam on every backend: float64 X trains float64 there too."""
    X, y, _ = digits
    kwargs = dict(hidden_layer_sizes=(16,), max_iter=3, random_state=0, batch_size=60)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = MLPClassifier(backend=backend_name, **kwargs).fit(X, y)
        ref = skl.MLPClassifier(**kwargs).fit(X, y)
    assert ours.coefs_[0].dtype == np.float64 and _max_difference(ours, ref) <= 1e-8


# -- scikit-learn's Adam as an optimizer of the library ---------------------------------------
def test_adam_sklearn_equals_sklearns_adam_optimizer():
    """optim.AdamSklearn, pure and fused, takes scikit-learn's AdamOptimizer's steps (float64)."""
    backend = get_backend("numpy", dtype="float64")
    model = MLP([5, 4, 3], activation="tanh", loss="squared_error")
    params = model.init(0, backend)
    optimizer = optim.AdamSklearn(0.05, beta1=0.8, beta2=0.99, eps=1e-3)
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(6, 5)), rng.normal(size=(6, 3))
    pure, fused = _pure_step(model, optimizer, backend), FusedStep(model, optimizer, backend)
    expected = [np.array(a) for layer in params for a in layer]
    reference = AdamOptimizer(expected, 0.05, 0.8, 0.99, 1e-3)
    pure_state = fused_state = (params, optimizer.init(params))
    for _ in range(4):
        grads = model.loss_and_grad(tuple((expected[i], expected[i + 1]) for i in range(0, len(expected), 2)), X, Y)[1]
        reference.update_params(expected, [g for layer in grads for g in layer])
        pure_state = pure(*pure_state, X, Y)[:2]
        fused_state = fused(*fused_state, X, Y)[:2]
        for state in (pure_state, fused_state):
            got = [np.asarray(a) for layer in state[0] for a in layer]
            for g, e in zip(got, expected, strict=True):
                np.testing.assert_allclose(g, e, rtol=1e-13, atol=1e-15)
    assert float(fused_state[1].count) == 4


def test_adam_sklearn_differs_from_adam_where_eps_matters():
    """The two conventions: eps added to √v (scikit-learn's) or to √v̂ (torch's); a large eps on the
    first step tells them apart, each by its own equation."""
    p, g = (np.array([1.0]),), (np.array([0.5]),)
    torch_style = optim.Adam(0.1, eps=0.1).update(p, g, optim.Adam(0.1).init(p))[0][0]
    sklearn_style = optim.AdamSklearn(0.1, eps=0.1).update(p, g, optim.AdamSklearn(0.1).init(p))[0][0]
    m, v = 0.1 * 0.5, 0.001 * 0.25  # (1 − β₁) g, (1 − β₂) g² after the first step
    rate = 0.1 * np.sqrt(1 - 0.999) / (1 - 0.9)  # η √(1 − β₂) / (1 − β₁)
    assert float(sklearn_style[0]) == pytest.approx(1.0 - rate * m / (np.sqrt(v) + 0.1), rel=1e-14)
    assert float(torch_style[0]) == pytest.approx(1.0 - 0.1 * (m / 0.1) / (np.sqrt(v / 0.001) + 0.1), rel=1e-14)
    assert abs(float(torch_style[0]) - float(sklearn_style[0])) > 1e-2


def test_adam_sklearn_checkpoints_round_trip(tmp_path):
    """A Trainer with AdamSklearn saves and loads by name and config, state included."""
    model = MLP([4, 6, 2], activation="relu", loss="squared_error")
    trainer = Trainer(model, optim.AdamSklearn(0.01, beta2=0.99), backend="numpy", seed=1)
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(20, 4)).astype(np.float32), rng.normal(size=(20, 2)).astype(np.float32)
    trainer.fit(X, Y, epochs=2, batch_size=5, progress=False)
    trainer.save(tmp_path / "adam.safetensors")
    loaded = Trainer.load(tmp_path / "adam.safetensors", backend="numpy")
    assert type(loaded.optimizer) is optim.AdamSklearn and loaded.optimizer.config == trainer.optimizer.config
    assert optim.get_optimizer("adam_sklearn").name == "adam_sklearn"
    for a, b in zip(optim.tree_leaves(loaded.opt_state), optim.tree_leaves(trainer.opt_state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    trainer.fit(X, Y, epochs=1, batch_size=5, shuffle=False, progress=False)
    loaded.fit(X, Y, epochs=1, batch_size=5, shuffle=False, progress=False)
    for a, b in zip(optim.tree_leaves(loaded.params), optim.tree_leaves(trainer.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# -- the dtype follows the data -------------------------------------------------------------
def test_the_network_dtype_follows_the_data(monkeypatch, digits):
    """float32 X trains float32, float64 and integer X float64, whatever BACKPROP_DTYPE says;
    dtype= overrides; predictions come in X's floating dtype."""
    X, y, _ = digits
    monkeypatch.setenv("BACKPROP_DTYPE", "float32")
    kwargs = dict(hidden_layer_sizes=(6,), max_iter=2, random_state=0, backend="numpy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for data, dtype, want in [
            (X, None, np.float64),
            (X.astype(np.float32), None, np.float32),
            (np.rint(X * 4).astype(np.int64), None, np.float64),
            (X, "float32", np.float32),
            (X.astype(np.float32), np.float64, np.float64),
        ]:
            clf = MLPClassifier(dtype=dtype, **kwargs).fit(data, y)
            assert all(a.dtype == want for a in clf.coefs_ + clf.intercepts_), (data.dtype, dtype)
            assert clf.predict_proba(X).dtype == np.float64
            assert clf.predict_proba(X.astype(np.float32)).dtype == np.float32
            reg = MLPRegressor(dtype=dtype, **kwargs).fit(data, X[:, 3])
            assert reg.coefs_[0].dtype == want and reg.predict(data).dtype == (
                np.float32 if data.dtype == np.float32 else np.float64
            )
    with pytest.raises(ValueError, match="'dtype' parameter"):
        MLPClassifier(dtype="float16", **kwargs).fit(X, y)


def test_partial_fit_warm_start_and_pickles_keep_the_first_dtype(digits):
    X, y, _ = digits
    kwargs = dict(hidden_layer_sizes=(6,), max_iter=2, random_state=0, backend="numpy")
    clf = MLPClassifier(**kwargs).partial_fit(X.astype(np.float32), y, classes=np.unique(y))
    clf.partial_fit(X, y)  # float64 X: the float32 network goes on in float32
    assert clf.coefs_[0].dtype == np.float32 and clf._trainer.backend.dtype_name == "float32"
    loaded = pickle.loads(pickle.dumps(clf))
    loaded.partial_fit(X, y)
    clf.partial_fit(X, y)
    assert loaded.coefs_[0].dtype == np.float32
    np.testing.assert_array_equal(loaded.coefs_[0], clf.coefs_[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warm = MLPClassifier(warm_start=True, **kwargs).fit(X, y)
        warm.fit(X.astype(np.float32), y)
    assert warm.coefs_[0].dtype == np.float64 and len(warm.loss_curve_) == 4


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")
def test_values_too_large_for_a_float32_network_name_the_remedy(digits):
    X, y, _ = digits
    big = X.copy()
    big[:, 1] = 1e39
    clf = MLPClassifier(hidden_layer_sizes=(4,), max_iter=2, dtype="float32", backend="numpy")
    with pytest.raises(ValueError, match=r"X has values too large for float32.*dtype='float64'"):
        clf.fit(big, y)
    with pytest.raises(ValueError, match=r"X has values too large for float32"):
        clf.fit(scipy.sparse.csr_matrix(big), y)
    MLPClassifier(hidden_layer_sizes=(4,), max_iter=1, backend="numpy").partial_fit(big, y, classes=np.unique(y))


# -- a diverging fit under early stopping ----------------------------------------------------
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_diverging_fit_with_early_stopping_keeps_the_best_weights_as_sklearn(backend_name):
    """sgd at a rate that diverges on unscaled data: no error; the epochs before the divergence,
    the NaN validation score of the epoch that diverged, the best score and the weights kept are
    scikit-learn's; predictions are finite.  Without early stopping fit still raises."""
    X, y = load_diabetes(return_X_y=True)
    X = X * 100
    kwargs = dict(hidden_layer_sizes=(10,), solver="sgd", learning_rate_init=1.0, max_iter=30, random_state=0)
    ref = skl.MLPRegressor(early_stopping=True, **kwargs).fit(X, y)
    with pytest.warns(ConvergenceWarning) as caught:
        ours = MLPRegressor(early_stopping=True, backend=backend_name, **kwargs).fit(X, y)
    messages = [str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert re.search(r"diverged in epoch 3.*best validation score \(epoch 1\)", messages[0])
    assert messages[-1].startswith("Stochastic Optimizer: Maximum iterations (30) reached")
    # scikit-learn trains on up to max_iter on non-finite weights: the same record of epochs
    assert ours.n_iter_ == ref.n_iter_ == 30 and ours.t_ == ref.t_ == 30 * 397
    assert len(ours.loss_curve_) == len(ours.validation_scores_) == 30
    np.testing.assert_allclose(ours.loss_curve_[:2], ref.loss_curve_[:2], rtol=1e-6)
    assert np.isnan(ours.loss_curve_[3:]).all() and np.isnan(ref.loss_curve_[3:]).all()
    np.testing.assert_allclose(ours.validation_scores_, ref.validation_scores_, rtol=1e-6)  # -inf, nan alike
    assert np.isnan(ours.validation_scores_[-1]) and not np.isfinite(ours.loss_)
    assert ours.best_validation_score_ == pytest.approx(ref.best_validation_score_, rel=1e-6)
    for a, b in zip(ours.coefs_ + ours.intercepts_, ref.coefs_ + ref.intercepts_, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    assert np.isfinite(ours.predict(X)).all() and np.isfinite(ref.predict(X)).all()
    with pytest.raises(ValueError, match="non-finite parameter weights"):
        MLPRegressor(backend=backend_name, **kwargs).fit(X, y)


# -- sparse X stays sparse --------------------------------------------------------------------
@pytest.fixture(scope="module")
def sparse_data():
    rng = np.random.RandomState(0)
    X = scipy.sparse.random(240, 50, density=0.1, format="csr", random_state=rng)
    return X, X.toarray(), rng.randint(0, 3, 240)


@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
def test_sparse_x_trains_the_same_model_as_dense(backend_name, solver, sparse_data, monkeypatch):
    """A CSR X, densified a batch (L-BFGS: a chunk of rows, here several) at a time, trains and
    predicts as its dense copy does."""
    from backprop.sklearn import _utils

    monkeypatch.setattr(_utils, "CHUNK_BYTES", 100 * 50 * 8)  # chunks of 100 rows: three for 240
    Xs, Xd, y = sparse_data
    kwargs = dict(hidden_layer_sizes=(8,), solver=solver, max_iter=4, alpha=0.01, random_state=0, batch_size=64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sparse = MLPClassifier(backend=backend_name, **kwargs).fit(Xs, y)
        dense = MLPClassifier(backend=backend_name, **kwargs).fit(Xd, y)
    assert _max_difference(sparse, dense) <= 1e-10
    np.testing.assert_allclose(sparse.predict_proba(Xs), dense.predict_proba(Xd), atol=1e-12)
    np.testing.assert_allclose(sparse.predict_proba(Xs.tocsc()), dense.predict_proba(Xd), atol=1e-12)
    if solver != "lbfgs":
        sparse.partial_fit(Xs, y)
        dense.partial_fit(Xd, y)
        assert _max_difference(sparse, dense) <= 1e-10


def test_sparse_fit_and_predict_never_densify_the_whole_matrix():
    """tracemalloc's peak during fit and predict on a 20,000 × 2,000 CSR at 0.1% density stays far
    below the 320 MB its dense float64 copy would take."""
    X = scipy.sparse.random(20000, 2000, density=0.001, format="csr", random_state=0)
    y = np.arange(20000) % 3
    dense_bytes = X.shape[0] * X.shape[1] * 8
    clf = MLPClassifier(hidden_layer_sizes=(10,), max_iter=1, random_state=0, backend="numpy")
    tracemalloc.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(X, y)
        fit_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        proba = clf.predict_proba(X)
        predict_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert proba.shape == (20000, 3) and np.isfinite(proba).all()
    assert fit_peak < dense_bytes / 10 and predict_peak < dense_bytes / 10, (fit_peak, predict_peak)


# -- the user's labels in error messages ------------------------------------------------------
@pytest.mark.parametrize(
    "labels, named",
    [(np.array([True] * 19 + [False]), "False"), (np.array(["cat"] * 19 + ["dog"]), "'dog'")],
    ids=["bool", "strings"],
)
def test_a_stratified_split_names_the_users_class(labels, named):
    X = np.random.default_rng(0).normal(size=(20, 3))
    with pytest.raises(ValueError, match=rf"too few members are: \[{named}\]"):
        MLPClassifier(early_stopping=True, max_iter=2, backend="numpy").fit(X, labels)


def test_partial_fit_names_the_users_classes():
    X = np.random.default_rng(0).normal(size=(20, 3))
    clf = MLPClassifier(hidden_layer_sizes=(3,), backend="numpy").partial_fit(
        X, np.array(["cat", "dog"] * 10), classes=["cat", "dog"]
    )
    with pytest.raises(ValueError, match=r"`self.classes_` has \['cat' 'dog'\]. 'y' has \['cow'\]"):
        clf.partial_fit(X, np.array(["cow"] * 20))
