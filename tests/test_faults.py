"""Faults: a process killed mid-save, Ctrl-C during training, long runs without memory growth."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import backprop as bp
from backprop import optim
from backprop.training.trainer import Trainer

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")


def default_sigint() -> None:
    """In the child: SIGINT back to its default, so Python raises KeyboardInterrupt even when the
    test runner was started in the background (where shells ignore SIGINT, and children inherit that)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def python(code: str, *args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": SRC, "BACKPROP_BACKEND": "numpy"}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=env,
        preexec_fn=default_sigint,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def wait_for(path: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout} s")
        time.sleep(0.02)


def test_sigkill_during_save_leaves_the_previous_checkpoint_intact(tmp_path):
    path, stalled = str(tmp_path / "ckpt.safetensors"), str(tmp_path / "stalled")
    # The child saves once, then saves again with a write that stalls after half of the bytes.
    child = python(
        """
        import os, sys, time
        import backprop as bp
        from backprop.training.trainer import Trainer
        path, stalled = sys.argv[1], sys.argv[2]
        trainer = Trainer(bp.MLP([4, 32, 3], loss="softmax_cross_entropy"), seed=0)
        trainer.save(path)
        real_write = os.write
        class Stalling:
            def __init__(self, f): self.f = f
            def __enter__(self): return self
            def __exit__(self, *exc): return self.f.__exit__(*exc)
            def write(self, data):
                self.f.write(data[: len(data) // 2]); self.f.flush()
                open(stalled, "w").close()
                time.sleep(600)
            def __getattr__(self, name): return getattr(self.f, name)
        real_fdopen = os.fdopen
        os.fdopen = lambda *a, **k: Stalling(real_fdopen(*a, **k))
        trainer2 = Trainer(bp.MLP([4, 32, 3], loss="softmax_cross_entropy"), seed=1)
        trainer2.save(path)
        """,
        path,
        stalled,
    )
    try:
        wait_for(stalled)
        before = open(path, "rb").read()
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        child.kill()
    assert child.returncode == -signal.SIGKILL
    assert open(path, "rb").read() == before  # untouched by the half-written save
    restored = Trainer.load(path)
    reference = Trainer(bp.MLP([4, 32, 3], loss="softmax_cross_entropy"), seed=0)
    for a, b in zip(restored.params, reference.params):
        np.testing.assert_array_equal(a[0], b[0])
    leftovers = [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")]
    assert len(leftovers) == 1  # the killed write's temporary file, never the checkpoint itself
    with pytest.raises(bp.CheckpointError):
        Trainer.load(tmp_path / leftovers[0])


def test_ctrl_c_during_fit_saves_and_resumes(tmp_path):
    path, started = str(tmp_path / "ckpt.safetensors"), str(tmp_path / "started")
    child = python(
        """
        import sys, numpy as np
        import backprop as bp
        from backprop.callbacks import Callback, ModelCheckpoint
        from backprop.training.trainer import Trainer
        path, started = sys.argv[1], sys.argv[2]
        class Started(Callback):
            def on_batch_end(self, trainer, epoch, batch, loss):
                if trainer.steps == 50:
                    open(started, "w").close()
        rng = np.random.default_rng(0)
        X, y = rng.normal(size=(512, 8)), rng.integers(0, 3, 512)
        trainer = Trainer(bp.MLP([8, 64, 3], loss="softmax_cross_entropy"), seed=0)
        try:
            trainer.fit(X, y, epochs=100000, batch_size=4, callbacks=[ModelCheckpoint(path, every=1000), Started()],
                        progress=False)
        except KeyboardInterrupt:
            print("interrupted", trainer.steps, len(trainer.history.get("loss", [])))
            sys.exit(130)
        """,
        path,
        started,
    )
    try:
        wait_for(started)
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=120)
    finally:
        child.kill()
    assert child.returncode == 130, err
    _, steps, epochs = out.split()
    resumed = Trainer.load(path)
    assert resumed.steps == int(steps) >= 50 and len(resumed.history.get("loss", [])) == int(epochs)
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(512, 8)), rng.integers(0, 3, 512)
    resumed.fit(X, y, epochs=1, batch_size=64, progress=False)
    assert resumed.steps == int(steps) + 8


