"""The torch backend: device names, tensors in and out, seeded weights equal to NumPy's, the fused
step's namespace (`backprop.backends.torch.InPlace`) against NumPy, checkpoints across backends,
the estimators, the bench contenders, `backprop info`, and the torch.autograd gradient oracle.

The whole suite also runs on torch (``BACKPROP_BACKEND=torch``, CI's torch phase); these tests hold
what only torch has.  They skip, with the reason, where torch is not installed.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason='PyTorch is not installed (pip install ".[torch]")')

import backprop as bp  # noqa: E402
from backprop import MLP, Trainer, optim  # noqa: E402
from backprop.backends import _load, get_backend, probe, to_host  # noqa: E402
from backprop.backends import torch as torch_backend  # noqa: E402
from backprop.core.activations import ACTIVATIONS  # noqa: E402
from backprop.core.losses import LOSSES  # noqa: E402
from backprop.gradcheck import check_gradients  # noqa: E402
from backprop.training.fused import FusedStep  # noqa: E402


@pytest.fixture
def cpu():
    return get_backend("torch", device="cpu", dtype="float32")


@pytest.fixture
def cpu64():
    return get_backend("torch", device="cpu", dtype="float64")


def _targets(rng, loss: str, n: int, out: int):
    if loss == "softmax_cross_entropy":
        return rng.integers(0, out, size=n)
    if loss == "binary_cross_entropy":
        return rng.uniform(size=(n, out))
    return rng.normal(size=(n, out))


# -- the backend record and device names --------------------------------------------------------
def test_backend_record(cpu):
    assert (cpu.name, cpu.device_name, cpu.dtype_name) == ("torch", "cpu", "float32")
    assert cpu.dtype is torch.float32 and cpu.device == torch.device("cpu") and cpu.array_type is torch.Tensor
    assert get_backend("torch", device="CPU", dtype="float64").dtype is torch.float64
    assert isinstance(cpu.inplace, torch_backend.InPlace)


@pytest.mark.parametrize("name", ["cpu:1", "tpu", "gpu:x", "cuda:-1", "mps:1", "banana"])
def test_unknown_device_lists_valid_ones(name):
    with pytest.raises(ValueError, match=r"unknown device .* for backend 'torch'; valid devices: 'cpu', 'cuda'"):
        get_backend("torch", device=name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is visible here")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "gpu", "gpu:1"])
def test_cuda_without_gpu_says_so(name):
    with pytest.raises(ValueError, match="this PyTorch sees no CUDA GPU"):
        get_backend("torch", device=name)


def test_missing_torch_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    _load.cache_clear()
    try:
        found = probe("torch")
        assert not found.available and 'pip install "backprop[torch]"' in found.reason
        with pytest.raises(ImportError, match=r'backend \'torch\' is unavailable: .*pip install "backprop\[torch\]"'):
            get_backend("torch")
    finally:
        _load.cache_clear()


def test_devices_and_details():
    assert torch_backend.devices()[0] == "cpu"
    details = torch_backend.details()
    assert details["version"] == torch.__version__ and details["threads"] == torch.get_num_threads()


# -- tensors in, tensors out --------------------------------------------------------------------
def test_asarray_and_to_host(cpu):
    host = np.arange(6, dtype=np.float64).reshape(2, 3)
    t = cpu.asarray(host)
    assert isinstance(t, torch.Tensor) and t.dtype is torch.float32
    assert cpu.asarray(np.arange(3)).dtype is torch.int64  # integers keep their dtype
    assert cpu.asarray(host[:, ::-1]).tolist() == host[:, ::-1].tolist()  # negative strides are copied
    readonly = host.copy()
    readonly.flags.writeable = False
    assert cpu.asarray(readonly).tolist() == host.tolist()
    assert cpu.asarray(host, dtype="float64").dtype is torch.float64
    np.testing.assert_array_equal(to_host(t), host.astype(np.float32))
    np.testing.assert_array_equal(cpu.to_numpy(t), host.astype(np.float32))
    grad = torch.ones(2, requires_grad=True) * 2  # a tensor inside autograd comes out as its values
    np.testing.assert_array_equal(to_host(grad), [2.0, 2.0])


def test_seeded_weights_equal_numpys(cpu):
    model = MLP([5, 7, 3], activation="tanh", loss="softmax_cross_entropy")
    ours, theirs = model.init(seed=3, backend=cpu), model.init(seed=3, backend="numpy")
    for (W, b), (W_, b_) in zip(ours, theirs):
        assert isinstance(W, torch.Tensor)
        np.testing.assert_array_equal(W.numpy(), W_)
        np.testing.assert_array_equal(b.numpy(), b_)


def test_loss_and_grad_takes_and_gives_tensors(cpu):
    model = MLP([4, 6, 3], activation="relu", loss="softmax_cross_entropy")
    params = model.init(seed=0, backend=cpu)
    X = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 1, 0])
    loss, grads = model.loss_and_grad(params, X, y)
    assert isinstance(loss, torch.Tensor) and all(isinstance(g, torch.Tensor) for layer in grads for g in layer)
    host_params = tuple((W.numpy(), b.numpy()) for W, b in params)
    loss_np, grads_np = model.loss_and_grad(host_params, X.numpy(), y.numpy())
    np.testing.assert_allclose(float(loss), float(loss_np), rtol=1e-6)
    for (dW, db), (dW_, db_) in zip(grads, grads_np):
        np.testing.assert_allclose(dW.numpy(), dW_, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(db.numpy(), db_, rtol=1e-5, atol=1e-7)


# -- the fused step's namespace -----------------------------------------------------------------
def test_inplace_namespace_matches_numpy(cpu):
    lib, rng = cpu.inplace, np.random.default_rng(0)
    A, B, v, w = rng.normal(size=(4, 3)), rng.normal(size=(3, 5)), rng.normal(size=4), rng.normal(size=3)
    t = lambda a: torch.tensor(a)  # noqa: E731 (float64 tensors)
    for a, b in ((A, B), (A, w), (v, A), (w, w)):
        out = lib.empty(np.dot(a, b).shape, dtype="float64")
        assert lib.dot(t(a), t(b), out=out) is out
        np.testing.assert_allclose(out.numpy(), np.dot(a, b), rtol=1e-12)
    np.testing.assert_allclose(float(lib.vdot(t(A), t(A))), np.vdot(A, A), rtol=1e-12)
    # Hᵀ δ with a narrow output from many rows: computed as (δᵀ H)ᵀ on the CPU, the same values into ``out``
    for rows, width in ((lib.NARROW_ROWS, 10), (lib.NARROW_ROWS - 1, 10), (lib.NARROW_ROWS, 16), (lib.NARROW_ROWS, 1)):
        H, D = rng.normal(size=(rows, 7)), rng.normal(size=(rows, width))
        out = lib.empty((7, width), dtype="float64")
        assert lib.dot(t(H).T, t(D), out=out) is out
        np.testing.assert_allclose(out.numpy(), H.T @ D, rtol=1e-12)
    out = lib.empty(A.shape, dtype="float64")
    lib.subtract(1.0, t(A), out=out)  # a number first: torch.sub takes one only second
    np.testing.assert_allclose(out.numpy(), 1.0 - A)
    lib.divide(2.0, t(A), out=out)
    np.testing.assert_allclose(out.numpy(), 2.0 / A)
    lib.greater(t(A), 0.0, out=out)  # a comparison into a float buffer: 1.0 / 0.0
    np.testing.assert_array_equal(out.numpy(), (A > 0).astype(np.float64))
    assert float(lib.maximum(torch.tensor(0.5, dtype=torch.float64), 2.0)) == 2.0
    lib.copyto(out, t(A))
    np.testing.assert_array_equal(out.numpy(), A)
    np.testing.assert_array_equal(lib.max(t(A), axis=1, keepdims=True).numpy(), A.max(axis=1, keepdims=True))
    index = lib.asarray(np.array([2, 0]))
    taken = lib.empty((2, 3), dtype="float64")
    lib.take(t(A), index, axis=0, out=taken)
    np.testing.assert_array_equal(taken.numpy(), A[[2, 0]])
    classes = lib.empty(4, dtype=np.intp)
    lib.argmax(t(A), axis=1, out=classes)
    np.testing.assert_array_equal(classes.numpy(), A.argmax(axis=1))
    # from MAX_FROM entries on through torch.max: the first largest entry of each row still, ties included
    for rows in (lib.MAX_FROM // 10 - 1, lib.MAX_FROM // 10 + 1):
        C = rng.integers(0, 3, size=(rows, 10)).astype(np.float64)  # many ties
        classes = lib.empty(rows, dtype=np.intp)
        assert lib.argmax(t(C), axis=1, out=classes) is classes
        np.testing.assert_array_equal(classes.numpy(), C.argmax(axis=1))
    assert int(lib.count_nonzero(t(A) > 0)) == np.count_nonzero(A > 0)
    assert lib.empty(3, dtype=bool).dtype is torch.bool
    assert lib.asarray(np.float32(2.5), dtype=lib.float32).item() == 2.5
    assert bp.backends.one_call_logistic(lib) == (torch.sigmoid, float("inf"))


@pytest.mark.parametrize("activation", ["sigmoid", "relu", "tanh", "gelu"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam", "rmsprop"])
def test_fused_step_equals_numpys(activation, optimizer):
    """The same training on torch (the fused step, `InPlace`) and NumPy, float64: equal to rounding."""
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(40, 6)), rng.integers(0, 3, size=40)
    params = {}
    for name in ("torch", "numpy"):
        model = MLP([6, 9, 3], activation=activation, loss="softmax_cross_entropy", alpha=1e-3)
        opt = {"sgd": optim.SGD(0.1, momentum=0.9), "adam": optim.Adam(0.01), "rmsprop": optim.RMSprop(0.01)}
        trainer = Trainer(model, opt[optimizer], backend=get_backend(name, dtype="float64"), seed=0)
        assert isinstance(trainer.step, FusedStep)
        history = trainer.fit(X, y, epochs=3, batch_size=16, progress=False)
        trainer.train_step(X[:7], y[:7])  # a single step, of another batch size
        params[name] = [to_host(a) for layer in trainer.params for a in layer], history
    for a, b in zip(params["torch"][0], params["numpy"][0]):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(params["torch"][1]["loss"], params["numpy"][1]["loss"], rtol=1e-10)
    np.testing.assert_allclose(params["torch"][1]["accuracy"], params["numpy"][1]["accuracy"])


def test_trainer_on_tensors_keeps_them_on_the_device(cpu):
    rng = np.random.default_rng(0)
    X, y = torch.tensor(rng.normal(size=(50, 4)), dtype=torch.float32), torch.tensor(rng.integers(0, 2, size=50))
    trainer = Trainer(MLP([4, 8, 2], loss="softmax_cross_entropy"), optim.Adam(0.01), backend=cpu, seed=0)
    history = trainer.fit(X, y, epochs=2, batch_size=8, progress=False, validation_split=0.2)
    assert len(history["val_loss"]) == 2 and all(np.isfinite(history["loss"]))
    assert isinstance(trainer.params[0][0], torch.Tensor)
    # the hand-written pass records no autograd tape: nothing requires grad, nothing has a grad_fn
    leaves = [a for layer in trainer.params for a in layer] + list(trainer.step._buffers)
    assert not any(a.requires_grad or a.grad_fn is not None for a in leaves)
    probabilities = trainer.predict(X)
    assert isinstance(probabilities, np.ndarray) and probabilities.shape == (50, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_diverging_training_is_refused(cpu):
    X, y = np.full((8, 2), 1e30), np.zeros((8, 1))
    trainer = Trainer(MLP([2, 3, 1], loss="squared_error"), optim.SGD(1e10), backend=cpu, seed=0)
    before = [to_host(a).copy() for layer in trainer.params for a in layer]
    with pytest.raises(bp.TrainingDivergedError, match="training diverged"):
        trainer.fit(X, y, epochs=1, batch_size=8, progress=False)
    for a, b in zip(before, [to_host(a) for layer in trainer.params for a in layer]):
        np.testing.assert_array_equal(a, b)


# -- checkpoints, estimators -------------------------------------------------------------------
@pytest.mark.parametrize("saved_on, loaded_on", [("torch", "numpy"), ("numpy", "torch")])
def test_checkpoints_load_across_backends(tmp_path, saved_on, loaded_on):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(30, 3)), rng.integers(0, 2, size=30)
    trainer = Trainer(MLP([3, 5, 2], loss="softmax_cross_entropy"), optim.Adam(0.01), backend=saved_on, seed=0)
    trainer.fit(X, y, epochs=2, batch_size=10, progress=False)
    trainer.save(tmp_path / "model.safetensors")
    loaded = Trainer.load(tmp_path / "model.safetensors", backend=loaded_on)
    assert loaded.backend.name == loaded_on and loaded.steps == trainer.steps
    for a, b in zip(trainer.params, loaded.params):
        for x, x_ in zip(a, b):
            np.testing.assert_array_equal(to_host(x), to_host(x_))
    trainer.fit(X, y, epochs=1, batch_size=10, progress=False)  # both continue the same way
    loaded.fit(X, y, epochs=1, batch_size=10, progress=False)
    for a, b in zip(trainer.params, loaded.params):
        for x, x_ in zip(a, b):
            np.testing.assert_allclose(to_host(x), to_host(x_), rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_sklearn_estimator_on_torch():
    from sklearn.datasets import load_iris

    from backprop.sklearn import MLPClassifier

    X, y = load_iris(return_X_y=True)
    scores = {}
    for name in ("torch", "numpy"):
        clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=30, random_state=0, backend=name)
        scores[name] = clf.fit(X, y).predict_proba(X)
    np.testing.assert_allclose(scores["torch"], scores["numpy"], rtol=1e-4, atol=1e-5)


# -- the gradient oracle ------------------------------------------------------------------------
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_torch_autograd_oracle_agrees_in_float64(cpu64, activation, loss):
    """The hand-written gradients on torch against torch.autograd (and jax.grad) at 1e-10."""
    rng = np.random.default_rng(len(activation) + len(loss))
    model = MLP([4, 5, 6, 3], activation=activation, loss=loss, alpha=0.1)
    params = model.init(seed=1, backend=cpu64)
    X, y = rng.normal(size=(7, 4)), _targets(rng, loss, 7, 3)
    report = check_gradients(model, params, X, y, reference="torch")
    assert report.reference == "torch" and report.rtol == 1e-10
    assert report.passed and report.max_rel_error <= 1e-10, str(report)
    assert "torch reference" in str(report)
    if probe("jax").available:
        jax_report = check_gradients(model, params, X, y)
        assert jax_report.passed and abs(jax_report.reference_loss - report.reference_loss) <= 1e-12


def test_torch_oracle_catches_a_wrong_gradient(cpu64, monkeypatch):
    model = MLP([3, 4, 2], activation="tanh", loss="squared_error")
    params = model.init(seed=0, backend=cpu64)
    X, y = np.random.default_rng(0).normal(size=(5, 3)), np.random.default_rng(1).normal(size=(5, 2))
    assert check_gradients(model, params, X, y, reference="torch").passed
    original = MLP.value_and_grad

    def off_by_a_millionth(self, xp, p, X, Y, **kwargs):
        loss, grads, inter = original(self, xp, p, X, Y, **kwargs)
        return loss, ((grads[0][0] * (1 + 1e-6), grads[0][1]), *grads[1:]), inter

    monkeypatch.setattr(MLP, "value_and_grad", off_by_a_millionth)
    report = check_gradients(model, params, X, y, reference="torch")
    assert not report.passed and 1e-7 < report.max_rel_error < 1e-5 and "MISMATCH" in str(report)


def test_unknown_reference():
    model = MLP([2, 1])
    with pytest.raises(ValueError, match="unknown reference 'tf'; valid references: jax, torch"):
        check_gradients(model, model.init(0, "numpy"), np.zeros((1, 2)), np.zeros((1, 1)), reference="tf")


def test_check_command_uses_both_oracles_on_torch(capsys):
    from backprop.cli import main

    assert main(["check", "--backend", "torch", "--cases", "3"]) == 0
    out = capsys.readouterr().out
    assert "against jax.grad and torch.autograd in float64" in out
    assert "rel err torch" in out and "3/3 architectures agree" in out


# -- info and bench ----------------------------------------------------------------------------
def test_info_reports_torch(capsys):
    from backprop.cli import main

    assert main(["info", "--json"]) == 0
    entry = next(b for b in json.loads(capsys.readouterr().out)["backends"] if b["name"] == "torch")
    assert entry["available"] and entry["version"] == torch.__version__ and entry["devices"][0] == "cpu"
    assert entry["threads"] == torch.get_num_threads()
    assert main(["info"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("torch"))
    assert f"version {torch.__version__}" in line and "CPU threads" in line


def test_bench_runs_backprop_on_torch_beside_the_torch_contender(cpu):
    from backprop import bench

    ours = bench.build("backprop", "digits", 32, cpu, optimizer="adam")
    theirs = bench.build("torch", "digits", 32, cpu, optimizer="adam")
    floor = bench.build("matmul_floor", "digits", 32, cpu)
    try:
        assert floor.info["outputs"] == "preallocated (out=)"
        floor.step()
        for x, y in zip(ours.params(), theirs.params()):
            np.testing.assert_array_equal(x, y)
        for _ in range(3):
            np.testing.assert_allclose(bench.loss_of(ours.step()), bench.loss_of(theirs.step()), rtol=1e-4)
        for x, y in zip(ours.params(), theirs.params()):
            np.testing.assert_allclose(x, y, rtol=1e-3, atol=1e-4)
    finally:
        ours.release()
        theirs.release()
        floor.release()
    assert bench.device_description(cpu)["threads"] == torch.get_num_threads()


def test_the_logistic_derivative_is_one_kernel_on_torch_only(cpu):
    """δ ⊙= h (1 − h): torch's sigmoid_backward written into δ; NumPy has no such kernel (three calls)."""
    from backprop.backends import one_call_logistic_derivative

    assert one_call_logistic_derivative(np) is None
    kernel = one_call_logistic_derivative(cpu.inplace)
    rng = np.random.default_rng(0)
    D, H = rng.standard_normal((5, 4)), rng.random((5, 4))
    Dt = torch.from_numpy(D.copy())
    kernel(Dt, torch.from_numpy(H))
    np.testing.assert_allclose(Dt.numpy(), D * H * (1.0 - H), rtol=1e-15)


