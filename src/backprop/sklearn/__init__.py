"""scikit-learn drop-in estimators: `MLPClassifier` and `MLPRegressor`.

Change one import::

    from sklearn.neural_network import MLPClassifier      # before
    from backprop.sklearn import MLPClassifier             # after

and the same code trains the same model with the hand-written backward pass on NumPy, CuPy, JAX
or array_api_strict.  The constructor parameters, their defaults and meanings, the fitted
attributes and the methods are scikit-learn's (1.9), plus ``backend``:

``backend`` : {"numpy", "cupy", "jax", "array_api_strict"} or None, default=None
    Where the network is trained and evaluated; None reads ``BACKPROP_BACKEND`` (default numpy).
    ``BACKPROP_DEVICE`` and ``BACKPROP_DTYPE`` (float32 by default, or float64) apply as for the
    rest of the library.  The backend is looked up at each call of fit, partial_fit, predict…,
    so a fitted (or unpickled) estimator follows the current setting: a model trained on CuPy
    predicts on a machine without a GPU after ``set_params(backend="numpy")``, and partial_fit
    carries the optimizer state over to another backend.

How scikit-learn's algorithm maps onto the library
--------------------------------------------------
* The network is a `backprop.MLP` (``init="sklearn"``, ``reduction="mean"``, the same L2
  scaling alpha/(2 n) Σ‖W‖²).  Initial weights are drawn exactly as scikit-learn draws them
  (``check_random_state(random_state)``, uniform ±√(k/(fan_in+fan_out)), layer by layer), and the
  epochs shuffle, split (early stopping) and batch the samples with the same random stream, so
  with the same ``random_state`` both libraries start from the same weights and see the same
  batches.
* Every stochastic step is the `backprop.training.trainer.Trainer`'s compiled step (forward, loss layer,
  hand-written backward, optimizer update; ``jax.jit`` on JAX, cached between fits of the same
  architecture so refitting does not recompile; a refit of the same network reuses the trainer
  and its buffers, with fresh weights and optimizer state).  The epoch logic around it is
  scikit-learn's: ``loss_curve_``, the ``tol`` / ``n_iter_no_change`` convergence rule on the
  training loss or (``early_stopping``) on the validation score with the best weights restored,
  ``t_`` counting samples, and a ``ConvergenceWarning`` when ``max_iter`` epochs did not converge.
* Output layers: regression → identity + squared error (``loss="poisson"``: exp link + half
  Poisson deviance); binary and multi-label classification → logistic outputs with
  ``binary_cross_entropy`` on the logits; multiclass → softmax with ``softmax_cross_entropy``.
  Labels are encoded with scikit-learn's ``LabelBinarizer``.
* ``solver="adam"`` → `backprop.optim.Adam` (beta_1, beta_2, epsilon).  The update is the same
  except that epsilon is added to √v̂ instead of √v (a difference of a factor √(1−β₂ᵗ) on a
  1e-8 term).
* ``solver="sgd"`` → `backprop.optim.SGD` with momentum / Nesterov momentum.  scikit-learn
  changes the learning rate between epochs ("invscaling": learning_rate_init / (t_ + 1)^power_t
  with t_ the number of samples seen; "adaptive": divided by 5 after n_iter_no_change epochs
  without improvement, stopping below 1e-6), so here the rate is kept in the optimizer state
  (see `_StateRateSGD`) and changed there without rebuilding or recompiling the step; the
  momentum buffer is rescaled at each change so that the update equals scikit-learn's, whose
  velocity carries the old rate.
* ``solver="lbfgs"`` runs ``scipy.optimize.minimize(method="L-BFGS-B", jac=True)`` over the
  flattened parameters (scikit-learn's packing order) on every backend: the loss and the
  hand-written gradient are computed on the selected backend, in its dtype, and moved to the host
  as float64 (``maxiter=max_iter``, ``maxfun=max_fun``, ``gtol=tol``).
* ``loss_`` is reported as scikit-learn reports it: the mean loss per sample plus the L2 term;
  for squared error the data term is averaged over the outputs too (½ mean over samples *and*
  outputs), while the gradient — as in scikit-learn — is that of ½ Σ over outputs, mean over
  samples.  (With L-BFGS the objective minimised is the one whose gradient is used; ``loss_`` is
  converted to the reported form afterwards.)

Differences from scikit-learn
-----------------------------
* The network computes in the backend's dtype (``BACKPROP_DTYPE``, float32 by default) whatever
  the input dtype: ``coefs_`` and ``intercepts_`` are NumPy arrays in that dtype.  Predictions and
  probabilities are returned in the input's floating dtype (float64 for float64 or integer X,
  float32 for float32 X), as scikit-learn does.
* ``fit`` and ``partial_fit`` take no ``sample_weight`` (the library's losses are unweighted).
* Sparse X is accepted and densified (the library computes with dense arrays).
* A step whose loss or updated weights are not finite is refused (the weights of the last finite
  step are kept) and fit raises scikit-learn's "Solver produced non-finite parameter weights"
  ValueError.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import numbers
import warnings

import numpy as np
from array_api_compat import array_namespace

from ..core.activations import Activation
from ..backends import BACKENDS, get_backend, to_host
from ..training.fused import FusedStep
from ..core.losses import Loss, LossOutput
from ..core.mlp import MLP
from ..core.optim import SGD, Adam, tree_leaves, tree_map
from ..training.trainer import Trainer, deferred_interrupt

try:  # scikit-learn >= 1.6 (validate_data, __sklearn_tags__)
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, is_classifier
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import accuracy_score, r2_score
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import LabelBinarizer
    from sklearn.utils import check_random_state, column_or_1d
    from sklearn.utils._param_validation import Interval, Options, StrOptions
    from sklearn.utils.metaestimators import available_if
    from sklearn.utils.multiclass import _check_partial_fit_first_call, type_of_target, unique_labels
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as exc:  # pragma: no cover - depends on the installed scikit-learn
    raise ImportError(f"backprop.sklearn needs scikit-learn >= 1.6 ({exc}); pip install -U scikit-learn") from None

__all__ = ["MLPClassifier", "MLPRegressor"]

_STOCHASTIC_SOLVERS = ("sgd", "adam")
_FLOAT_DTYPES = (np.float64, np.float32)
_OUTPUT_LOSSES = {
    "identity": "squared_error",
    "logistic": "binary_cross_entropy",
    "softmax": "softmax_cross_entropy",
}


# -- the network: scikit-learn's output layers and loss reporting on top of backprop.MLP -------
_EXP = Activation("exp", lambda xp, z: xp.exp(z), lambda xp, z, h: h, "glorot")


@dataclasses.dataclass(frozen=True)
class _PoissonLoss(Loss):
    """Half the Poisson deviance with the log link (scikit-learn's ``loss="poisson"``).

    ŷ = exp(Z),  L = scale · Σᵢₖ [yᵢₖ log(yᵢₖ / ŷᵢₖ) − yᵢₖ + ŷᵢₖ],  δ = scale · (ŷ − y) (fused).
    """

    @property
    def classification(self) -> bool:
        return False

    def __call__(self, xp, Z, Y, scale) -> LossOutput:
        Yhat = xp.exp(Z)
        ylogy = Y * xp.log(xp.where(Y > 0, Y, xp.ones_like(Y)))  # xlogy(y, y), 0 at y = 0
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


# -- scikit-learn's SGD: a learning rate that changes between epochs --------------------------
class _StateRateSGD(SGD):
    """`SGD` whose learning rate is the last leaf of its state: ``(count, velocity, lr)``.

    scikit-learn's "invscaling" and "adaptive" rates change between epochs; kept in the state,
    the rate can be changed (`_set_sgd_rate`) while the compiled step stays the same.  momentum
    may be 1 (scikit-learn allows it); nesterov with momentum 0 is plain SGD, as there.
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


# -- L-BFGS's compiled loss-and-gradient, shared between estimators (refitting never recompiles)
_COMPILED: "collections.OrderedDict[tuple, object]" = collections.OrderedDict()
_COMPILED_MAX = 32


def _compiled(key: tuple, build):
    fn = _COMPILED.get(key)
    if fn is None:
        fn = _COMPILED[key] = build()
        while len(_COMPILED) > _COMPILED_MAX:
            _COMPILED.popitem(last=False)
    else:
        _COMPILED.move_to_end(key)
    return fn


def _backend_key(backend) -> tuple:
    return (backend.name, backend.device_name, backend.dtype_name)


def _host_input(a):
    """Arrays of another array library (CuPy, JAX, array_api_strict) as NumPy; others unchanged."""
    if a is not None and not isinstance(a, np.ndarray) and hasattr(a, "__array_namespace__"):
        return to_host(a)
    return a


def _shuffled(index: np.ndarray, random_state) -> np.ndarray:
    """``sklearn.utils.shuffle(index, random_state=random_state)``, draw for draw, without its
    per-call parameter validation (about a millisecond, paid every epoch)."""
    order = np.arange(index.shape[0])
    random_state.shuffle(order)
    return index[order]


def _random_state(estimator):
    """``check_random_state(estimator.random_state)``; an integer seed's generator is restored from
    the state saved at its first seeding instead of seeded anew (seeding MT19937 costs ~0.2 ms,
    which scikit-learn pays on every fit and partial_fit call)."""
    seed = estimator.random_state
    if not isinstance(seed, numbers.Integral):
        return check_random_state(seed)  # None (the global generator) or the caller's RandomState
    saved = estimator.__dict__.get("_seeded")
    if saved is None or saved[0] != seed:
        generator = check_random_state(seed)
        estimator._seeded = (seed, generator, generator.get_state())
        return generator
    _, generator, state = saved  # this estimator's own generator, never the caller's
    generator.set_state(state)
    return generator


@functools.cache
def _param_names(cls) -> tuple[str, ...]:
    """The constructor parameters of an estimator class (scikit-learn inspects its signature anew on every call)."""
    return tuple(cls._get_param_names())


def _fit_label_binarizer(y) -> LabelBinarizer:
    """``LabelBinarizer().fit(y)``.  For 1-D integer, boolean and string labels, whose type is
    "binary" (at most two classes) or "multiclass" and whose classes are ``np.unique(y)``, the
    fitted attributes are set directly: type_of_target's checks cost about 1 ms per fit."""
    binarizer = LabelBinarizer()
    if y.ndim != 1 or y.dtype.kind not in "biuU" or y.shape[0] == 0:
        return binarizer.fit(y)
    binarizer.classes_ = np.unique(y)
    binarizer.y_type_ = "multiclass" if len(binarizer.classes_) > 2 else "binary"
    binarizer.sparse_input_ = False
    return binarizer


def _batches(n: int, batch_size: int) -> list[slice]:
    """``list(sklearn.utils.gen_batches(n, batch_size))`` without its per-call validation."""
    return [slice(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]


def _dense(X):
    return X.toarray() if hasattr(X, "toarray") else X


def _to_host_params(backend, params) -> tuple[list, list]:
    """(coefs, intercepts) as writable NumPy arrays."""
    coefs = [np.array(backend.to_numpy(W), copy=True) for W, _ in params]
    intercepts = [np.array(backend.to_numpy(b), copy=True) for _, b in params]
    return coefs, intercepts


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


def _host_tree(backend, tree):
    if isinstance(tree, (tuple, list)):
        return tuple(_host_tree(backend, t) for t in tree)
    return np.array(backend.to_numpy(tree), copy=True)


def _device_tree(backend, tree):
    if isinstance(tree, (tuple, list)):
        return tuple(_device_tree(backend, t) for t in tree)
    return backend.asarray(tree)


# -- the estimators ---------------------------------------------------------------------------
class _BaseMLP(BaseEstimator):
    """What MLPClassifier and MLPRegressor share (scikit-learn's BaseMultilayerPerceptron)."""

    _parameter_constraints: dict = {
        "hidden_layer_sizes": ["array-like", Interval(numbers.Integral, 1, None, closed="left")],
        "activation": [StrOptions({"identity", "logistic", "tanh", "relu"})],
        "solver": [StrOptions({"lbfgs", "sgd", "adam"})],
        "alpha": [Interval(numbers.Real, 0, None, closed="left")],
        "batch_size": [StrOptions({"auto"}), Interval(numbers.Integral, 1, None, closed="left")],
        "learning_rate": [StrOptions({"constant", "invscaling", "adaptive"})],
        "learning_rate_init": [Interval(numbers.Real, 0, None, closed="neither")],
        "power_t": [Interval(numbers.Real, 0, None, closed="left")],
        "max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [Interval(numbers.Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "momentum": [Interval(numbers.Real, 0, 1, closed="both")],
        "nesterovs_momentum": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(numbers.Real, 0, 1, closed="left")],
        "beta_1": [Interval(numbers.Real, 0, 1, closed="left")],
        "beta_2": [Interval(numbers.Real, 0, 1, closed="left")],
        "epsilon": [Interval(numbers.Real, 0, None, closed="neither")],
        "n_iter_no_change": [Interval(numbers.Integral, 1, None, closed="left"), Options(numbers.Real, {np.inf})],
        "max_fun": [Interval(numbers.Integral, 1, None, closed="left")],
        "backend": [None, StrOptions(set(BACKENDS))],
    }

    def _validate_params(self):
        """scikit-learn's check of the constructor parameters, skipped while every parameter is
        the very object it passed last time (none of them a list, dict or array, which could have
        changed in place): the check inspects the constructor's signature every time, about
        0.5 ms, which partial_fit would pay every epoch."""
        values = tuple(getattr(self, name) for name in _param_names(type(self)))
        checked = self.__dict__.get("_checked_params")
        if checked is not None and all(a is b for a, b in zip(values, checked, strict=True)):
            return
        super()._validate_params()
        if not any(isinstance(v, (list, dict, set, np.ndarray)) for v in values):
            self._checked_params = values

    # -- pickling: only NumPy state; the trainer (device arrays, compiled step) is rebuilt ------
    def __getstate__(self):
        state = super().__getstate__()
        state = dict(state)
        trainer = state.pop("_trainer", None)
        if trainer is not None:
            state["_opt_state_host"] = _host_tree(trainer.backend, trainer.opt_state)
        return state

    # -- shared helpers ----------------------------------------------------------------------
    def _get_backend(self):
        return get_backend(self.backend)

    def _hidden_sizes(self) -> list[int]:
        sizes = self.hidden_layer_sizes
        if not hasattr(sizes, "__iter__"):
            sizes = [sizes]
        sizes = list(sizes)
        for s in sizes:
            if isinstance(s, (bool, np.bool_)) or not isinstance(s, numbers.Integral):
                raise ValueError(f"hidden_layer_sizes must hold integers, got {self.hidden_layer_sizes!r}")
        if any(s <= 0 for s in sizes):
            raise ValueError(f"hidden_layer_sizes must be > 0, got {sizes}.")
        return [int(s) for s in sizes]

    def _model(self) -> _SklearnMLP:
        units = [W.shape[0] for W in self.coefs_] + [self.coefs_[-1].shape[1]]
        divisor = self.n_outputs_ if self.out_activation_ == "identity" else 1
        return _SklearnMLP(units, self.activation, self.out_activation_, float(self.alpha), divisor)

    def _optimizer(self):
        if self.solver == "sgd":
            return _StateRateSGD(float(self.momentum), bool(self.nesterovs_momentum))
        return Adam(float(self.learning_rate_init), float(self.beta_1), float(self.beta_2), float(self.epsilon))

    def _optimizer_key(self, optimizer) -> tuple:
        if isinstance(optimizer, _StateRateSGD):
            return optimizer.key
        return ("adam", optimizer.lr.lr, optimizer.beta1, optimizer.beta2, optimizer.eps)

    def _device_params(self, backend) -> tuple:
        return tuple((backend.asarray(W), backend.asarray(b)) for W, b in zip(self.coefs_, self.intercepts_))

    def _forward(self, backend, model, params, X: np.ndarray) -> np.ndarray:
        """The network's output ŷ (probabilities for classification) for host rows X, on the host."""
        xp = backend.xp
        chunk = X.shape[0] if backend.name == "numpy" else 16384
        outputs = []
        for start in range(0, X.shape[0], max(chunk, 1)):
            Xb = backend.asarray(np.asarray(X[start : start + chunk], dtype=backend.dtype_name))
            Z = model.forward(xp, params, Xb)[1][-1]
            outputs.append(backend.to_numpy(model.loss_layer.output(xp, Z)))
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs, axis=0)

    def _forward_pass_fast(self, X, check_input: bool = True) -> np.ndarray:
        """ŷ for X, in X's floating dtype (scikit-learn's name for it)."""
        if check_input:
            X = validate_data(self, _host_input(X), accept_sparse=True, dtype=_FLOAT_DTYPES, reset=False)
        X = _dense(X)
        backend = self._get_backend()
        out = self._forward(backend, self._model(), self._device_params(backend), X)
        return out.astype(X.dtype if X.dtype in _FLOAT_DTYPES else np.float64, copy=False)

    def _score_with_function(self, X, y, score_function):
        y_pred = self._predict(X, check_input=False)
        if np.issubdtype(y_pred.dtype, np.floating) and not np.isfinite(y_pred).all():
            return np.nan
        return score_function(y, y_pred)

    def _check_solver(self) -> bool:
        if self.solver not in _STOCHASTIC_SOLVERS:
            raise AttributeError(f"partial_fit is only available for stochastic optimizers. {self.solver} is not stochastic.")
        return True

    # -- fitting -----------------------------------------------------------------------------
    def fit(self, X, y):
        """Fit the model to data matrix X and target(s) y.

        X: {array-like, sparse matrix} of shape (n_samples, n_features).  y: class labels (or a
        label-indicator matrix) for classification, real numbers (n_samples,) or
        (n_samples, n_outputs) for regression.  Returns self.
        """
        self._validate_params()
        return self._fit(X, y, incremental=False)

    def _fit(self, X, y, incremental: bool):
        hidden = self._hidden_sizes()
        first_pass = not hasattr(self, "coefs_") or (not self.warm_start and not incremental)
        X, y = self._validate_input(_host_input(X), _host_input(y), incremental, reset=first_pass)
        X = _dense(X)
        if y.ndim == 1:
            y = y.reshape((-1, 1))
        n_features, n_outputs = X.shape[1], y.shape[1]
        layer_units = [n_features] + hidden + [n_outputs]
        backend = self._get_backend()
        self._random_state = _random_state(self)

        if first_pass:
            self._initialize(y, layer_units, np.dtype(backend.dtype_name))
        else:
            units = [W.shape[0] for W in self.coefs_] + [self.coefs_[-1].shape[1]]
            if units != layer_units:
                raise ValueError(
                    f"the network fitted before has layer sizes {units}, but hidden_layer_sizes and this "
                    f"data ask for {layer_units}; set warm_start=False (or refit) to start a new network"
                )
            self.n_outputs_ = n_outputs
        if self.out_activation_ == "exp" and np.any(y < 0):
            raise ValueError("loss='poisson' needs y >= 0 (some values of y are negative)")

        X = np.asarray(X, dtype=backend.dtype_name)
        Y = np.asarray(y, dtype=backend.dtype_name)
        if self.solver in _STOCHASTIC_SOLVERS:
            self._fit_stochastic(backend, X, Y, incremental)
        else:
            self._fit_lbfgs(backend, X, Y)

        if not all(np.isfinite(w).all() for w in self.coefs_ + self.intercepts_):
            raise ValueError(
                "Solver produced non-finite parameter weights. The input data may contain large values "
                "and need to be preprocessed."
            )
        return self

    def _initialize(self, y, layer_units, dtype) -> None:
        self.n_iter_ = 0
        self.t_ = 0
        self.n_outputs_ = y.shape[1]
        self.n_layers_ = len(layer_units)
        if not is_classifier(self):
            self.out_activation_ = "exp" if getattr(self, "loss", "squared_error") == "poisson" else "identity"
        elif self._label_binarizer.y_type_ == "multiclass":
            self.out_activation_ = "softmax"
        else:
            self.out_activation_ = "logistic"

        # scikit-learn's initialisation, draw for draw: U(±√(k/(fan_in+fan_out))), W then b per layer
        factor = 2.0 if self.activation == "logistic" else 6.0
        self.coefs_, self.intercepts_ = [], []
        for fan_in, fan_out in zip(layer_units[:-1], layer_units[1:]):
            bound = np.sqrt(factor / (fan_in + fan_out))
            W = self._random_state.uniform(-bound, bound, (fan_in, fan_out))
            b = self._random_state.uniform(-bound, bound, fan_out)
            self.coefs_.append(W.astype(dtype, copy=False))
            self.intercepts_.append(b.astype(dtype, copy=False))
        self._best_coefs = [c.copy() for c in self.coefs_]
        self._best_intercepts = [i.copy() for i in self.intercepts_]
        self._opt_state_host = None
        self._optimizer_signature = None  # nothing to resume: the next trainer's optimizer state starts fresh

        if self.solver in _STOCHASTIC_SOLVERS:
            self.loss_curve_ = []
            self._no_improvement_count = 0
            if self.early_stopping:
                self.validation_scores_ = []
                self.best_validation_score_ = -np.inf
                self.best_loss_ = None
            else:
                self.best_loss_ = np.inf
                self.validation_scores_ = None
                self.best_validation_score_ = None

    def _get_trainer(self, backend, model: _SklearnMLP, optimizer, incremental: bool) -> Trainer:
        """The Trainer for this call, its params from coefs_.  Its optimizer state goes on from the
        last call for partial_fit with unchanged hyperparameters, else starts fresh.  The last
        call's trainer is reused, buffers and all, when it ran the same network and optimizer on
        the same backend (building one costs about an epoch of digits); its compiled step is
        shared with every trainer of the same network and optimizer anyway (cached by config)."""
        signature = (model.key, self._optimizer_key(optimizer))
        # partial_fit goes on with the last call's optimizer state (none after _initialize)
        resume = incremental and getattr(self, "_optimizer_signature", None) == signature
        old = getattr(self, "_trainer", None)
        if old is not None and self._trainer_signature == signature and _backend_key(old.backend) == _backend_key(backend):
            trainer = old
        else:
            if resume and old is not None:  # the state moves to the other backend through the host
                self._opt_state_host = _host_tree(old.backend, old.opt_state)
            trainer = Trainer(model, optimizer, backend=backend, seed=0)
        trainer.params = self._device_params(backend)
        if resume and trainer is not old and self._opt_state_host is not None:  # unpickled, or another backend
            trainer.opt_state = _device_tree(backend, self._opt_state_host)
        elif not resume or trainer is not old:
            if isinstance(optimizer, _StateRateSGD):
                trainer.opt_state = optimizer.init_with_rate(trainer.params, float(self.learning_rate_init))
            else:
                trainer.opt_state = optimizer.init(trainer.params)
        self._trainer, self._trainer_signature, self._opt_state_host, self._optimizer_signature = trainer, signature, None, signature
        return trainer

    def _fit_stochastic(self, backend, X, Y, incremental: bool) -> None:
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        model, optimizer = self._model(), self._optimizer()
        trainer = self._get_trainer(backend, model, optimizer, incremental)
        sgd = isinstance(optimizer, _StateRateSGD)
        early_stopping = self.early_stopping
        if early_stopping:
            should_stratify = is_classifier(self) and self.n_outputs_ == 1  # as scikit-learn: binary only
            X_train, X_val, Y_train, y_val = train_test_split(
                X, Y, random_state=self._random_state, test_size=self.validation_fraction,
                stratify=Y if should_stratify else None,
            )
            if X_val.shape[0] < 2:
                raise ValueError(
                    "The validation set is too small. Increase 'validation_fraction' or the size of your dataset."
                )
            if is_classifier(self):
                y_val = self._label_binarizer.inverse_transform(y_val)
        else:
            X_train, Y_train, X_val, y_val = X, Y, None, None

        n_samples = X_train.shape[0]
        if self.batch_size == "auto":
            batch_size = min(200, n_samples)
        else:
            if self.batch_size > n_samples:
                warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is going to be clipped")
            batch_size = int(np.clip(self.batch_size, 1, n_samples))

        xp = backend.xp
        X_train, Y_train = backend.asarray(X_train), backend.asarray(Y_train)  # on the device (NumPy: as they are)
        fused = isinstance(trainer.step, FusedStep)
        sample_idx = np.arange(n_samples, dtype=int)
        batches = _batches(n_samples, batch_size)
        # NumPy, CuPy: Ctrl-C only sets a flag, read between two steps and between two epochs (the
        # fused step writes its buffers in place)
        with deferred_interrupt() if fused else contextlib.nullcontext(lambda: False) as interrupted:
            try:
                self.n_iter_ = 0
                for _ in range(self.max_iter):
                    if interrupted():
                        raise KeyboardInterrupt
                    if self.shuffle:
                        sample_idx = _shuffled(sample_idx, self._random_state)
                    if fused:  # NumPy, CuPy: the epoch's steps in one call
                        rows = [sample_idx[batch] for batch in batches]
                        trainer.params, trainer.opt_state, totals = trainer.step.epoch(
                            trainer.params, trainer.opt_state, X_train, Y_train, rows, should_stop=interrupted,
                            count_correct=False)
                        trainer.steps += totals.steps
                        if interrupted():
                            raise KeyboardInterrupt
                        total, all_ok = totals.loss, totals.first_bad < 0  # Σ batch loss × batch size, as scikit-learn
                    else:  # JAX, array_api_strict: one compiled step per batch, no host synchronisation inside the epoch
                        order = backend.asarray(sample_idx) if self.shuffle else None
                        stats = []  # [loss, correct, ok] per step, brought to the host once per epoch
                        for batch in batches:
                            if self.shuffle:
                                index = order[batch]
                                Xb, Yb = xp.take(X_train, index, axis=0), xp.take(Y_train, index, axis=0)
                            else:
                                Xb, Yb = X_train[batch, ...], Y_train[batch, ...]
                            trainer.params, trainer.opt_state, step_stats = trainer.step(
                                trainer.params, trainer.opt_state, Xb, Yb)
                            stats.append(step_stats)
                            trainer.steps += 1
                        stats = backend.to_numpy(xp.stack(stats)).astype(np.float64)
                        sizes = np.array([batch.stop - batch.start for batch in batches], dtype=np.float64)
                        total, all_ok = float(stats[:, 0] @ sizes), bool(np.all(stats[:, 2]))  # Σ loss × batch size, as scikit-learn
                    if not all_ok:
                        self.coefs_, self.intercepts_ = _to_host_params(backend, trainer.params)
                        raise ValueError(
                            "Solver produced non-finite parameter weights. The input data may contain large values "
                            "and need to be preprocessed. (The step whose loss or updated weights were not finite "
                            "was refused; coefs_ and intercepts_ hold the weights of the last finite step.)"
                        )

                    self.n_iter_ += 1
                    self.loss_ = float(total) / n_samples
                    self.t_ += n_samples
                    self.loss_curve_.append(self.loss_)
                    if self.verbose:
                        print("Iteration %d, loss = %.8f" % (self.n_iter_, self.loss_))

                    self._update_no_improvement_count(early_stopping, backend, model, trainer, X_val, y_val)

                    if sgd and self.learning_rate == "invscaling":  # scikit-learn's iteration_ends(t_)
                        _set_sgd_rate(trainer, float(self.learning_rate_init) / (self.t_ + 1) ** float(self.power_t))

                    if self._no_improvement_count > self.n_iter_no_change:
                        if early_stopping:
                            msg = "Validation score did not improve more than tol=%f for %d consecutive epochs." % (
                                self.tol, self.n_iter_no_change)
                        else:
                            msg = "Training loss did not improve more than tol=%f for %d consecutive epochs." % (
                                self.tol, self.n_iter_no_change)
                        if not (sgd and self.learning_rate == "adaptive"):
                            if self.verbose:
                                print(msg + " Stopping.")
                            break
                        rate = float(trainer.opt_state[-1])
                        if rate <= 1e-6:
                            if self.verbose:
                                print(msg + " Learning rate too small. Stopping.")
                            break
                        _set_sgd_rate(trainer, rate / 5.0)
                        if self.verbose:
                            print(msg + " Setting learning rate to %f" % (rate / 5.0))
                        self._no_improvement_count = 0

                    if incremental:
                        break
                    if self.n_iter_ == self.max_iter:
                        warnings.warn(
                            "Stochastic Optimizer: Maximum iterations (%d) reached and the optimization hasn't converged yet."
                            % self.max_iter,
                            ConvergenceWarning,
                        )
            except KeyboardInterrupt:
                warnings.warn("Training interrupted by user.")

        if early_stopping:
            self.coefs_, self.intercepts_ = self._best_coefs, self._best_intercepts
        else:
            self.coefs_, self.intercepts_ = _to_host_params(backend, trainer.params)

    def _update_no_improvement_count(self, early_stopping, backend, model, trainer, X_val, y_val) -> None:
        if early_stopping:
            out = self._forward(backend, model, trainer.params, X_val)
            y_pred = self._decode(out)
            if np.issubdtype(y_pred.dtype, np.floating) and not np.isfinite(y_pred).all():
                score = np.nan
            else:
                score = self._score_function(y_val, y_pred)
            self.validation_scores_.append(score)
            if self.verbose:
                print("Validation score: %f" % self.validation_scores_[-1])
            if score < self.best_validation_score_ + self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if score > self.best_validation_score_:
                self.best_validation_score_ = score
                self._best_coefs, self._best_intercepts = _to_host_params(backend, trainer.params)
        else:
            if self.loss_curve_[-1] > self.best_loss_ - self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if self.loss_curve_[-1] < self.best_loss_:
                self.best_loss_ = self.loss_curve_[-1]

    def _fit_lbfgs(self, backend, X, Y) -> None:
        """L-BFGS-B from scipy over the flattened parameters; loss and hand-written gradient on the backend."""
        import scipy.optimize

        model = self._model()
        loss_divisor, model.loss_divisor = model.loss_divisor, 1  # minimise what the gradient is of
        xp = backend.xp
        vg = _compiled(
            ("value_and_grad", _backend_key(backend), model.key),
            lambda: backend.jit(lambda params, X, Y: model.value_and_grad(xp, params, X, Y)[:2]),
        )
        Xd, Yd = backend.asarray(X), backend.asarray(Y)
        shapes = [W.shape for W in self.coefs_]
        sizes = [int(np.prod(s)) for s in shapes] + [s[1] for s in shapes]
        bounds = np.cumsum([0] + sizes)
        L = len(shapes)
        self._trainer = None

        def unpack(w):
            pieces = [w[bounds[i] : bounds[i + 1]] for i in range(2 * L)]
            return tuple(
                (backend.asarray(pieces[l].reshape(shapes[l])), backend.asarray(pieces[L + l])) for l in range(L)
            )

        def fun(w):
            loss, grads = vg(unpack(w), Xd, Yd)
            host = [backend.to_numpy(dW).ravel() for dW, _ in grads] + [backend.to_numpy(db) for _, db in grads]
            return float(loss), np.concatenate(host).astype(np.float64)

        x0 = np.concatenate([W.ravel() for W in self.coefs_] + [b.ravel() for b in self.intercepts_]).astype(np.float64)
        callback = None
        if self.verbose:
            def callback(intermediate_result):
                print("L-BFGS iteration, loss = %.8f" % intermediate_result.fun)
        result = scipy.optimize.minimize(
            fun, x0, method="L-BFGS-B", jac=True, callback=callback,
            options={"maxfun": self.max_fun, "maxiter": self.max_iter, "gtol": self.tol},
        )
        if result.status != 0:
            message = result.message.decode("latin1") if isinstance(result.message, bytes) else result.message
            warnings.warn(
                f"lbfgs failed to converge after {result.nit} iteration(s) (status={result.status}):\n{message}.\n\n"
                f"Increase the number of iterations to improve the convergence (max_iter={self.max_iter}).\n"
                "You might also want to scale the data as shown in:\n"
                "    https://scikit-learn.org/stable/modules/preprocessing.html",
                ConvergenceWarning,
                stacklevel=3,
            )
        self.n_iter_ = min(result.nit, self.max_iter)
        w = result.x
        dtype = np.dtype(backend.dtype_name)
        self.coefs_ = [w[bounds[l] : bounds[l + 1]].reshape(shapes[l]).astype(dtype) for l in range(L)]
        self.intercepts_ = [w[bounds[L + l] : bounds[L + l + 1]].astype(dtype) for l in range(L)]
        loss = float(result.fun)
        if loss_divisor != 1:
            squares = sum(float(np.sum(np.square(W, dtype=np.float64))) for W in self.coefs_)
            penalty = 0.5 * float(self.alpha) * squares / X.shape[0]
            loss = (loss - penalty) / loss_divisor + penalty
        self.loss_ = loss

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier trained by backprop's hand-written backward pass.

    A drop-in for ``sklearn.neural_network.MLPClassifier``: the same parameters, defaults,
    fitted attributes and methods, plus ``backend`` (see the module docstring, which also lists
    how each part maps onto the library and the few differences).

    Parameters
    ----------
    hidden_layer_sizes : array-like of shape (n_layers - 2,), default=(100,)
        The number of units of each hidden layer.
    activation : {"identity", "logistic", "tanh", "relu"}, default="relu"
        The hidden layers' activation.
    solver : {"lbfgs", "sgd", "adam"}, default="adam"
        "adam" and "sgd" train by minibatches with the library's compiled step; "lbfgs" runs
        scipy's L-BFGS-B with the loss and gradient computed on the backend.
    alpha : float, default=0.0001
        Strength of the L2 penalty, (alpha / 2n) Σ‖W‖² as in scikit-learn.
    batch_size : int or "auto", default="auto"
        Minibatch size for the stochastic solvers; "auto" is min(200, n_samples).
    learning_rate : {"constant", "invscaling", "adaptive"}, default="constant"
        The rate schedule of solver="sgd" (see the module docstring).
    learning_rate_init : float, default=0.001
        The initial learning rate (sgd and adam).
    power_t : float, default=0.5
        The exponent of "invscaling".
    max_iter : int, default=200
        The most epochs (stochastic solvers) or iterations (lbfgs).
    shuffle : bool, default=True
        Whether to shuffle the samples at each epoch.
    random_state : int, RandomState instance or None, default=None
        Seeds the initial weights, the shuffling and the early-stopping split, exactly as in
        scikit-learn.
    tol : float, default=1e-4
        The improvement that counts as progress for the convergence rule (and lbfgs's gtol).
    verbose : bool, default=False
        Print the loss of each epoch.
    warm_start : bool, default=False
        Continue from the previous fit's weights.
    momentum : float, default=0.9
        Momentum of solver="sgd".
    nesterovs_momentum : bool, default=True
        Nesterov's momentum for solver="sgd" (when momentum > 0).
    early_stopping : bool, default=False
        Hold out validation_fraction of the training data, stop when its accuracy stops
        improving by tol for n_iter_no_change epochs, and keep the best weights.
    validation_fraction : float, default=0.1
        The held-out fraction for early stopping.
    beta_1, beta_2, epsilon : float, default=0.9, 0.999, 1e-8
        Adam's hyperparameters.
    n_iter_no_change : int, default=10
        Epochs without tol improvement before stopping (or, with "adaptive", dividing the rate by 5).
    max_fun : int, default=15000
        The most loss evaluations of lbfgs.
    backend : {"numpy", "cupy", "jax", "array_api_strict"} or None, default=None
        Where to compute; None reads BACKPROP_BACKEND.

    Attributes
    ----------
    classes_, loss_, best_loss_, loss_curve_, validation_scores_, best_validation_score_, t_,
    coefs_, intercepts_, n_features_in_, feature_names_in_, n_iter_, n_layers_, n_outputs_,
    out_activation_ : as in scikit-learn (coefs_ and intercepts_ are NumPy arrays in the
    backend's dtype).
    """

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        max_fun=15000,
        backend=None,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.backend = backend

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(self, X, y, accept_sparse=True, multi_output=True, dtype=_FLOAT_DTYPES, reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if (not hasattr(self, "classes_")) or (not self.warm_start and not incremental):
            self._label_binarizer = _fit_label_binarizer(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            # np.unique is unique_labels for 1-D integer, boolean and string labels, without its checks
            classes = np.unique(y) if y.ndim == 1 and y.dtype.kind in "biuU" else unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError(
                        "warm_start can only be used where `y` has the same classes as in the previous call "
                        f"to fit. Previously got {self.classes_}, `y` has {classes}"
                    )
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(
                    f"`y` has classes not in `self.classes_`. `self.classes_` has {self.classes_}. 'y' has {classes}."
                )
        return X, self._binarize(y)

    def _binarize(self, y) -> np.ndarray:
        """``self._label_binarizer.transform(y)`` as booleans (every label of y is in classes_ here).

        1-D multiclass and two-class labels are encoded directly (one-hot; the column of
        classes_[1]): LabelBinarizer's own checks cost about as much as an epoch on small data.
        """
        binarizer, classes = self._label_binarizer, self.classes_
        if y.ndim == 1 and not binarizer.sparse_output and (
                (binarizer.y_type_ == "multiclass" and len(classes) > 2) or (binarizer.y_type_ == "binary" and len(classes) == 2)):
            codes = np.searchsorted(classes, y)
            if len(classes) == 2:
                return (codes == 1)[:, None]
            return codes[:, None] == np.arange(len(classes))
        return binarizer.transform(y).astype(bool)

    def _decode(self, y_pred: np.ndarray):
        if self.n_outputs_ == 1:
            y_pred = y_pred.ravel()
        return self._label_binarizer.inverse_transform(y_pred)

    @staticmethod
    def _score_function(y, y_pred):
        return accuracy_score(y, y_pred)

    def predict(self, X):
        """The predicted classes, shape (n_samples,) or (n_samples, n_classes) for multi-label y."""
        check_is_fitted(self)
        return self._predict(X)

    def _predict(self, X, check_input: bool = True):
        return self._decode(self._forward_pass_fast(X, check_input=check_input))

    def _score(self, X, y):
        return self._score_with_function(X, y, accuracy_score)

    @available_if(lambda est: est._check_solver())
    def partial_fit(self, X, y, classes=None):
        """One epoch over (X, y) (stochastic solvers only); ``classes`` is required on the first call."""
        self._validate_params()
        if _check_partial_fit_first_call(self, classes):
            self._label_binarizer = LabelBinarizer()
            if type_of_target(_host_input(y)).startswith("multilabel"):
                self._label_binarizer.fit(_host_input(y))
            else:
                self._label_binarizer.fit(classes)
        return self._fit(X, y, incremental=True)

    def predict_log_proba(self, X):
        """log(predict_proba(X))."""
        y_prob = self.predict_proba(X)
        with np.errstate(divide="ignore"):
            return np.log(y_prob, out=y_prob)

    def predict_proba(self, X):
        """Class probabilities, shape (n_samples, n_classes), columns in the order of ``classes_``."""
        check_is_fitted(self)
        y_pred = self._forward_pass_fast(X)
        if self.n_outputs_ == 1:
            y_pred = y_pred.ravel()
        if y_pred.ndim == 1:
            return np.vstack([1 - y_pred, y_pred]).T
        return y_pred

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor trained by backprop's hand-written backward pass.

    A drop-in for ``sklearn.neural_network.MLPRegressor``: the same parameters (``loss`` first,
    as in scikit-learn 1.9), defaults, fitted attributes and methods, plus ``backend``.  See
    `MLPClassifier` for the parameters they share and the module docstring for the details.

    Parameters
    ----------
    loss : {"squared_error", "poisson"}, default="squared_error"
        Half the squared error with an identity output, or half the Poisson deviance with an
        exponential output (y >= 0).
    """

    _parameter_constraints: dict = {
        **_BaseMLP._parameter_constraints,
        "loss": [StrOptions({"squared_error", "poisson"})],
    }

    def __init__(
        self,
        loss="squared_error",
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        max_fun=15000,
        backend=None,
    ):
        self.loss = loss
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.backend = backend

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(
            self, X, y, accept_sparse=True, multi_output=True, y_numeric=True, dtype=_FLOAT_DTYPES, reset=reset
        )
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        return X, y

    @staticmethod
    def _decode(y_pred: np.ndarray):
        return y_pred.ravel() if y_pred.shape[1] == 1 else y_pred

    @staticmethod
    def _score_function(y, y_pred):
        return r2_score(y, y_pred)

    def predict(self, X):
        """The predicted values, shape (n_samples,) or (n_samples, n_outputs)."""
        check_is_fitted(self)
        return self._predict(X)

    def _predict(self, X, check_input: bool = True):
        return self._decode(self._forward_pass_fast(X, check_input=check_input))

    def _score(self, X, y):
        return self._score_with_function(X, y, r2_score)

    @available_if(lambda est: est._check_solver())
    def partial_fit(self, X, y):
        """One epoch over (X, y) (stochastic solvers only)."""
        self._validate_params()
        return self._fit(X, y, incremental=True)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
