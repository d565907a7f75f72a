"""Sample weights: the loss layer's δ scaled per row, through every engine and the estimators.

The weighted gradient of the hand-written pass (the pure step, the fused NumPy step, the compiled
JAX step) against ``jax.grad`` of the weighted loss written from its definition, in float64, for
every loss the estimators use; unit weights against no weights (bit for bit); integer weights
against repeated rows; weighted fits against scikit-learn's own weighted MLPs (float64, the same
random_state); metadata routing; and scikit-learn's errors for bad weights.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse
import sklearn
from sklearn import neural_network as skl
from sklearn.exceptions import ConvergenceWarning, UnsetMetadataPassedError
from sklearn.model_selection import cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import backprop as bp
from backprop import optim
from backprop.backends import get_backend, probe, to_host
from backprop.sklearn import MLPClassifier, MLPRegressor
from backprop.sklearn._network import _SklearnMLP
from backprop.training.fused import FusedStep
from backprop.training.trainer import Trainer, _pure_step, compiled_step

HAS_JAX = probe("jax").available
needs_jax = pytest.mark.skipif(not HAS_JAX, reason="needs JAX")


# -- data ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def weights():
    """Positive weights of very different sizes, with a few zeros (rows that do not count)."""
    w = np.random.default_rng(1).uniform(0.2, 3.0, 120)
    w[[3, 50, 77]] = 0.0
    return w


def _targets(kind: str, rng, n: int, k: int) -> np.ndarray:
    if kind == "softmax_cross_entropy":
        return np.eye(k)[rng.integers(0, k, n)]
    if kind == "binary_cross_entropy":
        return rng.integers(0, 2, (n, k)).astype(float)
    if kind == "poisson":
        return rng.poisson(1.5, (n, k)).astype(float)
    return rng.normal(size=(n, k))


# -- the weighted gradient against jax.grad --------------------------------------------------
# (hidden activation, loss, output activation): every loss the estimators use, and the squared
# error through an output activation (the in-place "through" kernel)
NETWORKS = [
    ("tanh", "squared_error", "identity"),
    ("relu", "binary_cross_entropy", None),
    ("tanh", "softmax_cross_entropy", None),
    ("sigmoid", "poisson", None),
    ("tanh", "squared_error", "sigmoid"),
]


def _model(activation, loss, output, alpha=0.05):
    if loss == "poisson":
        return _SklearnMLP([5, 7, 3], "logistic" if activation == "sigmoid" else activation, "exp", alpha)
    return bp.MLP([5, 7, 3], activation=activation, output_activation=output, loss=loss, alpha=alpha, init="sklearn")


def _reference(activation, loss, output, alpha):
    """L(params, X, Y, w) = (Σᵢ wᵢ ℓᵢ + (alpha/2) Σ‖W‖²) / Σᵢ wᵢ in JAX, from the definitions."""
    import jax
    import jax.numpy as jnp
    from jax.scipy.special import xlogy

    acts = {"tanh": jnp.tanh, "relu": jax.nn.relu, "sigmoid": jax.nn.sigmoid, "identity": lambda z: z}

    def loss_fn(params, X, Y, w):
        h = X
        for l, (W, b) in enumerate(params):
            z = jnp.matmul(h, W, precision="highest") + b
            h = acts[activation](z) if l < len(params) - 1 else z
        if loss == "squared_error":
            rows = 0.5 * jnp.sum((acts[output](h) - Y) ** 2, axis=1)
        elif loss == "binary_cross_entropy":
            rows = -jnp.sum(Y * jax.nn.log_sigmoid(h) + (1 - Y) * jax.nn.log_sigmoid(-h), axis=1)
        elif loss == "poisson":
            rows = jnp.sum(xlogy(Y, Y) - Y * h - Y + jnp.exp(h), axis=1)
        else:
            rows = -jnp.sum(Y * jax.nn.log_softmax(h, axis=1), axis=1)
        penalty = 0.5 * alpha * sum(jnp.sum(W**2) for W, _ in params)
        return (jnp.sum(w * rows) + penalty) / jnp.sum(w)

    return loss_fn


def _jax_value_and_grad(network, params, X, Y, w, alpha):
    import jax

    with jax.enable_x64(True):
        cpu = jax.devices("cpu")[0]
        put = lambda a: jax.device_put(np.asarray(to_host(a), dtype=np.float64), cpu)  # noqa: E731
        loss, grads = jax.value_and_grad(_reference(*network, alpha))(
            tuple((put(W), put(b)) for W, b in params), put(X), put(Y), put(w)
        )
        return float(loss), [(np.asarray(dW), np.asarray(db)) for dW, db in grads]


def _assert_grads_close(grads, ref, rtol):
    scale = max(float(np.abs(np.concatenate([g.ravel() for pair in ref for g in pair])).max()), 1e-30)
    for (dW, db), (rW, rb) in zip(grads, ref, strict=True):
        np.testing.assert_allclose(np.asarray(to_host(dW)), rW, rtol=0, atol=rtol * scale)
        np.testing.assert_allclose(np.asarray(to_host(db)), rb, rtol=0, atol=rtol * scale)


def _case(network, backend, seed=0, n=9, alpha=0.05):
    rng = np.random.default_rng(seed)
    model = _model(*network, alpha=alpha)
    params = model.init(seed, backend)
    X, Y = rng.normal(size=(n, 5)), _targets(network[1], rng, n, 3)
    w = rng.uniform(0.0, 3.0, n)
    w[2], w[5] = 0.0, -0.4  # a row that does not count, and a negative weight (scikit-learn allows them)
    return model, params, X, Y, w


@needs_jax
@pytest.mark.parametrize("network", NETWORKS, ids=lambda n: "-".join(str(p) for p in n))
def test_weighted_value_and_grad_equals_jax_grad(network):
    """The pure computation (what the JAX step compiles): the loss layer's row-scaled δ, then the
    unchanged backward pass."""
    backend = get_backend("numpy", dtype="float64")
    model, params, X, Y, w = _case(network, backend)
    loss, grads, _ = model.value_and_grad(np, params, X, Y, w)
    ref_loss, ref_grads = _jax_value_and_grad(network, params, X, Y, w, model.alpha)
    assert float(loss) == pytest.approx(ref_loss, rel=1e-12)
    _assert_grads_close(grads, ref_grads, 1e-11)


# the fused step on every backend with writable arrays (CuPy where it runs), the compiled JAX step
STEPS = (
    ["pure", "fused-numpy"]
    + (["fused-cupy"] if probe("cupy").available else [])
    + (["jax-compiled"] if HAS_JAX else [])
)
BACKENDS = {"pure": "numpy", "fused-numpy": "numpy", "fused-cupy": "cupy", "jax-compiled": "jax"}


@needs_jax
@pytest.mark.parametrize("engine", STEPS)
@pytest.mark.parametrize("network", NETWORKS, ids=lambda n: "-".join(str(p) for p in n))
def test_every_weighted_step_takes_the_jax_grad_step(network, engine):
    """One SGD step p − η g of each engine (the pure step, the fused NumPy step with its in-place
    weighted kernels, the compiled JAX step) moves the parameters by η times jax.grad of the
    weighted loss, and reports the weighted loss; with the batch size changing (plans per size),
    with the L2 term and without it (plain SGD: the fused step folds η into δ)."""
    backend = get_backend(BACKENDS[engine], dtype="float64")
    lr = 0.5
    for n, alpha in ((9, 0.05), (6, 0.0)):
        model, params, X, Y, w = _case(network, backend, seed=n, n=n, alpha=alpha)
        optimizer = optim.SGD(lr)
        if engine == "pure":
            step = _pure_step(model, optimizer, backend)
            new, _, loss, _, ok = step(params, optimizer.init(params), X, Y, W=w)
        else:
            step = (
                FusedStep(model, optimizer, backend)
                if engine.startswith("fused")
                else compiled_step(model, optimizer, backend)
            )
            before = [(np.array(to_host(W)), np.array(to_host(b))) for W, b in params]
            new, _, stats = step(
                params, optimizer.init(params), backend.asarray(X), backend.asarray(Y), backend.asarray(w)
            )
            loss, ok = to_host(stats)[0], to_host(stats)[2]
            if engine.startswith("fused"):  # the in-place weighted kernel where the loss has one
                in_place = model.loss_layer.delta_kernel(weighted=True) is not None
                assert (step._weighted_loss != step._any_loss) == in_place
            params = before
        assert bool(ok)
        ref_loss, ref_grads = _jax_value_and_grad(network, params, X, Y, w, model.alpha)
        assert float(loss) == pytest.approx(ref_loss, rel=1e-12)
        moved = [
            (
                (np.asarray(to_host(W)) - np.asarray(to_host(W1))) / lr,
                (np.asarray(to_host(b)) - np.asarray(to_host(b1))) / lr,
            )
            for (W, b), (W1, b1) in zip(params, new)
        ]
        _assert_grads_close(moved, ref_grads, 1e-10)


def test_loss_and_grad_takes_sample_weight_and_checks_it():
    model = bp.MLP([3, 4, 2], activation="tanh", loss="softmax_cross_entropy")
    params = model.init(0, "numpy")
    X, y = np.random.default_rng(0).normal(size=(6, 3)), np.arange(6) % 2
    w = np.array([1, 2, 0, 1, 3, 1])
    repeated = np.repeat(np.arange(6), w)  # integer weights: rows repeated that many times
    loss_w, grads_w = model.loss_and_grad(params, X, y, sample_weight=w)
    loss_r, grads_r = model.loss_and_grad(params, X[repeated], y[repeated])
    assert float(loss_w) == pytest.approx(float(loss_r), rel=1e-6)
    for (a, b), (c, d) in zip(grads_w, grads_r):
        np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(b, d, rtol=1e-5, atol=1e-7)
    assert float(model.loss(params, X, y, sample_weight=w)) == pytest.approx(float(loss_w))
    with pytest.raises(ValueError, match=r"sample_weight must be 1-D with 6 entries .* got shape \(5,\)"):
        model.loss_and_grad(params, X, y, sample_weight=np.ones(5))
    with pytest.raises(ValueError, match="sample_weight contains NaN or infinity"):
        model.loss_and_grad(params, X, y, sample_weight=[1, 1, np.nan, 1, 1, 1])
    with pytest.raises(TypeError, match="sample_weight must hold real numbers"):
        model.loss_and_grad(params, X, y, sample_weight=np.array(list("abcdef")))


# -- unit weights change nothing -------------------------------------------------------------
@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "squared_error"])
def test_unit_weights_train_bit_for_bit_as_no_weights(loss):
    """The fused NumPy epoch: δ rows scaled by (1/n)·1 are the unweighted δ exactly, so every
    parameter is the same bit for bit (the loss differs by its summation order only)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 6)).astype(np.float32)
    y = rng.integers(0, 3, 100) if loss == "softmax_cross_entropy" else rng.normal(size=(100, 3))
    model = bp.MLP([6, 8, 3], activation="relu", loss=loss, alpha=0.01)
    runs = []
    for unit in (False, True):
        trainer = Trainer(model, optim.Adam(0.01), backend="numpy", seed=0, blas_threads=1)
        Xc, Yc = trainer._check_data(X, y)
        weight = np.ones(100, dtype=Xc.dtype) if unit else None
        batches = [np.arange(i, min(i + 32, 100)) for i in range(0, 100, 32)]  # a partial last batch
        totals = [trainer.run_epoch(Xc, Yc, batches, sample_weight=weight) for _ in range(3)]
        runs.append((trainer.params, totals))
    (plain, plain_totals), (unit, unit_totals) = runs
    for (W, b), (W1, b1) in zip(plain, unit):
        np.testing.assert_array_equal(W, W1)
        np.testing.assert_array_equal(b, b1)
    for a, b in zip(plain_totals, unit_totals):
        assert a.steps == b.steps == 4 and a.correct == b.correct
        assert a.loss == pytest.approx(b.loss, rel=1e-5)


