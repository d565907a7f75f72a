"""Data-parallel training on JAX's sharding (`backprop.training.distributed`, ``Trainer(devices=...)``).

The multi-device runs happen in subprocesses (tests/_distributed_worker.py) with simulated CPU
devices, so the rest of the suite keeps its one-device JAX: one process with
XLA_FLAGS=--xla_force_host_platform_device_count=4, and two processes joined over 127.0.0.1
(jax.distributed, 2 CPU devices each).  Every subprocess has a deadline and is killed past it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

import backprop as bp
from backprop.training.trainer import Trainer

WORKER = os.path.join(os.path.dirname(__file__), "_distributed_worker.py")
TIMEOUT = 150  # seconds per subprocess run; the runs take ~10-30 s

pytestmark = pytest.mark.skipif(not bp.probe("jax").available, reason="JAX is not installed")


def _env(devices: int | None = None) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
    env.pop("BACKPROP_BACKEND", None)
    env.pop("BACKPROP_DEVICE", None)
    env.pop("XLA_FLAGS", None)
    if devices is not None:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_all(commands: list[tuple[list[str], dict]]) -> list[str]:
    """Run the (command, environment) pairs at once; kill every one still running at the deadline."""
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for cmd, env in commands
    ]
    outputs = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=TIMEOUT)
            outputs.append(out)
    except subprocess.TimeoutExpired:
        pytest.fail(f"a distributed worker ran past {TIMEOUT} s and was killed")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, f"{' '.join(proc.args)} failed:\n{out[-4000:]}"
    return outputs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Both runs, one after the other (their results: single, [process 0, process 1]):

    * one process with 4 simulated CPU devices: devices="all" against one device;
    * two processes on 127.0.0.1, 2 CPU devices each, each with its own half of the data.
    """
    folder = tmp_path_factory.mktemp("dist")
    port = _free_port()
    single, outs = folder / "single.json", [folder / f"process{i}.json" for i in range(2)]
    _run_all([([sys.executable, WORKER, "single", str(single)], _env(devices=4))])
    _run_all([([sys.executable, WORKER, "multi", str(i), str(port), str(outs[i])], _env()) for i in range(2)])
    return json.loads(single.read_text()), [json.loads(o.read_text()) for o in outs]


@pytest.fixture(scope="module")
def single(runs):
    return runs[0]


@pytest.fixture(scope="module")
def two_processes(runs):
    return runs[1]


# -- one process, four devices ---------------------------------------------------------------
@pytest.mark.parametrize("dtype, tol", [("float32", 1e-6), ("float64", 1e-12)])
def test_four_devices_match_one_device(single, dtype, tol):
    run = single[dtype]
    assert single["devices"] == 4
    assert run["rel_error"] <= tol  # parameters and optimizer state after 21 steps
    assert run["steps"] == [21, 21]  # 3 epochs x (6 batches of 16 + one of 6)
    assert run["sharding"] == "P()" and run["param_devices"] == 4  # replicated on every device
    # the history is of the global batch: the same numbers as on one device
    np.testing.assert_allclose(run["history_4"]["loss"], run["history_1"]["loss"], rtol=10 * tol)
    assert run["history_4"]["accuracy"] == run["history_1"]["accuracy"]


def test_evaluate_predict_and_train_step_are_global(single):
    one, four = single["evaluate"]
    assert four["accuracy"] == one["accuracy"]
    assert abs(four["loss"] - one["loss"]) <= 1e-12 * abs(one["loss"])
    assert single["predict_error"] <= 1e-12
    # train_step on 6 rows (not a multiple of 4: computed whole on every device) and on 16 rows
    for loss_one, loss_four in single["train_step_losses"]:
        assert abs(loss_four - loss_one) <= 1e-12 * abs(loss_one)
    assert single["train_step_rel_error"] <= 1e-12


def test_train_step_takes_a_batch_on_another_device(single):
    """After batches on the trainer's device, one committed to another device is moved and taken:
    the same losses and parameters as the same batches from the host."""
    run = single["train_step_devices"]
    assert run["specialized"]
    np.testing.assert_allclose(run["losses"], run["reference"], rtol=1e-12)
    assert run["rel_error"] <= 1e-12