def test_a_contiguous_batch_is_read_where_it_is(cpu):
    """The fused step reads a C-contiguous tensor batch of its dtype in place (no copy into its buffer;
    its first layer then adds the bias after the product) and copies any other into the plan's
    [H_0 1] (the bias taken by the products); both give the same step."""
    model = MLP([4, 6, 3], activation="sigmoid", loss="softmax_cross_entropy")
    X = torch.randn(8, 4, dtype=torch.float32)
    Y = torch.nn.functional.one_hot(torch.arange(8) % 3, 3).to(torch.float32)
    runs = []
    for batch in (X, X.T.contiguous().T):  # the same values, the second not C-contiguous
        kept = batch.clone()
        t = Trainer(model, optim.SGD(0.1), backend=get_backend("torch", device="cpu", dtype="float32"), seed=0)
        t.params, t.opt_state, _ = t.step(t.params, t.opt_state, batch, Y)
        runs.append([to_host(a).copy() for layer in t.params for a in layer])
        plan = t.step._plan(8)
        plan.H[0].fill_(float("nan"))
        t.step(t.params, t.opt_state, batch, Y)
        assert torch.isnan(plan.H[0]).all() if batch.is_contiguous() else torch.equal(plan.H[0], X)
        assert torch.equal(plan.H1[0][:, -1], torch.ones(8)) and torch.equal(batch, kept)
    for a, b in zip(*runs):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_the_products_take_the_bias_on_the_cpu():
    """On torch's CPU each layer's input H_l is the first columns of [H_l 1], and one product gives
    Z_l = [H_l 1] Θ_l and another dΘ_l = [H_l 1]ᵀ δ_l; NumPy keeps separate bias passes.  Both
    train a deeper network to the same parameters."""
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(30, 5)), rng.integers(0, 3, size=30)
    params = {}
    for name in ("torch", "numpy"):
        model = MLP([5, 7, 6, 3], activation="tanh", loss="softmax_cross_entropy")
        trainer = Trainer(model, optim.SGD(0.2), backend=get_backend(name, dtype="float64"), seed=0)
        trainer.fit(X, y, epochs=4, batch_size=10, progress=False)
        plan = trainer.step._plan(10)
        if name == "torch":
            for l in (0, 1, 2):
                assert plan.H1[l].shape == (10, model.layer_sizes[l] + 1)
                assert plan.H[l].data_ptr() == plan.H1[l].data_ptr()  # H_l is a view of [H_l 1]
                assert torch.equal(plan.H1[l][:, -1], torch.ones(10, dtype=torch.float64))
        else:
            assert plan.H1 == [None, None, None]
        params[name] = [to_host(a) for layer in trainer.params for a in layer]
    for a, b in zip(params["torch"], params["numpy"]):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)