@pytest.mark.parametrize("Estimator", [MLPClassifier, MLPRegressor])
@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_estimators_with_unit_weights_equal_no_weights(Estimator, solver, blobs):
    X, y = blobs
    target = y if Estimator is MLPClassifier else X[:, 0] - X[:, 1]
    kwargs = dict(solver=solver, hidden_layer_sizes=(8,), max_iter=5, random_state=0, batch_size=50, backend="numpy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        plain = Estimator(**kwargs).fit(X, target)
        unit = Estimator(**kwargs).fit(X, target, sample_weight=np.ones(len(X)))
    for a, b in zip(plain.coefs_ + plain.intercepts_, unit.coefs_ + unit.intercepts_):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(plain.loss_curve_, unit.loss_curve_, rtol=1e-6)


# -- integer weights repeat rows -------------------------------------------------------------
def test_integer_weights_equal_repeated_rows_for_lbfgs_and_full_batches(blobs):
    """A weight of k counts a row k times: for L-BFGS (the whole data in one loss) and for full-batch
    SGD the weighted fit equals the fit on the repeated rows, up to summation order."""
    X, y = blobs
    w = np.random.default_rng(3).integers(0, 4, len(X))
    X_rep, y_rep = np.repeat(X, w, axis=0), np.repeat(y, w)
    assert len(X_rep) <= 200  # batch_size="auto": min(200, n), one batch of all the rows
    for kwargs in (dict(solver="lbfgs", max_iter=40), dict(solver="sgd", max_iter=20)):
        kwargs = dict(hidden_layer_sizes=(6,), random_state=0, alpha=1e-3, backend="numpy", dtype="float64", **kwargs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            weighted = MLPClassifier(**kwargs).fit(X, y, sample_weight=w)
            repeated = MLPClassifier(**kwargs).fit(X_rep, y_rep)
        assert weighted.n_iter_ == repeated.n_iter_
        for a, b in zip(weighted.coefs_ + weighted.intercepts_, repeated.coefs_ + repeated.intercepts_):
            np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-9)
        assert weighted.loss_ == pytest.approx(repeated.loss_, rel=1e-9)


# -- agreement with scikit-learn's weighted MLPs ---------------------------------------------
AGREEMENT = {
    "sgd": dict(solver="sgd", learning_rate_init=0.05),
    "sgd-l2-invscaling": dict(solver="sgd", learning_rate="invscaling", learning_rate_init=0.5, alpha=0.1),
    "adam": dict(solver="adam", learning_rate_init=0.01),
    "lbfgs": dict(solver="lbfgs", alpha=1e-3),
    "early-stopping": dict(solver="adam", early_stopping=True, validation_fraction=0.2, n_iter_no_change=3),
}


@pytest.mark.parametrize("config", list(AGREEMENT))
def test_weighted_classifier_equals_sklearn(config, blobs, weights, monkeypatch):
    """float64, the same random_state: the same weighted steps, so the same weights to rounding;
    early stopping splits the weights with the data and scores the validation set weighted."""
    monkeypatch.setenv("BACKPROP_DTYPE", "float64")
    X, y = blobs
    kwargs = {**dict(hidden_layer_sizes=(16,), max_iter=30, random_state=3, batch_size=40), **AGREEMENT[config]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = MLPClassifier(backend="numpy", **kwargs).fit(X, y, sample_weight=weights)
        ref = skl.MLPClassifier(**kwargs).fit(X, y, sample_weight=weights)
    assert ours.coefs_[0].dtype == np.float64
    assert ours.n_iter_ == ref.n_iter_
    for a, b in zip(ours.coefs_ + ours.intercepts_, ref.coefs_ + ref.intercepts_):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11)
    assert ours.loss_ == pytest.approx(ref.loss_, rel=1e-9)
    if getattr(ref, "validation_scores_", None) is not None:
        np.testing.assert_allclose(ours.validation_scores_, ref.validation_scores_, rtol=1e-12)
        unweighted = np.mean(ours.predict(X) == y)  # the weighted score differs: the weights count
        assert ours.score(X, y, sample_weight=weights) != pytest.approx(unweighted, abs=1e-6)
    elif hasattr(ref, "loss_curve_"):
        np.testing.assert_allclose(ours.loss_curve_, ref.loss_curve_, rtol=1e-9)


@pytest.mark.parametrize("kwargs", [dict(solver="sgd"), dict(solver="lbfgs"), dict(solver="adam", loss="poisson")])
def test_weighted_regressor_equals_sklearn(kwargs, blobs, weights, monkeypatch):
    monkeypatch.setenv("BACKPROP_DTYPE", "float64")
    X, _ = blobs
    y = np.c_[X[:, 0] - 2 * X[:, 1], np.tanh(X[:, 2])]
    if kwargs.get("loss") == "poisson":
        y = np.exp(0.3 * y)
    elif kwargs["solver"] == "lbfgs":
        y = y[:, 0]  # one output: for several, scikit-learn's L-BFGS objective and gradient disagree
    kwargs = dict(hidden_layer_sizes=(10,), max_iter=20, random_state=1, alpha=0.1, learning_rate_init=0.01, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = MLPRegressor(backend="numpy", **kwargs).fit(X, y, sample_weight=weights)
        ref = skl.MLPRegressor(**kwargs).fit(X, y, sample_weight=weights)
    for a, b in zip(ours.coefs_ + ours.intercepts_, ref.coefs_ + ref.intercepts_):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11)
    assert ours.loss_ == pytest.approx(ref.loss_, rel=1e-9)


def test_weighted_partial_fit_equals_sklearn(blobs, weights, monkeypatch):
    """scikit-learn's order: partial_fit(X, y, sample_weight, classes)."""
    monkeypatch.setenv("BACKPROP_DTYPE", "float64")
    X, y = blobs
    kwargs = dict(solver="sgd", hidden_layer_sizes=(8,), random_state=0, learning_rate_init=0.05, batch_size=30)
    ours, ref = MLPClassifier(backend="numpy", **kwargs), skl.MLPClassifier(**kwargs)
    for est in (ours, ref):
        est.partial_fit(X[:60], y[:60], weights[:60], [0, 1, 2])
        est.partial_fit(X[60:], y[60:], sample_weight=weights[60:])
    for a, b in zip(ours.coefs_ + ours.intercepts_, ref.coefs_ + ref.intercepts_):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11)
    reg = MLPRegressor(backend="numpy", **kwargs).partial_fit(X, X[:, 0], sample_weight=weights)
    ref_reg = skl.MLPRegressor(**kwargs).partial_fit(X, X[:, 0], sample_weight=weights)
    np.testing.assert_allclose(reg.coefs_[0], ref_reg.coefs_[0], rtol=1e-9, atol=1e-11)


