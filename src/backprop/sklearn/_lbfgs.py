"""solver="lbfgs": ``scipy.optimize.minimize(method="L-BFGS-B", jac=True)`` over the flat parameters.

The parameters are packed in scikit-learn's order (every W raveled, then every b) as float64 on
the host; the loss and the hand-written gradient are computed on the backend, in its dtype (a
sparse X a chunk of rows at a time, densified).  The loss handed to scipy is scikit-learn's, whose
squared error with several outputs is ½ the mean over outputs while its gradient is that of ½ Σ
over outputs (`_objective`): the same pair as scikit-learn's, so the same L-BFGS run.

On NumPy the minimisation runs at one BLAS thread count (`backprop.backends.threads`): the
estimator's ``blas_threads``, else ``BACKPROP_BLAS_THREADS``, else the fastest, chosen once per
fit by timing its first loss-and-gradient calls, each with the L-BFGS work that follows it
(scipy's own BLAS calls, which on small problems cost more than the loss with more threads),
at each candidate count (`_Choosing`).
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from ..backends import threads
from ..core.validation import is_sparse
from ._network import _SklearnMLP
from ._utils import _chunk_rows


@functools.lru_cache(maxsize=32)
def _value_and_grad(backend, layer_units: tuple, activation: str, out_activation: str, alpha: float):
    """``(params, X, Y, W=None) -> (loss, grads)`` of the network (W: None or the rows' sample
    weights), compiled on ``backend``; shared between estimators, so a refit never recompiles."""
    model = _SklearnMLP(layer_units, activation, out_activation, alpha)
    xp = backend.xp
    return backend.jit(lambda params, X, Y, W=None: model.value_and_grad(xp, params, X, Y, W)[:2])


def _check_weight_sum(weights: np.ndarray) -> None:
    """scikit-learn's error (np.average's) for sample weights that sum to zero: the weighted mean
    of a batch (or, for L-BFGS, of the data) is not defined."""
    if float(np.sum(weights, dtype=np.float64)) == 0.0:
        raise ZeroDivisionError("Weights sum to zero, can't be normalized")


def _pack(coefs, intercepts) -> np.ndarray:
    """(coefs, intercepts) as one float64 vector, in scikit-learn's order."""
    return np.concatenate([W.ravel() for W in coefs] + [b.ravel() for b in intercepts]).astype(np.float64)


def _unpack(w: np.ndarray, shapes: list) -> tuple[list, list]:
    """The (coefs, intercepts) of the flat vector ``w`` for weight matrices of ``shapes`` (views of w)."""
    sizes = [rows * cols for rows, cols in shapes] + [cols for _, cols in shapes]
    pieces = np.split(w, np.cumsum(sizes)[:-1])
    return [p.reshape(shape) for p, shape in zip(pieces, shapes)], pieces[len(shapes) :]


