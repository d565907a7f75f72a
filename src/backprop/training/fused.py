"""The training step fused into preallocated buffers, for backends whose arrays can be written
(NumPy, CuPy).

`backprop.training.trainer` states the step once as pure array-API code, and JAX compiles that (XLA
fuses the elementwise work and reuses buffers itself).  NumPy and CuPy run each operation as it
comes, allocating its result, so for them the same step is planned once per batch size with
every array allocated up front:

* All parameters live in one flat buffer: layer l is the block Θ_l = [W_l; b_l] of shape
  (fan_in + 1, fan_out), and the ((W, b), ...) tuple handed out is views of it.  The gradients
  have the same layout in a second flat buffer, each optimizer slot (m, v, velocity...) in one more.
* Every product writes into a buffer planned for it:

      forward    Z_l = H_l W_l,  Z_l += b_l
      backward   dW_l = H_lᵀ δ_l                     (1), into dΘ_l's first rows
                 db_l = 1ᵀ δ_l                       (2), a product with a vector of ones, into its last row
                 δ_(l−1) = δ_l W_lᵀ                  (3) dH_l, written into δ_(l−1)'s buffer
                 δ_(l−1) ⊙= f′(Z_(l−1))              (4) in place, from the cached output H_l

  (Appending a column of ones to H_l would fold the bias into the products, but BLAS runs a
  product whose inner dimension is fan_in + 1 = 65 about 30% slower than one of 64, which costs
  more than the bias pass it saves.  For toy products of a few rows, where the two calls it saves
  per layer cost more than their arithmetic, it was measured too: 2.5% off a 2-3-1 epoch at
  batch 2 and 5% off its single step, against 1.04-1.43× slower steps from 128 rows on, since
  H_l becomes a strided view; not worth a second layout.)
* Activations, their derivatives, the loss layer's δ and the optimizer update run as a few
  in-place operations over whole buffers (`FORWARD`, `DERIVATIVE`, `LOSSES`, `UPDATES`); an
  activation or loss without a fused form runs its array-API code and its result is copied in.
* The update writes the new parameters into the gradient buffer, and the two buffers swap
  roles, so a refused (non-finite) step leaves the parameters untouched.  For plain SGD at a
  constant rate η, the output layer's δ is multiplied by η: every gradient is linear in δ, so
  the backward pass yields η g and the update is one pass, p − η g.  The optimizer's slots
  are updated in place only after the loss and the gradients were found finite.

The results equal the pure step's up to float rounding (the tests compare every activation,
loss and optimizer).  Like a donated JAX step, a step reuses its inputs: after it, the params
and state passed in may hold stale values, so keep the returned ones (`Trainer.snapshot` copies).
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, NamedTuple, Sequence

import numpy as np

from ..core.mlp import MLP
from ..core.optim import SGD, Adam, AdamW, Constant, Optimizer, RMSprop, tree_leaves


# -- activations: out = f(Z), and δ ⊙= f′ from H = f(Z) -------------------------------------------
# Z may be overwritten; T (Z's shape) carries what the derivative needs from the forward pass
# (relu's mask, one T per layer, see KEEPS_MASK) or serves the derivative as scratch (one buffer
# shared by every layer).
def _sigmoid(lib, Z, out, T):
    """σ(Z) = 1 / (1 + e^(−Z)): for large −Z, e^(−Z) = inf and σ = 0 (the step runs with NumPy's
    floating-point warnings off).  Cheaper than the array-API form's ½ tanh(Z/2) + ½: NumPy's float32
    exp beats its tanh (about 1.8× for the whole kernel over a 256 × 512 array on the development VM).
    Small arrays take the backend's one-call form instead (`_logistic_kernel`)."""
    lib.negative(Z, out=Z)
    lib.exp(Z, out=Z)
    lib.add(Z, 1.0, out=Z)
    lib.divide(1.0, Z, out=out)


def _logistic_kernel(backend) -> Callable:
    """σ as the fused step runs it: the backend's one-call logistic ufunc (`Backend.logistic`) for
    arrays of up to its limit, `_sigmoid`'s four calls above it (and on backends without one)."""
    if backend.logistic is None:
        return _sigmoid
    expit, most = backend.logistic()

    def sigmoid(lib, Z, out, T):
        if Z.size <= most:
            expit(Z, out=out)
        else:
            _sigmoid(lib, Z, out, T)

    return sigmoid