def test_sparse_x_with_weights_in_chunks_equals_dense(blobs, weights, monkeypatch):
    """L-BFGS over a sparse X densified in chunks: each chunk's weighted mean counts by its share
    Σ_c w / Σ w of the weight, its L2 term once in all."""
    monkeypatch.setattr("backprop.sklearn._utils.CHUNK_BYTES", 40 * 5 * 8)  # chunks of 40 rows
    X, y = blobs
    kwargs = dict(solver="lbfgs", hidden_layer_sizes=(6,), random_state=0, alpha=0.01, max_iter=15, dtype="float64")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        dense = MLPClassifier(backend="numpy", **kwargs).fit(X, y, sample_weight=weights)
        sparse = MLPClassifier(backend="numpy", **kwargs).fit(scipy.sparse.csr_array(X), y, sample_weight=weights)
    for a, b in zip(dense.coefs_, sparse.coefs_):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-9)
    assert dense.loss_ == pytest.approx(sparse.loss_, rel=1e-9)


# -- JAX: the compiled epoch and the estimators ----------------------------------------------
@needs_jax
def test_weighted_compiled_jax_epoch_equals_step_by_step_and_numpy():
    rng = np.random.default_rng(0)
    X, y, w = rng.normal(size=(70, 4)), rng.integers(0, 3, 70), rng.uniform(0, 2, 70)
    model = bp.MLP([4, 6, 3], activation="tanh", loss="softmax_cross_entropy", alpha=0.01)
    batches = [np.arange(i, min(i + 16, 70)) for i in range(0, 70, 16)]  # 4 full batches, one of 6
    results = {}
    for name, compile_epochs in (("scan", True), ("steps", False), ("numpy", True)):
        backend = get_backend("numpy" if name == "numpy" else "jax", dtype="float64")
        trainer = Trainer(model, optim.Adam(0.02), backend=backend, seed=0)
        trainer.compile_epochs = compile_epochs
        Xc, Yc = trainer._check_data(X, y)
        Xd, Yd, Wd = backend.asarray(Xc), backend.asarray(Yc), backend.asarray(w)
        totals = [trainer.run_epoch(Xd, Yd, batches, sample_weight=Wd) for _ in range(2)]
        results[name] = [np.asarray(to_host(a)) for pair in trainer.params for a in pair], totals
    for name in ("steps", "numpy"):
        for a, b in zip(results["scan"][0], results[name][0]):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
        for a, b in zip(results["scan"][1], results[name][1]):
            assert a.steps == b.steps == 5 and a.correct == b.correct
            assert a.loss == pytest.approx(b.loss, rel=1e-10)


