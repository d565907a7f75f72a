"""Train a network: by default on scikit-learn's digits (no download), printing the test accuracy.

With --data FILE (.npz with X and y, or .csv with the target in the last column) it trains on
your data; --task says classification or regression (default: guessed from y).  Features are
standardised with the training split's mean and deviation (regression targets too).
--out DIR writes checkpoint.safetensors (every epoch, and when stopped with Ctrl-C or SIGTERM),
metrics.json and loss_curve.png.  SIGTERM (kill, a job scheduler) stops training like Ctrl-C: after
the current step, with a final checkpoint, exit code 130.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time

import numpy as np

from . import CommandError, positive_ints

MAX_PARAMETERS = 2**31  # more weights and biases than this are refused before anything is allocated


def add_arguments(parser) -> None:
    from ..core.activations import ACTIVATIONS

    parser.add_argument("--data", help="a .npz (X, y) or .csv (target last) file; default: the digits data set")
    parser.add_argument("--task", default="auto", help="classification, regression or auto (default)")
    parser.add_argument("--backend", help="numpy, cupy, jax or array_api_strict (default: $BACKPROP_BACKEND or numpy)")
    parser.add_argument("--hidden", default="128", help="hidden layer widths, comma-separated (default 128)")
    parser.add_argument("--activation", default="relu", help=f"hidden activation: {', '.join(ACTIVATIONS)}")
    parser.add_argument("--optimizer", default="adam", help="sgd, adam, adamw or rmsprop (default adam)")
    parser.add_argument("--lr", type=float, default=1e-3, help="learning rate (default 1e-3)")
    parser.add_argument("--epochs", type=int, default=30, help="epochs (default 30)")
    parser.add_argument("--batch-size", type=int, default=32, help="minibatch size (default 32)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the split, the weights and the shuffling")
    parser.add_argument("--test-size", type=float, default=0.2, help="held-out fraction (default 0.2)")
    parser.add_argument("--out", help="folder for checkpoint.safetensors, metrics.json and loss_curve.png")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--devices",
        help="data-parallel training on JAX: 'all' or N (the first N devices); "
        "--batch-size must be a multiple of the device count (implies --backend jax)",
    )


def _devices(text: str | None):
    """--devices as Trainer's ``devices``: None, "all" or a positive int."""
    if text is None:
        return None
    text = text.strip().lower()
    if text == "all":
        return "all"
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise CommandError(f"--devices must be 'all' or a positive number of devices, got {text!r}")


def _parameter_count(layer_sizes) -> int:
    return sum((fan_in + 1) * fan_out for fan_in, fan_out in zip(layer_sizes, layer_sizes[1:]))


@contextlib.contextmanager
def _sigterm_as_ctrl_c():
    """Within the block, SIGTERM does what Ctrl-C does: it calls SIGINT's Python handler (the
    trainer's deferred-interrupt flag during training, KeyboardInterrupt otherwise), or raises
    KeyboardInterrupt where SIGINT has none (ignored, as in a shell's background job: then the
    interrupt is not deferred to the end of a step).  The previous handler comes back afterwards.
    Outside the main thread, or when SIGTERM already has a handler or is ignored, nothing changes.
    """
    main_thread = threading.current_thread() is threading.main_thread()
    if not main_thread or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def terminate(signum, frame):
        handler = signal.getsignal(signal.SIGINT)
        if not callable(handler):
            raise KeyboardInterrupt
        handler(signal.SIGINT, frame)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _check_options(args) -> None:
    if not args.lr > 0:
        raise CommandError(f"--lr must be > 0, got {args.lr}")
    if args.epochs < 1:
        raise CommandError(f"--epochs must be >= 1, got {args.epochs}")
    if args.batch_size < 1:
        raise CommandError(f"--batch-size must be >= 1, got {args.batch_size}")
    if not 0 < args.test_size < 1:
        raise CommandError(f"--test-size must be between 0 and 1, got {args.test_size}")


