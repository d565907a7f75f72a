"""scikit-learn drop-in estimators: `MLPClassifier` and `MLPRegressor`.

Change one import::

    from sklearn.neural_network import MLPClassifier      # before
    from backprop.sklearn import MLPClassifier             # after

and the same code trains the same model with the hand-written backward pass on NumPy, CuPy, JAX,
PyTorch or array_api_strict.  The constructor parameters, their defaults and meanings, the fitted
attributes and the methods are scikit-learn's (1.9), plus ``backend``, ``dtype`` and
``blas_threads``.

"The same model", as tested (tests/test_sklearn_parity.py): with float64 data and the same
``random_state``, the ``coefs_`` and ``intercepts_`` of a fit equal scikit-learn's to 1e-8 (max
abs; in practice to rounding, ~1e-15), with the same ``loss_curve_``, ``validation_scores_``,
``n_iter_`` and ``t_``, for every solver (adam; sgd with Nesterov, plain or no momentum and the
constant, invscaling and adaptive rates; lbfgs), for the classifier (multiclass and binary) and
the regressor (squared error with one or two outputs, Poisson), with and without early stopping,
on 300 scaled rows of digits over a few epochs; Adam also on every backend.

``backend`` : {"numpy", "cupy", "jax", "torch", "array_api_strict"} or None, default=None
    Where the network is trained and evaluated; None reads ``BACKPROP_BACKEND`` (default numpy).
    ``BACKPROP_DEVICE`` applies as for the rest of the library.  The backend is looked up at
    each call of fit, partial_fit, predict…, so a fitted (or unpickled) estimator follows the
    current setting: a model trained on CuPy predicts on a machine without a GPU after
    ``set_params(backend="numpy")``, and partial_fit carries the optimizer state over to another
    backend.

``dtype`` : {"float32", "float64"} or None, default=None
    The dtype the network computes in.  None follows the data as scikit-learn does: float32 X
    trains a float32 network (``coefs_`` in float32), float64 X a float64 one, and X of any other
    dtype (integers...) is converted to float64 first.  ``BACKPROP_DTYPE`` (the Trainer's default)
    does not apply to the estimators.  The dtype is chosen when the weights are initialised
    (fit, the first partial_fit); partial_fit, warm_start and predict go on in the fitted
    network's dtype, that of ``coefs_`` (also after unpickling).  Predictions are returned in
    X's floating dtype.

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
* ``solver="adam"`` → `backprop.optim.AdamSklearn` (beta_1, beta_2, epsilon): scikit-learn's
  convention, p ← p − η √(1−β₂ᵗ)/(1−β₁ᵗ) · m / (√v + ε), with its order of operations.  (The
  Trainer's `backprop.optim.Adam` keeps torch's convention, ε added to the bias-corrected √v̂.)
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
  as float64 (``maxiter=max_iter``, ``maxfun=max_fun``, ``gtol=tol``).  A sparse X is densified a
  chunk of rows at a time.
* ``loss_`` is reported as scikit-learn reports it: the mean loss per sample plus the L2 term;
  for squared error the data term is averaged over the outputs too (½ mean over samples *and*
  outputs), while the gradient — as in scikit-learn — is that of ½ Σ over outputs, mean over
  samples.  L-BFGS is handed this same pair (reported loss, gradient), as scikit-learn hands it.
* ``sample_weight`` (``fit(X, y, sample_weight=None)``, ``partial_fit(X, y, sample_weight=None,
  classes=None)`` for the classifier, ``partial_fit(X, y, sample_weight=None)`` for the
  regressor; metadata routing through ``set_fit_request`` / ``set_partial_fit_request``) is
  scikit-learn's: checked by its ``_check_sample_weight`` (same errors; negative weights are
  allowed, as there), each batch's loss is its weighted mean Σᵢ wᵢ ℓᵢ / Σᵢ wᵢ with the L2 term
  alpha / (2 Σᵢ wᵢ) Σ‖W‖² (L-BFGS: over all the samples), ``loss_curve_`` sums the batch losses
  times their sizes, and early stopping splits the weights with the data and scores the
  validation set weighted.  In the backward pass a weight is a per-row scale of the loss layer's
  δ (see `backprop.core.losses`); a batch whose weights sum to zero raises scikit-learn's
  ZeroDivisionError.

Differences from scikit-learn
-----------------------------
* ``dtype`` can fix the network's dtype whatever the data's (scikit-learn always follows X).
* Sparse X (CSR; other formats are converted to it) stays sparse: the network computes with
  dense arrays, so each batch's rows (and predict's and L-BFGS's chunks of rows, at most
  8 MiB dense) are densified as they are needed, never the whole matrix.
* X (or a regressor's y) with values too large for the network's dtype (e.g. 1e39 in a float32
  network) is refused by fit, partial_fit, predict, predict_proba and score with a ValueError
  naming dtype="float64" as the remedy; so are predictions that are not finite and an L-BFGS run
  whose loss is not finite (X, y or weights whose forward pass overflows the dtype).
* A step whose loss or updated weights are not finite is refused (the weights of the last finite
  step are kept).  Without early stopping fit then raises scikit-learn's "Solver produced
  non-finite parameter weights" ValueError.  With early stopping, as in scikit-learn, fit
  finishes and keeps the weights of the best validation score, and the epoch that diverged is
  recorded (its loss in ``loss_curve_``, non-finite, and NaN in ``validation_scores_``), with a
  ConvergenceWarning naming it.  scikit-learn then trains on to max_iter on weights that are no
  longer finite; the same epochs are recorded here (NaN loss and score, ``n_iter_`` and ``t_``
  counted as it counts them, its "Maximum iterations" warning) without computing on NaN.
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