@needs_jax
@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
def test_weighted_estimators_on_jax_equal_numpy(solver, blobs, weights):
    X, y = blobs
    kwargs = dict(solver=solver, hidden_layer_sizes=(8,), max_iter=8, random_state=0, batch_size=40, dtype="float64")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        on_jax = MLPClassifier(backend="jax", **kwargs).fit(X, y, sample_weight=weights)
        on_numpy = MLPClassifier(backend="numpy", **kwargs).fit(X, y, sample_weight=weights)
    for a, b in zip(on_jax.coefs_ + on_jax.intercepts_, on_numpy.coefs_ + on_numpy.intercepts_):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)


# -- metadata routing ------------------------------------------------------------------------
def test_metadata_routing_passes_sample_weight(blobs, weights):
    X, y = blobs
    kwargs = dict(solver="sgd", hidden_layer_sizes=(8,), max_iter=5, random_state=0, backend="numpy")
    with sklearn.config_context(enable_metadata_routing=True), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = MLPClassifier(**kwargs).set_fit_request(sample_weight=True)
        scaler = StandardScaler().set_fit_request(sample_weight=False)  # the scaler is not weighted
        pipe = make_pipeline(scaler, est).fit(X, y, sample_weight=weights)
        direct = MLPClassifier(**kwargs).fit(StandardScaler().fit_transform(X), y, sample_weight=weights)
        np.testing.assert_array_equal(pipe[-1].coefs_[0], direct.coefs_[0])
        unweighted = MLPClassifier(**kwargs).fit(StandardScaler().fit_transform(X), y)
        assert not np.array_equal(pipe[-1].coefs_[0], unweighted.coefs_[0])

        scored = MLPClassifier(**kwargs).set_fit_request(sample_weight=True).set_score_request(sample_weight=True)
        result = cross_validate(scored, X, y, cv=3, params={"sample_weight": weights}, return_estimator=True)
        fitted = result["estimator"][0]
        assert fitted.n_iter_ == 5 and np.isfinite(result["test_score"]).all()

        with pytest.raises(UnsetMetadataPassedError, match=r"sample_weight.*MLPClassifier\.fit"):
            make_pipeline(scaler, MLPClassifier(**kwargs)).fit(X, y, sample_weight=weights)
        request = MLPClassifier().set_partial_fit_request(sample_weight=True, classes=True).get_metadata_routing()
        assert request.partial_fit.requests == {"sample_weight": True, "classes": True}
        request = MLPRegressor().set_partial_fit_request(sample_weight=True).get_metadata_routing()
        assert request.partial_fit.requests == {"sample_weight": True}


