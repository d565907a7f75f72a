"""The command line: `backprop train` (the main job) and `backprop check`."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys

import numpy as np
import pytest

from backprop.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_train_default_reaches_095_on_digits(capsys):
    code, out, err = run_cli(capsys, "train", "--no-progress")
    assert code == 0
    accuracy = float(re.search(r"test accuracy: ([0-9.]+)", out).group(1))
    assert accuracy >= 0.95
    assert "digits" in err and os.environ.get("BACKPROP_BACKEND", "numpy") in err  # the selected backend


def test_train_as_module_with_progress_bar_on_a_terminal():
    """The progress bar is drawn when stderr is a terminal (a pseudo-terminal here), not into a pipe."""
    pty = pytest.importorskip("pty")
    fcntl, termios = pytest.importorskip("fcntl"), pytest.importorskip("termios")
    env = {"PATH": "/usr/bin:/bin", "BACKPROP_BACKEND": "numpy"}
    argv = [sys.executable, "-m", "backprop", "train", "--epochs", "2"]
    piped = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    assert piped.returncode == 0, piped.stderr
    assert "test accuracy:" in piped.stdout and "loss=" not in piped.stderr  # no bar in a pipe or a log file

    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns: room for the bar
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=terminal, env=env)
    os.close(terminal)
    chunks = []
    while True:  # read the terminal until the child closes it (EIO), so that it never blocks on a full one
        try:
            chunk = os.read(controller, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(controller)
    out, _ = child.communicate(timeout=300)
    err = b"".join(chunks).decode(errors="replace")
    assert child.returncode == 0, err
    assert b"test accuracy:" in out
    assert "loss=" in err  # the tqdm bar with the loss in its postfix


def test_train_writes_checkpoint_metrics_and_plot(capsys, tmp_path):
    from backprop.training.trainer import Trainer

    code, out, _ = run_cli(
        capsys,
        "train",
        "--no-progress",
        "--epochs",
        "3",
        "--hidden",
        "32,16",
        "--optimizer",
        "sgd",
        "--lr",
        "0.1",
        "--out",
        str(tmp_path),
    )
    assert code == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["model"]["layer_sizes"] == [64, 32, 16, 10]
    assert metrics["optimizer"]["name"] == "sgd"
    assert len(metrics["history"]["loss"]) == 3
    assert metrics["metrics"]["test_accuracy"] == pytest.approx(
        float(re.search(r"accuracy: ([0-9.]+)", out).group(1)), abs=1e-4
    )
    assert (tmp_path / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "scaler.json").read_text())["x_mean"] == metrics["x_mean"]
    trainer = Trainer.load(tmp_path / "checkpoint.safetensors")
    assert trainer.epoch == 3 and trainer.model.layer_sizes == (64, 32, 16, 10)


def test_train_on_csv_regression(capsys, tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 3))
    y = X @ np.array([1.5, -2.0, 0.5]) + 0.1 * rng.normal(size=300)
    path = tmp_path / "data.csv"
    path.write_text("a,b,c,target\n" + "\n".join(",".join(f"{v:.6f}" for v in row) for row in np.c_[X, y]))
    code, out, _ = run_cli(
        capsys, "train", "--no-progress", "--data", str(path), "--epochs", "60", "--lr", "0.01", "--hidden", "16"
    )
    assert code == 0
    assert float(re.search(r"test R\^2: ([-0-9.]+)", out).group(1)) > 0.95


def test_csv_with_a_byte_order_mark_keeps_every_row(tmp_path):
    """Excel's "CSV UTF-8" starts with a byte-order mark: stripped, so the first row is data, not a header;
    a header of names is skipped."""
    from backprop.cli.data import load_file

    rows = [[i, 2.0 * i, i % 2] for i in range(60)]
    body = "\n".join(",".join(str(v) for v in row) for row in rows) + "\n"
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf" + body.encode())
    (tmp_path / "header.csv").write_bytes(b"\xef\xbb\xbfx1,x2,label\n" + body.encode())
    for name in ("bom.csv", "header.csv"):
        data = load_file(tmp_path / name)
        assert data.X.shape == (60, 2) and data.X[0].tolist() == [0.0, 0.0] and data.y[-1] == 1


def test_train_on_npz_classification(capsys, tmp_path):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 2))
    y = np.where(X[:, 0] + X[:, 1] > 0, "pos", "neg")
    np.savez(tmp_path / "d.npz", X=X, y=y)
    code, out, _ = run_cli(
        capsys, "train", "--no-progress", "--data", str(tmp_path / "d.npz"), "--epochs", "20", "--backend", "numpy"
    )
    assert code == 0
    assert float(re.search(r"test accuracy: ([0-9.]+)", out).group(1)) >= 0.9


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "empty"),
        ("a,b,y\n1,2,3\n4,x,6\n", "line 3, column 2: 'x' is not a number"),
        ("1,2,3\n4,5\n", "line 2 has 2 columns, expected 3"),
        ("1\n2\n3\n", "at least 2 columns"),
        ("a,b,y\n", "header but no data"),
        # a first row that does not parse is no header unless every cell is a name: never dropped silently
        ("1,,3\n" + "4,5,6\n" * 5, "line 1, column 2: '' is not a number"),
        ("1,NA,3\n" + "4,5,6\n" * 5, "line 1, column 2: 'NA' is not a number"),
        ("1,2,3x\n" + "4,5,6\n" * 5, "line 1, column 3: '3x' is not a number"),
        ("a,b,y\n1,2,3\n4,,6\n", "line 3, column 2: '' is not a number"),
        (b"\xff\xfe1,2,3\n", "not UTF-8 text"),
    ],
)
def test_bad_csv_gives_one_line_and_exit_2(capsys, tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    code, out, err = run_cli(capsys, "train", "--no-progress", "--data", str(path))
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--data", "/nonexistent.csv"], "no such file"),
        (["--data", "README.md"], "unsupported file type"),
        (["--hidden", "12,x"], "--hidden must be"),
        (["--lr", "-1"], "--lr must be > 0"),
        (["--epochs", "0"], "--epochs must be >= 1"),
        (["--batch-size", "0"], "--batch-size must be >= 1"),
        (["--activation", "swoosh"], "unknown activation"),
        (["--optimizer", "lion"], "sgd"),
        (["--backend", "tensorflow"], "unknown backend"),
        (["--task", "ranking"], "unknown task"),
    ],
)
def test_bad_options_give_one_line_and_exit_2(capsys, argv, message):
    code, _, err = run_cli(capsys, "train", "--no-progress", *argv)
    assert code == 2
    assert message in err and err.count("\n") == 1


def test_npz_without_y_is_refused(capsys, tmp_path):
    np.savez(tmp_path / "d.npz", X=np.zeros((4, 2)))
    code, _, err = run_cli(capsys, "train", "--data", str(tmp_path / "d.npz"))
    assert code == 2 and "missing array(s) y" in err


def test_check_passes_and_prints_a_table(capsys):
    code, out, _ = run_cli(capsys, "check", "--backend", "numpy", "--cases", "9")
    assert code == 0
    assert "9/9 architectures agree" in out
    assert len([line for line in out.splitlines() if line.rstrip().endswith(" ok")]) == 9


def test_check_exits_1_on_a_mismatch(capsys, monkeypatch):
    from backprop.core import activations

    broken = activations.ACTIVATIONS["tanh"]
    monkeypatch.setitem(
        activations.ACTIVATIONS, "tanh", activations.Activation("tanh", broken.f, lambda xp, z, h: 1.0 - h, broken.init)
    )
    code, out, _ = run_cli(capsys, "check", "--backend", "numpy", "--cases", "9")
    assert code == 1 and "MISMATCH" in out


def test_no_command_prints_help_to_stderr_and_exits_2(capsys):
    code, out, err = run_cli(capsys)
    assert code == 2 and out == ""
    assert "usage: backprop" in err and "train" in err and "check" in err and "info" in err


def test_values_too_large_to_standardise_are_named(capsys, tmp_path):
    """A finite column near ±1e300 overflows standardisation: one line naming the column, not "NaN or infinity"."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    X[:, 1] = np.where(rng.random(60) > 0.5, 1e300, -1e300)
    np.savetxt(tmp_path / "big.csv", np.c_[X, rng.integers(0, 2, 60)], delimiter=",")
    code, out, err = run_cli(capsys, "train", "--no-progress", "--data", str(tmp_path / "big.csv"))
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "X cannot be standardised: column(s) 2 hold values up to 1e+300" in err


def test_a_regression_target_beyond_float32_is_scored_on_its_own_scale(capsys, tmp_path):
    """Targets near 1e39 (beyond float32) train on their standardised form and are scored in float64."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 3))
    y = (X @ np.array([1.0, -2.0, 0.5]) + 0.05 * rng.normal(size=200)) * 1e39
    np.savetxt(tmp_path / "bigy.csv", np.c_[X, y], delimiter=",")
    code, out, _ = run_cli(
        capsys,
        "train",
        "--no-progress",
        "--data",
        str(tmp_path / "bigy.csv"),
        "--epochs",
        "60",
        "--lr",
        "0.01",
        "--hidden",
        "16",
        "--task",
        "regression",
    )
    assert code == 0
    r2, rmse = re.search(r"test R\^2: ([-0-9.]+)  RMSE: (\S+)", out).groups()
    assert float(r2) > 0.9 and np.isfinite(float(rmse))
