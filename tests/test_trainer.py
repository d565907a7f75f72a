"""The Trainer: training, determinism, divergence, callbacks, interrupts and checkpoints."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

import backprop as bp
from backprop import optim
from backprop.callbacks import Callback, EarlyStopping, ModelCheckpoint
from backprop.training.checkpoint import CheckpointError
from backprop.training.trainer import Trainer, TrainingDivergedError


def blobs(n=240, seed=0):
    """Three separable Gaussian blobs in 4-D (float64 X, int labels)."""
    rng = np.random.default_rng(seed)
    centers = np.array([[2, 0, 0, 0], [0, 2, 0, 0], [0, 0, 2, 0]], dtype=float)
    y = rng.integers(0, 3, n)
    return centers[y] + 0.5 * rng.normal(size=(n, 4)), y


def classifier():
    return bp.MLP([4, 16, 3], activation="tanh", loss="softmax_cross_entropy")


def host(params):
    return [np.asarray(a) for layer in params for a in layer]


def assert_same_params(a, b):
    for x, y in zip(host(a), host(b), strict=True):
        np.testing.assert_array_equal(x, y)


def test_first_argmax_is_argmax_with_ties_and_nan(backend):
    """The accuracy count's argmax (two plain reductions) picks the first of tied largest entries,
    as argmax does, and no class for a row holding NaN."""
    from backprop.core.losses import first_argmax

    rng = np.random.default_rng(3)
    A = rng.integers(0, 3, size=(200, 5)).astype(np.float32)  # many ties
    got = backend.to_numpy(first_argmax(backend.xp, backend.asarray(A)))
    np.testing.assert_array_equal(got, np.argmax(A, axis=1))
    A[7, 2] = np.nan
    assert backend.to_numpy(first_argmax(backend.xp, backend.asarray(A)))[7] == 5
    output, Y = np.eye(5, dtype=np.float32)[[0, 1, 2]], np.eye(5, dtype=np.float32)[[0, 1, 3]]
    output[1] = 0.2  # a five-way tie: the first class is predicted, and the target is class 1
    link = classifier().loss_layer
    assert float(link.count_correct(backend.xp, backend.asarray(output), backend.asarray(Y))) == 1.0


def test_fit_learns_on_every_backend(backend):
    X, y = blobs()
    trainer = Trainer(classifier(), optim.Adam(0.01), backend=backend, seed=0)
    history = trainer.fit(X, y, epochs=15, batch_size=32, validation_split=0.25, progress=False)
    assert set(history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 15 for v in history.values())
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert history["val_accuracy"][-1] >= 0.95
    assert trainer.evaluate(X, y)["accuracy"] >= 0.95
    proba = trainer.predict(X)
    assert isinstance(proba, np.ndarray) and proba.shape == (240, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    assert trainer.epoch == 15 and trainer.steps == 15 * 6  # 180 training rows / 32 -> 6 batches


def test_same_seed_same_backend_is_bitwise_identical(backend):
    X, y = blobs()
    runs = []
    for _ in range(2):
        trainer = Trainer(classifier(), optim.SGD(0.1, momentum=0.9), backend=backend, seed=3)
        trainer.fit(X, y, epochs=3, batch_size=16, progress=False)
        runs.append([backend.to_numpy(a) for layer in trainer.params for a in layer])
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


def test_backends_agree_on_a_training_run(backend):
    X, y = blobs()
    reference = Trainer(classifier(), optim.Adam(0.01), backend="numpy", seed=1)
    other = Trainer(classifier(), optim.Adam(0.01), backend=backend, seed=1)
    for trainer in (reference, other):
        trainer.fit(X, y, epochs=2, batch_size=32, progress=False)
    for a, b in zip(host(reference.params), [backend.to_numpy(p) for layer in other.params for p in layer]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_train_step_changes_params_and_returns_loss(backend):
    X, y = blobs(32)
    trainer = Trainer(classifier(), optim.SGD(0.5), backend=backend)
    before = [backend.to_numpy(a) for layer in trainer.params for a in layer]
    loss = trainer.train_step(X, y)
    after = [backend.to_numpy(a) for layer in trainer.params for a in layer]
    assert isinstance(loss, float) and np.isfinite(loss)
    assert all(not np.array_equal(a, b) for a, b in zip(before, after))
    assert trainer.train_step(X, y) < loss


def test_device_arrays_are_accepted(backend):
    X, y = blobs(64)
    trainer = Trainer(classifier(), optim.Adam(0.01), backend=backend)
    Xd, yd = backend.asarray(X), backend.asarray(y)
    history = trainer.fit(Xd, yd, epochs=2, batch_size=16, validation_data=(Xd, yd), progress=False)
    assert len(history["val_loss"]) == 2
    assert trainer.predict(Xd).shape == (64, 3)


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_divergence_stops_with_a_clear_error_and_finite_params(backend):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(64, 3)) * 10, rng.normal(size=(64, 1)) * 1e3
    model = bp.MLP([3, 8, 1], activation="relu")
    trainer = Trainer(model, optim.SGD(1e3), backend=backend)
    with pytest.raises(TrainingDivergedError, match=r"diverged at epoch \d+, batch \d+"):
        trainer.fit(X, y, epochs=50, batch_size=8, progress=False)
    assert all(np.isfinite(a).all() for a in (backend.to_numpy(p) for layer in trainer.params for p in layer))


def test_callbacks_see_batches_and_can_stop():
    class StopAfter(Callback):
        def __init__(self):
            self.batches = []

        def on_batch_end(self, trainer, epoch, batch, loss):
            self.batches.append((epoch, batch, loss))
            if epoch == 1 and batch == 2:
                trainer.stop_training = True

    X, y = blobs()
    stop = StopAfter()
    trainer = Trainer(classifier(), backend="numpy")
    history = trainer.fit(X, y, epochs=10, batch_size=60, callbacks=[stop], progress=False)
    assert len(history["loss"]) == 2 and trainer.epoch == 2
    assert [b[:2] for b in stop.batches] == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1), (1, 2), (1, 3)]
    assert all(np.isfinite(b[2]) for b in stop.batches)


def test_early_stopping_restores_the_best_parameters():
    X, y = blobs()
    stopper = EarlyStopping(monitor="val_loss", patience=2, restore_best=True)
    trainer = Trainer(classifier(), optim.SGD(2.0), backend="numpy", seed=0)
    history = trainer.fit(X, y, epochs=200, batch_size=8, validation_split=0.3, callbacks=[stopper], progress=False)
    assert len(history["val_loss"]) < 200
    best = int(np.argmin(history["val_loss"]))
    assert stopper.best_epoch == best
    Xv, yv = X[-72:], y[-72:]
    np.testing.assert_allclose(trainer.evaluate(Xv, yv)["loss"], history["val_loss"][best], rtol=1e-5)


def test_progress_bar_shows_loss(capsys):
    X, y = blobs(64)
    Trainer(classifier(), backend="numpy").fit(X, y, epochs=2, batch_size=16, progress=True)
    err = capsys.readouterr().err
    assert "loss=" in err and "epoch=" in err
    Trainer(classifier(), backend="numpy").fit(X, y, epochs=2, batch_size=16, progress=False)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"epochs": -1}, "epochs must be"),
        ({"batch_size": 0}, "batch_size must be"),
        ({"validation_split": 1.5}, "validation_split must be"),
        ({"validation_data": (np.zeros((2, 4)),)}, "validation_data must be a pair"),
        ({"validation_data": (np.zeros((2, 5)), np.zeros(2, dtype=int))}, "5 features"),
    ],
)
def test_bad_fit_arguments(kwargs, message):
    X, y = blobs(32)
    with pytest.raises(ValueError, match=message):
        Trainer(classifier(), backend="numpy").fit(X, y, progress=False, **kwargs)


def test_bad_data_is_refused_before_training():
    X, y = blobs(32)
    trainer = Trainer(classifier(), backend="numpy")
    with pytest.raises(TypeError, match="floating-point"):
        trainer.fit(X.astype(int), y, progress=False)
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        trainer.fit(bad, y, progress=False)
    with pytest.raises(ValueError, match="out of range"):
        trainer.fit(X, y + 5, progress=False)
    assert trainer.steps == 0
    with pytest.raises(TypeError, match="backprop.MLP"):
        Trainer("not a model")


# -- checkpoints ---------------------------------------------------------------------------


def test_resume_from_checkpoint_is_bitwise_identical(tmp_path):
    X, y = blobs()
    straight = Trainer(classifier(), optim.Adam(0.01), backend="numpy", seed=5)
    straight.fit(X, y, epochs=4, batch_size=32, progress=False)

    first = Trainer(classifier(), optim.Adam(0.01), backend="numpy", seed=5)
    first.fit(X, y, epochs=2, batch_size=32, progress=False)
    first.save(tmp_path / "ckpt.safetensors")
    resumed = Trainer.load(tmp_path / "ckpt.safetensors", backend="numpy")
    assert resumed.epoch == 2 and resumed.steps == first.steps
    assert type(resumed.opt_state) is optim.AdamState  # the named state, rebuilt from the file
    assert float(resumed.opt_state.count) == first.steps
    resumed.fit(X, y, epochs=2, batch_size=32, progress=False)
    assert_same_params(straight.params, resumed.params)
    assert resumed.history == straight.history


def test_checkpoint_loads_on_other_backends_with_same_predictions(tmp_path, backend_name):
    X, y = blobs(64)
    trainer = Trainer(classifier(), optim.SGD(0.1, momentum=0.9), backend="numpy", seed=2)
    trainer.fit(X, y, epochs=2, batch_size=16, progress=False)
    trainer.save(tmp_path / "m.safetensors")
    other = Trainer.load(tmp_path / "m.safetensors", backend=backend_name)
    assert other.backend.name == backend_name and type(other.opt_state) is optim.SGDState
    np.testing.assert_allclose(other.predict(X), trainer.predict(X), rtol=1e-5, atol=1e-6)
    other.fit(X, y, epochs=1, batch_size=16, progress=False)  # the optimizer state loaded too


def test_checkpoint_file_is_safetensors_with_metadata(tmp_path):
    from safetensors import safe_open

    trainer = Trainer(classifier(), optim.Adam(0.01), backend="numpy")
    trainer.save(tmp_path / "m.safetensors")
    with safe_open(str(tmp_path / "m.safetensors"), framework="numpy") as f:
        keys = set(f.keys())
        assert '"sha256"' in f.metadata()["backprop"]
    assert {"params.0.W", "params.0.b", "params.1.W", "params.1.b"} <= keys
    assert any(k.startswith("opt_state.") for k in keys)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")]


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "garbage"])
def test_damaged_checkpoints_are_refused(tmp_path, damage):
    path = tmp_path / "m.safetensors"
    Trainer(classifier(), backend="numpy").save(path)
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[-5] ^= 0x01
    elif damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "empty":
        data = bytearray()
    else:
        data = bytearray(b"not a checkpoint at all" * 10)
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum|truncated or corrupted"):
        Trainer.load(path)


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Trainer.load(tmp_path / "nope.safetensors")


def test_failed_save_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    old = Trainer(classifier(), backend="numpy", seed=0)
    old.save(path)
    before = path.read_bytes()
    new = Trainer(classifier(), backend="numpy", seed=9)

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        new.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")]
    assert_same_params(Trainer.load(path).params, old.params)


def test_interrupt_keeps_last_step_and_checkpoint_resumes(tmp_path):
    class Interrupt(Callback):
        def on_batch_end(self, trainer, epoch, batch, loss):
            if epoch == 1 and batch == 1:
                raise KeyboardInterrupt

    X, y = blobs()
    path = tmp_path / "ckpt.safetensors"
    trainer = Trainer(classifier(), optim.Adam(0.01), backend="numpy", seed=0)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(X, y, epochs=5, batch_size=60, callbacks=[ModelCheckpoint(path), Interrupt()], progress=False)
    assert trainer.steps == 4 + 2 and len(trainer.history["loss"]) == 1
    resumed = Trainer.load(path)
    assert resumed.steps == 6
    assert_same_params(resumed.params, trainer.params)
    resumed.fit(X, y, epochs=1, batch_size=60, progress=False)
    assert resumed.epoch == 2


@pytest.mark.parametrize("unroll", ["", "1", "4", "32"], ids=["platform-default", "unroll-1", "unroll-4", "unroll-32"])
def test_compiled_epochs_match_step_by_step_on_jax(unroll, monkeypatch):
    """Any unroll, dividing the 6 full batches or not (4), or above them (32), runs the same steps."""
    pytest.importorskip("jax")
    monkeypatch.setenv("BACKPROP_EPOCH_UNROLL", unroll)
    X, y = blobs(250)
    runs = {}
    for compile_epochs in (True, False):
        trainer = Trainer(classifier(), optim.Adam(0.01), backend="jax", seed=0)
        trainer.compile_epochs = compile_epochs
        history = trainer.fit(X, y, epochs=3, batch_size=32, validation_split=0.2, progress=False)
        runs[compile_epochs] = trainer, history
    (scanned, h1), (stepped, h2) = runs[True], runs[False]
    assert scanned.steps == stepped.steps == 3 * 7  # 200 rows: 6 full batches of 32 and one of 8 per epoch
    for a, b in zip(host(scanned.params), host(stepped.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for key in h2:
        np.testing.assert_allclose(h1[key], h2[key], rtol=1e-5)


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")
def test_a_compiled_epoch_refuses_the_first_bad_step_as_step_by_step_does():
    """The optimistic epoch (no safeguards) is rerun with them when a loss or the final
    parameters are not finite: the same refused batch, steps, parameters and optimizer state as
    step-by-step training, whether the loss (a huge target in batch 5) or only the update (one
    step whose η·g overflows while its loss is finite) went wrong."""
    pytest.importorskip("jax")
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 3)), rng.normal(size=(40, 1))
    y_bad = y.copy()
    y_bad[23] = 1e30  # its squared error overflows float32
    cases = [
        (X, y_bad, lambda: optim.Adam(0.01), "tanh", 4, 5),
        (X[:4], y[:4] * 1e3, lambda: optim.SGD(1e37), "identity", 4, 0),
    ]
    for Xc, yc, make_opt, activation, batch, bad in cases:
        trained = {}
        for compile_epochs in (True, False):
            trainer = Trainer(bp.MLP([3, 8, 1], activation=activation), make_opt(), backend="jax", seed=0)
            trainer.compile_epochs = compile_epochs
            with pytest.raises(TrainingDivergedError, match=rf"epoch 0, batch {bad}\b"):
                trainer.fit(Xc, yc, epochs=1, batch_size=batch, shuffle=False, progress=False)
            trained[compile_epochs] = trainer
        assert trained[True].steps == trained[False].steps == bad
        for a, b in zip(host(trained[True].params), host(trained[False].params), strict=True):
            assert np.isfinite(a).all()
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        for a, b in zip(
            optim.tree_leaves(trained[True].opt_state), optim.tree_leaves(trained[False].opt_state), strict=True
        ):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_epoch_unroll_by_platform_and_environment(monkeypatch):
    from backprop.backends.jax import epoch_unroll

    monkeypatch.delenv("BACKPROP_EPOCH_UNROLL", raising=False)
    assert (epoch_unroll("cpu"), epoch_unroll("gpu"), epoch_unroll("tpu")) == (1, 32, 32)
    monkeypatch.setenv("BACKPROP_EPOCH_UNROLL", " 8 ")
    assert epoch_unroll("cpu") == epoch_unroll("gpu") == 8
    for bad in ("0", "-2", "four", "2.5"):
        monkeypatch.setenv("BACKPROP_EPOCH_UNROLL", bad)
        with pytest.raises(ValueError, match=f"BACKPROP_EPOCH_UNROLL must be a whole number >= 1, got '{bad}'"):
            epoch_unroll("cpu")


def test_per_batch_callbacks_still_see_every_batch_on_jax():
    pytest.importorskip("jax")

    class Count(Callback):
        def __init__(self):
            self.batches = 0

        def on_batch_end(self, trainer, epoch, batch, loss):
            self.batches += 1

    X, y = blobs(96)
    counter = Count()
    Trainer(classifier(), backend="jax").fit(X, y, epochs=2, batch_size=32, callbacks=[counter], progress=False)
    assert counter.batches == 6


def test_step_caches_are_bounded_and_keyed_by_type(backend_name):
    """A learning-rate sweep builds one step per rate, but the cache keeps at most its bound; an
    optimizer subclass with the same config never shares its parent's step."""
    from backprop.training import trainer as trainer_module

    class Scaled(optim.SGD):
        def _step(self, xp, params, grads, lr, t, buffers):
            return super()._step(xp, params, grads, 2 * lr, t, buffers)

    model = classifier()
    backend = bp.get_backend(backend_name)
    bound = trainer_module._cached_step.cache_info().maxsize
    for i in range(bound + 6):
        trainer_module.compiled_step(model, optim.SGD(0.001 * (i + 1)), backend)
    assert trainer_module._cached_step.cache_info().currsize <= bound
    plain = trainer_module.compiled_step(model, optim.SGD(0.1), backend)
    assert trainer_module.compiled_step(model, Scaled(0.1), backend) is not plain
    assert trainer_module.compiled_step(bp.MLP(**model.config), optim.SGD(0.1), backend) is plain  # same config