def _relu(lib, Z, out, T):
    """max(Z, 0) as Z ⊙ [Z > 0], keeping the mask [Z > 0] in T for the derivative (one comparison
    for both passes; NumPy's maximum costs several multiplications).  Only where Z = −inf (an
    overflow) does this differ: NaN instead of 0, and the step is refused."""
    lib.greater(Z, 0.0, out=T)
    lib.multiply(Z, T, out=out)


FORWARD: dict[str, Callable] = {
    "identity": lambda lib, Z, out, T: lib.copyto(out, Z),
    "relu": _relu,
    "tanh": lambda lib, Z, out, T: lib.tanh(Z, out=out),
    "sigmoid": _sigmoid,
}


def _d_sigmoid(lib, D, H, T):
    """δ ⊙= h (1 − h)."""
    lib.subtract(1.0, H, out=T)
    lib.multiply(T, H, out=T)
    lib.multiply(D, T, out=D)


def _d_tanh(lib, D, H, T):
    """δ ⊙= 1 − h²."""
    lib.multiply(H, H, out=T)
    lib.subtract(1.0, T, out=T)
    lib.multiply(D, T, out=D)


def _d_relu(lib, D, H, T):
    """δ ⊙= [z > 0], the mask `_relu` left in T."""
    lib.multiply(D, T, out=D)


KEEPS_MASK = frozenset({"relu"})  # forward kernels that leave in T what their derivative reads

DERIVATIVE: dict[str, Callable] = {
    "identity": lambda lib, D, H, T: None,
    "relu": _d_relu,
    "tanh": _d_tanh,
    "sigmoid": _d_sigmoid,
}


# -- loss layers: δ written over Z; returns (loss, correct) ---------------------------------------
# L is scaled by `scale`, δ by `dscale` (scale, or scale · η for plain SGD); scratch: plan.E, two
# arrays of Z's shape.
def _softmax_cross_entropy(lib, Z, Y, scale, dscale, count, plan):
    """L = −scale Σ y log softmax(Z);  δ = dscale (softmax(Z) − y).

    On NumPy, Z is shifted by its largest entry, so no exponential overflows.  Should a row lie
    so far below it that its exponentials leave the normal range, every row is shifted by its
    own largest entry instead (the textbook form; NumPy's reduction along rows is slow over few
    columns).  Elsewhere (CuPy) every row is shifted by its own largest entry at once: one
    reduction kernel, where testing the row sums would stop the GPU to read them back.
    """
    E, ones = plan.E[0], plan.ones_out  # row sums as products: faster than sum(axis=1) over few columns
    total, log_total, y_sum = plan.rows
    shift = Z.max() if lib is np else Z.max(axis=1, keepdims=True)
    lib.subtract(Z, shift, out=E)
    lib.exp(E, out=E)
    lib.dot(E, ones, out=total)
    if lib is np and total.min() < _TINY_SQRT[Z.dtype.char]:
        shift = Z.max(axis=1, keepdims=True)
        lib.subtract(Z, shift, out=E)
        lib.exp(E, out=E)
        lib.dot(E, ones, out=total)
    Z -= shift
    lib.dot(Y, ones, out=y_sum)
    lib.log(total, out=log_total)
    loss = -scale * (lib.vdot(Y, Z) - lib.vdot(y_sum, log_total))  # Σ y (z − shift − log Σ e^(z − shift))
    lib.divide(dscale, total, out=total)
    E *= plan.column  # dscale · ŷ, ŷ = softmax(Z) (plan.column is total[:, None])
    correct = 0
    if count:  # rows whose largest output is the target's largest
        predicted, target = plan.classes
        lib.argmax(E, axis=1, out=predicted)
        lib.argmax(Y, axis=1, out=target)
        lib.equal(predicted, target, out=plan.hits)
        correct = lib.count_nonzero(plan.hits)
    lib.multiply(Y, dscale, out=Z)
    lib.subtract(E, Z, out=Z)
    return loss, correct


_TINY_SQRT = {np.dtype(t).char: float(np.finfo(t).tiny) ** 0.5 for t in (np.float32, np.float64)}


def _squared_error(lib, Z, Y, scale, dscale, count, plan):
    """L = scale · ½ Σ (ŷ − y)², ŷ = Z;  δ = dscale (ŷ − y)."""
    lib.subtract(Z, Y, out=Z)
    loss = 0.5 * scale * lib.vdot(Z, Z)
    lib.multiply(Z, dscale, out=Z)
    return loss, 0


def _squared_error_through(forward: Callable, derivative: Callable) -> Callable:
    """The squared error of ŷ = f(Z) for an output activation f with fused kernels."""

    def squared_error(lib, Z, Y, scale, dscale, count, plan):
        """L = scale · ½ Σ (ŷ − y)², ŷ = f(Z);  δ = dscale (ŷ − y) ⊙ f′(Z)."""
        Yhat, T = plan.E
        forward(lib, Z, Yhat, T)
        lib.subtract(Yhat, Y, out=Z)
        loss = 0.5 * scale * lib.vdot(Z, Z)
        lib.multiply(Z, dscale, out=Z)
        derivative(lib, Z, Yhat, T)
        return loss, 0

    return squared_error


LOSSES: dict[tuple[str, str], Callable] = {
    ("softmax_cross_entropy", "softmax"): _softmax_cross_entropy,
    ("squared_error", "identity"): _squared_error,
}
THROUGH = ("sigmoid", "tanh", "relu")  # output activations whose squared error is fused (`_squared_error_through`)


# -- optimizers: the new parameters written into G (the gradient buffer) ---------------------------
def _sgd(opt, lib, P, G, S, slots, lr, t):
    """`backprop.optim.SGD`: g += wd p;  buf ← μ buf + g;  p − η (buf | g + μ buf | g)."""
    if opt.weight_decay:
        lib.multiply(P, opt.weight_decay, out=S)
        lib.add(G, S, out=G)
    step = G
    if opt.momentum:
        (buf,) = slots
        lib.multiply(buf, opt.momentum, out=buf)
        lib.add(buf, G, out=buf)
        if opt.nesterov:
            lib.multiply(buf, opt.momentum, out=S)
            lib.add(G, S, out=G)
        else:
            step = buf
    lib.multiply(step, lr, out=G)
    lib.subtract(P, G, out=G)


def _adam(opt, lib, P, G, S, slots, lr, t):
    """`backprop.optim.Adam` (and AdamW's decay p ← p (1 − η wd)): p − η m̂ / (√v̂ + eps).
    G serves as its own scratch once m has read it (S is needed for AdamW's decay only)."""
    m, v = slots
    lib.subtract(m, G, out=m)  # m ← β1 m + (1 − β1) g = β1 (m − g) + g
    lib.multiply(m, opt.beta1, out=m)
    lib.add(m, G, out=m)
    lib.multiply(G, G, out=G)  # v ← β2 v + (1 − β2) g²
    lib.multiply(G, 1.0 - opt.beta2, out=G)
    lib.multiply(v, opt.beta2, out=v)
    lib.add(v, G, out=v)
    c1, c2 = 1.0 - opt.beta1 ** (t + 1.0), 1.0 - opt.beta2 ** (t + 1.0)
    lib.sqrt(v, out=G)  # η m̂ / (√v̂ + eps) = (η √c2 / c1) · m / (√v + eps √c2)
    lib.add(G, opt.eps * math.sqrt(c2), out=G)
    lib.divide(m, G, out=G)
    lib.multiply(G, lr * math.sqrt(c2) / c1, out=G)
    if isinstance(opt, AdamW) and opt.weight_decay:
        lib.multiply(P, 1.0 - lr * opt.weight_decay, out=S)
        lib.subtract(S, G, out=G)
    else:
        lib.subtract(P, G, out=G)


def _rmsprop(opt, lib, P, G, S, slots, lr, t):
    """`backprop.optim.RMSprop`: s ← ρ s + (1 − ρ) g²;  d = g / (√s + eps);  p − η (buf | d)."""
    s = slots[0]
    lib.multiply(s, opt.rho, out=s)
    lib.multiply(G, G, out=S)
    lib.multiply(S, 1.0 - opt.rho, out=S)
    lib.add(s, S, out=s)
    lib.sqrt(s, out=S)
    lib.add(S, opt.eps, out=S)
    lib.divide(G, S, out=S)
    step = S
    if opt.momentum:
        buf = slots[1]
        lib.multiply(buf, opt.momentum, out=buf)
        lib.add(buf, S, out=buf)
        step = buf
    lib.multiply(step, lr, out=G)
    lib.subtract(P, G, out=G)


# (optimizer class, its update, whether the update needs the scratch buffer S)
UPDATES: tuple[tuple[type, Callable, Callable], ...] = (
    (Adam, _adam, lambda opt: isinstance(opt, AdamW) and bool(opt.weight_decay)),
    (RMSprop, _rmsprop, lambda opt: True),
    (SGD, _sgd, lambda opt: bool(opt.weight_decay) or bool(opt.momentum and opt.nesterov)),
)


def _entry(optimizer):
    return next((entry for entry in UPDATES if isinstance(optimizer, entry[0])), None)


def update_for(optimizer) -> Callable | None:
    """The fused update of ``optimizer`` (the optimizers of `backprop.optim` and their subclasses)."""
    entry = _entry(optimizer)
    return entry[1] if entry else None


def supports(backend, optimizer) -> bool:
    """Whether `FusedStep` can run this optimizer on this backend (writable arrays, a fused update)."""
    return backend.inplace is not None and update_for(optimizer) is not None


DOT_SUM_MAX = 1 << 16  # flat buffers up to this size are summed by one dot with ones (see `FusedStep._summer`)
SUM_ROW = 4096  # larger ones, on NumPy, as rows of this many entries (zero-padded), by two products with ones


class EpochTotals(NamedTuple):
    """What `FusedStep.epoch` reports of the steps it took."""

    loss: float  # Σ over the steps of the batch loss / scale: the summed per-example loss ("mean" reduction)
    correct: int  # Σ of the correct counts (0 unless counted)
    steps: int  # steps taken (and kept)
    first_bad: int  # index of the refused step, −1 if none
    bad_loss: float  # its loss (NaN if none)


class _Plan:
    """The per-batch-size buffers: H_l (H_0 the batch), Z_l (δ_l written over it), scratch, Y."""

    def __init__(self, lib, model: MLP, n: int, dtype, fused_derivative: bool):
        sizes = model.layer_sizes
        hidden = sizes[1:-1]
        if model.activation.name in KEEPS_MASK:  # one T per layer, from the forward pass to the backward
            self.T = [lib.empty((n, h), dtype=dtype) for h in hidden]
        else:  # T is the derivative's scratch only: one buffer serves every layer
            flat = lib.empty(n * max(hidden, default=0), dtype=dtype)
            self.T = [flat[: n * h].reshape(n, h) for h in hidden]
        self.H = [lib.empty((n, fan_in), dtype=dtype) for fan_in in sizes[:-1]]
        self.HT = [H.T for H in self.H]
        self.Z = [lib.empty((n, fan_out), dtype=dtype) for fan_out in sizes[1:]]
        # δ_l is written over Z_l, except below a non-fused derivative, which still reads Z_l
        self.D = [Z if fused_derivative or l == len(self.Z) - 1 else lib.empty_like(Z) for l, Z in enumerate(self.Z)]
        self.Y = lib.empty((n, sizes[-1]), dtype=dtype)
        # (views made once: a view costs a fraction of a microsecond, a small step a few dozen)
        self.E = _split(lib.empty((2, n, sizes[-1]), dtype=dtype))  # the loss layer's scratch
        self.ones = lib.ones(n, dtype=dtype)  # db = 1ᵀ δ
        self.ones_out = lib.ones(sizes[-1], dtype=dtype)  # the loss layer's row sums
        self.rows = _split(lib.empty((3, n), dtype=dtype))  # the loss layer's per-row vectors
        self.column = self.rows[0][:, None]  # the first one as a column
        self.classes, self.hits = _split(lib.empty((2, n), dtype=np.intp)), lib.empty(n, dtype=bool)  # accuracy


def _split(a) -> tuple:
    """The views a[0], a[1], ... of an array's first axis."""
    return tuple(a[i] for i in range(a.shape[0]))


class FusedStep:
    """The Trainer's step ``(params, state, X, Y) -> (params, state, stats)`` on preallocated
    buffers (see the module docstring), stats = [loss, correct, ok] as a host array (the step has
    synchronised to check finiteness anyway); `epoch` runs many steps in one call."""

    MAX_PLANS = 4  # batch sizes whose buffers are kept (the full batch, the last partial one...)

    def __init__(self, model: MLP, optimizer, backend):
        if not supports(backend, optimizer):
            raise ValueError(f"no fused step for {type(optimizer).__name__} on the {backend.name} backend")
        self.model, self.optimizer, self.backend = model, optimizer, backend
        self.lib = lib = backend.inplace
        self.dtype = lib.dtype(backend.dtype_name)
        self._update = update_for(optimizer)
        constant = isinstance(optimizer.lr, Constant) and type(optimizer).learning_rate is Optimizer.learning_rate
        self._constant_lr = optimizer.lr.lr if constant else None  # else asked of the optimizer every step
        # plain SGD at a constant rate: η rides in on the output layer's δ, and the update is p − η g
        self._lr_in_delta = (constant and type(optimizer) is SGD and not optimizer.momentum and not optimizer.weight_decay
                             and optimizer.clip_norm is None and not model.alpha)
        self._delta_lr = self._constant_lr if self._lr_in_delta else 1.0
        activation, link, xp = model.activation, model.loss_layer, backend.xp
        forwards = {**FORWARD, "sigmoid": _logistic_kernel(backend)}
        forward, derivative = forwards.get(activation.name), DERIVATIVE.get(activation.name)
        self._fused_derivative = forward is not None and derivative is not None
        if self._fused_derivative:
            self._activate = lambda Z, out, T: forward(lib, Z, out, T)
            self._derive = lambda D, H, T, Z: derivative(lib, D, H, T)
        else:  # the array-API forms, their results copied into the buffers
            self._activate = lambda Z, out, T: lib.copyto(out, activation.f(xp, Z))
            self._derive = lambda D, H, T, Z: lib.multiply(D, activation.df(xp, Z, H), out=D)
        output = link.activation.name
        if link.name == "squared_error" and output in THROUGH:
            self._loss = _squared_error_through(forwards[output], DERIVATIVE[output])
        else:
            self._loss = LOSSES.get((link.name, output), self._any_loss)
        self._classification = link.classification
        sizes = model.layer_sizes
        self.shapes = [(fan_in + 1, fan_out) for fan_in, fan_out in zip(sizes[:-1], sizes[1:])]
        self.size = sum(a * b for a, b in self.shapes)
        scratch = not self._lr_in_delta and (bool(model.alpha) or _entry(optimizer)[2](optimizer))
        rows = lib is np and self.size > DOT_SUM_MAX  # summed by rows (see `_summers`)
        padded = -(-self.size // SUM_ROW) * SUM_ROW if rows else self.size
        with self._on_device():
            whole = [lib.zeros(padded, dtype=self.dtype) for _ in range(2)]  # the padding stays 0
            self._buffers = [flat[: self.size] for flat in whole]
            self._scratch = lib.empty(self.size if scratch else 0, dtype=self.dtype)  # the penalty's and update's
            self._sums = self._summers(whole, rows)  # Σ of each buffer's entries
        # the state's entries shaped like params become flat slots, others pass through (set by `_load`)
        self._template, self._slots, self._slot_views, self._last_state = None, [], [], None
        if model.alpha:  # the L2 penalty's factor per parameter: alpha · scale on W entries, 0 on the bias rows
            with self._on_device():
                self._decay = lib.empty(self.size, dtype=self.dtype)
            self._decay_blocks, self._decay_c = self._views(self._decay)[0], None
        blocks, self._params = zip(*(self._views(b) for b in self._buffers))
        # (W_l, b_l, W_lᵀ, dW_l, db_l) per layer, with Θ in buffer k and dΘ in the other one, for k = 0, 1
        self._layers = [[(theta[:-1], theta[-1], theta[:-1].T, dtheta[:-1], dtheta[-1])
                         for theta, dtheta in zip(blocks[k], blocks[1 - k])] for k in (0, 1)]
        self._cur = 0  # self._buffers[self._cur] holds the parameters
        self._plans: dict[int, _Plan] = {}

    # -- layout ----------------------------------------------------------------------------
    def _views(self, flat):
        """(blocks Θ_l, ((W_l, b_l), ...)) as views of one flat buffer."""
        blocks, params, offset = [], [], 0
        for rows, cols in self.shapes:
            block = flat[offset : offset + rows * cols].reshape(rows, cols)
            blocks.append(block)
            params.append((block[:-1], block[-1]))
            offset += rows * cols
        return tuple(blocks), tuple(params)

    def _is_slot(self, entry) -> bool:
        return isinstance(entry, (tuple, list)) and len(entry) > 0 and len(tree_leaves(entry)) == 2 * len(self.shapes)

    def _on_device(self):
        device = self.backend.device
        return device if hasattr(device, "__enter__") else contextlib.nullcontext()

    def _plan(self, n: int) -> _Plan:
        plan = self._plans.get(n)
        if plan is None:
            if len(self._plans) >= self.MAX_PLANS:
                self._plans.pop(next(iter(self._plans)))
            with self._on_device():
                plan = self._plans[n] = _Plan(self.lib, self.model, n, self.dtype, self._fused_derivative)
            plan.scale = self.model.scale(n)  # the loss's factor, and δ's (× η when η rides on δ)
            plan.dscale = self._delta_lr * plan.scale
        return plan

    def _load(self, params, state):
        """Copy params and the state's slots into the buffers unless they are the buffers' own views."""
        if params is not self._params[self._cur]:
            self.model.check_params(params)
            for (W, b), (W_, b_) in zip(params, self._params[self._cur]):
                W_[...], b_[...] = self.backend.asarray(W), self.backend.asarray(b)
        if state is self._last_state:  # what the last step returned: the slots hold it already
            return
        template = tuple(self._is_slot(entry) for entry in state[1:])
        if template != self._template:
            with self._on_device():
                self._slots = [self.lib.empty(self.size, dtype=self.dtype) for slot in template if slot]
            self._template, self._slot_views = template, [self._views(s)[1] for s in self._slots]
        k = 0
        for slot, entry in zip(self._template, state[1:]):
            if slot:
                if entry is not self._slot_views[k]:
                    for dst, src in zip(tree_leaves(self._slot_views[k]), tree_leaves(entry)):
                        if tuple(src.shape) != tuple(dst.shape):
                            raise ValueError(f"optimizer state entry {k + 1}: an array of shape {tuple(src.shape)}, expected {tuple(dst.shape)}")
                        dst[...] = self.backend.asarray(src)
                k += 1

    def _state(self, state, count):
        """The state to hand out: ``count``, the slots' views, the other entries as they were."""
        if state is self._last_state:  # its entries after the count are those already
            self._last_state = (count, *state[1:])
            return self._last_state
        it = iter(self._slot_views)
        self._last_state = (count, *(next(it) if slot else entry for slot, entry in zip(self._template, state[1:])))
        return self._last_state

    # -- the step --------------------------------------------------------------------------
    def _run(self, plan: _Plan, X, Y, state, t: float, count: bool, checked: bool = True):
        """One step (the t-th, 0-based) on the batch (X, Y), X of the plan's H_0 shape and dtype
        (only read: the plan's own H_0 in an epoch, the caller's array in a single step); returns
        (loss, correct, ok) (correct = 0 unless ``count``).  Unless ``checked``, the step is
        taken whatever the finiteness of its loss and update (ok is True; see `_epoch`)."""
        lib, model, dot = self.lib, self.model, self.lib.dot
        layers = self._layers[self._cur]  # (W_l, b_l, W_lᵀ, dW_l, db_l) per layer
        H, HT, Z, D = (X, *plan.H[1:]), (X.T, *plan.HT[1:]), plan.Z, plan.D
        last, scale = len(layers) - 1, plan.scale
        for l in range(last + 1):  # forward
            W, b = layers[l][:2]
            dot(H[l], W, out=Z[l])  # Z_l = H_l W_l + b_l
            lib.add(Z[l], b, out=Z[l])
            if l < last:
                self._activate(Z[l], H[l + 1], plan.T[l])  # H_(l+1) = f(Z_l)
        # δ_(L−1), over Z_(L−1); for plain SGD η rides along (every gradient is linear in δ, so η δ gives η g)
        loss, correct = self._loss(lib, Z[last], Y, scale, plan.dscale, count, plan)
        for l in range(last, -1, -1):  # backward
            dot(HT[l], D[l], out=layers[l][3])  # (1): dW_l = H_lᵀ δ_l
            dot(plan.ones, D[l], out=layers[l][4])  # (2): db_l = 1ᵀ δ_l
            if l > 0:
                dot(D[l], layers[l][2], out=D[l - 1])  # (3): dH_l = δ_l W_lᵀ
                self._derive(D[l - 1], H[l], plan.T[l - 1], Z[l - 1])  # (4): δ_(l−1) = dH_l ⊙ f′(Z_(l−1))
        P, G, S = self._buffers[self._cur], self._buffers[1 - self._cur], self._scratch
        penalty = 0.0
        if model.alpha:  # + (alpha/2) scale Σ ‖W‖²: dW += alpha · scale · W, over the flat buffers
            c = model.alpha * scale
            if c != self._decay_c:  # the batch size changed
                for block in self._decay_blocks:
                    block[:-1], block[-1] = c, 0.0
                self._decay_c = c
            lib.multiply(P, self._decay, out=S)
            penalty = 0.5 * lib.vdot(S, P)
            lib.add(G, S, out=G)
        loss = model.total_loss(loss, penalty)
        if checked and self._slots and not self._finite(loss, 1 - self._cur):
            return loss, correct, False  # nothing updated: the slots keep their values
        optimizer = self.optimizer
        if self._constant_lr is not None:
            lr = self._constant_lr
        else:
            lr = float(optimizer.learning_rate((lib.asarray(t, dtype=self.dtype), *state[1:])))
        if optimizer.clip_norm is not None:
            norm = lib.sqrt(lib.vdot(G, G))
            G *= optimizer.clip_norm / lib.maximum(norm, optimizer.clip_norm)
        if self._lr_in_delta:
            lib.subtract(P, G, out=G)  # p − η g in one pass
        else:
            self._update(optimizer, lib, P, G, S, self._slots, lr, t)
        ok = not checked or self._finite(loss, 1 - self._cur)
        if ok:
            self._cur = 1 - self._cur
        return loss, correct, ok

    def _any_loss(self, lib, Z, Y, scale, dscale, count, plan):
        """A loss layer without a fused form: its array-API δ copied over Z."""
        link, xp = self.model.loss_layer, self.backend.xp
        out = link(xp, Z, Y, scale)
        correct = link.count_correct(xp, out.output, Y) if count else 0
        lib.multiply(out.delta, dscale / scale, out=Z)
        return out.value, correct

    def _summers(self, buffers, rows: bool) -> list[Callable]:
        """For each flat buffer (zero-padded to whole rows if ``rows``), a function that returns
        Σ of its entries, the cheapest way for its size: one BLAS dot with ones up to DOT_SUM_MAX
        entries (less per call than a reduction); above, on NumPy, a product of its rows of
        SUM_ROW entries with ones, then a dot over the row sums (NumPy's own float32 sum is 3×
        slower on the development VM: 126 against 39 µs for mnist's 536k parameters); elsewhere
        the backend's reduction (one kernel on CuPy)."""
        lib, dtype = self.lib, self.dtype
        if self.size <= DOT_SUM_MAX:
            ones = lib.ones(self.size, dtype=dtype)
            return [lambda flat=flat: lib.dot(flat, ones) for flat in buffers]
        if not rows:
            return [flat.sum for flat in buffers]
        n_rows = buffers[0].size // SUM_ROW
        ones, partial, ones_rows = (lib.ones(SUM_ROW, dtype=dtype), lib.empty(n_rows, dtype=dtype),
                                    lib.ones(n_rows, dtype=dtype))
        return [lambda table=flat.reshape(n_rows, SUM_ROW): lib.dot(lib.dot(table, ones, out=partial), ones_rows)
                for flat in buffers]

    def _finite(self, loss, k: int) -> bool:
        """Whether the loss and every entry of buffer k are finite (NaN and inf propagate into a sum)."""
        total = self._sums[k]()
        if self.lib is np:
            return math.isfinite(float(loss) + float(total))
        return bool(self.lib.isfinite(loss + total))

    def __call__(self, params, state, X, Y):
        """One training step on the batch (X, Y); the same contract as the compiled pure step."""
        self._load(params, state)
        plan = self._plan(X.shape[0])
        t = float(state[0])  # the step count, as the optimizer's state holds it
        with self._quiet():
            H0 = plan.H[0]  # a C-contiguous NumPy batch of the step's dtype is read where it is
            if not (self.lib is np and type(X) is np.ndarray and X.dtype == H0.dtype and X.shape == H0.shape
                    and X.flags.c_contiguous):
                H0[...] = X  # any other is copied into the plan's buffer first
                X = H0
            loss, correct, ok = self._run(plan, X, Y, state, t, self._classification)
        state = self._state(state, self.lib.asarray(t + 1.0, dtype=self.dtype) if ok else state[0])
        return self._params[self._cur], state, np.array([float(loss), float(correct), float(ok)])

    def _quiet(self):
        """No NumPy floating-point warnings inside a step (non-finite results are caught and
        refused); on CuPy, the backend's GPU as the current device."""
        return np.errstate(all="ignore") if self.lib is np else self._on_device()

    def epoch(self, params, state, X, Y, batches: Sequence, should_stop: Callable[[], bool] = lambda: False,
              count_correct: bool = True):
        """The steps on rows ``batches`` (index arrays) of (X, Y), gathered straight into the buffers.

        Returns ``(params, state, totals)``, `EpochTotals` of the steps taken: running sums, so
        an epoch's memory does not grow with its length.  No step is taken after a refused one.
        ``should_stop`` is asked after every step (a deferred Ctrl-C); when it says so, the steps
        taken so far are returned.
        """
        with self._quiet():
            return self._epoch(params, state, X, Y, batches, should_stop, count_correct and self._classification)

    def _epoch(self, params, state, X, Y, batches, should_stop, count_correct):
        """On NumPy, for networks of up to DOT_SUM_MAX parameters, where the finiteness checks
        are a fair share of a step (2 µs of the 2-3-1 network's 33), the steps run unchecked
        first, from a copy of the parameters and optimizer slots.  They stand when the summed
        loss and the final parameters are finite: a step that would be refused leaves a
        non-finite loss or non-finite parameters, which stay non-finite through every later
        update.  Otherwise the copy is restored and the same steps run again, each checked."""
        self._load(params, state)
        if self.lib is not np or self.size > DOT_SUM_MAX:
            return self._steps(state, X, Y, batches, should_stop, count_correct, checked=True)
        start, kept = self._cur, [flat.copy() for flat in (self._buffers[self._cur], *self._slots)]
        params, new_state, totals = self._steps(state, X, Y, batches, should_stop, count_correct, checked=False)
        if math.isfinite(totals.loss) and self._finite(0.0, self._cur):
            return params, new_state, totals
        self._cur = start
        for flat, copy in zip((self._buffers[start], *self._slots), kept, strict=True):
            flat[...] = copy
        return self._steps(state, X, Y, batches[: totals.steps], lambda: False, count_correct, checked=True)

    def _steps(self, state, X, Y, batches, should_stop, count_correct, checked: bool):
        """The epoch's steps from the state loaded into the buffers (see `_run` for ``checked``)."""
        lib, backend = self.lib, self.backend
        gather = lib is np or (backend.is_native(X) and not isinstance(X, np.ndarray))  # X in lib's memory
        loss_sum, correct_sum, steps = 0.0, 0, 0
        count = np.asarray(float(state[0]), dtype=self.backend.dtype_name)[()]  # counted on the host, in the dtype
        one = count.dtype.type(1)
        for b, index in enumerate(batches):
            plan = self._plan(len(index))
            if gather:
                if lib is np:
                    X.take(index, axis=0, out=plan.H[0], mode="clip")
                    Y.take(index, axis=0, out=plan.Y, mode="clip")
                else:
                    idx = backend.asarray(index)
                    lib.take(X, idx, axis=0, out=plan.H[0])
                    lib.take(Y, idx, axis=0, out=plan.Y)
            else:  # host data, device buffers: gather on the host, then copy over
                plan.H[0][...] = backend.asarray(X[index])
                plan.Y[...] = backend.asarray(Y[index])
            loss, correct, ok = self._run(plan, plan.H[0], plan.Y, state, float(count), count_correct, checked)
            if not ok:
                totals = EpochTotals(loss_sum, correct_sum, steps, b, float(loss))
                return self._params[self._cur], self._state(state, lib.asarray(count)), totals
            loss_sum += float(loss) / plan.scale
            correct_sum += int(correct)
            steps += 1
            count = count + one
            if should_stop():
                break
        totals = EpochTotals(loss_sum, correct_sum, steps, -1, math.nan)
        return self._params[self._cur], self._state(state, lib.asarray(count)), totals