# -- the ways to compute the same step (`InPlace.CHOICES`) and their A/B timing ------------------
def test_every_choice_is_taken_on_the_cpu_and_choose_flips_one():
    lib = get_backend("torch", device="cpu", dtype="float32").inplace
    assert lib.choices() == dict.fromkeys(torch_backend.InPlace.CHOICES, True)
    off = lib.choose(bias_in_products=False)
    assert off is not lib and off.choices() == {**lib.choices(), "bias_in_products": False}
    assert lib.bias_in_products  # the backend's own namespace is not changed
    assert off.choose(max_indices=False, narrow_dot=False).choices() == {
        "bias_in_products": False,
        "host_scalars": True,
        "max_indices": False,
        "narrow_dot": False,
    }
    with pytest.raises(ValueError, match="unknown choice.*'fast'.*valid: bias_in_products, host_scalars"):
        lib.choose(fast=True)


@pytest.mark.parametrize("choice", torch_backend.InPlace.CHOICES)
def test_a_flipped_choice_trains_to_the_same_parameters(choice):
    """Each choice computes the same step another way: 1024 rows of 3 classes reach the thresholds
    of ``max_indices`` and ``narrow_dot``; without ``bias_in_products`` the plan has no [H 1]."""
    import dataclasses

    rng = np.random.default_rng(5)
    X, y = rng.normal(size=(1024, 5)), rng.integers(0, 3, size=1024)
    backend = get_backend("torch", device="cpu", dtype="float64")
    params = []
    for b in (backend, dataclasses.replace(backend, inplace=backend.inplace.choose(**{choice: False}))):
        trainer = Trainer(MLP([5, 7, 3], activation="sigmoid", loss="softmax_cross_entropy"), optim.SGD(0.5), backend=b)
        history = trainer.fit(X, y, epochs=3, batch_size=1024, progress=False)
        assert trainer.step.lib is b.inplace
        plan = trainer.step._plan(1024)
        assert (plan.H1[1] is None) == (choice == "bias_in_products" and b is not backend)
        params.append(([to_host(a) for layer in trainer.params for a in layer], history["accuracy"]))
    (a, acc_a), (b, acc_b) = params
    assert acc_a == acc_b
    for x, z in zip(a, b):
        np.testing.assert_allclose(x, z, rtol=1e-10, atol=1e-13)