def test_params_handed_out_never_change_behind_the_users_back(backend_name):
    """A reference to trainer.params, kept by user code or by a callback ("best so far"), keeps its
    values through later steps and fits, on every backend (the fused step writes its buffers in
    place; JAX donates its arrays)."""
    X, y = blobs(64)
    trainer = Trainer(classifier(), optim.Adam(0.01), backend=backend_name, seed=1)
    trainer.fit(X, y, epochs=1, batch_size=16, progress=False)
    kept = trainer.params
    values = [np.array(bp.backends.to_host(a)) for layer in kept for a in layer]

    class KeepFirst(Callback):
        def on_epoch_end(self, trainer, epoch, logs):
            if epoch == 1:
                self.params = trainer.params
                self.values = [np.array(bp.backends.to_host(a)) for layer in self.params for a in layer]

    keep = KeepFirst()
    trainer.fit(X, y, epochs=3, batch_size=16, callbacks=[keep], progress=False)
    trainer.train_step(X[:16], y[:16])
    for held, want in ((kept, values), (keep.params, keep.values)):
        for a, v in zip([a for layer in held for a in layer], want, strict=True):
            np.testing.assert_array_equal(np.array(bp.backends.to_host(a)), v)
    assert not np.array_equal(np.array(bp.backends.to_host(trainer.params[0][0])), values[0])  # it did train
    mine = trainer.snapshot()
    trainer.params = mine  # handed in: continued from, never written
    mine_values = np.array(bp.backends.to_host(mine[0][0]))
    trainer.fit(X, y, epochs=1, batch_size=16, progress=False)
    np.testing.assert_array_equal(np.array(bp.backends.to_host(mine[0][0])), mine_values)


