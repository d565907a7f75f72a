"""Training callbacks: hooks the Trainer calls around epochs and batches.

A callback may stop training by setting ``trainer.stop_training = True``.  The hooks receive the
trainer itself, so they can read ``trainer.params``, ``trainer.history``, ``trainer.epoch``.
"""

from __future__ import annotations

import math
import numbers
import os

import numpy as np

from ..core.validation import whole_number

LOGGED = ("loss", "accuracy", "val_loss", "val_accuracy")  # the history keys Trainer.fit logs


class Callback:
    """Base class: override any of the hooks (all do nothing by default)."""

    def on_train_begin(self, trainer) -> None: ...

    def on_epoch_begin(self, trainer, epoch: int) -> None: ...

    def on_batch_end(self, trainer, epoch: int, batch: int, loss: float) -> None: ...

    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None: ...

    def on_train_end(self, trainer) -> None: ...


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    ``monitor``: a history key of `LOGGED` ("val_loss" by default, falling back to "loss" without
    validation data; "accuracy"/"val_accuracy" are maximised, losses minimised, and refused when
    fit starts on a loss that logs no accuracy).  ``patience``: an integer >= 0; ``min_delta``:
    a finite number >= 0.  ``restore_best``: put the parameters of the best epoch back when
    training ends.
    """

    def __init__(
        self, monitor: str = "val_loss", patience: int = 10, min_delta: float = 0.0, restore_best: bool = True
    ):
        if not (isinstance(monitor, str) and monitor in LOGGED):
            raise ValueError(f"unknown monitor {monitor!r}; Trainer.fit logs {', '.join(LOGGED)}")
        patience = whole_number(patience, "patience", 0)
        real = isinstance(min_delta, numbers.Real) and not isinstance(min_delta, (bool, np.bool_))
        if not (real and math.isfinite(min_delta) and min_delta >= 0):
            raise ValueError(f"min_delta must be a finite number >= 0, got {min_delta!r}")
        self.monitor, self.patience, self.min_delta, self.restore_best = monitor, patience, min_delta, restore_best

    def on_train_begin(self, trainer) -> None:
        loss = trainer.model.loss_layer
        if "accuracy" in self.monitor and not loss.classification:
            raise ValueError(
                f"monitor {self.monitor!r} is not logged for the {loss.name} loss; Trainer.fit logs loss, val_loss"
            )
        self.best, self.best_params, self.best_epoch, self.wait = math.inf, None, None, 0

    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None:
        key = self.monitor if self.monitor in logs else "loss"
        sign = -1.0 if "accuracy" in key else 1.0
        value = sign * logs[key]
        if value < self.best - self.min_delta:
            self.best, self.best_params, self.best_epoch, self.wait = value, trainer.snapshot(), epoch, 0
        else:
            self.wait += 1
            if self.wait > self.patience:
                trainer.stop_training = True

    def on_train_end(self, trainer) -> None:
        if self.restore_best and self.best_params is not None:
            trainer.params = self.best_params


class ModelCheckpoint(Callback):
    """Save the trainer to ``path`` (a str or os.PathLike) every ``every`` epochs (an integer >= 1)
    and when training ends or is interrupted."""

    def __init__(self, path: str | os.PathLike, every: int = 1):
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
        self.path, self.every = path, whole_number(every, "every", 1)

    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None:
        if (epoch + 1) % self.every == 0:
            trainer.save(self.path)

    def on_train_end(self, trainer) -> None:
        trainer.save(self.path)
