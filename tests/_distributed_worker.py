"""Subprocess worker for tests/test_distributed.py (run with JAX_PLATFORMS=cpu).

    python _distributed_worker.py single OUT.json
        one process with 4 simulated CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=4):
        devices="all" against one device, in float32 and float64.
    python _distributed_worker.py multi PROCESS_ID PORT OUT.json
        one of two processes on 127.0.0.1:PORT, 2 CPU devices each, each fitting on its own half of
        the data (the single run computes what they must give, on one device).

Results go to OUT.json; the test asserts on them.
"""

from __future__ import annotations

import json
import sys

import numpy as np

N, EPOCHS, BATCH, SEED = 102, 3, 16, 0  # 102 = 6 batches of 16 + a last batch of 6 (not a multiple of 4)
N_LOCAL = 101  # per process in the 2-process run: batches of 2 x 16 rows + a last one of 2 x 5 (not a multiple of 4)


def blobs(n, seed=0):
    rng = np.random.default_rng(seed)
    centers = 2.0 * np.eye(3, 5)
    y = rng.integers(0, 3, n)
    return centers[y] + 0.7 * rng.normal(size=(n, 5)), y


def make_trainer(dtype, devices):
    import backprop as bp
    from backprop import optim
    from backprop.training.trainer import Trainer

    model = bp.MLP([5, 12, 3], activation="tanh", loss="softmax_cross_entropy", alpha=1e-3)
    return Trainer(model, optim.Adam(0.02), backend=bp.get_backend("jax", dtype=dtype), seed=SEED, devices=devices)


def leaves(trainer):
    from backprop.optim import tree_leaves

    return [np.asarray(a, dtype=np.float64) for a in tree_leaves((trainer.params, trainer.opt_state))]


def rel_error(a, b):
    """max over arrays of max|a - b| / max|a| (parameters and optimizer state)."""
    worst = 0.0
    for x, y in zip(leaves(a), leaves(b), strict=True):
        scale = max(float(np.max(np.abs(x))), 1e-30) if x.size else 1.0
        worst = max(worst, float(np.max(np.abs(x - y), initial=0.0)) / scale)
    return worst


def single(out):
    import jax

    X, y = blobs(N)
    result = {"devices": len(jax.devices())}
    for dtype in ("float32", "float64"):
        one, four = make_trainer(dtype, None), make_trainer(dtype, "all")
        h1 = one.fit(X, y, epochs=EPOCHS, batch_size=BATCH, progress=False)
        h4 = four.fit(X, y, epochs=EPOCHS, batch_size=BATCH, progress=False)
        result[dtype] = {
            "rel_error": rel_error(one, four),
            "history_1": h1,
            "history_4": h4,
            "steps": [one.steps, four.steps],
            "sharding": str(four.params[0][0].sharding.spec),
            "param_devices": len(four.params[0][0].sharding.device_set),
        }
    result["evaluate"] = [one.evaluate(X, y), four.evaluate(X, y)]  # float64
    result["predict_error"] = float(np.max(np.abs(one.predict(X[:7]) - four.predict(X[:7]))))
    # a batch of 6 rows through train_step (not a multiple of 4: computed replicated) and one of 16
    one, four = make_trainer("float64", None), make_trainer("float64", "all")
    for rows in (slice(0, 6), slice(6, 22)):
        result.setdefault("train_step_losses", []).append(
            [one.train_step(X[rows], y[rows]), four.train_step(X[rows], y[rows])]
        )
    result["train_step_rel_error"] = rel_error(one, four)
    # train_step on batches on its device (its step then compiled for them), then on one committed
    # to another device: the compiled step refuses it before running, and it is moved and taken
    one, reference = make_trainer("float64", None), make_trainer("float64", None)
    batch = (X[:16], y[:16])
    here = [jax.device_put(a, one.backend.device) for a in batch]
    there = [jax.device_put(a, jax.devices()[2]) for a in batch]
    result["train_step_devices"] = {
        "losses": [one.train_step(*b) for b in (here, here, there, here)],
        "reference": [reference.train_step(*batch) for _ in range(4)],
        "specialized": one._specialized is not None,
    }
    result["train_step_devices"]["rel_error"] = rel_error(one, reference)
    # a batch_size that does not split over 4 devices
    try:
        four.fit(X, y, epochs=1, batch_size=30, progress=False)
        result["batch_error"] = None
    except ValueError as exc:
        result["batch_error"] = str(exc)
    result["steps_after_error"] = four.steps
    # a 2 x 2 mesh: the batch is split over "data" (2) and replicated over "model"
    from jax.sharding import Mesh

    mesh = Mesh(np.array(jax.devices()).reshape(2, 2), ("data", "model"))
    one, grid = make_trainer("float64", None), make_trainer("float64", mesh)
    one.fit(X[:96], y[:96], epochs=1, batch_size=BATCH, progress=False)
    grid.fit(X[:96], y[:96], epochs=1, batch_size=BATCH, progress=False)
    result["mesh_rel_error"] = rel_error(one, grid)
    result["mesh_data_size"] = grid.parallel.data_size
    # the command line: backprop train --devices all, and the device-scaling benchmark
    import contextlib
    import io

    from backprop import cli
    from backprop.bench.devices import bench_devices

    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = cli.main(
            ["train", "--devices", "all", "--epochs", "1", "--hidden", "8", "--test-size", "0.8", "--no-progress"]
        )
    result["cli"] = {"code": code, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()}
    result["two_process_reference"] = two_process_reference()
    report = bench_devices([1, 4], networks=["seed"], batch_sizes=[8, 6], budget_s=0.02)
    result["bench"] = {
        "rows": [(r["batch"], r["devices"]) for r in report["results"]],
        "skipped": [(s["batch"], s["devices"]) for s in report["skipped"]],
        "positive": all(r["samples_per_s"] > 0 for r in report["results"]),
    }
    with open(out, "w", encoding="utf-8") as f:
        json.dump(result, f)


