"""Optimizers, gradient clipping and learning-rate schedules as pure functions over tuples of arrays.

Each optimizer is a pair of pure functions::

    state = opt.init(params)
    params, state = opt.update(params, grads, state)

``params`` and ``grads`` are nested tuples of arrays of one array-API backend (the MLP's
((W, b), ...)); the result has the same nesting.  Nothing is updated in place (JAX arrays are
immutable), so a whole training step can be compiled with ``jax.jit``.

The state is a ``NamedTuple`` of arrays (as optax's are), with no None and no Python numbers, so
it can be written to a checkpoint leaf by leaf and passed through ``jax.jit``:

    SGD                        SGDState(count, velocity)
    Adam, AdamSklearn, AdamW   AdamState(count, m, v)
    RMSprop                    RMSpropState(count, square_avg, velocity)

``count`` is the number of steps taken, a 0-d array in the parameters' floating dtype so the
schedules can use it under ``jax.jit`` without casts; it counts exactly up to 2^24 = 16,777,216
steps in float32 (2^53 in float64), after which it stops advancing and the schedules freeze.
``m``, ``v``, ``square_avg`` and ``velocity`` are shaped like ``params``, with their dtype and
device; ``velocity`` is the empty tuple () when momentum is 0.

Every optimizer first clips the gradients by their global norm when ``clip_norm`` is set
(`clip_by_global_norm`).  ``lr`` is a number or a schedule: a function of the 0-based step
count t (the step being taken) returning the learning rate η_t.

Beside each update rule ``_step`` sits its in-place form ``_step_inplace``, which the fused step
(`backprop.training.fused`) runs over flat buffers on NumPy and CuPy.  A subclass that overrides
``_step`` without ``_step_inplace`` runs its own ``_step`` there too (`backprop.core.forms`).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

from array_api_compat import array_namespace, device

from .forms import own_form
from .tree import Tree, tree_leaves, tree_map, tree_node

__all__ = [
    "SGD",
    "Adam",
    "AdamSklearn",
    "AdamW",
    "RMSprop",
    "Optimizer",
    "SGDState",
    "AdamState",
    "RMSpropState",
    "Schedule",
    "Constant",
    "StepDecay",
    "ExponentialDecay",
    "CosineDecay",
    "InverseScaling",
    "constant",
    "step_decay",
    "exponential_decay",
    "cosine_decay",
    "inverse_scaling",
    "as_schedule",
    "schedule_from_config",
    "clip_by_global_norm",
    "global_norm",
    "get_optimizer",
    "from_config",
    "OPTIMIZERS",
    "SCHEDULES",
    "tree_leaves",
    "tree_map",
]


class SGDState(NamedTuple):
    """`SGD`'s state: the step count and the velocity (shaped like params; () without momentum)."""

    count: Any
    velocity: Tree


class AdamState(NamedTuple):
    """`Adam`'s and `AdamW`'s state: the step count and the moment estimates m and v (shaped like params)."""

    count: Any
    m: Tree
    v: Tree


class RMSpropState(NamedTuple):
    """`RMSprop`'s state: the step count, the mean square s and the velocity (() without momentum)."""

    count: Any
    square_avg: Tree
    velocity: Tree


def _namespace(tree: Tree):
    """The array namespace of a tree's arrays (all leaves share one backend)."""
    while isinstance(tree, (tuple, list)):
        tree = tree[0]
    return array_namespace(tree)


def _zeros_like(tree: Tree) -> Tree:
    return tree_map(lambda a: array_namespace(a).zeros_like(a), tree)


