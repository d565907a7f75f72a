"""scikit-learn drop-in estimators: `MLPClassifier` and `MLPRegressor`.

Change one import::

    from sklearn.neural_network import MLPClassifier      # before
    from backprop.sklearn import MLPClassifier             # after

and the same code trains the same model with the hand-written backward pass on NumPy, CuPy, JAX
or array_api_strict.  The constructor parameters, their defaults and meanings, the fitted
attributes and the methods are scikit-learn's (1.9), plus ``backend`` and ``blas_threads``:

``backend`` : {"numpy", "cupy", "jax", "array_api_strict"} or None, default=None
    Where the network is trained and evaluated; None reads ``BACKPROP_BACKEND`` (default numpy).
    ``BACKPROP_DEVICE`` and ``BACKPROP_DTYPE`` (float32 by default, or float64) apply as for the
    rest of the library.  The backend is looked up at each call of fit, partial_fit, predict…,
    so a fitted (or unpickled) estimator follows the current setting: a model trained on CuPy
    predicts on a machine without a GPU after ``set_params(backend="numpy")``, and partial_fit
    carries the optimizer state over to another backend.

``blas_threads`` : int or None, default=None
    The BLAS threads of the NumPy step and of L-BFGS; None reads ``BACKPROP_BLAS_THREADS``, and
    when that is unset or "auto" the fastest count is timed per network and batch size
    (`backprop.backends.threads`).

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
* X (or a regressor's y) with values too large for the network's dtype (e.g. 1e39 in float32) is
  refused by fit, partial_fit, predict, predict_proba and score with the Trainer's ValueError
  (BACKPROP_DTYPE=float64 holds them); so are predictions that are not finite and an L-BFGS run
  whose loss is not finite (X, y or weights whose forward pass overflows the dtype).
* A step whose loss or updated weights are not finite is refused (the weights of the last finite
  step are kept) and fit raises scikit-learn's "Solver produced non-finite parameter weights"
  ValueError.
"""

from __future__ import annotations

try:  # scikit-learn >= 1.6 (validate_data, __sklearn_tags__)
    from sklearn.utils.validation import validate_data  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installed scikit-learn
    raise ImportError(f"backprop.sklearn needs scikit-learn >= 1.6 ({exc}); pip install -U scikit-learn") from None

from ._classifier import MLPClassifier
from ._regressor import MLPRegressor
from ._sgd import _StateRateSGD  # noqa: F401  (tests/test_fused.py imports it from here)
from ._utils import _random_state  # noqa: F401  (tests/test_sklearn.py imports it from here)

__all__ = ["MLPClassifier", "MLPRegressor"]