# -- scikit-learn's errors -------------------------------------------------------------------
def _outcome(fit):
    try:
        fit()
    except Exception as exc:  # noqa: BLE001 - the test compares whatever both raise
        return type(exc), str(exc)
    return None


BAD_WEIGHTS = {
    "all-zero": np.zeros(40),
    "too-short": np.ones(39),
    "2-D": np.ones((40, 1)),
    "nan": np.r_[np.ones(39), np.nan],
    "inf": np.r_[np.ones(39), np.inf],
    "strings": np.array(["a"] * 40),
}


@pytest.mark.parametrize("case", list(BAD_WEIGHTS))
@pytest.mark.parametrize("Estimator", ["classifier", "regressor"])
def test_bad_weights_get_sklearns_errors(Estimator, case):
    X = np.random.default_rng(0).normal(size=(40, 3))
    y = np.arange(40) % 2
    ours_cls, ref_cls = (
        (MLPClassifier, skl.MLPClassifier) if Estimator == "classifier" else (MLPRegressor, skl.MLPRegressor)
    )
    w = BAD_WEIGHTS[case]
    ours = _outcome(lambda: ours_cls(max_iter=2, backend="numpy").fit(X, y, sample_weight=w))
    ref = _outcome(lambda: ref_cls(max_iter=2).fit(X, y, sample_weight=w))
    assert ref is not None and ours == ref


