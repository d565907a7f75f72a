"""Probabilities are accurate down to the dtype's range: the logistic σ against SciPy's expit."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special as sp

import backprop as bp
from backprop.core.activations import sigmoid

LOWEST = {"float32": -103.0, "float64": -745.0}  # below these, σ(z) underflows even the subnormals


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sigmoid_keeps_its_relative_accuracy_across_the_whole_range(backend_name, dtype):
    """σ(z) within 4 units in the last place of expit(z) wherever expit(z) is a normal number of the
    dtype (the tanh form gave exactly 0 from z ≈ −17 in float32, ~0.2% off near 1e-6), never
    negative or NaN below, and exactly 0.5 at 0."""
    backend = bp.get_backend(backend_name, dtype=dtype)
    z = np.linspace(LOWEST[dtype], 40.0, 20001).astype(dtype)
    got = backend.to_numpy(sigmoid(backend.xp, backend.asarray(z))).astype(np.float64)
    want = sp.expit(z.astype(np.float64))
    normal = want > np.finfo(dtype).tiny
    ulp = np.spacing(want[normal].astype(dtype)).astype(np.float64)
    assert np.max(np.abs(got[normal] - want[normal]) / ulp) <= 4
    assert np.all(got[~normal] >= 0) and not np.isnan(got).any()
    assert float(backend.to_numpy(sigmoid(backend.xp, backend.asarray(np.zeros(1, dtype))))[0]) == 0.5


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_binary_probabilities_of_a_trained_model_are_accurate(backend_name, dtype):
    """The binary cross-entropy's output ŷ = σ(Z) (what predict returns) matches expit of the
    logits in relative terms, also for confident predictions near 0."""
    backend = bp.get_backend(backend_name, dtype=dtype)
    model = bp.MLP([3, 4, 1], activation="tanh", loss="binary_cross_entropy")
    params = tuple((W * 40.0, b) for W, b in model.init(0, backend))  # large logits: probabilities near 0 and 1
    X = np.random.default_rng(0).normal(size=(64, 3))
    logits = backend.to_numpy(model.logits(params, X)).astype(np.float64)
    probs = backend.to_numpy(model.predict(params, X)).astype(np.float64)
    want = sp.expit(logits)
    normal = want > np.finfo(dtype).tiny
    np.testing.assert_allclose(probs[normal], want[normal], rtol=8 * float(np.finfo(dtype).eps))


@pytest.mark.parametrize("centers", [2, 3], ids=["binary", "multiclass"])
def test_predict_log_proba_is_accurate_where_probabilities_round(centers):
    """predict_log_proba stays finite and equals log softmax / log σ of the logits where
    predict_proba rounds to 0 (scikit-learn's log of the rounded probability gives −inf)."""
    import warnings

    from sklearn.datasets import make_blobs

    from backprop.sklearn import MLPClassifier

    X, y = make_blobs(200, n_features=4, centers=centers, random_state=0, cluster_std=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a ConvergenceWarning: the fit's quality is not the point
        clf = MLPClassifier((8,), max_iter=200, random_state=0, backend="numpy", dtype="float32").fit(X, y)
    far = X * 50.0  # confident predictions: probabilities that round to 0 in the float32 network
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no divide-by-zero warning
        log_p = clf.predict_log_proba(far)
    Z = clf._forward_pass_fast(far, logits=True).astype(np.float64)
    want = (
        sp.log_softmax(Z, axis=1) if centers > 2 else np.column_stack([sp.log_expit(-Z[:, 0]), sp.log_expit(Z[:, 0])])
    )
    assert np.isfinite(log_p).all() and (clf.predict_proba(far) == 0).any()
    np.testing.assert_allclose(log_p, want, rtol=1e-6)
    np.testing.assert_allclose(np.exp(clf.predict_log_proba(X)), clf.predict_proba(X), rtol=1e-5, atol=1e-7)
