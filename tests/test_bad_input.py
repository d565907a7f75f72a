"""Bad input, generated: every public entry point gives a correct result or a clear ValueError/TypeError.

Hypothesis draws a data set and one way to damage it (empty, wrong shape, NaN, ±inf, huge and
denormal values, values too large for float32, wrong dtypes, lists, pandas objects (nullable
dtypes too), sparse matrices, read-only / non-contiguous / Fortran arrays, unseen labels, another
backend's arrays).  For each case:

- a raised error is a ValueError or TypeError whose innermost frame is in backprop (or in
  scikit-learn's input validation, for the estimators), never inside the array library;
- a returned result is finite (no NaN parameters, losses or predictions);
- the caller's X and y are unchanged;
- finite X or y whose values overflow the backend's float32 is refused with an error saying so.

The scikit-learn estimators are given the damaged data to fit, and (fitted on clean data) to
predict, predict_proba, score and partial_fit.

The number of cases tried per entry point is printed at the end of the test session.
"""

from __future__ import annotations

import os
import traceback
import warnings

import numpy as np
import pytest
from _counts import count_case
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import backprop as bp
from backprop.backends import get_backend
from backprop.cli import main
from backprop.sklearn import MLPClassifier, MLPRegressor
from backprop.training.trainer import Trainer

pd = pytest.importorskip("pandas")

SRC = os.path.dirname(bp.__file__)
SKLEARN_VALIDATION = (
    "sklearn/utils/validation.py",
    "sklearn/utils/multiclass.py",
    "sklearn/preprocessing/_label.py",
    "sklearn/base.py",
    "sklearn/utils/_array_api.py",
)
SKLEARN_METRICS = SKLEARN_VALIDATION + ("sklearn/metrics/_classification.py", "sklearn/metrics/_regression.py")

DAMAGES = (
    "none",
    "float32",
    "zero_rows",
    "zero_features",
    "single_row",
    "short_y",
    "X_1d",
    "X_3d",
    "nan_X",
    "inf_X",
    "neg_inf_X",
    "huge_X",
    "overflow_X",
    "denormal_X",
    "nan_y",
    "inf_y",
    "overflow_y",
    "y_3d",
    "int_X",
    "bool_X",
    "complex_X",
    "object_X",
    "string_X",
    "list_X",
    "dataframe",
    "nullable_dataframe",
    "series_y",
    "sparse_X",
    "readonly",
    "non_contiguous",
    "fortran",
    "unseen_label",
    "jax_X",
)