# -- argument and input checks ---------------------------------------------------------------


def float32_trainer(model=None, **kwargs):
    """A trainer on NumPy in float32 whatever BACKPROP_DTYPE says (the overflow checks need float32)."""
    return Trainer(model or classifier(), backend=bp.get_backend("numpy", dtype="float32"), **kwargs)


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_predict_and_evaluate_refuse_a_forward_pass_that_overflows(backend):
    """Finite parameters and finite X whose forward pass overflows the dtype: a clear error, as
    MLP.predict gives, never NaN probabilities or a NaN loss."""
    model = bp.MLP([4, 16, 3], activation="relu", loss="softmax_cross_entropy")
    trainer = Trainer(model, backend=backend)
    trainer.params = tuple((backend.xp.full(W.shape, 1e30, dtype=W.dtype), b) for W, b in trainer.params)
    X, y = blobs(16)
    X = np.abs(X) * 1e10
    with pytest.raises(ValueError, match=r"the network's output .*too large for the dtype.*NaN or infinity"):
        trainer.predict(X)
    with pytest.raises(ValueError, match=r"the loss .*too large for the dtype.*NaN or infinity"):
        trainer.evaluate(X, y)
    with pytest.raises(ValueError, match="the network's output"):
        model.predict(trainer.params, X)  # the same wording as the network's own check


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")
def test_values_too_large_for_float32_name_the_dtype():
    X, y = blobs(16)
    X[:, 0] = 1e39  # finite in float64, inf in float32
    trainer = float32_trainer()
    for call in (lambda: trainer.predict(X), lambda: trainer.evaluate(X, y), lambda: trainer.fit(X, y, progress=False)):
        with pytest.raises(ValueError, match=r"X has values too large for float32.*BACKPROP_DTYPE=float64"):
            call()
    regression = float32_trainer(bp.MLP([4, 3, 1]))
    with pytest.raises(ValueError, match=r"y has values too large for float32.*BACKPROP_DTYPE=float64"):
        regression.fit(blobs(16)[0], np.full(16, -1e39), progress=False)