def test_batch_size_not_divisible_by_devices_is_a_clear_error(single):
    message = single["batch_error"]
    assert message is not None
    assert "batch_size=30" in message and "4 devices" in message and "28 or 32" in message
    assert single["steps_after_error"] == 2  # the two train_steps before it; no step was taken


def test_mesh_with_a_data_axis(single):
    assert single["mesh_data_size"] == 2
    assert single["mesh_rel_error"] <= 1e-12


# -- two processes -----------------------------------------------------------------------------
def test_two_processes_match_one_device(two_processes, single):
    first, second = two_processes
    reference = single["two_process_reference"]
    assert [first["process_index"], second["process_index"]] == [0, 1]
    assert first["process_count"] == 2 and first["devices"] == 4 and first["data_size"] == 4
    assert first["steps"] == reference["steps"] == 21  # 3 epochs x (6 batches of 2 x 16 + one of 2 x 5)
    for run in (first, second):  # both processes hold the same parameters: the one-device ones
        assert _rel_error(reference["leaves"], run["leaves"]) <= 1e-12
    # losses and metrics are global: both processes see the same history, equal to one device's
    assert second["history"] == first["history"]
    np.testing.assert_allclose(first["history"]["loss"], reference["loss"], rtol=1e-12)
    assert abs(first["history"]["val_loss"][-1] - reference["val"]["loss"]) <= 1e-12
    assert first["history"]["val_accuracy"][-1] == reference["val"]["accuracy"]


def _rel_error(reference: list, other: list) -> float:
    """max over arrays of max|a - b| / max|a|."""
    worst = 0.0
    for a, b in zip(reference, other, strict=True):
        a, b = np.asarray(a), np.asarray(b)
        if a.size:
            worst = max(worst, float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-30)))
    return worst


# -- in this process ---------------------------------------------------------------------------
def test_devices_need_the_jax_backend():
    model = bp.MLP([3, 4, 2])
    with pytest.raises(ValueError, match="needs the JAX backend.*'numpy'"):
        Trainer(model, backend="numpy", devices="all")


@pytest.mark.parametrize(
    "devices, error",
    [
        ("most", "devices must be None, 'all'"),
        (10**6, "JAX sees"),
        ([], "devices must be None"),
        (["cpu:0"], "JAX devices"),
    ],
)
def test_bad_devices(devices, error):
    with pytest.raises((ValueError, TypeError), match=error):
        Trainer(bp.MLP([3, 4, 2]), backend="jax", devices=devices)


def test_train_command_with_devices(single):
    cli = single["cli"]
    assert cli["code"] == 0, cli["stderr"]
    assert "test accuracy" in cli["stdout"]
    assert "data=4 devices" in cli["stderr"]


def test_bench_devices_reports_each_device_count(single):
    bench = single["bench"]
    assert bench["rows"] == [[8, 1], [8, 4], [6, 1]]
    assert bench["skipped"] == [[6, 4]]  # 6 rows do not split over 4 devices
    assert bench["positive"]


def test_train_command_devices_errors(capsys):
    from backprop import cli

    assert cli.main(["train", "--devices", "some"]) == 2
    assert "--devices must be 'all' or a positive number" in capsys.readouterr().err
    assert cli.main(["train", "--devices", "2", "--backend", "numpy"]) == 2
    assert "--devices needs the JAX backend" in capsys.readouterr().err


def test_bench_command_devices_errors(capsys):
    from backprop import cli

    assert cli.main(["bench", "--devices", "1,x"]) == 2
    assert "--devices must be device counts" in capsys.readouterr().err
    assert cli.main(["bench", "--devices", "1,2", "--backends", "numpy"]) == 2
    assert "JAX backend only" in capsys.readouterr().err


def test_load_with_devices_on_numpy_is_a_devices_error(tmp_path):
    trainer = Trainer(bp.MLP([3, 4, 2]), backend="numpy")
    trainer.save(tmp_path / "t.safetensors")
    with pytest.raises(ValueError, match="needs the JAX backend"):
        Trainer.load(tmp_path / "t.safetensors", backend="numpy", devices="all")
