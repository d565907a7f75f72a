"""scikit-learn's SGD: a learning rate that changes between epochs without recompiling the step.

scikit-learn's "invscaling" and "adaptive" rates change between epochs.  Here the rate is the
last leaf of the optimizer state, so `_set_sgd_rate` changes it while the compiled step stays
the same, and rescales the momentum buffer so that the updates equal scikit-learn's.
"""

from __future__ import annotations

from array_api_compat import array_namespace

from ..core.optim import SGD
from ..core.tree import tree_leaves, tree_map


class _StateRateSGD(SGD):
    """`SGD` whose learning rate is the last leaf of its state: ``(count, velocity, lr)``.

    momentum may be 1 (scikit-learn allows it); nesterov with momentum 0 is plain SGD, as there.
    """

    def __init__(self, momentum: float, nesterov: bool):
        super().__init__(lr=1.0)
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov) and self.momentum > 0

    @property
    def config(self) -> dict:
        """SGD's config with ``lr="state"``: a key of its own in the Trainer's step cache (its
        state and update differ from a plain SGD's)."""
        return {**super().config, "lr": "state"}

    @property
    def key(self) -> tuple:
        return ("sgd", self.momentum, self.nesterov)

    def init_with_rate(self, params, lr: float):
        count, velocity = self.init(params)
        return (count, velocity, array_namespace(count).asarray(count + float(lr)))

    def learning_rate(self, state):
        return state[-1]

    def update(self, params, grads, state):
        count, velocity, lr = state
        xp = array_namespace(count)
        params, (velocity,) = self._step(xp, params, grads, lr, count, (velocity,))
        return params, (xp.asarray(count + 1.0), velocity, lr)


def _set_sgd_rate(trainer, new_lr: float) -> None:
    """Put ``new_lr`` in the `_StateRateSGD` state, rescaling the momentum buffer by old/new.

    scikit-learn's velocity is v = −η · buf (η the rate when each gradient was added); keeping
    −η_new · buf_new = −η_old · buf_old makes the next updates equal to scikit-learn's.
    """
    xp = trainer.backend.xp
    count, velocity, lr = trainer.opt_state
    new = xp.asarray(new_lr, dtype=lr.dtype, device=trainer.backend.device)
    ratio = float(lr) / float(new)
    if tree_leaves(velocity) and ratio != 1.0:
        velocity = tree_map(lambda v: v * ratio, velocity)
    trainer.opt_state = (count, velocity, new)