@pytest.mark.parametrize("batch_size", [-5, 0, 2.5, True, "4", None])
def test_predict_and_evaluate_refuse_a_bad_batch_size(batch_size):
    X, y = blobs(16)
    trainer = Trainer(classifier(), backend="numpy")
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        trainer.predict(X, batch_size=batch_size)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        trainer.evaluate(X, y, batch_size=batch_size)


def test_numpy_integers_are_accepted_where_integers_are():
    X, y = blobs(48)
    trainer = Trainer(classifier(), backend="numpy", seed=np.int64(3))
    history = trainer.fit(X, y, epochs=np.int64(2), batch_size=np.int32(16), progress=False)
    assert len(history["loss"]) == 2 and trainer.steps == 6
    assert trainer.predict(X, batch_size=np.int64(5)).shape == (48, 3)
    assert set(trainer.evaluate(X, y, batch_size=np.uint8(7))) == {"loss", "accuracy"}
    np.testing.assert_allclose(trainer.predict(X, batch_size=np.int64(5)), trainer.predict(X), rtol=1e-6)
    assert type(trainer.seed) is int  # written to the checkpoint's JSON metadata
    stopper = EarlyStopping(patience=np.int64(1))
    Trainer(classifier(), backend="numpy").fit(X, y, epochs=1, callbacks=[stopper], progress=False)
    assert ModelCheckpoint("m.safetensors", every=np.int64(2)).every == 2