def _plot(history: dict, path: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(
            'backprop train: matplotlib is missing, no loss_curve.png (pip install "backprop[plot]")', file=sys.stderr
        )
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in ("loss", "val_loss"):
        if key in history:
            ax.plot(range(1, len(history[key]) + 1), history[key], label=key)
    ax.set(xlabel="epoch", ylabel="loss per example", yscale="log", title="training loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _standardiser(scaler_class, A: np.ndarray, name: str):
    """A StandardScaler fitted to ``A``, after checking that standardising it stays finite: a column
    of finite values whose mean or variance overflows float64 (values near ±1e300) is refused
    with a CommandError naming it, rather than reported later as NaN or infinity."""
    with np.errstate(over="ignore", invalid="ignore"):
        scaler = scaler_class().fit(A)
        bad = ~(np.isfinite(scaler.mean_) & np.isfinite(scaler.scale_))
    if bad.any():
        columns = ", ".join(str(int(c) + 1) for c in np.flatnonzero(bad)[:5])
        largest = float(np.max(np.abs(A[:, bad])))
        raise CommandError(
            f"{name} cannot be standardised: column(s) {columns} hold values up to {largest:.3g} in magnitude, "
            "whose mean or variance overflows float64; rescale them"
        )
    return scaler


def run(args) -> int:
    with _sigterm_as_ctrl_c():
        return _run(args)


def _run(args) -> int:
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    from ..backends import get_backend
    from ..core.mlp import MLP
    from ..core.optim import get_optimizer
    from ..training.callbacks import ModelCheckpoint
    from ..training.trainer import Trainer
    from .data import digits, infer_task, load_file

    _check_options(args)
    hidden = positive_ints(args.hidden, "--hidden", "128,64")
    devices = _devices(getattr(args, "devices", None))
    backend_name = args.backend or ("jax" if devices is not None and not os.environ.get("BACKPROP_BACKEND") else None)
    backend = get_backend(backend_name)
    if devices is not None and backend.name != "jax":
        raise CommandError(
            "--devices needs the JAX backend (data-parallel training uses JAX's sharding), "
            f"but the backend is {backend.name!r} (--backend or BACKPROP_BACKEND)"
        )
    data = load_file(args.data) if args.data else digits()
    task = infer_task(data.y, args.task)
    classes = None
    if task == "classification":
        if data.y.ndim != 1:
            raise CommandError(f"classification needs one label per row; y has shape {data.y.shape}")
        classes, y = np.unique(data.y, return_inverse=True)
        if len(classes) < 2:
            raise CommandError(f"classification needs at least 2 classes, found {len(classes)}")
        n_out, loss, stratify = len(classes), "softmax_cross_entropy", y
    else:
        if data.y.dtype.kind not in "fiub":
            raise CommandError(f"regression needs a numeric target, got dtype {data.y.dtype}")
        y = data.y.astype(np.float64).reshape(len(data.y), -1)
        if not np.isfinite(y).all():
            raise CommandError("the target contains NaN or infinity")
        n_out, loss, stratify = y.shape[1], "squared_error", None
    try:
        X_train, X_test, y_train, y_test = train_test_split(
            data.X, y, test_size=args.test_size, random_state=args.seed, stratify=stratify
        )
    except ValueError as exc:
        raise CommandError(f"cannot split the data: {exc}") from None
    if min(len(X_train), len(X_test)) < 2:
        raise CommandError(
            f"too few samples ({len(data.X)}): --test-size {args.test_size} leaves "
            f"{len(X_train)} for training and {len(X_test)} for testing; each needs at least 2"
        )
    x_scaler = _standardiser(StandardScaler, X_train, "X")
    X_train, X_test = x_scaler.transform(X_train), x_scaler.transform(X_test)
    y_scaler = _standardiser(StandardScaler, y_train, "the target") if task == "regression" else None
    if y_scaler is not None:
        y_train = y_scaler.transform(y_train)

    layer_sizes = [data.X.shape[1], *hidden, n_out]
    parameters = _parameter_count(layer_sizes)
    if parameters > MAX_PARAMETERS:
        raise CommandError(
            f"the network {layer_sizes} would have {parameters:,} parameters, more than the "
            f"{MAX_PARAMETERS:,} (2**31) this command builds; make --hidden smaller"
        )
    try:
        model = MLP(layer_sizes, activation=args.activation, loss=loss)
        trainer = Trainer(
            model, get_optimizer(args.optimizer, lr=args.lr), backend=backend, seed=args.seed, devices=devices
        )
    except MemoryError as exc:
        raise CommandError(
            f"not enough memory for the network {layer_sizes} ({parameters:,} parameters)"
            + (f": {exc}" if str(exc) else "")
        ) from None
    if trainer.parallel is not None:
        print(f"data-parallel: {trainer.parallel}", file=sys.stderr)
    print(
        f"training {model.layer_sizes} {args.activation} on {data.name} ({len(X_train)} train / "
        f"{len(X_test)} test) with {backend.name} on {backend.device_name}, {backend.dtype_name}",
        file=sys.stderr,
    )
    start = time.perf_counter()
    callbacks = []
    if args.out:  # a checkpoint every epoch, and on Ctrl-C
        os.makedirs(args.out, exist_ok=True)
        callbacks.append(ModelCheckpoint(os.path.join(args.out, "checkpoint.safetensors")))
    history = trainer.fit(
        X_train,
        y_train,
        epochs=args.epochs,
        batch_size=args.batch_size,
        callbacks=callbacks,
        progress=not args.no_progress,
    )
    seconds = time.perf_counter() - start
    output = trainer.predict(X_test)
    if task == "classification":
        metrics = {"test_accuracy": float(np.mean(np.argmax(output, axis=1) == y_test))}
        print(f"test accuracy: {metrics['test_accuracy']:.4f}")
    else:
        pred = y_scaler.inverse_transform(output.astype(np.float64))  # back to the target's own scale, in float64
        residual, spread = float(np.sum((y_test - pred) ** 2)), float(np.sum((y_test - y_test.mean(axis=0)) ** 2))
        r2 = 1.0 - residual / spread if spread > 0 else None  # undefined for a constant test target
        metrics = {"test_r2": r2, "test_rmse": float(np.sqrt(residual / y_test.size))}
        print(f"test R^2: {'n/a' if r2 is None else f'{r2:.4f}'}  RMSE: {metrics['test_rmse']:.4g}")
    print(f"trained {trainer.epoch} epochs ({trainer.steps} steps) in {seconds:.1f} s", file=sys.stderr)

    if args.out:
        report = {
            "data": data.name,
            "task": task,
            "model": model.config,
            "optimizer": trainer.optimizer.config,
            "backend": {"name": backend.name, "device": backend.device_name, "dtype": backend.dtype_name},
            "epochs": trainer.epoch,
            "train_seconds": seconds,
            "history": history,
            "metrics": metrics,
            "classes": None if classes is None else classes.tolist(),
            "x_mean": x_scaler.mean_.tolist(),
            "x_scale": x_scaler.scale_.tolist(),
        }
        if y_scaler is not None:
            report.update(y_mean=y_scaler.mean_.tolist(), y_scale=y_scaler.scale_.tolist())
        with open(os.path.join(args.out, "metrics.json"), "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
        _plot(history, os.path.join(args.out, "loss_curve.png"))
        print(f"wrote {args.out}/checkpoint.safetensors, metrics.json, loss_curve.png", file=sys.stderr)
    return 0