def test_negative_weights_and_zero_sum_batches_as_sklearn(monkeypatch):
    """scikit-learn allows negative weights (so do we: the same fit); a batch whose weights sum to
    zero has no weighted mean, and both raise np.average's ZeroDivisionError."""
    monkeypatch.setenv("BACKPROP_DTYPE", "float64")
    X = np.random.default_rng(0).normal(size=(40, 3))
    y = np.arange(40) % 2
    negative = np.random.default_rng(2).uniform(-0.5, 2.0, 40)
    kwargs = dict(solver="sgd", max_iter=4, random_state=0, batch_size=10, hidden_layer_sizes=(5,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = MLPClassifier(backend="numpy", **kwargs).fit(X, y, sample_weight=negative)
        ref = skl.MLPClassifier(**kwargs).fit(X, y, sample_weight=negative)
        np.testing.assert_allclose(ours.coefs_[0], ref.coefs_[0], rtol=1e-9, atol=1e-11)
        zero_batch = np.r_[np.zeros(10), np.ones(30)]  # no shuffle: the first batch weighs nothing
        for est in (
            MLPClassifier(backend="numpy", shuffle=False, **kwargs),
            skl.MLPClassifier(shuffle=False, **kwargs),
        ):
            with pytest.raises(ZeroDivisionError, match="Weights sum to zero, can't be normalized"):
                est.fit(X, y, sample_weight=zero_batch)
        cancelling = np.r_[np.ones(20), -np.ones(20)]
        for est in (MLPClassifier(solver="lbfgs", backend="numpy"), skl.MLPClassifier(solver="lbfgs")):
            with pytest.raises(ZeroDivisionError, match="Weights sum to zero"):
                est.fit(X, y, sample_weight=cancelling)


def test_data_parallel_training_refuses_weights():
    model = bp.MLP([3, 2], loss="squared_error")
    trainer = Trainer(model, optim.SGD(0.1), backend="numpy", seed=0)
    trainer.parallel = object()  # as a Trainer(devices=...) has it
    X, Y = np.zeros((4, 3), dtype=np.float32), np.zeros((4, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="sample_weight is not supported with data-parallel training"):
        trainer.run_epoch(X, Y, [np.arange(4)], sample_weight=np.ones(4, dtype=np.float32))
