"""Train a network: by default on scikit-learn's digits (no download), printing the test accuracy.

With --data FILE (.npz with X and y, or .csv with the target in the last column) it trains on
your data; --task says classification or regression (default: guessed from y).  Features are
standardised with the training split's mean and deviation (regression targets too).
--out DIR writes scaler.json (the task, split, batch size and standardisation, before training),
checkpoint.safetensors (every epoch, and when stopped with Ctrl-C or SIGTERM; the standardisation is
saved in it, so Trainer.load(...).predict(raw X) gives this command's predictions), metrics.json and,
with matplotlib, loss_curve.png.  SIGTERM (kill, a job scheduler) stops training like Ctrl-C: after
the current step, with a final checkpoint, exit code 130.  --resume DIR/checkpoint.safetensors
continues such a run on the same --data up to --epochs epochs in all: the network, optimizer, task,
split (--seed, --test-size), --batch-size and scaling come from the checkpoint and the scaler.json
beside it; --out defaults to the checkpoint's folder.  The progress bar shows only on a terminal.
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
    parser.add_argument(
        "--backend", help="numpy, cupy, jax, torch or array_api_strict (default: $BACKPROP_BACKEND or numpy)"
    )
    parser.add_argument("--hidden", default="128", help="hidden layer widths, comma-separated (default 128)")
    parser.add_argument("--activation", default="relu", help=f"hidden activation: {', '.join(ACTIVATIONS)}")
    parser.add_argument("--optimizer", default="adam", help="sgd, adam, adamw or rmsprop (default adam)")
    parser.add_argument("--lr", type=float, default=1e-3, help="learning rate (default 1e-3)")
    parser.add_argument("--epochs", type=int, default=30, help="epochs (default 30)")
    parser.add_argument("--batch-size", type=int, default=32, help="minibatch size (default 32)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the split, the weights and the shuffling")
    parser.add_argument("--test-size", type=float, default=0.2, help="held-out fraction (default 0.2)")
    parser.add_argument("--out", help="folder for checkpoint.safetensors, scaler.json, metrics.json and loss_curve.png")
    parser.add_argument(
        "--resume",
        metavar="CHECKPOINT",
        help="continue the run that --out wrote this checkpoint for (same --data), up to --epochs epochs in all",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (default: none unless a terminal)")
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


def _is_terminal(stream) -> bool:
    """Whether ``stream`` is a terminal (False for a pipe, a file, a captured or closed stream)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _plot(history: dict, path: str) -> bool:
    """Draw the loss curve to ``path``; True when it was written.  Without matplotlib, or when drawing
    fails, one line on stderr says so and nothing is written (a partial file is removed)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(
            'backprop train: matplotlib is not installed: pip install "backprop[plot]"; no loss_curve.png',
            file=sys.stderr,
        )
        return False
    try:
        fig, ax = plt.subplots(figsize=(6, 4))
        try:
            for key in ("loss", "val_loss"):
                if key in history:
                    ax.plot(range(1, len(history[key]) + 1), history[key], label=key)
            ax.set(xlabel="epoch", ylabel="loss per example", yscale="log", title="training loss")
            ax.legend()
            fig.tight_layout()
            fig.savefig(path, dpi=100)
        finally:
            plt.close(fig)
    except Exception as exc:  # a drawing or writing failure costs the plot, not the run's other files
        with contextlib.suppress(OSError):
            os.remove(path)
        print(f"backprop train: could not draw loss_curve.png: {type(exc).__name__}: {exc}", file=sys.stderr)
        return False
    return True


def _restored_scaler(mean, scale):
    """scikit-learn's StandardScaler with the mean and scale saved in scaler.json set as its fitted
    state, so it transforms exactly as the scaler fitted by the interrupted run did."""
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler()
    scaler.mean_, scaler.scale_ = np.asarray(mean, dtype=np.float64), np.asarray(scale, dtype=np.float64)
    scaler.var_, scaler.n_features_in_ = scaler.scale_**2, len(scaler.mean_)
    return scaler


SCALER_FILE = "scaler.json"  # beside checkpoint.safetensors: what --resume needs besides the trainer


def _read_saved_run(checkpoint_path: str) -> dict:
    """The scaler.json beside ``checkpoint_path`` (a CommandError when it is missing or unusable)."""
    path = os.path.join(os.path.dirname(os.path.abspath(checkpoint_path)), SCALER_FILE)
    if not os.path.isfile(checkpoint_path):
        raise CommandError(f"--resume {checkpoint_path}: no such file")
    try:
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
        if saved.get("task") not in ("classification", "regression"):
            raise ValueError(f"unknown task {saved.get('task')!r}")
        needed = ["seed", "test_size", "batch_size", "classes", "x_mean", "x_scale"]
        needed += ["y_mean", "y_scale"] if saved["task"] == "regression" else []
        missing = [key for key in needed if key not in saved]
        if missing:
            raise KeyError(", ".join(missing))
    except FileNotFoundError:
        raise CommandError(
            f"--resume needs the {SCALER_FILE} that --out wrote beside the checkpoint; {path} does not exist"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CommandError(f"{path} is not a usable {SCALER_FILE}: {type(exc).__name__}: {exc}") from None
    return saved


def _split_error(exc: ValueError, y: np.ndarray, classes, guessed: str | None) -> CommandError:
    """The one-line error for a train/test split that fails.  For classification, classes with a single
    row are counted rather than listed; when the task was guessed from whole-number targets (``guessed``:
    the data's name), the line ends with the hint that --task regression exists."""
    if classes is None:
        return CommandError(f"cannot split the data: {exc}")
    counts = np.bincount(y, minlength=len(classes))
    single = int(np.sum(counts < 2))
    if guessed is not None:
        reason = f"{single} of them on a single row" if single else str(exc).rstrip(".")
        return CommandError(
            f"cannot split the data by class: the target of {guessed} looks like {len(classes)} distinct "
            f"whole-number classes ({reason}); if this is a regression target, pass --task regression"
        )
    if single:
        examples = ", ".join(str(c) for c in classes[counts < 2][:5]) + (", ..." if single > 5 else "")
        return CommandError(
            f"cannot split the data: {single} of the {len(classes)} classes have a single row ({examples}); "
            "each class needs at least 2"
        )
    return CommandError(f"cannot split the data: {exc}")


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
    from ..training.scaling import Scaling
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
    resume = getattr(args, "resume", None)
    saved = _read_saved_run(resume) if resume else None
    trainer = Trainer.load(resume, backend=backend, devices=devices) if resume else None
    seed, test_size, batch_size = (
        (saved["seed"], saved["test_size"], saved["batch_size"])
        if saved
        else (args.seed, args.test_size, args.batch_size)
    )
    data = load_file(args.data) if args.data else digits()
    task = saved["task"] if saved else infer_task(data.y, args.task)
    guessed = args.task == "auto" and not saved and task == "classification" and data.y.dtype.kind in "fiu"
    classes = None
    if task == "classification":
        if data.y.ndim != 1:
            raise CommandError(f"classification needs one label per row; y has shape {data.y.shape}")
        classes, y = np.unique(data.y, return_inverse=True)
        if len(classes) < 2:
            raise CommandError(f"classification needs at least 2 classes, found {len(classes)}")
        n_out, loss, stratify = len(classes), "softmax_cross_entropy", y
        if saved and classes.tolist() != saved["classes"]:
            raise CommandError(
                f"--resume: the classes of {data.name} differ from those of the run being resumed; give the same --data"
            )
    else:
        if data.y.dtype.kind not in "fiub":
            raise CommandError(f"regression needs a numeric target, got dtype {data.y.dtype}")
        y = data.y.astype(np.float64).reshape(len(data.y), -1)
        if not np.isfinite(y).all():
            raise CommandError("the target contains NaN or infinity")
        n_out, loss, stratify = y.shape[1], "squared_error", None
    try:
        X_train, X_test, y_train, y_test = train_test_split(
            data.X, y, test_size=test_size, random_state=seed, stratify=stratify
        )
    except ValueError as exc:
        raise _split_error(exc, y, classes, data.name if guessed else None) from None
    if min(len(X_train), len(X_test)) < 2:
        raise CommandError(
            f"too few samples ({len(data.X)}): --test-size {test_size} leaves "
            f"{len(X_train)} for training and {len(X_test)} for testing; each needs at least 2"
        )
    if saved:  # the scaling of the run being resumed, not one refitted
        x_scaler = _restored_scaler(saved["x_mean"], saved["x_scale"])
        y_scaler = _restored_scaler(saved["y_mean"], saved["y_scale"]) if task == "regression" else None
        if x_scaler.mean_.shape != (data.X.shape[1],) or (y_scaler and y_scaler.mean_.shape != (n_out,)):
            raise CommandError(f"--resume: {data.name} does not have the columns of the run being resumed")
    else:
        x_scaler = _standardiser(StandardScaler, X_train, "X")
        y_scaler = _standardiser(StandardScaler, y_train, "the target") if task == "regression" else None

    if trainer is not None:
        _check_resumed(trainer, [data.X.shape[1], n_out], loss, args.epochs, resume)
    layer_sizes = [data.X.shape[1], *hidden, n_out] if trainer is None else list(trainer.model.layer_sizes)
    parameters = _parameter_count(layer_sizes)
    if parameters > MAX_PARAMETERS:
        raise CommandError(
            f"the network {layer_sizes} would have {parameters:,} parameters, more than the "
            f"{MAX_PARAMETERS:,} (2**31) this command builds; make --hidden smaller"
        )
    try:
        if trainer is None:
            model = MLP(layer_sizes, activation=args.activation, loss=loss)
            trainer = Trainer(
                model, get_optimizer(args.optimizer, lr=args.lr), backend=backend, seed=args.seed, devices=devices
            )
        model = trainer.model
        # the trainer standardises what goes in (and the target), and the checkpoint keeps it:
        # Trainer.load(checkpoint).predict(raw X) gives this run's predictions
        y_fields = () if y_scaler is None else (y_scaler.mean_, y_scaler.scale_)
        trainer.scaling = Scaling.of(x_scaler.mean_, x_scaler.scale_, *y_fields)
    except MemoryError as exc:
        raise CommandError(
            f"not enough memory for the network {layer_sizes} ({parameters:,} parameters)"
            + (f": {exc}" if str(exc) else "")
        ) from None
    if trainer.parallel is not None:
        print(f"data-parallel: {trainer.parallel}", file=sys.stderr)
    first_epoch = trainer.epoch
    print(
        f"training {model.layer_sizes} {model.activation.name} on {data.name} ({len(X_train)} train / "
        f"{len(X_test)} test) with {backend.name} on {backend.device_name}, {backend.dtype_name}"
        + (f", resuming after epoch {first_epoch}" if resume else ""),
        file=sys.stderr,
    )
    start = time.perf_counter()
    callbacks = []
    out = args.out or (os.path.dirname(os.path.abspath(resume)) if resume else None)
    checkpoint_path = os.path.join(out, "checkpoint.safetensors") if out else None
    if out:  # a checkpoint every epoch, and on Ctrl-C, and before that what --resume needs besides it
        os.makedirs(out, exist_ok=True)
        run_file = {"data": data.name, "task": task, "seed": seed, "test_size": test_size, "batch_size": batch_size}
        run_file.update(classes=None if classes is None else classes.tolist(), **_scaler_fields(x_scaler, y_scaler))
        with open(os.path.join(out, SCALER_FILE), "w", encoding="utf-8") as f:
            json.dump(run_file, f, indent=2)
        callbacks.append(ModelCheckpoint(checkpoint_path))
    try:
        history = trainer.fit(
            X_train,
            y_train,
            epochs=args.epochs - first_epoch,
            batch_size=batch_size,
            callbacks=callbacks,
            progress=not args.no_progress and _is_terminal(sys.stderr),
        )
    except KeyboardInterrupt:
        if checkpoint_path and os.path.isfile(checkpoint_path):
            again = f"backprop train --resume {checkpoint_path}" + (f" --data {args.data}" if args.data else "")
            print(
                f"backprop train: saved {checkpoint_path} after epoch {trainer.epoch}; continue with: "
                f"{again} --epochs {args.epochs}",
                file=sys.stderr,
            )
        raise
    seconds = time.perf_counter() - start
    output = trainer.predict(X_test)
    if task == "classification":
        metrics = {"test_accuracy": float(np.mean(np.argmax(output, axis=1) == y_test))}
        print(f"test accuracy: {metrics['test_accuracy']:.4f}")
    else:
        pred = output  # in the target's own units (the trainer's scaling), float64
        residual, spread = float(np.sum((y_test - pred) ** 2)), float(np.sum((y_test - y_test.mean(axis=0)) ** 2))
        r2 = 1.0 - residual / spread if spread > 0 else None  # undefined for a constant test target
        metrics = {"test_r2": r2, "test_rmse": float(np.sqrt(residual / y_test.size))}
        print(f"test R^2: {'n/a' if r2 is None else f'{r2:.4f}'}  RMSE: {metrics['test_rmse']:.4g}")
    if resume:
        done = f"{trainer.epoch - first_epoch} more epochs in {seconds:.1f} s "
        done += f"({trainer.epoch} epochs, {trainer.steps} steps in all)"
    else:
        done = f"{trainer.epoch} epochs ({trainer.steps} steps) in {seconds:.1f} s"
    print(f"trained {done}", file=sys.stderr)

    if out:
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
            **_scaler_fields(x_scaler, y_scaler),
        }
        with open(os.path.join(out, "metrics.json"), "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
        written = ["checkpoint.safetensors", SCALER_FILE, "metrics.json"]
        if _plot(history, os.path.join(out, "loss_curve.png")):
            written.append("loss_curve.png")
        print(f"wrote {os.path.join(out, written[0])}, {', '.join(written[1:])}", file=sys.stderr)
    return 0


def _scaler_fields(x_scaler, y_scaler) -> dict:
    """x_mean, x_scale (and y_mean, y_scale for regression) as JSON lists: floats round-trip exactly."""
    fields = {"x_mean": x_scaler.mean_.tolist(), "x_scale": x_scaler.scale_.tolist()}
    if y_scaler is not None:
        fields.update(y_mean=y_scaler.mean_.tolist(), y_scale=y_scaler.scale_.tolist())
    return fields


def _check_resumed(trainer, ends: list[int], loss: str, epochs: int, path: str) -> None:
    """A CommandError unless the resumed network fits the data (inputs, outputs, loss) and has epochs left."""
    model = trainer.model
    if [model.layer_sizes[0], model.layer_sizes[-1]] != ends or model.loss_layer.name != loss:
        raise CommandError(
            f"--resume: the checkpoint's network {list(model.layer_sizes)} ({model.loss_layer.name}) does not fit "
            f"this data ({ends[0]} features, {ends[1]} outputs, {loss}); give the same --data as the run being resumed"
        )
    if epochs <= trainer.epoch:
        raise CommandError(
            f"--resume: {path} has already trained {trainer.epoch} epochs; pass --epochs above {trainer.epoch}"
        )
