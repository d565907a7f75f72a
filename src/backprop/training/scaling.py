"""Standardisation that travels with a trainer: raw data in, the network's units inside.

A `Scaling` holds per-column means μ and scales σ (σ > 0) of the inputs and, for regression,
of the targets.  With ``Trainer.scaling`` set, every entry point takes raw data:

    x' = (x − μ_x) / σ_x            the network's input (fit, train_step, evaluate, predict)
    y' = (y − μ_y) / σ_y            the squared error's target (fit, train_step, evaluate)
    ŷ  = ŷ' σ_y + μ_y               what `Trainer.predict` returns for regression

so a checkpoint (`Trainer.save` stores the scaling with the weights) predicts on raw data as the
run that wrote it did.  ``evaluate``'s loss is in the standardised units the network trains in.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from array_api_compat import device as device_of

FIELDS = ("x_mean", "x_scale", "y_mean", "y_scale")


class Scaling(NamedTuple):
    """Means and scales (1-D float64 NumPy arrays); ``y_mean``/``y_scale`` None unless regression."""

    x_mean: np.ndarray
    x_scale: np.ndarray
    y_mean: np.ndarray | None = None
    y_scale: np.ndarray | None = None

    @classmethod
    def of(cls, x_mean, x_scale, y_mean=None, y_scale=None) -> Scaling:
        """A checked Scaling: 1-D finite means, finite positive scales of matching lengths."""
        if (y_mean is None) != (y_scale is None):
            raise ValueError("scaling: give both y_mean and y_scale, or neither")
        arrays = []
        for name, value in zip(FIELDS, (x_mean, x_scale, y_mean, y_scale)):
            if value is None:
                arrays.append(None)
                continue
            a = np.array(value, dtype=np.float64).reshape(-1) if np.ndim(value) <= 1 else None
            if a is None or a.size == 0:
                raise ValueError(f"scaling: {name} must be a non-empty 1-D array, got shape {np.shape(value)}")
            if not np.isfinite(a).all() or (name.endswith("scale") and not (a > 0).all()):
                raise ValueError(f"scaling: {name} must be finite" + (" and > 0" if name.endswith("scale") else ""))
            arrays.append(a)
        if arrays[0].shape != arrays[1].shape or (arrays[2] is not None and arrays[2].shape != arrays[3].shape):
            raise ValueError("scaling: each mean must have as many entries as its scale")
        return cls(*arrays)

    def check(self, n_inputs: int, n_outputs: int, regression: bool) -> None:
        """ValueError unless it fits a network of ``n_inputs`` inputs and ``n_outputs`` outputs."""
        if self.x_mean.shape != (n_inputs,):
            raise ValueError(f"scaling: x_mean has {self.x_mean.size} entries, the network {n_inputs} inputs")
        if self.y_mean is not None and not regression:
            raise ValueError("scaling: y_mean/y_scale apply to the squared error (regression) only")
        if self.y_mean is not None and self.y_mean.shape != (n_outputs,):
            raise ValueError(f"scaling: y_mean has {self.y_mean.size} entries, the network {n_outputs} outputs")

    def inputs(self, xp, X):
        """(X − μ_x) / σ_x in X's namespace, device and dtype."""
        return _standardise(xp, X, self.x_mean, self.x_scale)

    def targets(self, xp, Y):
        """(Y − μ_y) / σ_y, or Y itself without target scaling."""
        return Y if self.y_mean is None else _standardise(xp, Y, self.y_mean, self.y_scale)

    def outputs(self, output: np.ndarray) -> np.ndarray:
        """ŷ' σ_y + μ_y on the host, in float64 (``output`` itself without target scaling)."""
        return output if self.y_mean is None else output.astype(np.float64) * self.y_scale + self.y_mean

    def tensors(self) -> dict[str, np.ndarray]:
        """{"scaling.<field>": array} of the fields set, for a checkpoint."""
        return {f"scaling.{name}": a for name, a in zip(FIELDS, self) if a is not None}

    @classmethod
    def from_tensors(cls, tensors: dict) -> Scaling | None:
        """The Scaling stored by `tensors` (None when the checkpoint has none)."""
        if "scaling.x_mean" not in tensors and "scaling.x_scale" not in tensors:
            return None
        return cls.of(*(tensors.get(f"scaling.{name}") for name in FIELDS))


def _standardise(xp, A, mean: np.ndarray, scale: np.ndarray):
    device = device_of(A)
    return (A - xp.asarray(mean, dtype=A.dtype, device=device)) / xp.asarray(scale, dtype=A.dtype, device=device)