def test_an_optimizer_can_be_named():
    trainer = Trainer(classifier(), optimizer="SGD", backend="numpy")
    assert isinstance(trainer.optimizer, optim.SGD)
    assert isinstance(Trainer(classifier(), optimizer="adam", backend="numpy").optimizer, optim.Adam)
    X, y = blobs(32)
    trainer.fit(X, y, epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"unknown optimizer 'adamm'; valid optimizers: sgd, adam"):
        Trainer(classifier(), optimizer="adamm", backend="numpy")
    with pytest.raises(TypeError, match=r"optimizer must be a backprop.optim optimizer or the name of one"):
        Trainer(classifier(), optimizer=optim.Adam, backend="numpy")  # the class, not an instance


@pytest.mark.parametrize("seed", ["abc", -1, 1.5, True, [1, 2]])
def test_a_bad_seed_is_refused(seed):
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        Trainer(classifier(), backend="numpy", seed=seed)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"batch_size": True}, "batch_size must be an integer >= 1, got True"),
        ({"batch_size": 2.5}, "batch_size must be an integer >= 1"),
        ({"epochs": 1.0}, "epochs must be an integer >= 0"),
        ({"epochs": False}, "epochs must be an integer >= 0"),
        ({"validation_split": "0.2"}, "validation_split must be a number in"),
        ({"callbacks": [object()]}, "callbacks must be backprop.callbacks.Callback instances, got object"),
        ({"callbacks": [EarlyStopping, ModelCheckpoint]}, "Callback instances, got type"),
        ({"callbacks": 3}, "callbacks must be a list of backprop.callbacks.Callback"),
    ],
)
def test_bad_fit_argument_types(kwargs, message):
    X, y = blobs(32)
    trainer = Trainer(classifier(), backend="numpy")
    with pytest.raises((TypeError, ValueError), match=message):
        trainer.fit(X, y, progress=False, **{"epochs": 1, **kwargs})
    assert trainer.steps == 0