def damaged(kind: str, seed: int, n: int, d: int, classification: bool):
    """(X, y) with damage ``kind`` applied to a clean data set of n rows and d features."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = rng.integers(0, 3, n) if classification else rng.normal(size=n)
    if kind == "float32":
        X = X.astype(np.float32)
    elif kind == "zero_rows":
        X, y = X[:0], y[:0]
    elif kind == "zero_features":
        X = X[:, :0]
    elif kind == "single_row":
        X, y = X[:1], y[:1]
    elif kind == "short_y":
        y = y[:-1]
    elif kind == "X_1d":
        X = X[:, 0]
    elif kind == "X_3d":
        X = X[:, :, None]
    elif kind in ("nan_X", "inf_X", "neg_inf_X"):
        X[rng.integers(n), rng.integers(d)] = {"nan_X": np.nan, "inf_X": np.inf, "neg_inf_X": -np.inf}[kind]
    elif kind == "huge_X":
        X = X * 1e38
    elif kind == "overflow_X":  # finite in float64, ±inf in float32
        X[:, rng.integers(d)] = rng.choice([-1.0, 1.0]) * 1e39
    elif kind == "denormal_X":
        X = X * 1e-310
    elif kind in ("nan_y", "inf_y"):
        y = y.astype(float)
        y[rng.integers(n)] = np.nan if kind == "nan_y" else np.inf
    elif kind == "overflow_y":
        y = y.astype(float)
        y[rng.integers(n)] = 1e39
    elif kind == "y_3d":
        y = y[:, None, None]
    elif kind == "int_X":
        X = (X * 10).astype(np.int64)
    elif kind == "bool_X":
        X = X > 0
    elif kind == "complex_X":
        X = X + 1j
    elif kind == "object_X":
        X = X.astype(object)
    elif kind == "string_X":
        X = X.astype(str)
    elif kind == "list_X":
        X = X.tolist()
    elif kind == "dataframe":
        X = pd.DataFrame(X, columns=[f"f{i}" for i in range(d)])
    elif kind == "nullable_dataframe":
        X = pd.DataFrame(X).astype("Float64")
    elif kind == "series_y":
        y = pd.Series(y)
    elif kind == "sparse_X":
        import scipy.sparse

        X[X < 0] = 0.0
        X = scipy.sparse.csr_matrix(X)
    elif kind == "readonly":
        X.flags.writeable = False
        y.flags.writeable = False
    elif kind == "non_contiguous":
        X = rng.normal(size=(n, 2 * d))[:, ::2]
    elif kind == "fortran":
        X = np.asfortranarray(X)
    elif kind == "unseen_label":
        y = y.copy()
        y[0] = 7
    elif kind == "jax_X":
        import jax.numpy as jnp

        X = jnp.asarray(X, dtype=jnp.float32)
    return X, y


def overflows(kind: str, float_targets: bool, uses_y: bool = True) -> str | None:
    """The text of the error an overflow damage must give when the backend computes in float32
    (None for other damages, under float64, for y that are class labels or that a call ignores)."""
    if get_backend(None).dtype_name != "float32":
        return None
    if kind == "overflow_X":
        return "X has values too large for float32"
    if kind == "overflow_y" and float_targets and uses_y:
        return "y has values too large for float32"
    return None


def snapshot(a):
    if hasattr(a, "toarray"):  # a sparse matrix: its values
        a = a.toarray()
    return (
        None
        if a is None
        else (np.array(a, dtype=object, copy=True) if not hasattr(a, "__array__") else np.array(a, copy=True))
    )


def unchanged(before, after) -> bool:
    if before is None:
        return True
    try:
        now = after.toarray() if hasattr(after, "toarray") else np.asarray(after)
        return now.shape == before.shape and bool(np.all((now == before) | (now != now)))
    except Exception:
        return True


def check_call(entry: str, fn, X, y, allowed_frames=(), expect: str | None = None):
    """Run ``fn``; assert the contract above (and, with ``expect``, that it raised an error whose
    message contains ``expect``).  Returns the result or None when it raised."""
    count_case(entry)
    X_before, y_before = snapshot(X), snapshot(y)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = fn()
    except (ValueError, TypeError) as exc:
        assert str(exc).strip(), f"{entry}: {type(exc).__name__} without a message"
        innermost = traceback.extract_tb(exc.__traceback__)[-1].filename
        assert innermost.startswith(SRC) or any(innermost.endswith(p) for p in allowed_frames), (
            f"{entry}: {type(exc).__name__}({exc}) raised from inside {innermost}"
        )
        assert expect is None or expect in str(exc), f"{entry}: {type(exc).__name__}({exc}) does not say {expect!r}"
        result = None
    else:
        assert expect is None, f"{entry}: no error, but the input should be refused: {expect!r}"
    assert unchanged(X_before, X) and unchanged(y_before, y), f"{entry}: the caller's X or y was modified"
    return result


def n_rows(X) -> int:
    return X.shape[0] if hasattr(X, "shape") else len(X)


def all_finite(arrays) -> bool:
    return all(np.isfinite(np.asarray(a, dtype=np.float64)).all() for a in arrays)


common = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
cases = st.tuples(st.sampled_from(DAMAGES), st.integers(0, 2**16), st.integers(2, 12), st.integers(1, 5))


@common
@given(case=cases, classification=st.booleans())
def test_mlp_loss_and_grad(case, classification):
    kind, seed, n, d = case
    X, y = damaged(kind, seed, n, d, classification)
    loss = "softmax_cross_entropy" if classification else "squared_error"
    model = bp.MLP([d, 4, 3 if classification else 1], activation="tanh", loss=loss)
    params = model.init(seed=0, backend="numpy")
    expect = overflows(kind, float_targets=not classification)
    result = check_call("MLP.loss_and_grad", lambda: model.loss_and_grad(params, X, y), X, y, expect=expect)
    if result is not None:
        loss_value, grads = result
        assert np.isfinite(float(loss_value)) and all_finite([g for layer in grads for g in layer])
        assert kind not in (
            "zero_rows",
            "short_y",
            "X_1d",
            "X_3d",
            "nan_X",
            "inf_X",
            "neg_inf_X",
            "nan_y",
            "inf_y",
            "y_3d",
            "int_X",
            "bool_X",
            "complex_X",
            "object_X",
            "string_X",
        )
        assert not (classification and kind == "unseen_label")  # label 7 of 3 classes; 7.0 is a fine regression target


@settings(common, max_examples=25)
@given(case=cases)
def test_mlp_on_other_backends(case, backend_name):
    kind, seed, n, d = case
    X, y = damaged(kind, seed, n, d, classification=True)
    model = bp.MLP([d, 4, 3], activation="relu", loss="softmax_cross_entropy")
    params = model.init(seed=0, backend=backend_name)
    expect = overflows(kind, float_targets=False, uses_y=False)
    result = check_call(f"MLP.predict[{backend_name}]", lambda: model.predict(params, X), X, y, expect=expect)
    if result is not None:
        assert all_finite([bp.get_backend(backend_name).to_numpy(result)])


@common
@given(case=cases, classification=st.booleans())
def test_trainer_fit_and_predict(case, classification):
    kind, seed, n, d = case
    X, y = damaged(kind, seed, n, d, classification)
    loss = "softmax_cross_entropy" if classification else "squared_error"
    trainer = Trainer(bp.MLP([d, 4, 3 if classification else 1], activation="tanh", loss=loss), backend="numpy")

    def fit():
        return trainer.fit(X, y, epochs=2, batch_size=4, progress=False)

    fitted = check_call("Trainer.fit", fit, X, y, expect=overflows(kind, float_targets=not classification))
    assert all_finite([a for layer in trainer.params for a in layer]), "NaN parameters after fit"
    if fitted is not None:
        assert all(np.isfinite(v).all() for v in fitted.values())
    expect = overflows(kind, float_targets=False, uses_y=False)
    predicted = check_call("Trainer.predict", lambda: trainer.predict(X), X, y, expect=expect)
    if predicted is not None:
        assert all_finite([predicted]) and predicted.shape[0] == n_rows(X)


@settings(common, max_examples=40)
@given(case=cases, classification=st.booleans())
def test_sklearn_estimators(case, classification):
    kind, seed, n, d = case
    X, y = damaged(kind, seed, n, d, classification)
    estimator = (MLPClassifier if classification else MLPRegressor)(
        hidden_layer_sizes=(4,), max_iter=3, random_state=0, dtype="float32"
    )
    name = type(estimator).__name__
    expect = overflows(kind, float_targets=not classification)
    fitted = check_call(f"{name}.fit", lambda: estimator.fit(X, y), X, y, SKLEARN_VALIDATION, expect=expect)
    if fitted is None:
        return
    assert all_finite(estimator.coefs_ + estimator.intercepts_), "NaN parameters after fit"
    predicted = check_call(f"{name}.predict", lambda: estimator.predict(X), X, y, SKLEARN_VALIDATION)
    if predicted is not None and not classification:
        assert all_finite([predicted])


def clean_fit(classification: bool, d: int):
    """An estimator fitted on clean data of d features (classes 0, 1, 2 for classification)."""
    rng = np.random.default_rng(d)
    X = rng.normal(size=(12, d))
    if classification:
        estimator, y = (
            MLPClassifier(hidden_layer_sizes=(4,), max_iter=3, random_state=0, dtype="float32"),
            np.arange(12) % 3,
        )
    else:
        estimator, y = MLPRegressor(hidden_layer_sizes=(4,), max_iter=3, random_state=0, dtype="float32"), X.sum(axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return estimator.fit(X, y)


@settings(common, max_examples=40)
@given(case=cases, classification=st.booleans())
def test_sklearn_estimators_on_damaged_input_after_a_clean_fit(case, classification):
    """predict, predict_proba, score and partial_fit of a fitted estimator given damaged X (and y):
    a finite result or a clear error, and values too large for float32 named as such."""
    kind, seed, n, d = case
    X, y = damaged(kind, seed, n, d, classification)
    estimator = clean_fit(classification, d)
    name = type(estimator).__name__
    expect_X = overflows(kind, float_targets=False, uses_y=False)
    predicted = check_call(f"{name}.predict", lambda: estimator.predict(X), X, y, SKLEARN_VALIDATION, expect=expect_X)
    if predicted is not None:
        assert predicted.shape[0] == n_rows(X)
        if not classification:
            assert all_finite([predicted])
    if classification:
        proba = check_call(
            f"{name}.predict_proba", lambda: estimator.predict_proba(X), X, y, SKLEARN_VALIDATION, expect=expect_X
        )
        if proba is not None:
            assert all_finite([proba]) and np.allclose(proba.sum(axis=1), 1.0, atol=1e-4)
    score = check_call(f"{name}.score", lambda: estimator.score(X, y), X, y, SKLEARN_METRICS, expect=expect_X)
    if score is not None:
        assert np.isfinite(score) or (not classification and n_rows(X) < 2)  # R² needs two samples
    expect = overflows(kind, float_targets=not classification)
    updated = check_call(
        f"{name}.partial_fit", lambda: estimator.partial_fit(X, y), X, y, SKLEARN_VALIDATION, expect=expect
    )
    assert all_finite(estimator.coefs_ + estimator.intercepts_), "NaN parameters after partial_fit"
    if updated is not None:
        assert kind not in ("nan_X", "inf_X", "neg_inf_X", "nan_y", "inf_y", "short_y", "X_1d", "X_3d", "y_3d")


@settings(common, max_examples=30)
@given(
    case=cases, fmt=st.sampled_from(["csv", "npz"]), garbage=st.sampled_from(["", "1,2,x\n", "1,2\n", ",,,\n", "nan\n"])
)
def test_train_command_on_generated_files(case, fmt, garbage, tmp_path_factory, capsys):
    kind, seed, n, d = case
    if kind in ("jax_X", "object_X", "sparse_X"):
        kind = "none"
    X, y = damaged(kind, seed, n, d, classification=seed % 2 == 0)
    folder = tmp_path_factory.mktemp("data")
    path = folder / f"data.{fmt}"
    try:
        X_arr, y_arr = np.asarray(X), np.asarray(y)
        if fmt == "npz":
            np.savez(path, X=X_arr, y=y_arr)
        else:
            rows = (
                np.column_stack([X_arr.reshape(len(X_arr), -1), y_arr[: len(X_arr)]])
                if X_arr.ndim >= 1 and len(X_arr) == len(y_arr)
                else X_arr
            )
            path.write_text(
                "\n".join(",".join(str(v) for v in np.atleast_1d(row)) for row in np.atleast_2d(rows)) + "\n" + garbage
            )
    except (ValueError, TypeError):
        return  # this damage cannot be written as a file
    count_case("backprop train --data")
    capsys.readouterr()
    code = main(["train", "--data", str(path), "--epochs", "1", "--no-progress", "--test-size", "0.5"])
    out, err = capsys.readouterr()
    assert code in (0, 2), f"exit code {code}"
    if code == 2:
        assert err.count("\n") == 1 and err.startswith("backprop train: error:") and "Traceback" not in err
    else:
        assert "test " in out
