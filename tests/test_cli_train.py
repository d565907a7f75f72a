"""`backprop train` for a newcomer: the files it reports, the progress bar, a whole-number regression
target, class names in a CSV, and resuming a run after Ctrl-C."""

from __future__ import annotations

import json
import re
import sys

import numpy as np
import pytest

from backprop.cli import main


def run_cli(capsys, *argv):
    code = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


def wrote_line(err: str) -> str:
    return next(line for line in err.splitlines() if line.startswith("wrote "))


QUICK = ("--no-progress", "--epochs", "2", "--hidden", "8")


# -- 1. the files --out reports are the files it wrote ------------------------------------------------


def test_without_matplotlib_the_plot_is_skipped_in_one_line_and_not_reported(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now fails
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    code, _, err = run_cli(capsys, "train", *QUICK, "--out", tmp_path)
    assert code == 0
    assert 'backprop train: matplotlib is not installed: pip install "backprop[plot]"; no loss_curve.png\n' in err, err
    assert "loss_curve.png" not in wrote_line(err)
    assert "checkpoint.safetensors" in wrote_line(err) and "metrics.json" in wrote_line(err)
    assert (tmp_path / "checkpoint.safetensors").is_file() and (tmp_path / "metrics.json").is_file()
    assert not (tmp_path / "loss_curve.png").exists()


def test_a_plot_that_fails_to_draw_is_reported_and_not_claimed(capsys, monkeypatch, tmp_path):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    def broken_savefig(self, path, **kwargs):
        with open(path, "wb") as f:
            f.write(b"\x89PNG half")  # a partial file, then the failure
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    code, _, err = run_cli(capsys, "train", *QUICK, "--out", tmp_path)
    assert code == 0
    assert "backprop train: could not draw loss_curve.png: OSError: disk full\n" in err
    assert "loss_curve.png" not in wrote_line(err)
    assert not (tmp_path / "loss_curve.png").exists() and (tmp_path / "metrics.json").is_file()


def test_the_plot_is_reported_when_drawn(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    code, _, err = run_cli(capsys, "train", *QUICK, "--out", tmp_path)
    assert code == 0
    assert wrote_line(err) == f"wrote {tmp_path}/checkpoint.safetensors, scaler.json, metrics.json, loss_curve.png"
    assert (tmp_path / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- 2. the progress bar is for terminals ----------------------------------------------------------------


def test_no_progress_bar_when_stderr_is_not_a_terminal(capsys):
    code, _, err = run_cli(capsys, "train", "--epochs", "2", "--hidden", "8")  # no --no-progress
    assert code == 0
    assert "loss=" not in err and "step/s" not in err and "\r" not in err


# -- 3. a regression target of whole numbers ----------------------------------------------------------


@pytest.fixture
def diabetes_csv(tmp_path):
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True)  # 442 rows, targets 25..346: 214 distinct whole numbers
    path = tmp_path / "diabetes.csv"
    np.savetxt(path, np.c_[X, y], delimiter=",", header=",".join([f"x{i}" for i in range(10)] + ["y"]), comments="")
    return path


def test_whole_number_regression_target_points_to_task_regression(capsys, diabetes_csv):
    code, out, err = run_cli(capsys, "train", "--no-progress", "--data", diabetes_csv)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "looks like 214 distinct whole-number classes (84 of them on a single row)" in err
    assert err.rstrip().endswith("if this is a regression target, pass --task regression")
    assert "[0, 1, 2" not in err  # no list of class indices


def test_whole_number_regression_target_trains_with_task_regression(capsys, diabetes_csv):
    code, out, _ = run_cli(capsys, "train", *QUICK, "--data", diabetes_csv, "--task", "regression")
    assert code == 0 and "test R^2:" in out


def test_explicit_classification_with_single_row_classes_counts_them(capsys, diabetes_csv):
    code, _, err = run_cli(capsys, "train", "--no-progress", "--data", diabetes_csv, "--task", "classification")
    assert code == 2 and err.count("\n") == 1
    assert "84 of the 214 classes have a single row (25.0, 31.0, 37.0, 40.0, 43.0, ...); each class needs" in err
    assert "--task regression" not in err  # the user chose classification


# -- 4. class names in a CSV ----------------------------------------------------------------------------


def _labelled_rows(n=200, seed=1):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    return X, np.where(X[:, 0] + X[:, 1] > 0, "cat", "dog")


def test_csv_with_class_names_trains_like_npz(capsys, tmp_path):
    X, labels = _labelled_rows()
    path = tmp_path / "pets.csv"
    path.write_text("x1,x2,label\n" + "".join(f"{a:.6f},{b:.6f},{c}\n" for (a, b), c in zip(X, labels)))
    code, out, _ = run_cli(capsys, "train", "--no-progress", "--data", path, "--epochs", "20", "--out", tmp_path)
    assert code == 0
    assert float(re.search(r"test accuracy: ([0-9.]+)", out).group(1)) >= 0.9
    assert json.loads((tmp_path / "metrics.json").read_text())["classes"] == ["cat", "dog"]


def test_csv_class_names_are_read_as_strings(tmp_path):
    from backprop.cli.data import load_file

    (tmp_path / "a.csv").write_text('1,2,cat\n3, 4 , dog\n5,6,"big cat"\n')  # no header, spaces, a quoted name
    data = load_file(tmp_path / "a.csv")
    assert data.X.tolist() == [[1, 2], [3, 4], [5, 6]] and data.X.dtype == np.float64
    assert data.y.tolist() == ["cat", "dog", "big cat"]


@pytest.mark.parametrize(
    "content, message",
    [
        ("a,b,y\n1,2,cat\n4,x,dog\n", "line 3, column 2: 'x' is not a number"),  # a bad feature, as before
        ("a,b,y\n1,2,cat\n4,,dog\n", "line 3, column 2: '' is not a number"),
        ("a,b,y\n1,2,3.5\n4,5,NA\n", "line 3, column 3: 'NA' is not a number"),  # a missing number, not a class
        ("a,b,y\n1,2,cat\n4,5,6,dog\n", "line 3 has 4 columns, expected 3"),
    ],
)
def test_csv_with_text_keeps_its_one_line_errors(capsys, tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    code, _, err = run_cli(capsys, "train", "--no-progress", "--data", path)
    assert code == 2 and err.count("\n") == 1
    assert message in err


# -- 5. resuming a run -----------------------------------------------------------------------------------


def _regression_csv(path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 3)) * [1.0, 10.0, 100.0] + 5.0
    y = X @ np.array([1.5, -0.2, 0.01]) + 0.1 * rng.normal(size=120)
    np.savetxt(path, np.c_[X, y], delimiter=",")
    return path


def _final_params(path):
    from backprop.training.trainer import Trainer

    trainer = Trainer.load(path, backend="numpy")
    return trainer.epoch, [np.asarray(a) for layer in trainer.params for a in layer]


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_interrupted_run_resumes_to_the_same_result(capsys, monkeypatch, tmp_path, task):
    """Ctrl-C after epoch 2 of 5, then --resume up to 5 epochs: the same weights as 5 epochs in one go."""
    from backprop.training.callbacks import ModelCheckpoint

    data = () if task == "classification" else ("--data", _regression_csv(tmp_path / "r.csv"))
    common = ["train", "--no-progress", "--backend", "numpy", *data]
    argv = [*common, "--hidden", "16", "--batch-size", "16"]
    code, _, _ = run_cli(capsys, *argv, "--epochs", "5", "--out", tmp_path / "straight")
    assert code == 0

    save = ModelCheckpoint.on_epoch_end

    def ctrl_c_after_epoch_2(self, trainer, epoch, logs):
        save(self, trainer, epoch, logs)
        if trainer.epoch == 2:
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(ModelCheckpoint, "on_epoch_end", ctrl_c_after_epoch_2)
        code, _, err = run_cli(capsys, *argv, "--epochs", "5", "--out", tmp_path / "run")
    checkpoint = tmp_path / "run" / "checkpoint.safetensors"
    assert code == 130 and err.endswith("backprop train: interrupted\n")
    hint = f"continue with: backprop train --resume {checkpoint}"
    assert hint in err and "--epochs 5\n" in err
    assert _final_params(checkpoint)[0] == 2 and (tmp_path / "run" / "scaler.json").is_file()

    # the network, split and batch size are the interrupted run's: other --hidden, --batch-size, --seed ignored
    resumed = [*common, "--hidden", "4", "--batch-size", "64", "--seed", "7", "--test-size", "0.5"]
    code, _, err = run_cli(capsys, *resumed, "--epochs", "5", "--resume", checkpoint)
    assert code == 0, err
    assert "resuming after epoch 2" in err and "trained 3 more epochs" in err and "(5 epochs, " in err
    epochs, params = _final_params(checkpoint)
    straight_epochs, straight = _final_params(tmp_path / "straight" / "checkpoint.safetensors")
    assert epochs == straight_epochs == 5
    for a, b in zip(params, straight):
        np.testing.assert_array_equal(a, b)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    reference = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    assert metrics["metrics"] == reference["metrics"] and len(metrics["history"]["loss"]) == 5


def test_scaler_json_holds_the_scaling_and_resume_uses_it(capsys, tmp_path):
    data = _regression_csv(tmp_path / "r.csv")
    code, _, _ = run_cli(capsys, "train", *QUICK, "--data", data, "--out", tmp_path / "run")
    assert code == 0
    scaler_path = tmp_path / "run" / "scaler.json"
    saved = json.loads(scaler_path.read_text())
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for key in ("x_mean", "x_scale", "y_mean", "y_scale"):
        assert saved[key] == metrics[key]
    assert saved["task"] == "regression" and saved["seed"] == 0 and saved["test_size"] == 0.2

    saved["x_mean"] = [m + 1.0 for m in saved["x_mean"]]  # a resumed run scales with these, not refitted ones
    scaler_path.write_text(json.dumps(saved))
    code, _, err = run_cli(
        capsys,
        "train",
        "--no-progress",
        "--data",
        data,
        "--epochs",
        "3",
        "--resume",
        tmp_path / "run" / "checkpoint.safetensors",
    )
    assert code == 0, err
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["x_mean"] == saved["x_mean"]


@pytest.mark.parametrize(
    "setup, extra, message",
    [
        ("no-scaler", [], "--resume needs the scaler.json that --out wrote beside the checkpoint"),
        ("", ["--epochs", "2"], "has already trained 2 epochs; pass --epochs above 2"),
        ("", ["--epochs", "4", "--data", "REGRESSION"], "differ from those of the run being resumed"),
        ("", ["--epochs", "4", "--resume", "MISSING"], "no such file"),
    ],
)
def test_resume_errors_are_one_line(capsys, tmp_path, setup, extra, message):
    code, _, _ = run_cli(capsys, "train", *QUICK, "--out", tmp_path / "run")
    assert code == 0
    if setup == "no-scaler":
        (tmp_path / "run" / "scaler.json").unlink()
    extra = [
        {"REGRESSION": _regression_csv(tmp_path / "r.csv"), "MISSING": tmp_path / "nothing.safetensors"}.get(a, a)
        for a in extra
    ]
    code, _, err = run_cli(
        capsys, "train", "--no-progress", "--resume", tmp_path / "run" / "checkpoint.safetensors", *extra
    )
    assert code == 2 and err.count("\n") == 1 and err.startswith("backprop train: error: ")
    assert message in err