def test_choices_benchmark_times_each_flip_beside_the_default(cpu, tmp_path, capsys, monkeypatch):
    from backprop.bench import choices

    row = choices.compare("digits", 32, cpu, "host_scalars", budget_s=0.05)
    assert (row["network"], row["batch"], row["choice"], row["default"]) == ("digits", 32, "host_scalars", True)
    assert row["max_relative_difference"] <= choices.AGREE_RTOL and row["rounds"] >= 3
    for key in ("default_s", "flipped_s", "autograd_s"):
        assert 0 < row[key] < 1
    assert row["flipped_over_default"] == pytest.approx(row["flipped_s"] / row["default_s"])
    assert row["default_over_autograd"] == pytest.approx(row["default_s"] / row["autograd_s"])

    from backprop.cli import main

    monkeypatch.setenv("BACKPROP_DEVICE", "cpu")
    out = tmp_path / "choices"
    argv = ["bench", "--choices", "all", "--networks", "seed", "--batch-sizes", "2", "--time-budget", "0.01"]
    assert main([*argv, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "choices.json").read_text())
    assert [r["choice"] for r in report["rows"]] == list(torch_backend.InPlace.CHOICES)
    assert report["defaults"] == cpu.inplace.choices() and report["device"]["device"] == "cpu"
    assert (out / "choices.txt").read_text() == printed
    assert printed.count("\nseed          2  ") == 4

    assert main(["bench", "--choices", "bias_in_products,fast"]) == 2
    assert "unknown choice 'fast' in --choices; valid: bias_in_products, host_scalars" in capsys.readouterr().err
    assert main(["bench", "--choices", "all", "--backends", "numpy"]) == 2
    assert "--choices times the torch backend only" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown choice.*'fast'"):
        choices.run(cpu, ["seed"], [2], ["fast"])
    with pytest.raises(ValueError, match="only torch has them"):
        choices.flipped(get_backend("numpy"), "host_scalars")


def test_choices_benchmark_refuses_a_flip_that_changes_the_result(cpu, monkeypatch):
    """A flipped namespace that computes something else (here e^(1.1 z) for e^z) stops the comparison."""
    from backprop.bench import choices

    choose = torch_backend.InPlace.choose

    def wrong(self, **kw):
        other = choose(self, **kw)
        other.exp = lambda a, out=None: torch.exp(1.1 * a, out=out)
        return other

    monkeypatch.setattr(torch_backend.InPlace, "choose", wrong)
    with pytest.raises(RuntimeError, match="host_scalars flipped changes the step's result at digits / 32"):
        choices.compare("digits", 32, cpu, "host_scalars", budget_s=0.01)