def test_cli_train_ctrl_c_leaves_a_checkpoint(tmp_path):
    out_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": SRC, "BACKPROP_BACKEND": "numpy"}
    child = subprocess.Popen(
        [sys.executable, "-m", "backprop", "train", "--epochs", "100000", "--out", str(out_dir), "--no-progress"],
        env=env,
        preexec_fn=default_sigint,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(str(out_dir / "checkpoint.safetensors"), timeout=120)
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=120)
    finally:
        child.kill()
    assert child.returncode == 130
    assert "interrupted" in err and "Traceback" not in err
    trainer = Trainer.load(out_dir / "checkpoint.safetensors")
    assert trainer.epoch >= 1


LONG_RUN = """
import json, os, sys, tracemalloc
import numpy as np
import backprop as bp
from backprop import optim
from backprop.callbacks import Callback
from backprop.training.trainer import Trainer

def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

class MemoryProbe(Callback):
    # Snapshots the parameters after 10 epochs (10,000 steps) and starts tracing the heap; takes
    # the baseline after 20 (one-time allocations done) and measures growth to the end.
    def on_epoch_end(self, trainer, epoch, logs):
        if epoch + 1 == 10:
            self.snapshot = [np.asarray(a).tolist() for layer in trainer.snapshot() for a in layer]
            tracemalloc.start()
        if epoch + 1 == 20:
            self.heap, self.rss = tracemalloc.get_traced_memory()[0], rss_bytes()

    def on_train_end(self, trainer):
        self.heap_growth = tracemalloc.get_traced_memory()[0] - self.heap
        tracemalloc.stop()
        self.rss_growth = rss_bytes() - self.rss

rng = np.random.default_rng(0)
X, y = rng.normal(size=(2000, 2)), rng.normal(size=(2000, 1))
model = bp.MLP([2, 3, 1], activation="sigmoid")
probe = MemoryProbe()
trainer = Trainer(model, optim.SGD(0.01, momentum=0.9), backend="numpy", seed=0)
callbacks = [probe] if sys.argv[1] == "100" else []
trainer.fit(X, y, epochs=int(sys.argv[1]), batch_size=2, callbacks=callbacks, progress=False)
params = [np.asarray(a).tolist() for layer in trainer.params for a in layer]
finite = bool(all(np.isfinite(np.asarray(a)).all() for a in params))
result = {"steps": trainer.steps, "params": params, "finite": finite}
if sys.argv[1] == "100":
    result.update(heap_growth=probe.heap_growth, rss_growth=probe.rss_growth, snapshot=probe.snapshot)
print(json.dumps(result))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="RSS is read from /proc")
def test_long_run_has_no_memory_growth_and_is_repeatable():
    """100,000 steps of the 2-3-1 network at batch 2 (in a fresh process): heap and RSS stay flat
    over the last 80,000 steps, and the same seed gives bitwise-identical parameters."""
    import json

    def run(epochs):
        child = python(LONG_RUN, str(epochs))
        out, err = child.communicate(timeout=600)
        assert child.returncode == 0, err
        return json.loads(out)

    long, again = run(100), run(10)
    assert long["steps"] == 100_000 and again["steps"] == 10_000 and long["finite"]
    # over the last 80,000 steps the heap only gains the per-epoch history (a few floats)
    assert long["heap_growth"] < 64 * 1024, f"Python heap grew by {long['heap_growth']} bytes over 80,000 steps"
    assert long["rss_growth"] < 8 * 1024 * 1024, f"RSS grew by {long['rss_growth']} bytes over 80,000 steps"
    assert long["snapshot"] == again["params"]  # exact float equality of the 10,000-step parameters


def test_shape_mismatched_checkpoint_is_refused(tmp_path):
    """A well-formed file (valid checksum) whose tensors do not fit its model is refused clearly."""
    from backprop.training import checkpoint

    path = tmp_path / "m.safetensors"
    Trainer(bp.MLP([4, 8, 3], loss="softmax_cross_entropy"), backend="numpy").save(path)
    tensors, meta = checkpoint.load(path)
    meta["model"]["layer_sizes"] = [4, 9, 3]
    checkpoint.save(path, tensors, meta)
    with pytest.raises(checkpoint.CheckpointError, match=r"does not describe a valid trainer.*shape"):
        Trainer.load(path)


def test_checkpoint_with_mis_shaped_optimizer_state_is_refused(tmp_path):
    """Optimizer-state arrays that do not fit the network are refused by name; a 0-d count, which
    safetensors stores with shape (1,), comes back 0-d and training resumes."""
    from backprop.training import checkpoint

    path = tmp_path / "m.safetensors"
    trainer = Trainer(bp.MLP([4, 8, 3], loss="softmax_cross_entropy"), backend="numpy")
    trainer.fit(np.ones((6, 4)), np.arange(6) % 3, epochs=1, batch_size=3, progress=False)
    trainer.save(path)
    resumed = Trainer.load(path)
    assert resumed.opt_state[0].shape == () and float(resumed.opt_state[0]) == 2
    resumed.fit(np.ones((6, 4)), np.arange(6) % 3, epochs=1, batch_size=3, progress=False)
    assert float(resumed.opt_state[0]) == 4
    tensors, meta = checkpoint.load(path)
    tensors["opt_state.1"] = tensors["opt_state.1"][:2]  # m of the first W: 2 rows instead of 4
    checkpoint.save(path, tensors, meta)
    with pytest.raises(checkpoint.CheckpointError, match=r"opt_state\.1 has shape \(2, 8\), expected \(4, 8\)"):
        Trainer.load(path)


def test_loading_never_unpickles(tmp_path, monkeypatch):
    import pickle

    path = tmp_path / "m.safetensors"
    trainer = Trainer(bp.MLP([4, 8, 3], loss="softmax_cross_entropy"), optim.Adam(0.01), backend="numpy")
    trainer.save(path)

    def refuse(*args, **kwargs):
        raise AssertionError("a checkpoint load unpickled something")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    restored = Trainer.load(path)
    np.testing.assert_array_equal(restored.params[0][0], trainer.params[0][0])


def _resigned(path, edit):
    """The checkpoint at ``path`` with ``edit(tensors, meta)`` applied and the checksum recomputed:
    a deliberate edit, which the checksum cannot catch."""
    from backprop.training import checkpoint

    tensors, meta = checkpoint.load(path)
    edit(tensors, meta)
    checkpoint.save(path, tensors, meta)
    return path


def _nested(depth: int):
    node = 0
    for _ in range(depth):
        node = [node]
    return node


RESIGNED_EDITS = {
    "huge layer_sizes": (lambda t, m: m["model"].update(layer_sizes=[4, 40000, 40000, 3]), r"layer_sizes .* needs"),
    "another optimizer": (lambda t, m: m.update(optimizer={"name": "sgd", "lr": 0.1}), r"sgd state has 1 arrays"),
    "structure 'x'": (lambda t, m: m.update(opt_state_structure="x"), r"nested lists of 0s"),
    "structure too deep": (lambda t, m: m.update(opt_state_structure=_nested(500)), r"nested too deeply"),
    "structure of another shape": (
        lambda t, m: m.update(opt_state_structure=[0, [0] * 4, [[0, 0]] * 2]),
        r"does not match",
    ),
    "bad rng_state": (lambda t, m: m.update(rng_state={"bit_generator": "PCG64", "state": 5}), r"valid trainer"),
    "rng_state a string": (lambda t, m: m.update(rng_state="x"), r"rng_state must be"),
    "epoch 'abc'": (lambda t, m: m.update(epoch="abc"), r"epoch must be a whole number"),
    "negative steps": (lambda t, m: m.update(steps=-1), r"steps must be a whole number"),
    "NaN weight": (lambda t, m: t["params.0.W"].__setitem__((0, 0), np.nan), r"params\.0\.W is not a finite"),
    "inf optimizer state": (lambda t, m: t["opt_state.2"].__setitem__(0, np.inf), r"opt_state\.2 is not a finite"),
    "history not lists": (lambda t, m: m.update(history={"loss": 3}), r"history must map"),
    "a stray tensor": (lambda t, m: t.update({"params.9.W": np.zeros(2, np.float32)}), r"unexpected tensors"),
}


@pytest.mark.parametrize("edit, message", RESIGNED_EDITS.values(), ids=list(RESIGNED_EDITS))
def test_a_resigned_inconsistent_checkpoint_is_refused_before_allocating(tmp_path, edit, message):
    """Every deliberate, re-signed inconsistency is a CheckpointError naming it, raised before the
    trainer allocates a network of the claimed size (a 40000-wide layer would take gigabytes)."""
    import tracemalloc

    path = tmp_path / "m.safetensors"
    trainer = Trainer(bp.MLP([4, 8, 3], loss="softmax_cross_entropy"), optim.Adam(0.01), backend="numpy")
    trainer.fit(np.ones((6, 4)), np.arange(6) % 3, epochs=1, batch_size=3, progress=False)
    trainer.save(path)
    _resigned(path, edit)
    tracemalloc.start()
    try:
        with pytest.raises(bp.CheckpointError, match=message):
            Trainer.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20  # nothing near the claimed network's size


def test_a_deeply_nested_header_is_refused(tmp_path):
    """A header whose JSON nests deeper than the parser's recursion limit is a CheckpointError."""
    from safetensors.numpy import save_file

    path = tmp_path / "m.safetensors"
    save_file({"params.0.W": np.zeros((2, 2), np.float32)}, path, metadata={"backprop": "[" * 100_000 + "]" * 100_000})
    with pytest.raises(bp.CheckpointError, match="no readable backprop metadata"):
        Trainer.load(path)


