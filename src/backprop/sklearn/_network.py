"""The estimators' network: `backprop.MLP` with scikit-learn's output layers and its reported loss."""

from __future__ import annotations

import dataclasses

from ..core.activations import Activation
from ..core.losses import Loss, LossOutput
from ..core.mlp import MLP

_OUTPUT_LOSSES = {
    "identity": "squared_error",
    "logistic": "binary_cross_entropy",
    "softmax": "softmax_cross_entropy",
}

_EXP = Activation("exp", lambda xp, z: xp.exp(z), lambda xp, z, h: h, "glorot")


@dataclasses.dataclass(frozen=True)
class _PoissonLoss(Loss):
    """Half the Poisson deviance with the log link (scikit-learn's ``loss="poisson"``).

    ŷ = exp(Z),  L = scale · Σᵢₖ [yᵢₖ log(yᵢₖ / ŷᵢₖ) − yᵢₖ + ŷᵢₖ],  δ = scale · (ŷ − y) (fused).
    With sample weights the rows' terms are weighted: L = scale · Σᵢ wᵢ Σₖ [...], δᵢ = scale · wᵢ (ŷᵢ − yᵢ).
    """

    @property
    def classification(self) -> bool:
        return False

    def __call__(self, xp, Z, Y, scale, weight=None) -> LossOutput:
        Yhat = xp.exp(Z)
        ylogy = Y * xp.log(xp.where(Y > 0, Y, xp.ones_like(Y)))  # xlogy(y, y), 0 at y = 0
        if weight is not None:
            r = scale * weight
            value = xp.sum(r * xp.sum(ylogy - Y * Z - Y + Yhat, axis=1))
            return LossOutput(value, r[:, None] * (Yhat - Y), Yhat, None)
        value = scale * xp.sum(ylogy - Y * Z - Y + Yhat)
        return LossOutput(value, scale * (Yhat - Y), Yhat, None)


_POISSON = _PoissonLoss("poisson", _EXP)


class _SklearnMLP(MLP):
    """`MLP` with scikit-learn's output layer for ``out_activation`` and its reported loss.

    ``loss_divisor``: the squared error's data term is reported divided by the number of outputs
    (scikit-learn's ½ mean over samples and outputs) while the gradient stays that of the
    library's loss (½ Σ over outputs, mean over samples), exactly as in scikit-learn.
    """

    def __init__(self, layer_units, activation: str, out_activation: str, alpha: float, loss_divisor: int = 1):
        loss = "squared_error" if out_activation == "exp" else _OUTPUT_LOSSES[out_activation]
        super().__init__(layer_units, activation, loss=loss, alpha=alpha, reduction="mean", init="sklearn")
        if out_activation == "exp":
            self.loss_layer = _POISSON
        self.loss_divisor = int(loss_divisor)

    @property
    def config(self) -> dict:
        """MLP's config plus ``loss_divisor``, so the Trainer's step cache (keyed by config) never
        hands this network's step to a plain MLP of the same shape, or the other way round."""
        return {**super().config, "loss_divisor": self.loss_divisor}

    @property
    def key(self) -> tuple:
        return (self.layer_sizes, self.activation.name, self.loss_layer.name, self.alpha, self.loss_divisor)

    def total_loss(self, data_loss, penalty):
        return super().total_loss(data_loss / self.loss_divisor if self.loss_divisor != 1 else data_loss, penalty)