# -- hyperparameter checks -------------------------------------------------------------------
def _number(name: str, value, ok: Callable[[float], bool], expected: str) -> float:
    """``value`` as a float after checking it is a finite real number with ``ok(value)``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or not ok(value):
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return float(value)


def _positive(name: str, value) -> float:
    return _number(name, value, lambda v: v > 0, "a finite number > 0")


def _non_negative(name: str, value) -> float:
    return _number(name, value, lambda v: v >= 0, "a finite number >= 0")


def _fraction(name: str, value) -> float:
    return _number(name, value, lambda v: 0 <= v < 1, "a number in [0, 1)")


def _decay_factor(name: str, value) -> float:
    return _number(name, value, lambda v: 0 < v <= 1, "a number in (0, 1]")


def _clip_norm(value) -> float | None:
    return None if value is None else _positive("clip_norm", value)


# -- learning-rate schedules -----------------------------------------------------------------
class Schedule:
    """A learning rate as a function of the step: ``schedule(xp, t)`` → η_t.

    ``t`` is the 0-based step count (the step being taken) as a 0-d floating array, traced
    under ``jax.jit``; schedules use only ``xp`` operations on it.  ``config`` is a
    JSON-serialisable dict that `schedule_from_config` turns back into the schedule.
    """

    name: ClassVar[str]

    def __call__(self, xp, t):
        raise NotImplementedError

    @property
    def config(self) -> dict:
        return {"name": self.name, **dataclasses.asdict(self)}


@dataclasses.dataclass(frozen=True)
class Constant(Schedule):
    """η_t = lr."""

    lr: float
    name: ClassVar[str] = "constant"

    def __post_init__(self):
        object.__setattr__(self, "lr", _positive("lr", self.lr))

    def __call__(self, xp, t):
        return self.lr


@dataclasses.dataclass(frozen=True)
class StepDecay(Schedule):
    """η_t = lr · gamma^⌊t / step_size⌋ (torch's StepLR, counted in steps)."""

    lr: float
    step_size: int
    gamma: float = 0.1
    name: ClassVar[str] = "step_decay"

    def __post_init__(self):
        object.__setattr__(self, "lr", _positive("lr", self.lr))
        if isinstance(self.step_size, bool) or not isinstance(self.step_size, numbers.Integral) or self.step_size < 1:
            raise ValueError(f"step_size must be an integer >= 1, got {self.step_size!r}")
        object.__setattr__(self, "step_size", int(self.step_size))
        object.__setattr__(self, "gamma", _decay_factor("gamma", self.gamma))

    def __call__(self, xp, t):
        return self.lr * self.gamma ** xp.floor(t / self.step_size)


@dataclasses.dataclass(frozen=True)
class ExponentialDecay(Schedule):
    """η_t = lr · decay_rate^(t / decay_steps) (smooth, not staircase)."""

    lr: float
    decay_rate: float
    decay_steps: float = 1
    name: ClassVar[str] = "exponential_decay"

    def __post_init__(self):
        object.__setattr__(self, "lr", _positive("lr", self.lr))
        object.__setattr__(self, "decay_rate", _decay_factor("decay_rate", self.decay_rate))
        object.__setattr__(self, "decay_steps", _positive("decay_steps", self.decay_steps))

    def __call__(self, xp, t):
        return self.lr * self.decay_rate ** (t / self.decay_steps)


@dataclasses.dataclass(frozen=True)
class CosineDecay(Schedule):
    """η_t = lr · ((1 − alpha) · ½ (1 + cos(π · min(t, T) / T)) + alpha), T = decay_steps.

    From lr at t = 0 down to alpha · lr at t = T, then constant (Loshchilov & Hutter's SGDR
    without restarts; optax's cosine_decay_schedule).
    """

    lr: float
    decay_steps: float
    alpha: float = 0.0
    name: ClassVar[str] = "cosine_decay"

    def __post_init__(self):
        object.__setattr__(self, "lr", _positive("lr", self.lr))
        object.__setattr__(self, "decay_steps", _positive("decay_steps", self.decay_steps))
        object.__setattr__(self, "alpha", _number("alpha", self.alpha, lambda v: 0 <= v <= 1, "a number in [0, 1]"))

    def __call__(self, xp, t):
        cosine = 0.5 * (1.0 + xp.cos(math.pi * xp.minimum(t, self.decay_steps) / self.decay_steps))
        return self.lr * ((1.0 - self.alpha) * cosine + self.alpha)


@dataclasses.dataclass(frozen=True)
class InverseScaling(Schedule):
    """η_t = lr / (t + 1)^power_t.

    scikit-learn's "invscaling" (``learning_rate_init / (t + 1) ** power_t``), except that
    scikit-learn's t counts the training samples seen and changes once per epoch, while this t
    counts the steps taken and changes every step.
    """

    lr: float
    power_t: float = 0.5
    name: ClassVar[str] = "inverse_scaling"

    def __post_init__(self):
        object.__setattr__(self, "lr", _positive("lr", self.lr))
        object.__setattr__(self, "power_t", _non_negative("power_t", self.power_t))

    def __call__(self, xp, t):
        return self.lr / (t + 1.0) ** self.power_t


# The schedules under the names their configs carry: ``cosine_decay(0.1, 1000)``.
constant, step_decay, exponential_decay = Constant, StepDecay, ExponentialDecay
cosine_decay, inverse_scaling = CosineDecay, InverseScaling
SCHEDULES: dict[str, type[Schedule]] = {
    s.name: s for s in (Constant, StepDecay, ExponentialDecay, CosineDecay, InverseScaling)
}


def schedule_from_config(config: dict | float) -> Schedule:
    """The schedule a `Schedule.config` describes (a plain number is a constant rate)."""
    if not isinstance(config, dict):
        return Constant(config)
    kwargs = dict(config)
    name = kwargs.pop("name", None)
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; valid schedules: {', '.join(SCHEDULES)}")
    return SCHEDULES[name](**kwargs)


def as_schedule(lr) -> Schedule:
    """``lr`` as a Schedule: a Schedule is kept, a number becomes `constant(lr)`."""
    return lr if isinstance(lr, Schedule) else Constant(lr)


# -- gradient clipping -----------------------------------------------------------------------
def global_norm(tree: Tree):
    """‖g‖₂ over every array of the tree together: √(Σ_arrays Σ_elements g²), a 0-d array."""
    xp = _namespace(tree)
    return xp.sqrt(sum(xp.sum(g * g) for g in tree_leaves(tree)))


def clip_by_global_norm(grads: Tree, max_norm: float) -> Tree:
    """g ← g · min(1, max_norm / ‖g‖₂), ‖g‖₂ the global norm of all the arrays together.

    Computed as max_norm / max(‖g‖₂, max_norm), which never divides by zero and has no
    Python branch on array values, so it runs under ``jax.jit``.  (torch's clip_grad_norm_
    divides by ‖g‖₂ + 1e-6 instead.)
    """
    max_norm = _positive("max_norm", max_norm)
    xp = _namespace(grads)
    scale = max_norm / xp.maximum(global_norm(grads), max_norm)
    return tree_map(lambda g: g * scale, grads)


# -- optimizers ------------------------------------------------------------------------------
class Optimizer:
    """What the optimizers share: the schedule, clipping, the step count and the config.

    Subclasses name their extra hyperparameters in ``hyperparameters``, their state's NamedTuple in
    ``State`` (its first field the step count) and implement ``init`` and
    ``_step(xp, params, grads, lr, t, buffers)`` → ``(params, buffers)``, ``buffers`` being the
    state's fields after the count.  They may add the in-place form
    ``_step_inplace(lib, P, G, S, slots, lr, t)``: the same rule over flat buffers, P the
    parameters, G the (clipped) gradients, which it overwrites with the new parameters, ``slots``
    the state's non-empty buffers in order (updated in place) and S a scratch buffer where
    ``inplace_scratch`` says one is needed.
    """

    name: ClassVar[str]
    hyperparameters: ClassVar[tuple[str, ...]]
    State: ClassVar[type] = tuple

    def __init__(self, lr, clip_norm):
        self.lr = as_schedule(lr)
        self.clip_norm = _clip_norm(clip_norm)

    @property
    def config(self) -> dict:
        """JSON-serialisable constructor arguments plus "name"; `from_config` rebuilds the optimizer.

        ``lr`` is a number for a constant rate, else the schedule's config.
        """
        lr = self.lr.lr if isinstance(self.lr, Constant) else self.lr.config
        extra = {k: getattr(self, k) for k in self.hyperparameters}
        return {"name": self.name, "lr": lr, **extra, "clip_norm": self.clip_norm}

    def __repr__(self) -> str:
        config = {**self.config, "lr": self.lr.lr if isinstance(self.lr, Constant) else self.lr}
        args = ", ".join(f"{k}={v!r}" for k, v in config.items() if k != "name")
        return f"{type(self).__name__}({args})"

    @staticmethod
    def _count(params: Tree):
        """A 0-d zero in the dtype and on the device of the first parameter array."""
        first = tree_leaves(params)[0]
        xp = array_namespace(first)
        return xp.zeros((), dtype=first.dtype, device=device(first))

    def learning_rate(self, state: Tree):
        """η_t for the next step (t = the state's step count): a number or a 0-d array."""
        if isinstance(self.lr, Constant):
            return self.lr.lr
        count, *_ = state  # every state starts with the step count
        return self.lr(array_namespace(count), count)

    def update(self, params: Tree, grads: Tree, state: Tree) -> tuple[Tree, Tree]:
        """One step: ``(params, state)`` after clipping ``grads`` and applying the update rule."""
        count, *buffers = state
        if self.clip_norm is not None:
            grads = clip_by_global_norm(grads, self.clip_norm)
        xp = _namespace(params)
        params, buffers = self._step(xp, params, grads, self.lr(xp, count), count, tuple(buffers))
        return params, tree_node(
            state, (xp.asarray(count + 1.0), *buffers)
        )  # asarray: NumPy gives 0-d results as scalars

    def inplace_step(self) -> Callable | None:
        """``_step_inplace`` when it is the in-place form of the ``_step`` this optimizer runs, else None."""
        return own_form(self, "_step", "_step_inplace")

    def inplace_scratch(self) -> bool:
        """Whether ``_step_inplace`` needs the scratch buffer S."""
        return False


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, Nesterov momentum and L2 weight decay (torch.optim.SGD).

        g ← g + weight_decay · p
        buf ← momentum · buf + g                    (buf₀ = 0, so buf₁ = g)
        p ← p − η_t · g                             (momentum = 0)
        p ← p − η_t · buf                           (momentum > 0)
        p ← p − η_t · (g + momentum · buf)          (nesterov)

    State: `SGDState` (count, velocity), velocity = the buf per parameter, or () when momentum is 0.
    """

    name = "sgd"
    hyperparameters = ("momentum", "nesterov", "weight_decay")
    State = SGDState

    def __init__(self, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0, clip_norm=None):
        super().__init__(lr, clip_norm)
        self.momentum = _fraction("momentum", momentum)
        if not isinstance(nesterov, bool):
            raise ValueError(f"nesterov must be True or False, got {nesterov!r}")
        if nesterov and self.momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0")
        self.nesterov = nesterov
        self.weight_decay = _non_negative("weight_decay", weight_decay)

    def init(self, params: Tree) -> Tree:
        velocity = _zeros_like(params) if self.momentum else ()
        return SGDState(self._count(params), velocity)

    def _step(self, xp, params, grads, lr, t, buffers):
        (velocity,) = buffers
        if self.weight_decay:
            grads = tree_map(lambda g, p: g + self.weight_decay * p, grads, params)
        if self.momentum:
            velocity = tree_map(lambda b, g: self.momentum * b + g, velocity, grads)
            if self.nesterov:
                grads = tree_map(lambda g, b: g + self.momentum * b, grads, velocity)
            else:
                grads = velocity
        return tree_map(lambda p, g: p - lr * g, params, grads), (velocity,)

    def _step_inplace(self, lib, P, G, S, slots, lr, t):
        """`_step` over flat buffers: g += wd p;  buf ← μ buf + g;  p − η (buf | g + μ buf | g) into G."""
        if self.weight_decay:
            lib.multiply(P, self.weight_decay, out=S)
            lib.add(G, S, out=G)
        step = G
        if self.momentum:
            (buf,) = slots
            lib.multiply(buf, self.momentum, out=buf)
            lib.add(buf, G, out=buf)
            if self.nesterov:
                lib.multiply(buf, self.momentum, out=S)
                lib.add(G, S, out=G)
            else:
                step = buf
        lib.multiply(step, lr, out=G)
        lib.subtract(P, G, out=G)

    def inplace_scratch(self) -> bool:
        return bool(self.weight_decay) or self.nesterov


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) with bias correction, as in torch.optim.Adam and optax.adam.

        m ← β₁ m + (1 − β₁) g,      v ← β₂ v + (1 − β₂) g²           (m₀ = v₀ = 0)
        m̂ = m / (1 − β₁^(t+1)),     v̂ = v / (1 − β₂^(t+1))          (t = 0 on the first step)
        p ← p − η_t · m̂ / (√v̂ + eps)

    eps is added to the bias-corrected √v̂ (torch's convention).  `AdamSklearn` is the other
    convention, scikit-learn's: eps added to √v, with the bias correction folded into the rate.
    State: `AdamState` (count, m, v).
    """

    name = "adam"
    hyperparameters = ("beta1", "beta2", "eps")
    State = AdamState

    def __init__(self, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, clip_norm=None):
        super().__init__(lr, clip_norm)
        self.beta1 = _fraction("beta1", beta1)
        self.beta2 = _fraction("beta2", beta2)
        self.eps = _positive("eps", eps)

    def init(self, params: Tree) -> Tree:
        return AdamState(self._count(params), _zeros_like(params), _zeros_like(params))

    def _step(self, xp, params, grads, lr, t, buffers):
        m, v = buffers
        m = tree_map(lambda m, g: self.beta1 * m + (1.0 - self.beta1) * g, m, grads)
        v = tree_map(lambda v, g: self.beta2 * v + (1.0 - self.beta2) * (g * g), v, grads)
        c1 = 1.0 - self.beta1 ** (t + 1.0)
        c2 = 1.0 - self.beta2 ** (t + 1.0)
        params = tree_map(lambda p, m, v: p - lr * (m / c1) / (xp.sqrt(v / c2) + self.eps), params, m, v)
        return params, (m, v)

    def _step_inplace(self, lib, P, G, S, slots, lr, t, decay: float = 0.0):
        """`_step` over flat buffers, into G: p (1 − η decay) − η m̂ / (√v̂ + eps), with
        η m̂ / (√v̂ + eps) = (η √c2 / c1) · m / (√v + eps √c2); G is its own scratch once m has read it."""
        m, v = slots
        lib.subtract(m, G, out=m)  # m ← β1 m + (1 − β1) g = β1 (m − g) + g
        lib.multiply(m, self.beta1, out=m)
        lib.add(m, G, out=m)
        lib.multiply(G, G, out=G)  # v ← β2 v + (1 − β2) g²
        lib.multiply(G, 1.0 - self.beta2, out=G)
        lib.multiply(v, self.beta2, out=v)
        lib.add(v, G, out=v)
        c1, c2 = 1.0 - self.beta1 ** (t + 1.0), 1.0 - self.beta2 ** (t + 1.0)
        lib.sqrt(v, out=G)
        lib.add(G, self.eps * math.sqrt(c2), out=G)
        lib.divide(m, G, out=G)
        lib.multiply(G, lr * math.sqrt(c2) / c1, out=G)
        if decay:
            lib.multiply(P, 1.0 - lr * decay, out=S)
            lib.subtract(S, G, out=G)
        else:
            lib.subtract(P, G, out=G)


class AdamSklearn(Adam):
    """Adam as scikit-learn's MLPs run it (``sklearn.neural_network``'s AdamOptimizer, the paper's
    Algorithm 1 with its "efficient" final step):

        m ← β₁ m + (1 − β₁) g,      v ← β₂ v + (1 − β₂) g²           (m₀ = v₀ = 0)
        η̂_t = η_t · √(1 − β₂^(t+1)) / (1 − β₁^(t+1))                 (t = 0 on the first step)
        p ← p − η̂_t · m / (√v + eps)

    The same as `Adam` (torch's convention, eps added to √v̂) except where eps is added: here to
    √v, before the bias correction, which equals `Adam` with eps · √(1 − β₂^(t+1)) in place of
    eps.  The two differ where √v is not large against eps: early steps and parameters with tiny
    gradients.  State: `AdamState` (count, m, v), as `Adam`'s.
    """

    name = "adam_sklearn"

    def _step(self, xp, params, grads, lr, t, buffers):
        m, v = buffers
        m = tree_map(lambda m, g: self.beta1 * m + (1.0 - self.beta1) * g, m, grads)
        v = tree_map(lambda v, g: self.beta2 * v + (1.0 - self.beta2) * (g * g), v, grads)
        rate = lr * xp.sqrt(1.0 - self.beta2 ** (t + 1.0)) / (1.0 - self.beta1 ** (t + 1.0))
        params = tree_map(lambda p, m, v: p - rate * m / (xp.sqrt(v) + self.eps), params, m, v)
        return params, (m, v)

    def _step_inplace(self, lib, P, G, S, slots, lr, t):
        """`_step` over flat buffers, into G, in scikit-learn's order of operations (so float64
        runs equal its to rounding): m ← β1 m + (1 − β1) g, v ← β2 v + (1 − β2) g²,
        p − (η̂_t m) / (√v + eps)."""
        m, v = slots
        lib.multiply(G, 1.0 - self.beta1, out=S)
        lib.multiply(m, self.beta1, out=m)
        lib.add(m, S, out=m)
        lib.multiply(G, G, out=G)
        lib.multiply(G, 1.0 - self.beta2, out=G)
        lib.multiply(v, self.beta2, out=v)
        lib.add(v, G, out=v)
        rate = lr * math.sqrt(1.0 - self.beta2 ** (t + 1.0)) / (1.0 - self.beta1 ** (t + 1.0))
        lib.multiply(m, rate, out=S)
        lib.sqrt(v, out=G)
        lib.add(G, self.eps, out=G)
        lib.divide(S, G, out=G)
        lib.subtract(P, G, out=G)

    def inplace_scratch(self) -> bool:
        return True


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019), as in torch.optim.AdamW.

        p ← p − η_t · weight_decay · p,   then the `Adam` step (with the same g, not g + wd · p)

    State: `AdamState` (count, m, v).
    """

    name = "adamw"
    hyperparameters = ("beta1", "beta2", "eps", "weight_decay")

    def __init__(self, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, clip_norm=None):
        super().__init__(lr, beta1, beta2, eps, clip_norm)
        self.weight_decay = _non_negative("weight_decay", weight_decay)

    def _step(self, xp, params, grads, lr, t, buffers):
        params = tree_map(lambda p: p - (lr * self.weight_decay) * p, params)
        return super()._step(xp, params, grads, lr, t, buffers)

    def _step_inplace(self, lib, P, G, S, slots, lr, t):
        """`_step` over flat buffers, into G: p (1 − η wd) − η m̂ / (√v̂ + eps) (`Adam._step_inplace`)."""
        super()._step_inplace(lib, P, G, S, slots, lr, t, decay=self.weight_decay)

    def inplace_scratch(self) -> bool:
        return bool(self.weight_decay)


class RMSprop(Optimizer):
    """RMSprop (Hinton's lecture 6e) with optional momentum, as in torch.optim.RMSprop.

        s ← ρ s + (1 − ρ) g²                        (s₀ = 0)
        p ← p − η_t · g / (√s + eps)                (momentum = 0)
        buf ← momentum · buf + g / (√s + eps),  p ← p − η_t · buf    (momentum > 0)

    eps is added outside the square root, as torch does (Keras and TensorFlow differ).
    State: `RMSpropState` (count, square_avg, velocity), velocity = () when momentum is 0.
    """

    name = "rmsprop"
    hyperparameters = ("rho", "eps", "momentum")
    State = RMSpropState

    def __init__(self, lr=1e-3, rho=0.9, eps=1e-8, momentum=0.0, clip_norm=None):
        super().__init__(lr, clip_norm)
        self.rho = _fraction("rho", rho)
        self.eps = _positive("eps", eps)
        self.momentum = _fraction("momentum", momentum)

    def init(self, params: Tree) -> Tree:
        return RMSpropState(self._count(params), _zeros_like(params), _zeros_like(params) if self.momentum else ())

    def _step(self, xp, params, grads, lr, t, buffers):
        square_avg, velocity = buffers
        square_avg = tree_map(lambda s, g: self.rho * s + (1.0 - self.rho) * (g * g), square_avg, grads)
        steps = tree_map(lambda g, s: g / (xp.sqrt(s) + self.eps), grads, square_avg)
        if self.momentum:
            velocity = tree_map(lambda b, d: self.momentum * b + d, velocity, steps)
            steps = velocity
        return tree_map(lambda p, d: p - lr * d, params, steps), (square_avg, velocity)

    def _step_inplace(self, lib, P, G, S, slots, lr, t):
        """`_step` over flat buffers, into G: s ← ρ s + (1 − ρ) g²;  d = g / (√s + eps);  p − η (buf | d)."""
        s = slots[0]
        lib.multiply(s, self.rho, out=s)
        lib.multiply(G, G, out=S)
        lib.multiply(S, 1.0 - self.rho, out=S)
        lib.add(s, S, out=s)
        lib.sqrt(s, out=S)
        lib.add(S, self.eps, out=S)
        lib.divide(G, S, out=S)
        step = S
        if self.momentum:
            buf = slots[1]
            lib.multiply(buf, self.momentum, out=buf)
            lib.add(buf, S, out=buf)
            step = buf
        lib.multiply(step, lr, out=G)
        lib.subtract(P, G, out=G)

    def inplace_scratch(self) -> bool:
        return True


OPTIMIZERS: dict[str, type[Optimizer]] = {o.name: o for o in (SGD, Adam, AdamW, RMSprop, AdamSklearn)}


def get_optimizer(name: str, **kwargs) -> Optimizer:
    """The optimizer called ``name`` (sgd, adam, adamw, rmsprop, adam_sklearn) built with ``kwargs``."""
    key = str(name).strip().lower()
    if key not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; valid optimizers: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[key](**kwargs)


def from_config(config: dict) -> Optimizer:
    """The optimizer an `Optimizer.config` describes (the inverse of ``.config``)."""
    kwargs = dict(config)
    name = kwargs.pop("name", None)
    if "lr" in kwargs:
        kwargs["lr"] = schedule_from_config(kwargs["lr"])
    return get_optimizer(name, **kwargs)