def test_a_single_callback_needs_no_list():
    X, y = blobs(32)
    stopper = EarlyStopping(monitor="loss", patience=0)
    Trainer(classifier(), backend="numpy").fit(X, y, epochs=2, callbacks=stopper, progress=False)
    assert stopper.best_epoch is not None


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: EarlyStopping(min_delta=float("nan")), "min_delta must be a finite number >= 0"),
        (lambda: EarlyStopping(min_delta=float("inf")), "min_delta must be a finite number >= 0"),
        (lambda: EarlyStopping(min_delta=-0.1), "min_delta must be a finite number >= 0"),
        (lambda: EarlyStopping(min_delta="0.1"), "min_delta must be a finite number >= 0"),
        (lambda: EarlyStopping(patience=1.5), "patience must be an integer >= 0"),
        (lambda: EarlyStopping(patience=-1), "patience must be an integer >= 0"),
        (
            lambda: EarlyStopping(monitor="vall_loss"),
            "unknown monitor 'vall_loss'; Trainer.fit logs loss, accuracy, val_loss, val_accuracy",
        ),
        (lambda: EarlyStopping(monitor=None), "unknown monitor None"),
        (lambda: ModelCheckpoint("m.safetensors", every=1.5), "every must be an integer >= 1"),
        (lambda: ModelCheckpoint("m.safetensors", every=0), "every must be an integer >= 1"),
        (lambda: ModelCheckpoint("m.safetensors", every=True), "every must be an integer >= 1"),
        (lambda: ModelCheckpoint(None), "path must be a str or os.PathLike"),
    ],
)
def test_bad_callback_arguments(make, message):
    with pytest.raises((TypeError, ValueError), match=re.escape(message)):
        make()


