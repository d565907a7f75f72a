"""What a newcomer expects of the Trainer: class labels from `predict_classes`, a progress bar only
on terminals, and a standardisation that travels in the checkpoint (the CLI's included)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from backprop import MLP, Trainer, optim
from backprop.cli import main
from backprop.training.checkpoint import CheckpointError
from backprop.training.scaling import Scaling


def _blobs(n=90, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n)
    X = rng.normal(size=(n, 4)).astype(np.float32) + 3.0 * y[:, None]
    return X, y


# -- predict_classes ---------------------------------------------------------------------------
def test_predict_classes_is_the_argmax_of_predict_for_softmax():
    X, y = _blobs()
    t = Trainer(MLP([4, 8, 3], loss="softmax_cross_entropy"), optim.Adam(lr=0.03), backend="numpy")
    t.fit(X, y, epochs=20, batch_size=16, progress=False)
    probabilities, classes = t.predict(X), t.predict_classes(X)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(classes, np.argmax(probabilities, axis=1))
    assert classes.shape == (90,) and np.mean(classes == y) > 0.9


def test_predict_classes_thresholds_binary_outputs_and_refuses_regression():
    X, y = _blobs()
    Y = np.stack([y == 0, y == 2], axis=1).astype(np.float32)  # two independent labels
    t = Trainer(MLP([4, 8, 2], loss="binary_cross_entropy"), optim.Adam(lr=0.03), backend="numpy")
    t.fit(X, Y, epochs=20, batch_size=16, progress=False)
    classes = t.predict_classes(X)
    np.testing.assert_array_equal(classes, (t.predict(X) > 0.5).astype(np.int64))
    assert classes.shape == (90, 2) and np.mean(classes == Y) > 0.9
    with pytest.raises(TypeError, match="predict_classes needs a classification loss"):
        Trainer(MLP([4, 8, 1], loss="squared_error"), backend="numpy").predict_classes(X)


# -- progress ----------------------------------------------------------------------------------
def test_progress_defaults_to_the_terminal(capsys, monkeypatch):
    X, y = _blobs(32)
    t = Trainer(MLP([4, 8, 3], loss="softmax_cross_entropy"), backend="numpy")
    t.fit(X, y, epochs=1, batch_size=16)  # stderr is captured: not a terminal, so no bar
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    t.fit(X, y, epochs=1, batch_size=16)
    assert "step" in capsys.readouterr().err
    with pytest.raises(TypeError, match="progress must be True, False or None"):
        t.fit(X, y, epochs=1, progress="yes")


# -- scaling -----------------------------------------------------------------------------------
def _regression(n=160, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(50.0, 20.0, size=(n, 3))
    y = X @ np.array([2.0, -1.0, 0.5]) * 1e3 + 7e4
    return X, y


def test_a_trainer_with_scaling_takes_raw_data_and_predicts_in_target_units(tmp_path):
    X, y = _regression()
    scaling = Scaling.of(X.mean(axis=0), X.std(axis=0), [y.mean()], [y.std()])
    t = Trainer(
        MLP([3, 16, 1], activation="tanh", loss="squared_error"), optim.Adam(lr=0.02), backend="numpy", scaling=scaling
    )
    t.fit(X, y, epochs=40, batch_size=16, progress=False)
    pred = t.predict(X)[:, 0]
    assert pred.dtype == np.float64
    assert np.sqrt(np.mean((pred - y) ** 2)) < 0.1 * y.std()  # learnt on the standardised scale
    Xs, ys = (X - scaling.x_mean) / scaling.x_scale, (y - scaling.y_mean) / scaling.y_scale
    plain = Trainer(t.model, backend="numpy")
    plain.params = t.params
    np.testing.assert_allclose(plain.predict(Xs)[:, 0] * scaling.y_scale[0] + scaling.y_mean[0], pred, rtol=1e-5)
    np.testing.assert_allclose(t.evaluate(X, y)["loss"], plain.evaluate(Xs, ys)["loss"], rtol=1e-4)
    t.save(tmp_path / "c.safetensors")
    loaded = Trainer.load(tmp_path / "c.safetensors", backend="numpy")
    for a, b in zip(loaded.scaling, scaling):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(loaded.predict(X), t.predict(X))


def test_train_step_standardises_as_fit_does():
    X, y = _regression(32)
    scaling = Scaling.of(X.mean(axis=0), X.std(axis=0), [y.mean()], [y.std()])
    a = Trainer(MLP([3, 8, 1], loss="squared_error"), "sgd", backend="numpy", scaling=scaling)
    b = Trainer(MLP([3, 8, 1], loss="squared_error"), "sgd", backend="numpy")
    loss = a.train_step(X, y)
    assert loss == pytest.approx(b.train_step((X - scaling.x_mean) / scaling.x_scale, (y - y.mean()) / y.std()))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (([0.0, 1.0], [1.0, 0.0]), "x_scale must be finite and > 0"),
        (([0.0, np.nan], [1.0, 1.0]), "x_mean must be finite"),
        (([0.0], [1.0, 1.0]), "each mean must have as many entries as its scale"),
        (([0.0, 1.0], [1.0, 1.0], [0.0]), "give both y_mean and y_scale"),
        ((np.zeros((2, 2)), [1.0, 1.0]), "x_mean must be a non-empty 1-D array"),
    ],
)
def test_bad_scalings_are_named(fields, message):
    with pytest.raises(ValueError, match=message):
        Scaling.of(*fields)


def test_a_scaling_must_fit_the_network():
    t = Trainer(MLP([3, 8, 2], loss="softmax_cross_entropy"), backend="numpy")
    with pytest.raises(ValueError, match="x_mean has 2 entries, the network 3 inputs"):
        t.scaling = Scaling.of([0.0, 0.0], [1.0, 1.0])
    with pytest.raises(ValueError, match=r"\(regression\) only"):
        t.scaling = Scaling.of([0.0] * 3, [1.0] * 3, [0.0, 0.0], [1.0, 1.0])
    with pytest.raises(TypeError, match="scaling must be"):
        t.scaling = (np.zeros(3), np.ones(3))


def test_a_checkpoint_with_a_bad_scaling_is_refused(tmp_path):
    from backprop.training import checkpoint

    t = Trainer(MLP([3, 8, 1], loss="squared_error"), backend="numpy", scaling=Scaling.of([0.0] * 3, [1.0] * 3))
    t.save(tmp_path / "c.safetensors")
    tensors, meta = checkpoint.load(tmp_path / "c.safetensors")
    tensors["scaling.x_scale"] = np.array([1.0, -1.0, 1.0])
    checkpoint.save(tmp_path / "bad.safetensors", tensors, meta)
    with pytest.raises(CheckpointError, match="x_scale must be finite and > 0"):
        Trainer.load(tmp_path / "bad.safetensors")


@pytest.mark.parametrize("task", ["regression", "classification"])
def test_the_cli_checkpoint_predicts_raw_data_as_the_cli_did(capsys, tmp_path, task):
    """Trainer.load(checkpoint).predict on the raw test rows reproduces the metrics the CLI printed."""
    rng = np.random.default_rng(3)
    X = rng.normal(100.0, 30.0, size=(240, 3))
    if task == "regression":
        y = X @ np.array([1.0, -2.0, 0.5]) + 1e4
    else:
        y = (X[:, 0] > 100.0).astype(int) + (X[:, 1] > 100.0).astype(int)
    np.savez(tmp_path / "data.npz", X=X, y=y)
    out = tmp_path / "run"
    args = ["train", "--no-progress", "--backend", "numpy", "--data", str(tmp_path / "data.npz"), "--task", task]
    assert main([*args, "--epochs", "5", "--out", str(out)]) == 0
    capsys.readouterr()
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    run = json.loads((out / "scaler.json").read_text())
    stratify = y if task == "classification" else None
    _, X_test, _, y_test = train_test_split(
        X, y, test_size=run["test_size"], random_state=run["seed"], stratify=stratify
    )
    loaded = Trainer.load(out / "checkpoint.safetensors", backend="numpy")
    if task == "regression":
        pred = loaded.predict(X_test)[:, 0]
        rmse = float(np.sqrt(np.mean((y_test - pred) ** 2)))
        assert rmse == pytest.approx(metrics["test_rmse"], rel=1e-6)
    else:
        accuracy = float(np.mean(loaded.predict_classes(X_test) == y_test))
        assert accuracy == pytest.approx(metrics["test_accuracy"])