# -- the checkpoint header, fuzzed: any re-signed edit loads or is a CheckpointError ----------------
def _json_values():
    from hypothesis import strategies as st

    scalars = st.one_of(
        st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=False), st.text(max_size=8)
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
        max_leaves=12,
    )


_HEADER_KEYS = ("model", "optimizer", "opt_state_structure", "epoch", "steps", "seed", "rng_state", "history")


def _fuzzed_header_test():
    from _counts import count_case
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from backprop.training import checkpoint

    @settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        key=st.sampled_from(_HEADER_KEYS),
        inner=st.one_of(st.none(), st.sampled_from(["layer_sizes", "loss", "activation", "name", "lr", "alpha"])),
        value=_json_values(),
    )
    def check(tmp_path_factory, key, inner, value):
        count_case("Trainer.load (re-signed header)")
        path = tmp_path_factory.mktemp("ckpt") / "m.safetensors"
        trainer = Trainer(bp.MLP([3, 4, 2], loss="softmax_cross_entropy"), optim.Adam(0.01), backend="numpy")
        trainer.save(path)
        tensors, meta = checkpoint.load(path)
        if inner is not None and isinstance(meta.get(key), dict):
            meta[key][inner] = value
        else:
            meta[key] = value
        checkpoint.save(path, tensors, meta)
        try:
            loaded = Trainer.load(path, backend="numpy")
        except checkpoint.CheckpointError:
            return
        # what loads is a working trainer: it predicts and trains, or says clearly why not (a loaded
        # alpha of 1e300 is a valid configuration whose training diverges)
        try:
            assert np.isfinite(loaded.predict(np.ones((2, 3)))).all()
            loaded.fit(np.ones((4, 3)), np.array([0, 1, 0, 1]), epochs=1, batch_size=2, progress=False)
        except ValueError:
            pass

    return check


test_a_fuzzed_resigned_header_loads_or_is_a_checkpoint_error = _fuzzed_header_test()