def two_process_reference():
    """What the 2-process run must give, on one device: the same global batches in the same order
    (each process permutes its own rows with the trainer's seeded generator; a global batch is
    process 0's rows, then process 1's), then the validation loss on both processes' rows."""
    N = N_LOCAL
    X, y = blobs(2 * N)
    rng = np.random.Generator(np.random.PCG64(SEED))
    ref, history = make_trainer("float64", None), []
    for _ in range(EPOCHS):
        order = rng.permutation(N)
        total = 0.0
        for chunk in (order[i : i + BATCH] for i in range(0, N, BATCH)):
            index = np.concatenate([chunk, chunk + N])
            total += ref.train_step(X[index], y[index]) * len(index)
        history.append(total / (2 * N))
    val = np.concatenate([np.arange(10), N + np.arange(10)])
    return {
        "leaves": [a.tolist() for a in leaves(ref)],
        "loss": history,
        "val": ref.evaluate(X[val], y[val]),
        "steps": ref.steps,
    }


def multi(process_id, port, out):
    from backprop.training import distributed

    address = f"127.0.0.1:{port}"
    distributed.initialize(
        address,
        2,
        process_id,
        cpu_devices=2,
        coordinator_bind_address=address,
        initialization_timeout=60,
        shutdown_timeout_seconds=30,
    )
    import jax

    N = N_LOCAL
    X, y = blobs(2 * N)
    Xl, yl = (X[:N], y[:N]) if process_id == 0 else (X[N:], y[N:])  # this process's half
    trainer = make_trainer("float64", "all")
    history = trainer.fit(
        Xl, yl, epochs=EPOCHS, batch_size=2 * BATCH, validation_data=(Xl[:10], yl[:10]), progress=False
    )
    result = {
        "process_index": jax.process_index(),
        "process_count": jax.process_count(),
        "devices": len(jax.devices()),
        "history": history,
        "steps": trainer.steps,
        "data_size": trainer.parallel.data_size,
        "leaves": [a.tolist() for a in leaves(trainer)],
    }
    with open(out, "w", encoding="utf-8") as f:
        json.dump(result, f)


if __name__ == "__main__":
    if sys.argv[1] == "single":
        single(sys.argv[2])
    else:
        multi(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
