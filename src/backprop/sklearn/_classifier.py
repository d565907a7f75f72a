"""`MLPClassifier`: scikit-learn's multi-layer perceptron classifier on backprop's backward pass."""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax
from sklearn.base import ClassifierMixin
from sklearn.metrics import accuracy_score
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import column_or_1d
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import _check_partial_fit_first_call, type_of_target, unique_labels
from sklearn.utils.validation import check_is_fitted, validate_data

from ._base import _BaseMLP
from ._utils import _FLOAT_DTYPES, _host_input


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier trained by backprop's hand-written backward pass.

    A drop-in for ``sklearn.neural_network.MLPClassifier``: the same parameters, defaults,
    fitted attributes and methods, plus ``backend``, ``dtype`` and ``blas_threads`` (see the
    module docstring, which also lists how each part maps onto the library and the few
    differences).

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
    backend : {"numpy", "cupy", "jax", "torch", "array_api_strict"} or None, default=None
        Where to compute; None reads BACKPROP_BACKEND.
    dtype : {"float32", "float64"} or None, default=None
        The dtype the network computes in.  None follows the data, as scikit-learn does: float32
        X trains a float32 network, float64 (or integer) X a float64 one.  Chosen when the
        weights are initialised; partial_fit, warm_start and predict go on in the fitted
        network's dtype (that of ``coefs_``).  BACKPROP_DTYPE does not apply to the estimators.
    blas_threads : int or None, default=None
        NumPy's BLAS thread count during fit and partial_fit (NumPy backend).  None: the
        ``BACKPROP_BLAS_THREADS`` environment variable if set (an integer >= 1, or "auto"), else
        the fastest count measured for this network and batch size (for lbfgs, once per fit from
        a few loss-and-gradient calls), never more than the count in force (a caller's
        ``threadpoolctl.threadpool_limits`` included).  The caller's count is restored afterwards.

    Attributes
    ----------
    classes_, loss_, best_loss_, loss_curve_, validation_scores_, best_validation_score_, t_,
    coefs_, intercepts_, n_features_in_, feature_names_in_, n_iter_, n_layers_, n_outputs_,
    out_activation_ : as in scikit-learn (coefs_ and intercepts_ are NumPy arrays in the
    network's dtype).
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
        dtype=None,
        blas_threads=None,
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
        self.dtype = dtype
        self.blas_threads = blas_threads

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(self, X, y, accept_sparse="csr", multi_output=True, dtype=_FLOAT_DTYPES, reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if (not hasattr(self, "classes_")) or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer().fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            self._check_classes(unique_labels(y))
        return X, self._binarize(y)

    def _check_classes(self, classes) -> None:
        """warm_start: y has exactly the classes of the last fit; partial_fit: only classes of classes_."""
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

    def _binarize(self, y) -> np.ndarray:
        """``self._label_binarizer.transform(y)`` as booleans (every label of y is in classes_ here).

        1-D multiclass and two-class labels are encoded directly (one-hot; the column of
        classes_[1]).  Kept rather than LabelBinarizer.transform, equal to it column for column,
        for the per-call checks it skips on every fit and partial_fit (see docs/benchmarks.md).
        """
        binarizer, classes = self._label_binarizer, self.classes_
        multiclass = binarizer.y_type_ == "multiclass" and len(classes) > 2
        two_class = binarizer.y_type_ == "binary" and len(classes) == 2
        if y.ndim != 1 or binarizer.sparse_output or not (multiclass or two_class):
            return binarizer.transform(y).astype(bool)
        codes = np.searchsorted(classes, y)
        if two_class:
            return (codes == 1)[:, None]
        return codes[:, None] == np.arange(len(classes))

    def _decode(self, y_pred: np.ndarray):
        if self.n_outputs_ == 1:
            y_pred = y_pred.ravel()
        return self._label_binarizer.inverse_transform(y_pred)

    @staticmethod
    def _score_function(y, y_pred, sample_weight=None):
        return accuracy_score(y, y_pred, sample_weight=sample_weight)

    def predict(self, X):
        """The predicted classes, shape (n_samples,) or (n_samples, n_classes) for multi-label y."""
        check_is_fitted(self)
        return self._decode(self._forward_pass_fast(X))

    @available_if(lambda est: est._check_solver())
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over (X, y) (stochastic solvers only), weighted by ``sample_weight`` (None:
        unweighted); ``classes`` is required on the first call.  scikit-learn's order of the
        parameters: pass ``classes`` by name."""
        self._validate_params()
        if _check_partial_fit_first_call(self, classes):
            self._label_binarizer = LabelBinarizer()
            if type_of_target(_host_input(y)).startswith("multilabel"):
                self._label_binarizer.fit(_host_input(y))
            else:
                self._label_binarizer.fit(classes)
        return self._fit(X, y, incremental=True, sample_weight=sample_weight)

    def predict_log_proba(self, X):
        """log(predict_proba(X)), computed from the logits Z so that it stays finite and accurate where
        a probability rounds to 0 or 1: log softmax(Z) for a softmax output, and log σ(z) = −log(1 + e^(−z)),
        log(1 − σ(z)) = −log(1 + e^z) for logistic outputs (scikit-learn takes the log of the rounded
        probability, which gives −inf there)."""
        check_is_fitted(self)
        Z = self._forward_pass_fast(X, logits=True)
        if self._model().loss_layer.name == "softmax_cross_entropy":
            return log_softmax(Z, axis=1)
        log_p = -np.logaddexp(0.0, -Z)
        if self.n_outputs_ == 1:  # binary: the columns of predict_proba, [1 − σ, σ]
            return np.column_stack([-np.logaddexp(0.0, Z.ravel()), log_p.ravel()])
        return log_p

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
