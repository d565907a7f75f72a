"""solver="lbfgs": ``scipy.optimize.minimize(method="L-BFGS-B", jac=True)`` over the flat parameters.

The parameters are packed in scikit-learn's order (every W raveled, then every b) as float64 on
the host; the loss and the hand-written gradient are computed on the backend, in its dtype.  The
objective is the one whose gradient is used (½ Σ over outputs for the squared error), so
``loss_`` is converted to scikit-learn's reported form (½ mean over outputs) afterwards.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from ._network import _SklearnMLP


@functools.lru_cache(maxsize=32)
def _value_and_grad(backend, layer_units: tuple, activation: str, out_activation: str, alpha: float):
    """``(params, X, Y) -> (loss, grads)`` of the network, compiled on ``backend``; shared between
    estimators, so a refit never recompiles."""
    model = _SklearnMLP(layer_units, activation, out_activation, alpha)
    xp = backend.xp
    return backend.jit(lambda params, X, Y: model.value_and_grad(xp, params, X, Y)[:2])


def _pack(coefs, intercepts) -> np.ndarray:
    """(coefs, intercepts) as one float64 vector, in scikit-learn's order."""
    return np.concatenate([W.ravel() for W in coefs] + [b.ravel() for b in intercepts]).astype(np.float64)


def _unpack(w: np.ndarray, shapes: list) -> tuple[list, list]:
    """The (coefs, intercepts) of the flat vector ``w`` for weight matrices of ``shapes`` (views of w)."""
    sizes = [rows * cols for rows, cols in shapes] + [cols for _, cols in shapes]
    pieces = np.split(w, np.cumsum(sizes)[:-1])
    return [p.reshape(shape) for p, shape in zip(pieces, shapes)], pieces[len(shapes) :]


def _objective(backend, value_and_grad, shapes, X, Y):
    """w -> (loss, gradient) for scipy, both on the host in float64."""

    def fun(w):
        params = tuple((backend.asarray(W), backend.asarray(b)) for W, b in zip(*_unpack(w, shapes)))
        loss, grads = value_and_grad(params, X, Y)
        host = [(backend.to_numpy(dW), backend.to_numpy(db)) for dW, db in grads]
        return float(loss), _pack([dW for dW, _ in host], [db for _, db in host])

    return fun


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


def _reported_loss(loss: float, coefs, alpha: float, n_samples: int, loss_divisor: int) -> float:
    """The minimised objective as scikit-learn reports it: the data term divided by ``loss_divisor``
    (the number of outputs for the squared error), the L2 term alpha/(2 n) Σ‖W‖² unchanged."""
    if loss_divisor == 1:
        return loss
    squares = sum(float(np.sum(np.square(W, dtype=np.float64))) for W in coefs)
    penalty = 0.5 * float(alpha) * squares / n_samples
    return (loss - penalty) / loss_divisor + penalty


def _fit_lbfgs(estimator, backend, X: np.ndarray, Y: np.ndarray) -> None:
    """Minimise from the estimator's coefs_ and intercepts_; set them, ``n_iter_`` and ``loss_``.

    ``maxiter=max_iter``, ``maxfun=max_fun``, ``gtol=tol``; a ConvergenceWarning (scikit-learn's
    text) when scipy stops for another reason than convergence.  ValueError, the weights left as
    they were, when the loss where scipy stopped is not finite (X or y whose forward pass
    overflows the dtype).
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
    fun = _objective(backend, value_and_grad, shapes, backend.asarray(X), backend.asarray(Y))
    callback = None
    if estimator.verbose:

        def callback(intermediate_result):
            print(f"L-BFGS iteration, loss = {intermediate_result.fun:.8f}")

    result = scipy.optimize.minimize(
        fun,
        _pack(estimator.coefs_, estimator.intercepts_),
        method="L-BFGS-B",
        jac=True,
        callback=callback,
        options={"maxfun": estimator.max_fun, "maxiter": estimator.max_iter, "gtol": estimator.tol},
    )
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
    estimator.loss_ = _reported_loss(
        float(result.fun), estimator.coefs_, estimator.alpha, X.shape[0], estimator._loss_divisor()
    )