def test_a_monitor_this_fit_does_not_log_is_refused_at_fit_start():
    """accuracy is logged for classification losses only: monitoring it on a regression is refused
    before the first step, naming what fit logs there."""
    X, _ = blobs(32)
    trainer = Trainer(bp.MLP([4, 3, 1]), backend="numpy")
    with pytest.raises(ValueError, match=r"monitor 'val_accuracy' is not logged for the squared_error loss.*loss"):
        trainer.fit(X, X[:, 0], epochs=1, callbacks=[EarlyStopping(monitor="val_accuracy")], progress=False)
    assert trainer.steps == 0


def test_sparse_and_nullable_pandas_inputs_train_and_predict():
    """scipy.sparse matrices and pandas objects of nullable dtypes (Float64, Int64) are densified,
    as NumPy arrays of their values; missing values (pd.NA) are a clear error."""
    pd = pytest.importorskip("pandas")
    scipy_sparse = pytest.importorskip("scipy.sparse")
    X, y = blobs(48)
    dense = Trainer(classifier(), backend="numpy", seed=0)
    dense.fit(X, y, epochs=2, batch_size=16, progress=False, validation_data=(X, y))
    for X_other, y_other in (
        (scipy_sparse.csr_matrix(X), y),
        (pd.DataFrame(X).astype("Float64"), pd.Series(y, dtype="Int64")),
    ):
        other = Trainer(classifier(), backend="numpy", seed=0)
        other.fit(X_other, y_other, epochs=2, batch_size=16, progress=False, validation_data=(X_other, y_other))
        assert_same_params(other.params, dense.params)
        np.testing.assert_array_equal(other.predict(X_other), dense.predict(X))
        assert other.evaluate(X_other, y_other) == dense.evaluate(X, y)
    missing = pd.DataFrame(X).astype("Float64")
    missing.iloc[3, 1] = pd.NA
    with pytest.raises(ValueError, match=r"X has missing values \(pandas NA\)"):
        dense.fit(missing, y, progress=False)
    with pytest.raises(ValueError, match=r"y has missing values \(pandas NA\)"):
        dense.fit(X, pd.Series(y, dtype="Int64").where(y != 1, pd.NA), progress=False)