def _objective(backend, value_and_grad, shapes, X, Y, alpha: float, loss_divisor: int = 1, W=None):
    """w -> (loss, gradient) for scipy, both on the host in float64.

    The loss is scikit-learn's: for the squared error with several outputs (``loss_divisor``
    outputs) its data term is ½ the mean over samples *and* outputs, while the gradient is that of
    ½ Σ over outputs, mean over samples.  scikit-learn hands scipy exactly this pair, so L-BFGS
    takes the same steps here (`_reported_loss`).

    X on the device, or a scipy.sparse matrix on the host whose rows are densified a chunk at a
    time (`_chunk_rows`): then the objective is the sum of the chunks' mean losses weighted by
    their share n_c / n of the rows, less the L2 term (alpha / 2n) Σ‖W‖² counted once per chunk
    beyond the first (each chunk's loss holds it), and the same for the gradient.

    ``W``: None, or the rows' sample weights on the host: the loss is the weighted mean (scale
    1/Σw, the L2 term alpha / (2 Σw) Σ‖W‖², as scikit-learn's), and the chunks' shares are
    Σ_c w / Σ w.
    """
    total = X.shape[0] if W is None else float(np.sum(W, dtype=np.float64))  # n, or Σw
    W_device = None if W is None or is_sparse(X) else backend.asarray(W)

    def value(params, Xc, Yc, Wc=None):
        loss, grads = value_and_grad(params, Xc, Yc) if Wc is None else value_and_grad(params, Xc, Yc, Wc)
        host = [(backend.to_numpy(dW), backend.to_numpy(db)) for dW, db in grads]
        return float(loss), _pack([dW for dW, _ in host], [db for _, db in host])

    def fun(w):
        params = tuple((backend.asarray(W), backend.asarray(b)) for W, b in zip(*_unpack(w, shapes)))
        loss, grad = value(params, X, Y, W_device) if not is_sparse(X) else chunked(params, w)
        return _reported_loss(loss, w[: sum(a * b for a, b in shapes)], alpha, total, loss_divisor), grad

    def chunked(params, w):
        n, rows = X.shape[0], _chunk_rows(X, np.dtype(backend.dtype_name).itemsize)
        loss, grad = 0.0, np.zeros_like(w)
        for start in range(0, n, rows):
            stop = min(start + rows, n)
            Wc = None if W is None else W[start:stop]
            share = (stop - start) / n if W is None else float(np.sum(Wc, dtype=np.float64)) / total
            Wc = None if Wc is None else backend.asarray(Wc)
            loss_c, grad_c = value(params, backend.asarray(X[start:stop].toarray()), Y[start:stop, ...], Wc)
            loss += loss_c * share
            grad += grad_c * share
        extra = -(-n // rows) - 1  # chunks beyond the first
        if alpha and extra:
            n_coefs = sum(a * b for a, b in shapes)
            loss -= extra * 0.5 * alpha / total * float(np.dot(w[:n_coefs], w[:n_coefs]))
            grad[:n_coefs] -= extra * alpha / total * w[:n_coefs]
        return loss, grad

    return fun


TRIAL_BUDGET_S = 0.05  # no new round of trials once they took this long (each round: real iterations)


class _Choosing:
    """The objective for scipy, choosing NumPy's (and SciPy's) BLAS thread count in its first calls.

    A context (a `threads.Session` over every loaded BLAS library, restored on exit) and a
    callable ``w -> fun(w)``.  Until `threads.Trials` has chosen, each call runs at the next count
    of its schedule, which stays in force for the L-BFGS work scipy does after it: the time from
    one call to the next is that count's trial.  Then the chosen count runs the rest of the
    minimisation.  The trials are real iterations (a thread count changes results by BLAS
    rounding only); the count in force is kept unless another is faster by `threads.MARGIN`.
    """

    def __init__(self, fun):
        self.fun = fun
        self.session = threads.Session(threads.all_libraries())

    def __enter__(self):
        limit = self.session.enter()
        self.trials = threads.Trials(threads.candidates(limit), keep=limit, budget_s=TRIAL_BUDGET_S)
        self.running, self.started = None, 0.0  # the count of the trial in progress, and its start
        if self.trials.chosen is not None:
            self.session.use(self.trials.chosen)
        return self

    def __exit__(self, *exc):
        self.session.exit()

    def __call__(self, w):
        if self.trials.chosen is None:
            now = threads.clock()
            if self.running is not None:
                self.trials.record(now - self.started)
            count = self.trials.next()
            self.session.use(count if count is not None else self.trials.chosen)
            self.running = count
            self.started = threads.clock()
        return self.fun(w)


def _warn_not_converged(result, max_iter: int) -> None:
    message = result.message.decode("latin1") if isinstance(result.message, bytes) else result.message
    warnings.warn(
        f"lbfgs failed to converge after {result.nit} iteration(s) (status={result.status}):\n{message}.\n\n"
        f"Increase the number of iterations to improve the convergence (max_iter={max_iter}).\n"
        "You might also want to scale the data as shown in:\n"
        "    https://scikit-learn.org/stable/modules/preprocessing.html",
        ConvergenceWarning,
        stacklevel=4,  # the frame of _BaseMLP.fit
    )


def _reported_loss(loss: float, coefs: np.ndarray, alpha: float, n_samples: int, loss_divisor: int) -> float:
    """The loss as scikit-learn reports (and minimises) it: the data term divided by ``loss_divisor``
    (the number of outputs for the squared error), the L2 term alpha/(2 n) Σ‖W‖² of the weights
    ``coefs`` (every W raveled, float64) unchanged (``n_samples``: n, or Σw with sample weights)."""
    if loss_divisor == 1:
        return loss
    squares = float(np.dot(coefs, coefs))
    penalty = 0.5 * float(alpha) * squares / n_samples
    return (loss - penalty) / loss_divisor + penalty


def _fit_lbfgs(estimator, backend, X: np.ndarray, Y: np.ndarray, W: np.ndarray | None = None) -> None:
    """Minimise from the estimator's coefs_ and intercepts_; set them, ``n_iter_`` and ``loss_``
    (``W``: None or the samples' weights, on the host: the weighted mean loss, see `_objective`).

    ``maxiter=max_iter``, ``maxfun=max_fun``, ``gtol=tol``; a ConvergenceWarning (scikit-learn's
    text) when scipy stops for another reason than convergence.  ValueError, the weights left as
    they were, when the loss where scipy stopped is not finite (X or y whose forward pass
    overflows the dtype).  On NumPy every BLAS library runs at the count given or chosen (see the
    module docstring), the caller's restored afterwards.
    """
    import scipy.optimize

    shapes = [W.shape for W in estimator.coefs_]
    value_and_grad = _value_and_grad(
        backend,
        tuple(estimator._layer_units()),
        estimator.activation,
        estimator.out_activation_,
        float(estimator.alpha),
    )
    X = X if is_sparse(X) else backend.asarray(X)  # a sparse X stays on the host, densified in chunks
    alpha, divisor = float(estimator.alpha), estimator._loss_divisor()
    if W is not None:
        _check_weight_sum(W)
    fun = _objective(backend, value_and_grad, shapes, X, backend.asarray(Y), alpha, divisor, W)
    callback = None
    if estimator.verbose:

        def callback(intermediate_result):
            print(f"L-BFGS iteration, loss = {intermediate_result.fun:.8f}")

    w0 = _pack(estimator.coefs_, estimator.intercepts_)

    def minimize(objective, max_iter: int, callback=None):
        return scipy.optimize.minimize(
            objective,
            w0,
            method="L-BFGS-B",
            jac=True,
            callback=callback,
            options={"maxfun": estimator.max_fun, "maxiter": max_iter, "gtol": estimator.tol},
        )

    if backend.name != "numpy":
        result = minimize(fun, estimator.max_iter, callback)
    elif (count := threads.setting(estimator.blas_threads)) is not None:
        with threads.limited(count):
            result = minimize(fun, estimator.max_iter, callback)
    else:
        with _Choosing(fun) as choosing:
            result = minimize(choosing, estimator.max_iter, callback)
    if not np.isfinite(result.fun):
        raise ValueError(
            f"Solver produced a non-finite loss ({result.fun}): X, y or the weights are too large for the "
            f"network's dtype ({backend.dtype_name}). The input data may contain large values and need to be "
            "preprocessed."
        )
    if result.status != 0:
        _warn_not_converged(result, estimator.max_iter)
    estimator.n_iter_ = min(result.nit, estimator.max_iter)
    dtype = np.dtype(backend.dtype_name)
    coefs, intercepts = _unpack(result.x, shapes)
    estimator.coefs_ = [W.astype(dtype) for W in coefs]
    estimator.intercepts_ = [b.astype(dtype) for b in intercepts]
    estimator.loss_ = float(result.fun)
