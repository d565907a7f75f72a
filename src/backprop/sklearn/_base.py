"""`_BaseMLP`: what MLPClassifier and MLPRegressor share (scikit-learn's BaseMultilayerPerceptron).

The parameters and their check, the network and optimizer built from them, the weights'
initialisation, the trainer kept between calls, scikit-learn's epoch loop (convergence rule,
early stopping, rate schedule) for the stochastic solvers, and the forward pass of predict.
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np
from sklearn.base import BaseEstimator, is_classifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import gen_batches
from sklearn.utils._param_validation import Interval, Options, StrOptions
from sklearn.utils.validation import _check_sample_weight, validate_data

from ..backends import BACKENDS, get_backend
from ..core.optim import AdamSklearn
from ..core.tree import tree_map
from ..core.validation import check_finite, is_sparse
from ..training.interrupt import deferred_interrupt
from ..training.trainer import Trainer
from ._lbfgs import _check_weight_sum, _fit_lbfgs
from ._network import _SklearnMLP
from ._sgd import _set_sgd_rate, _StateRateSGD
from ._utils import (
    _FLOAT_DTYPES,
    _as_dtype,
    _chunk_rows,
    _host_copy,
    _host_input,
    _host_params,
    _param_names,
    _random_state,
)

_STOCHASTIC_SOLVERS = ("sgd", "adam")
_NON_FINITE = (
    "Solver produced non-finite parameter weights. The input data may contain large values and need to be preprocessed."
)
_OUTPUT = "the network's output (X or the parameters are too large for the dtype?)"  # as MLP.predict words it


class _BaseMLP(BaseEstimator):
    """What MLPClassifier and MLPRegressor share (scikit-learn's BaseMultilayerPerceptron).

    Subclasses define ``_validate_input(X, y, incremental, reset) -> (X, y encoded)``,
    ``_decode(network output) -> predictions`` and ``_score_function(y, y_pred)``.
    """

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
        "dtype": [None, StrOptions({"float32", "float64"}), Options(type, {np.float32, np.float64})],
        "blas_threads": [None, Interval(numbers.Integral, 1, None, closed="left")],
    }

    def _validate_params(self):
        """scikit-learn's check of the constructor parameters, skipped while every parameter is
        the very object it passed last time (none of them a list, dict or array, which could have
        changed in place).  The check inspects the constructor's signature on every call, which
        partial_fit would pay every epoch (see docs/benchmarks.md)."""
        values = tuple(getattr(self, name) for name in _param_names(type(self)))
        checked = self.__dict__.get("_checked_params")
        if checked is not None and all(a is b for a, b in zip(values, checked, strict=True)):
            return
        super()._validate_params()
        if not any(isinstance(v, (list, dict, set, np.ndarray)) for v in values):
            self._checked_params = values

    def __getstate__(self):
        """Only NumPy state: the trainer (device arrays, compiled step) is rebuilt after unpickling."""
        state = dict(super().__getstate__())
        trainer = state.pop("_trainer", None)
        if trainer is not None:
            state["_opt_state_host"] = _host_copy(trainer.backend, trainer.opt_state)
        return state

    # -- the network, the optimizer and the parameters --------------------------------------
    def _network_dtype(self, X) -> str:
        """The dtype a new network computes in: ``dtype``, else X's (validated: float64 or float32)."""
        return np.dtype(self.dtype if self.dtype is not None else X.dtype).name

    def _get_backend(self, dtype: str | None = None):
        """The backend (``backend``, None: ``BACKPROP_BACKEND``) in ``dtype``, None: the fitted network's."""
        return get_backend(self.backend, dtype=dtype or self.coefs_[0].dtype.name)

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

    def _layer_units(self) -> list[int]:
        """The layer sizes of the fitted network, inputs to outputs."""
        return [W.shape[0] for W in self.coefs_] + [self.coefs_[-1].shape[1]]

    def _loss_divisor(self) -> int:
        """What the reported data loss is divided by: the number of outputs for the squared error."""
        return self.n_outputs_ if self.out_activation_ == "identity" else 1

    def _model(self) -> _SklearnMLP:
        return _SklearnMLP(
            self._layer_units(), self.activation, self.out_activation_, float(self.alpha), self._loss_divisor()
        )

    def _optimizer(self):
        if self.solver == "sgd":
            return _StateRateSGD(float(self.momentum), bool(self.nesterovs_momentum))
        return AdamSklearn(float(self.learning_rate_init), float(self.beta_1), float(self.beta_2), float(self.epsilon))

    def _optimizer_key(self, optimizer) -> tuple:
        if isinstance(optimizer, _StateRateSGD):
            return optimizer.key
        return ("adam", optimizer.lr.lr, optimizer.beta1, optimizer.beta2, optimizer.eps)

    def _fresh_opt_state(self, optimizer, params):
        if isinstance(optimizer, _StateRateSGD):
            return optimizer.init_with_rate(params, float(self.learning_rate_init))
        return optimizer.init(params)

    def _device_params(self, backend) -> tuple:
        return tuple((backend.asarray(W), backend.asarray(b)) for W, b in zip(self.coefs_, self.intercepts_))

    # -- prediction --------------------------------------------------------------------------
    def _forward(self, backend, model, params, X: np.ndarray, logits: bool = False) -> np.ndarray:
        """The network's output ŷ (probabilities for classification) for host rows X, on the host;
        with ``logits``, the output layer's pre-activations Z instead."""
        xp, sparse = backend.xp, is_sparse(X)
        if sparse:  # densified a chunk at a time
            chunk = _chunk_rows(X, np.dtype(backend.dtype_name).itemsize)
        else:
            chunk = X.shape[0] if backend.name == "numpy" else 16384
        outputs = []
        for start in range(0, X.shape[0], max(chunk, 1)):
            Xb = X[start : start + chunk]
            Xb = backend.asarray(Xb.toarray() if sparse else np.asarray(Xb, dtype=backend.dtype_name))
            Z = model.forward(xp, params, Xb)[1][-1]
            outputs.append(backend.to_numpy(Z if logits else model.loss_layer.output(xp, Z)))
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs, axis=0)

    def _forward_pass_fast(self, X, logits: bool = False) -> np.ndarray:
        """ŷ for X (the logits Z with ``logits``), in X's floating dtype (scikit-learn's name for it).

        ValueError, as the Trainer's, when X has values too large for the network's dtype or the
        output is not finite (finite X and weights whose forward pass overflows the dtype)."""
        X = validate_data(self, _host_input(X), accept_sparse="csr", dtype=_FLOAT_DTYPES, reset=False)
        backend = self._get_backend()
        X_net = _as_dtype(X, backend.dtype_name, "X")
        out = self._forward(backend, self._model(), self._device_params(backend), X_net, logits=logits)
        check_finite(np, out, _OUTPUT)
        return out.astype(X.dtype if X.dtype in _FLOAT_DTYPES else np.float64, copy=False)

    def _check_solver(self) -> bool:
        if self.solver not in _STOCHASTIC_SOLVERS:
            raise AttributeError(
                f"partial_fit is only available for stochastic optimizers. {self.solver} is not stochastic."
            )
        return True

    # -- fitting -----------------------------------------------------------------------------
    def fit(self, X, y, sample_weight=None):
        """Fit the model to data matrix X and target(s) y.

        X: {array-like, sparse matrix} of shape (n_samples, n_features).  y: class labels (or a
        label-indicator matrix) for classification, real numbers (n_samples,) or
        (n_samples, n_outputs) for regression.  sample_weight: array-like of shape (n_samples,)
        or None (scikit-learn's checks; each batch's loss is its weighted mean, see the module
        docstring).  Returns self.
        """
        self._validate_params()
        return self._fit(X, y, incremental=False, sample_weight=sample_weight)

    def _fit(self, X, y, incremental: bool, sample_weight=None):
        hidden = self._hidden_sizes()
        first_pass = not hasattr(self, "coefs_") or (not self.warm_start and not incremental)
        X, y = self._validate_input(_host_input(X), _host_input(y), incremental, reset=first_pass)
        if sample_weight is not None:  # scikit-learn's check: 1-D, one per sample, finite, not all zero
            sample_weight = _check_sample_weight(_host_input(sample_weight), X)
        if y.ndim == 1:
            y = y.reshape((-1, 1))
        layer_units = [X.shape[1]] + hidden + [y.shape[1]]
        # a new network computes in ``dtype`` or X's dtype; one fitted before (warm_start, partial_fit) in its own
        backend = self._get_backend(self._network_dtype(X) if first_pass else None)
        X, Y = _as_dtype(X, backend.dtype_name, "X"), _as_dtype(y, backend.dtype_name, "y")  # before any state changes
        W = None if sample_weight is None else _as_dtype(sample_weight, backend.dtype_name, "sample_weight")
        self._random_state = _random_state(self)

        if first_pass:
            self._initialize(y, layer_units, np.dtype(backend.dtype_name))
        else:
            self._check_layer_units(layer_units)
            self.n_outputs_ = y.shape[1]
        if self.out_activation_ == "exp" and np.any(y < 0):
            raise ValueError("loss='poisson' needs y >= 0 (some values of y are negative)")

        if self.solver in _STOCHASTIC_SOLVERS:
            self._fit_stochastic(backend, X, Y, incremental, W)
        else:
            self._trainer = None
            _fit_lbfgs(self, backend, X, Y, W)

        if not all(np.isfinite(w).all() for w in self.coefs_ + self.intercepts_):
            raise ValueError(_NON_FINITE)
        return self

    def _check_layer_units(self, layer_units: list[int]) -> None:
        if self._layer_units() != layer_units:
            raise ValueError(
                f"the network fitted before has layer sizes {self._layer_units()}, but hidden_layer_sizes and this "
                f"data ask for {layer_units}; set warm_start=False (or refit) to start a new network"
            )

    def _initialize(self, y, layer_units, dtype) -> None:
        self.n_iter_ = 0
        self.t_ = 0
        self.n_outputs_ = y.shape[1]
        self.n_layers_ = len(layer_units)
        self.out_activation_ = self._out_activation()
        self._initialize_weights(layer_units, dtype)
        self._opt_state_host = None
        self._optimizer_signature = None  # nothing to resume: the next trainer's optimizer state starts fresh
        if self.solver in _STOCHASTIC_SOLVERS:
            self._initialize_curves()

    def _out_activation(self) -> str:
        if not is_classifier(self):
            return "exp" if getattr(self, "loss", "squared_error") == "poisson" else "identity"
        return "softmax" if self._label_binarizer.y_type_ == "multiclass" else "logistic"

    def _initialize_weights(self, layer_units, dtype) -> None:
        """scikit-learn's initialisation, draw for draw: U(±√(k/(fan_in+fan_out))), W then b per layer."""
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

    def _initialize_curves(self) -> None:
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
        """The Trainer for this call, its params from coefs_.

        Its optimizer state goes on from the last call for partial_fit with unchanged
        hyperparameters (moved through the host when the backend changed), else starts fresh.
        The last call's trainer is reused, buffers and all, when it ran the same network and
        optimizer on the same backend (see docs/benchmarks.md); its compiled step is shared with
        every trainer of the same network and optimizer anyway (the Trainer caches it by config).
        It runs at ``blas_threads`` (see `backprop.training.trainer.Trainer`).
        """
        signature = (model.key, self._optimizer_key(optimizer))
        # partial_fit goes on with the last call's optimizer state (none after _initialize)
        resume = incremental and getattr(self, "_optimizer_signature", None) == signature
        old = getattr(self, "_trainer", None)
        if old is not None and self._trainer_signature == signature and old.backend is backend:
            trainer = old
        else:
            if resume and old is not None:  # the state moves to the other backend through the host
                self._opt_state_host = _host_copy(old.backend, old.opt_state)
            trainer = Trainer(model, optimizer, backend=backend, seed=0, blas_threads=self.blas_threads)
        trainer.blas_threads = self.blas_threads  # (a reused trainer: the setting or the environment may have changed)
        trainer.params = self._device_params(backend)
        if resume and trainer is not old and self._opt_state_host is not None:  # unpickled, or another backend
            trainer.opt_state = tree_map(backend.asarray, self._opt_state_host)
        elif not resume or trainer is not old:
            trainer.opt_state = self._fresh_opt_state(optimizer, trainer.params)
        self._trainer, self._trainer_signature, self._opt_state_host = trainer, signature, None
        self._optimizer_signature = signature
        return trainer

    # -- the stochastic solvers: scikit-learn's epoch loop around the compiled step ----------
    def _fit_stochastic(self, backend, X, Y, incremental: bool, W=None) -> None:
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        model = self._model()
        trainer = self._get_trainer(backend, model, self._optimizer(), incremental)
        X_train, Y_train, X_val, y_val, W_train, w_val = self._validation_split(X, Y, W)
        batches = list(gen_batches(X_train.shape[0], self._batch_size(X_train.shape[0])))
        if not is_sparse(X_train):  # on the device (NumPy: as they are); a sparse X stays on the host
            X_train, Y_train = backend.asarray(X_train), backend.asarray(Y_train)  # (each batch densified)
        if W_train is not None:  # the sample weights on the device alike (gathered per batch by the step)
            W_train = backend.asarray(W_train)
        with deferred_interrupt() as interrupted:  # Ctrl-C lands between steps, on every backend
            try:
                self._epochs(
                    backend,
                    model,
                    trainer,
                    (X_train, Y_train, batches, W_train),
                    (X_val, y_val, w_val),
                    incremental,
                    interrupted,
                )
            except KeyboardInterrupt:
                warnings.warn("Training interrupted by user.", stacklevel=2)
        if self.early_stopping:
            self.coefs_, self.intercepts_ = self._best_coefs, self._best_intercepts
        else:
            self.coefs_, self.intercepts_ = _host_params(backend, trainer.params)

    def _validation_split(self, X, Y, W=None) -> tuple:
        """(X_train, Y_train, X_val, y_val, W_train, w_val): scikit-learn's early-stopping split,
        y_val as labels, the sample weights W (or None) split alike (the same rows: the split
        does not depend on how many arrays it splits); without early stopping, every sample
        trains and there is no validation set."""
        if not self.early_stopping:
            return X, Y, None, None, W, None
        should_stratify = is_classifier(self) and self.n_outputs_ == 1  # as scikit-learn: binary only
        # classifiers split the user's labels alongside (the same order as the encoded ones, so the
        # same split), which a stratified split's errors name: class True or 'cat', not 1.0
        labels = self._label_binarizer.inverse_transform(Y) if is_classifier(self) else Y
        X_train, X_val, Y_train, _, _, y_val, *weights = train_test_split(
            X,
            Y,
            labels,
            *(() if W is None else (W,)),
            random_state=self._random_state,
            test_size=self.validation_fraction,
            stratify=labels if should_stratify else None,
        )
        if X_val.shape[0] < 2:
            raise ValueError(
                "The validation set is too small. Increase 'validation_fraction' or the size of your dataset."
            )
        return X_train, Y_train, X_val, y_val, *(weights or (None, None))

    def _batch_size(self, n_samples: int) -> int:
        if self.batch_size == "auto":
            return min(200, n_samples)
        if self.batch_size > n_samples:
            warnings.warn(
                "Got `batch_size` less than 1 or larger than sample size. It is going to be clipped", stacklevel=3
            )
        return int(np.clip(self.batch_size, 1, n_samples))

    def _epochs(self, backend, model, trainer, train, validation, incremental: bool, interrupted) -> None:
        """Up to max_iter epochs (one for partial_fit) over ``train`` = (X, Y, batches, sample
        weights or None) on the device; ``validation`` = (X_val, y_val, sample weights or None)."""
        X, Y, batches, W = train
        n_samples = X.shape[0]
        sample_idx = np.arange(n_samples, dtype=int)
        self.n_iter_ = 0
        for _ in range(self.max_iter):
            if interrupted():
                raise KeyboardInterrupt
            if self.shuffle:  # scikit-learn's shuffle(sample_idx, random_state=...), draw for draw: a
                # permutation is arange + RandomState.shuffle, as its resample does, without the
                # parameter validation that costs a quarter of a millisecond per epoch
                sample_idx = sample_idx[self._random_state.permutation(n_samples)]
            totals = trainer.run_epoch(
                X, Y, [sample_idx[batch] for batch in batches], interrupted, count_correct=False, sample_weight=W
            )
            if interrupted():
                raise KeyboardInterrupt
            total, all_ok = totals.loss, totals.first_bad < 0
            if not all_ok and W is not None:  # a batch whose weights sum to 0: scikit-learn's np.average error
                _check_weight_sum(backend.to_numpy(W)[sample_idx[batches[totals.first_bad]]])
            if not all_ok and self.early_stopping:
                self._diverged(totals, batches, n_samples)
                break
            if not all_ok:
                self.coefs_, self.intercepts_ = _host_params(backend, trainer.params)
                raise ValueError(
                    _NON_FINITE + " (The step whose loss or updated weights were not finite was refused; "
                    "coefs_ and intercepts_ hold the weights of the last finite step.)"
                )
            self._record_epoch(total, n_samples)
            self._update_no_improvement_count(backend, model, trainer, *validation)
            if self._end_epoch(trainer) or incremental:
                break
            if self.n_iter_ == self.max_iter:
                warnings.warn(
                    "Stochastic Optimizer: Maximum iterations (%d) reached and the optimization hasn't converged yet."
                    % self.max_iter,
                    ConvergenceWarning,
                    stacklevel=3,
                )

    def _diverged(self, totals, batches, n_samples: int) -> None:
        """Early stopping through a diverging fit, as scikit-learn (>= 1.6) has it: the epoch whose
        step was refused (its loss or updated weights not finite) is recorded with its loss (the
        steps' sum, non-finite unless the refused step was the epoch's last) and a NaN validation
        score.  scikit-learn then trains on, on weights that are no longer finite, up to max_iter
        epochs (a NaN score never counts as "no improvement"), each with a NaN loss and score, and
        warns that max_iter was reached; those epochs are recorded here as it records them, without
        computing NaNs, with the same warning, after a ConvergenceWarning saying where training
        diverged.  fit then keeps the weights of the best validation score, as scikit-learn does."""
        bad = totals.first_bad
        last = bad == len(batches) - 1  # no step after the refused one: the epoch's loss is all there is
        total = totals.loss + totals.bad_loss * len(range(n_samples)[batches[bad]]) if last else np.nan
        scores = self.validation_scores_
        best = scores.index(self.best_validation_score_) + 1 if np.isfinite(self.best_validation_score_) else 0
        self._record_epoch(total, n_samples)
        scores.append(np.nan)
        self._print("Validation score: nan")
        warnings.warn(
            f"Training diverged in epoch {self.n_iter_}: a step's loss or updated weights were not finite "
            f"(loss {totals.bad_loss}). Training stopped; the weights of the best validation score "
            + (f"(epoch {best}) are kept." if best else "(none: the initial weights) are kept.")
            + " The input data may contain large values and need to be preprocessed, or learning_rate_init "
            "may be too large.",
            ConvergenceWarning,
            stacklevel=4,
        )
        while self.n_iter_ < self.max_iter:  # scikit-learn's epochs on non-finite weights
            self._record_epoch(np.nan, n_samples)
            scores.append(np.nan)
            self._print("Validation score: nan")
        warnings.warn(
            "Stochastic Optimizer: Maximum iterations (%d) reached and the optimization hasn't converged yet."
            % self.max_iter,
            ConvergenceWarning,
            stacklevel=4,
        )

    def _record_epoch(self, total: float, n_samples: int) -> None:
        """``total``: Σ batch loss × batch size over the epoch, as scikit-learn sums it."""
        self.n_iter_ += 1
        self.loss_ = float(total) / n_samples
        self.t_ += n_samples
        self.loss_curve_.append(self.loss_)
        self._print("Iteration %d, loss = %.8f" % (self.n_iter_, self.loss_))

    def _update_no_improvement_count(self, backend, model, trainer, X_val, y_val, w_val=None) -> None:
        if self.early_stopping:
            self._update_validation_score(backend, model, trainer, X_val, y_val, w_val)
            return
        if self.loss_curve_[-1] > self.best_loss_ - self.tol:
            self._no_improvement_count += 1
        else:
            self._no_improvement_count = 0
        if self.loss_curve_[-1] < self.best_loss_:
            self.best_loss_ = self.loss_curve_[-1]

    def _update_validation_score(self, backend, model, trainer, X_val, y_val, w_val=None) -> None:
        """Score the validation set (weighted by its sample weights ``w_val``, as scikit-learn's
        score(X_val, y_val, sample_weight_val)); keep the best weights on the host."""
        y_pred = self._decode(self._forward(backend, model, trainer.params, X_val))
        if np.issubdtype(y_pred.dtype, np.floating) and not np.isfinite(y_pred).all():
            score = np.nan
        else:
            score = self._score_function(y_val, y_pred, sample_weight=w_val)
        self.validation_scores_.append(score)
        self._print(f"Validation score: {score:f}")
        if score < self.best_validation_score_ + self.tol:
            self._no_improvement_count += 1
        else:
            self._no_improvement_count = 0
        if score > self.best_validation_score_:
            self.best_validation_score_ = score
            self._best_coefs, self._best_intercepts = _host_params(backend, trainer.params)

    def _end_epoch(self, trainer) -> bool:
        """scikit-learn's rate schedule and convergence rule at the end of an epoch; True to stop.

        "invscaling": η = learning_rate_init / (t_ + 1)^power_t.  After more than n_iter_no_change
        epochs without improvement: stop, or with "adaptive" divide η by 5 (stop once η ≤ 1e-6).
        """
        sgd = self.solver == "sgd"
        if sgd and self.learning_rate == "invscaling":  # scikit-learn's iteration_ends(t_)
            _set_sgd_rate(trainer, float(self.learning_rate_init) / (self.t_ + 1) ** float(self.power_t))
        if self._no_improvement_count <= self.n_iter_no_change:
            return False
        what = "Validation score" if self.early_stopping else "Training loss"
        msg = "%s did not improve more than tol=%f for %d consecutive epochs." % (what, self.tol, self.n_iter_no_change)
        if not (sgd and self.learning_rate == "adaptive"):
            self._print(msg + " Stopping.")
            return True
        rate = float(trainer.opt_state[-1])
        if rate <= 1e-6:
            self._print(msg + " Learning rate too small. Stopping.")
            return True
        _set_sgd_rate(trainer, rate / 5.0)
        self._print(msg + " Setting learning rate to %f" % (rate / 5.0))
        self._no_improvement_count = 0
        return False

    def _print(self, line: str) -> None:
        if self.verbose:
            print(line)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags
