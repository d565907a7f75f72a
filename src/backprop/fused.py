"""The training step fused into preallocated buffers, for backends whose arrays can be written
(NumPy, CuPy).

`backprop.trainer` states the step once as pure array-API code, and JAX compiles that (XLA
fuses the elementwise work and reuses buffers itself).  NumPy and CuPy run each operation as it
comes, allocating its result, so for them the same step is planned once per batch size with
every array allocated up front:

* All parameters live in one flat buffer: layer l is the block Θ_l = [W_l; b_l] of shape
  (fan_in + 1, fan_out), and the ((W, b), ...) tuple handed out is views of it.  The gradients
  have the same layout in a second flat buffer, each optimizer slot (m, v, velocity...) in one more.
* Each layer's input is kept with a trailing column of ones, A_l = [H_l 1], so the bias rides
  inside the matrix products (five products for two layers, no separate bias passes):

      forward    Z_l = A_l Θ_l                       = H_l W_l + b_l
      backward   dΘ_l = A_lᵀ δ_l                     (1) dW_l = H_lᵀ δ_l and (2) db_l = Σᵢ δ_l,i
                 δ_(l−1) = δ_l W_lᵀ                  (3) dH_l, written into δ_(l−1)'s buffer
                 δ_(l−1) ⊙= f′(Z_(l−1))              (4) in place, from the cached output H_l

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
from typing import Callable, Sequence

import numpy as np

from .mlp import MLP
from .optim import SGD, Adam, AdamW, Constant, Optimizer, RMSprop, tree_leaves


# -- activations: out = f(Z), and δ ⊙= f′ from H = f(Z) -------------------------------------------
# Z may be overwritten; T (Z's shape, one per layer) carries what the derivative needs from the
# forward pass (relu's mask) or serves the derivative as scratch.
def _sigmoid(lib, Z, out, T):
    """σ(Z) = 1 / (1 + e^(−Z)): for large −Z, e^(−Z) = inf and σ = 0 (the step runs with NumPy's
    floating-point warnings off).  Cheaper than the array-API form's ½ tanh(Z/2) + ½: NumPy's float32
    exp beats its tanh (about 1.8× for the whole kernel over a 256 × 512 array on the development VM)."""
    lib.negative(Z, out=Z)
    lib.exp(Z, out=Z)
    lib.add(Z, 1.0, out=Z)
    lib.divide(1.0, Z, out=out)


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


DERIVATIVE: dict[str, Callable] = {
    "identity": lambda lib, D, H, T: None,
    "relu": _d_relu,
    "tanh": _d_tanh,
    "sigmoid": _d_sigmoid,
}


# -- loss layers: δ written over Z (scratch: two arrays of Z's shape); returns (loss, correct) -----
def _softmax_cross_entropy(lib, Z, Y, scale, count, scratch):
    """L = −scale Σ y log softmax(Z);  δ = scale (softmax(Z) − y).

    Z is shifted by its largest entry, so no exponential overflows.  Should a row lie so far
    below it that its exponentials leave the normal range, every row is shifted by its own
    largest entry instead (the textbook form; a reduction along rows, slow over few columns).
    """
    E = scratch[0]
    ones = lib.ones(Z.shape[1], dtype=Z.dtype)  # row sums as products: faster than sum(axis=1) over few columns
    shift = Z.max()
    lib.subtract(Z, shift, out=E)
    lib.exp(E, out=E)
    total = E.dot(ones)
    if total.min() < lib.finfo(Z.dtype).tiny ** 0.5:
        shift = Z.max(axis=1, keepdims=True)
        lib.subtract(Z, shift, out=E)
        lib.exp(E, out=E)
        total = E.dot(ones)
    Z -= shift
    loss = -scale * (lib.vdot(Y, Z) - lib.vdot(Y.dot(ones), lib.log(total)))  # Σ y (z − shift − log Σ e^(z − shift))
    E /= total[:, None]  # ŷ = softmax(Z)
    correct = lib.count_nonzero(lib.argmax(E, axis=1) == lib.argmax(Y, axis=1)) if count else 0
    lib.subtract(E, Y, out=Z)
    lib.multiply(Z, scale, out=Z)
    return loss, correct


def _squared_error(lib, Z, Y, scale, count, scratch):
    """L = scale · ½ Σ (ŷ − y)², ŷ = Z;  δ = scale (ŷ − y)."""
    lib.subtract(Z, Y, out=Z)
    loss = 0.5 * scale * lib.vdot(Z, Z)
    lib.multiply(Z, scale, out=Z)
    return loss, 0


def _squared_error_through(name: str) -> Callable:
    """The squared error of ŷ = f(Z) for an output activation f with fused kernels."""
    forward, derivative = FORWARD[name], DERIVATIVE[name]

    def squared_error(lib, Z, Y, scale, count, scratch):
        """L = scale · ½ Σ (ŷ − y)², ŷ = f(Z);  δ = scale (ŷ − y) ⊙ f′(Z)."""
        Yhat, T = scratch
        forward(lib, Z, Yhat, T)
        lib.subtract(Yhat, Y, out=Z)
        loss = 0.5 * scale * lib.vdot(Z, Z)
        lib.multiply(Z, scale, out=Z)
        derivative(lib, Z, Yhat, T)
        return loss, 0

    return squared_error


LOSSES: dict[tuple[str, str], Callable] = {
    ("softmax_cross_entropy", "softmax"): _softmax_cross_entropy,
    ("squared_error", "identity"): _squared_error,
    **{("squared_error", name): _squared_error_through(name) for name in ("sigmoid", "tanh", "relu")},
}


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
    """`backprop.optim.Adam` (and AdamW's decay p ← p (1 − η wd)): p − η m̂ / (√v̂ + eps)."""
    m, v = slots
    lib.multiply(m, opt.beta1, out=m)
    lib.multiply(G, 1.0 - opt.beta1, out=S)
    lib.add(m, S, out=m)
    lib.multiply(v, opt.beta2, out=v)
    lib.multiply(G, G, out=S)
    lib.multiply(S, 1.0 - opt.beta2, out=S)
    lib.add(v, S, out=v)
    c1, c2 = 1.0 - opt.beta1 ** (t + 1.0), 1.0 - opt.beta2 ** (t + 1.0)
    lib.sqrt(v, out=S)  # η m̂ / (√v̂ + eps) = (η √c2 / c1) · m / (√v + eps √c2)
    lib.add(S, opt.eps * math.sqrt(c2), out=S)
    lib.divide(m, S, out=S)
    lib.multiply(S, lr * math.sqrt(c2) / c1, out=S)
    if isinstance(opt, AdamW) and opt.weight_decay:
        lib.multiply(P, 1.0 - lr * opt.weight_decay, out=G)
        lib.subtract(G, S, out=G)
    else:
        lib.subtract(P, S, out=G)


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


UPDATES: tuple[tuple[type, Callable], ...] = ((Adam, _adam), (RMSprop, _rmsprop), (SGD, _sgd))


def update_for(optimizer) -> Callable | None:
    """The fused update of ``optimizer`` (the optimizers of `backprop.optim` and their subclasses)."""
    return next((fn for cls, fn in UPDATES if isinstance(optimizer, cls)), None)


def supports(backend, optimizer) -> bool:
    """Whether `FusedStep` can run this optimizer on this backend (writable arrays, a fused update)."""
    return backend.inplace is not None and update_for(optimizer) is not None


DOT_SUM_MAX = 1 << 16  # flat buffers up to this size are summed by a dot with ones (see `FusedStep._finite`)


class _Plan:
    """The per-batch-size buffers: A_l = [H_l 1], Z_l (δ_l written over it), scratch, Y."""

    def __init__(self, lib, model: MLP, n: int, dtype, fused_derivative: bool):
        sizes = model.layer_sizes
        self.A = []
        for fan_in in sizes[:-1]:
            A = lib.empty((n, fan_in + 1), dtype=dtype)
            A[:, -1] = 1.0
            self.A.append(A)
        self.AT = [A.T for A in self.A]
        self.H = [A[:, :-1] for A in self.A]
        self.Z = [lib.empty((n, fan_out), dtype=dtype) for fan_out in sizes[1:]]
        # δ_l is written over Z_l, except below a non-fused derivative, which still reads Z_l
        self.D = [Z if fused_derivative or l == len(self.Z) - 1 else lib.empty_like(Z) for l, Z in enumerate(self.Z)]
        hidden = sizes[1:-1]
        self.T = [lib.empty((n, h), dtype=dtype) for h in hidden]  # per layer: forward → backward
        self.Y = lib.empty((n, sizes[-1]), dtype=dtype)
        self.E = lib.empty((2, n, sizes[-1]), dtype=dtype)  # the loss layer's scratch


class FusedStep:
    """The Trainer's step ``(params, state, X, Y) -> (params, state, loss, correct, ok)`` on
    preallocated buffers (see the module docstring); `epoch` runs many steps in one call."""

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
        activation, link, xp = model.activation, model.loss_layer, backend.xp
        forward, derivative = FORWARD.get(activation.name), DERIVATIVE.get(activation.name)
        self._fused_derivative = forward is not None and derivative is not None
        if self._fused_derivative:
            self._activate = lambda Z, out, T: forward(lib, Z, out, T)
            self._derive = lambda D, H, T, Z: derivative(lib, D, H, T)
        else:  # the array-API forms, their results copied into the buffers
            self._activate = lambda Z, out, T: lib.copyto(out, activation.f(xp, Z))
            self._derive = lambda D, H, T, Z: lib.multiply(D, activation.df(xp, Z, H), out=D)
        self._loss = LOSSES.get((link.name, link.activation.name), self._any_loss)
        self._classification = link.classification
        sizes = model.layer_sizes
        self.shapes = [(fan_in + 1, fan_out) for fan_in, fan_out in zip(sizes[:-1], sizes[1:])]
        self.size = sum(a * b for a, b in self.shapes)
        with self._on_device():
            self._buffers = [lib.zeros(self.size, dtype=self.dtype) for _ in range(2)]
            self._scratch = lib.empty(0 if self._lr_in_delta else self.size, dtype=self.dtype)  # the update's
            self._ones = lib.ones(min(self.size, DOT_SUM_MAX), dtype=self.dtype)
        # the state's entries shaped like params become flat slots, others pass through (set by `_load`)
        self._template, self._slots, self._slot_views, self._last_state = None, [], [], None
        if model.alpha:  # the L2 penalty's weights: 1 on every W entry, 0 on the bias rows
            with self._on_device():
                self._weights, self._decay = lib.ones(self.size, dtype=self.dtype), lib.empty(self.size, dtype=self.dtype)
            for block in self._views(self._weights)[0]:
                block[-1] = 0.0
            self._decay_c = None
        blocks, self._params = zip(*(self._views(b) for b in self._buffers))
        # (Θ_l, W_lᵀ, dΘ_l) per layer, with Θ in buffer k and dΘ in the other one, for k = 0, 1
        self._layers = [[(theta, theta[:-1].T, dtheta) for theta, dtheta in zip(blocks[k], blocks[1 - k])] for k in (0, 1)]
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
        it = iter(self._slot_views)
        self._last_state = (count, *(next(it) if slot else entry for slot, entry in zip(self._template, state[1:])))
        return self._last_state

    # -- the step --------------------------------------------------------------------------
    def _run(self, plan: _Plan, Y, state, t: float, count: bool):
        """One step (the t-th, 0-based) on the batch in plan.A[0]; returns (loss, correct, ok)
        (correct = 0 unless ``count``)."""
        lib, model, dot = self.lib, self.model, self.lib.dot
        layers = self._layers[self._cur]  # (Θ_l, W_lᵀ, dΘ_l) per layer
        A, H, Z, D = plan.A, plan.H, plan.Z, plan.D
        last = len(layers) - 1
        scale = model.scale(Y.shape[0])
        for l in range(last + 1):  # forward
            dot(A[l], layers[l][0], out=Z[l])  # Z_l = A_l Θ_l
            if l < last:
                self._activate(Z[l], H[l + 1], plan.T[l])  # H_(l+1) = f(Z_l)
        loss, correct = self._loss(lib, Z[last], Y, scale, count, plan.E)  # δ_(L−1), over Z_(L−1)
        if self._lr_in_delta:  # plain SGD: every gradient is linear in δ, so η δ gives η g
            lib.multiply(D[last], self._constant_lr, out=D[last])
        for l in range(last, -1, -1):  # backward
            dot(plan.AT[l], D[l], out=layers[l][2])  # (1) + (2): dΘ_l = A_lᵀ δ_l
            if l > 0:
                dot(D[l], layers[l][1], out=D[l - 1])  # (3): dH_l = δ_l W_lᵀ
                self._derive(D[l - 1], H[l], plan.T[l - 1], Z[l - 1])  # (4): δ_(l−1) = dH_l ⊙ f′(Z_(l−1))
        P, G, S = self._buffers[self._cur], self._buffers[1 - self._cur], self._scratch
        penalty = 0.0
        if model.alpha:  # + (alpha/2) scale Σ ‖W‖²: dW += alpha · scale · W, over the flat buffers
            c = model.alpha * scale
            if c != self._decay_c:
                lib.multiply(self._weights, c, out=self._decay)  # alpha · scale on weights, 0 on biases
                self._decay_c = c
            lib.multiply(P, self._decay, out=S)
            penalty = 0.5 * lib.vdot(S, P)
            lib.add(G, S, out=G)
        loss = model.total_loss(loss, penalty)
        if self._slots and not self._finite(loss, G):
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
        ok = self._finite(loss, G)
        if ok:
            self._cur = 1 - self._cur
        return loss, correct, ok

    def _any_loss(self, lib, Z, Y, scale, count, scratch):
        """A loss layer without a fused form: its array-API δ copied over Z."""
        link, xp = self.model.loss_layer, self.backend.xp
        out = link(xp, Z, Y, scale)
        correct = link.count_correct(xp, out.output, Y) if count else 0
        lib.copyto(Z, out.delta)
        return out.value, correct

    def _finite(self, loss, flat) -> bool:
        """Whether the loss and every entry of ``flat`` are finite (NaN and inf propagate into a sum)."""
        # Σ as a BLAS dot with ones costs less per call; a reduction reads half the memory
        total = self.lib.dot(flat, self._ones) if flat.size <= DOT_SUM_MAX else flat.sum()
        if self.lib is np:
            return math.isfinite(float(loss) + float(total))
        return bool(self.lib.isfinite(loss + total))

    def __call__(self, params, state, X, Y):
        """One training step on the batch (X, Y); the same contract as the compiled pure step."""
        self._load(params, state)
        plan = self._plan(X.shape[0])
        count = state[0]
        with self._quiet():
            plan.H[0][...] = X
            loss, correct, ok = self._run(plan, Y, state, float(count), self._classification)
        state = self._state(state, self.lib.asarray(count + 1.0) if ok else count)
        return self._params[self._cur], state, loss, correct, ok

    def _quiet(self):
        """No NumPy floating-point warnings inside a step (non-finite results are caught and
        refused); on CuPy, the backend's GPU as the current device."""
        return np.errstate(all="ignore") if self.lib is np else self._on_device()

    def epoch(self, params, state, X, Y, batches: Sequence, should_stop: Callable[[], bool] = lambda: False,
              count_correct: bool = True):
        """The steps on rows ``batches`` (index arrays) of (X, Y), gathered straight into the buffers.

        Returns ``(params, state, losses, corrects, first_bad)``: per-step lists for the steps
        taken (corrects are 0 unless ``count_correct`` and the loss classifies), and the index
        of the refused step (−1 if none; no step is taken after it).  ``should_stop`` is asked
        after every step (a deferred Ctrl-C); when it says so, the steps taken so far are returned.
        """
        with self._quiet():
            return self._epoch(params, state, X, Y, batches, should_stop, count_correct and self._classification)

    def _epoch(self, params, state, X, Y, batches, should_stop, count_correct):
        self._load(params, state)
        lib, backend = self.lib, self.backend
        gather = lib is np or (backend.is_native(X) and not isinstance(X, np.ndarray))  # X in lib's memory
        losses, corrects, first_bad = [], [], -1
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
            loss, correct, ok = self._run(plan, plan.Y, state, float(count), count_correct)
            losses.append(loss)
            corrects.append(correct)
            if not ok:
                first_bad = b
                break
            count = count + one
            if should_stop():
                break
        return self._params[self._cur], self._state(state, lib.asarray(count)), losses, corrects, first_bad
