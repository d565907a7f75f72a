"""The training step fused into preallocated buffers, for backends whose arrays can be written
(NumPy, CuPy, torch).

`backprop.training.trainer` states the step once as pure array-API code, and JAX compiles that (XLA
fuses the elementwise work and reuses buffers itself).  NumPy, CuPy and torch run each operation as it
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

* Where the backend's products take the bias faster than the passes above (its ``lib`` says
  ``bias_in_products``: torch on the CPU), each layer's input H_l is the first columns of a
  buffer [H_l 1] whose last column holds ones, and one product does each pair:

      forward    Z_l = [H_l 1] Θ_l
      backward   dΘ_l = [H_l 1]ᵀ δ_l                 (1) and (2): dW_l in the first rows, db_l = 1ᵀ δ_l in the last

  A batch that the step reads where it is (a C-contiguous array of its dtype on its device, in
  a single step) is not copied for this: the first layer then adds its bias after the product.
  On NumPy (OpenBLAS) the strided H_l and the inner dimension fan_in + 1 cost more than the
  passes they save, so there H_l is a buffer of its own (docs/benchmarks.md).
* Activations, their derivatives, the loss layer's δ and the optimizer update run as the
  in-place forms that sit beside their math (`Activation.f_into`/``df_into``,
  `Loss.delta_kernel`, `Optimizer.inplace_step`), read off the objects.  Where an object has
  none for its own math (a user's activation, loss or optimizer subclass), its array-API form
  runs and the result is copied in: the optimizer's ``_step`` over the buffers' (W, b) views.
* Sample weights (``epoch(..., sample_weight=w)``): each batch's weights are gathered beside
  its rows into the plan, the loss layer's weighted kernel (``Loss.delta_kernel(weighted=True)``)
  scales δ's row i by wᵢ / Σw, and Σw of the batch (read on the host) replaces n in the
  scale, the L2 term's included; the rest of the step is unchanged.  Without weights the step
  runs as it would without this feature.
* The update writes the new parameters into the gradient buffer, and the two buffers swap
  roles, so a refused (non-finite) step leaves the parameters untouched.  For plain SGD at a
  constant rate η, the output layer's δ is multiplied by η: every gradient is linear in δ, so
  the backward pass yields η g and the update is one pass, p − η g.  The optimizer's slots
  are updated in place only after the loss and the gradients were found finite.

On NumPy, each planned step runs at its own BLAS thread count (`backprop.backends.threads`):
the count given (``blas_threads``, else ``BACKPROP_BLAS_THREADS``) or, by default, the fastest
count measured the first time a plan is used: trial steps on the plan's batch at each candidate
count (1 up to the count in force), each followed by restoring the optimizer slots and the
parameters' buffer, so training is the same as an untimed run at the chosen count.  The choice
is remembered for the network and batch size in this process.  The count is set around each
epoch, and around each single step that runs at another count than the one in force, and the
caller's count is restored after it; a caller's own ``threadpool_limits`` is respected (the
choice is made among 1 up to it, and again when it changes).  A plan whose choice is the count
that was in force (small networks, where more threads neither help nor hurt) runs its single
steps as they are, without reading the count.

The results equal the pure step's up to float rounding (the tests compare every activation,
loss and optimizer).  Like a donated JAX step, a step reuses its inputs: after it, the params
and state passed in may hold stale values, so keep the returned ones (`Trainer.snapshot` copies).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import NamedTuple

import numpy as np

from ..backends import threads
from ..core.forms import own_form
from ..core.losses import one_hot_into, one_hot_table
from ..core.mlp import MLP
from ..core.optim import SGD, Constant, Optimizer
from ..core.tree import tree_flatten, tree_leaves, tree_node
from ..core.validation import is_sparse
from .replay import replay_if_not_finite


def supports(backend, optimizer) -> bool:
    """Whether `FusedStep` can run on this backend: its arrays can be written (NumPy, CuPy, torch).  Any
    optimizer runs: its in-place form where it has one for its own math, else its ``_step``."""
    return backend.inplace is not None


def dense_rows(X, index, out, backend) -> None:
    """The rows ``index`` of the scipy.sparse matrix X (on the host), densified into the buffer
    ``out``: directly into a NumPy buffer of X's dtype, else through a dense copy on the host."""
    rows = X[index]
    if isinstance(out, np.ndarray) and out.dtype == rows.dtype and out.flags.c_contiguous:
        rows.toarray(out=out)
    else:
        out[...] = backend.asarray(rows.toarray())


DOT_SUM_MAX = 1 << 16  # flat buffers up to this size are summed by one dot with ones (see `FusedStep._summer`)
SUM_ROW = 4096  # larger ones, on NumPy, as rows of this many entries (zero-padded), by two products with ones


class EpochTotals(NamedTuple):
    """What `FusedStep.epoch` reports of the steps it took."""

    loss: float  # Σ over the steps of the batch loss / scale: the summed per-example loss ("mean" reduction)
    correct: int  # Σ of the correct counts (0 unless counted)
    steps: int  # steps taken (and kept)
    first_bad: int  # index of the refused step, −1 if none
    bad_loss: float  # its loss (NaN if none)


class _Layer(NamedTuple):
    """The views of one layer's parameter block Θ = [W; b] and of its gradient block dΘ, made once."""

    W: object
    b: object
    WT: object  # Wᵀ, for dH = δ Wᵀ
    dW: object
    db: object
    theta: object  # Θ, for [H 1] Θ
    dtheta: object  # dΘ, for [H 1]ᵀ δ

    @classmethod
    def of(cls, theta, dtheta) -> _Layer:
        return cls(theta[:-1], theta[-1], theta[:-1].T, dtheta[:-1], dtheta[-1], theta, dtheta)


class _Plan:
    """The per-batch-size buffers: H_l (H_0 the batch), Z_l (δ_l written over it), scratch, Y."""

    w = S = None  # the batch's sample weights and the weighted loss's scratch (`FusedStep._batch_weight`)

    def __init__(self, lib, model: MLP, n: int, dtype, fused_derivative: bool, bias_in_products: bool = False):
        self.n = n
        self.blas = None  # (the limit it was chosen under, the BLAS thread count), once chosen
        sizes = model.layer_sizes
        hidden = sizes[1:-1]
        if model.activation.mask_in_scratch:  # one T per layer, from the forward pass to the backward
            self.T = [lib.empty((n, h), dtype=dtype) for h in hidden]
        else:  # T is the derivative's scratch only: one buffer serves every layer
            flat = lib.empty(n * max(hidden, default=0), dtype=dtype)
            self.T = [flat[: n * h].reshape(n, h) for h in hidden]
        self.H = [lib.empty((n, fan_in), dtype=dtype) for fan_in in sizes[:-1]]
        self.H1 = [None] * len(self.H)  # [H_l 1] where the products take the bias (``bias_in_products``)
        if bias_in_products:  # H_l is a view of the first columns; the last stays ones
            for l in range(len(self.H)):
                self.H1[l] = lib.ones((n, sizes[l] + 1), dtype=dtype)
                self.H[l] = self.H1[l][:, :-1]
        self.HT = [H.T for H in self.H]
        self.H1T = [None if H1 is None else H1.T for H1 in self.H1]
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
        self.labels = one_hot_table(lib, sizes[-1], dtype)  # integer labels are one-hot encoded into Y from it


def _c_contiguous(a) -> bool:
    """Whether an array (NumPy, CuPy: ``flags``; torch: ``is_contiguous``) is C-contiguous."""
    flags = getattr(a, "flags", None)
    return flags.c_contiguous if flags is not None else a.is_contiguous()


def _split(a) -> tuple:
    """The views a[0], a[1], ... of an array's first axis."""
    return tuple(a[i] for i in range(a.shape[0]))


class FusedStep:
    """The Trainer's step ``(params, state, X, Y) -> (params, state, stats)`` on preallocated
    buffers (see the module docstring), stats = [loss, correct, ok] as a host array (the step has
    synchronised to check finiteness anyway); `epoch` runs many steps in one call.

    ``blas_threads`` (NumPy only): None chooses the BLAS thread count per batch size by timing
    (unless ``BACKPROP_BLAS_THREADS`` sets one), an integer >= 1 fixes it; see the module docstring.
    """

    MAX_PLANS = 4  # batch sizes whose buffers are kept (the full batch, the last partial one...)
    check_finite = True  # False: single steps are taken whatever their loss and update (`Trainer(check_finite=)`)

    def __init__(self, model: MLP, optimizer, backend, blas_threads: int | None = None):
        if not supports(backend, optimizer):
            raise ValueError(f"no fused step on the {backend.name} backend: its arrays cannot be written in place")
        self.model, self.optimizer, self.backend = model, optimizer, backend
        self.lib = lib = backend.inplace
        self.dtype = lib.dtype(backend.dtype_name)
        self._update = optimizer.inplace_step()  # None: the optimizer's own _step runs (`_pure_update`)
        constant = isinstance(optimizer.lr, Constant) and type(optimizer).learning_rate is Optimizer.learning_rate
        self._constant_lr = optimizer.lr.lr if constant else None  # else asked of the optimizer every step
        # plain SGD at a constant rate: η rides in on the output layer's δ, and the update is p − η g
        self._lr_in_delta = (
            constant
            and type(optimizer) is SGD
            and not optimizer.momentum
            and not optimizer.weight_decay
            and optimizer.clip_norm is None
            and not model.alpha
        )
        self._delta_lr = self._constant_lr if self._lr_in_delta else 1.0
        activation, link, xp = model.activation, model.loss_layer, backend.xp
        self._fused_derivative = activation.f_into is not None and activation.df_into is not None
        if self._fused_derivative:  # (lib bound once: a partial calls faster than a lambda)
            self._activate, self._derive = partial(activation.f_into, lib), partial(activation.df_into, lib)
        else:  # the array-API forms, their results copied into the buffers
            self._activate = lambda Z, out, T: lib.copyto(out, activation.f(xp, Z))
            self._derive = lambda D, H, T, Z: lib.multiply(D, activation.df(xp, Z, H), out=D)
        kernel = own_form(link, "__call__", "delta_kernel")
        self._loss = (kernel() if kernel is not None else None) or self._any_loss
        self._weighted_loss = (kernel(weighted=True) if kernel is not None else None) or self._any_loss
        self._classification = link.classification
        sizes = model.layer_sizes
        self.shapes = [(fan_in + 1, fan_out) for fan_in, fan_out in zip(sizes[:-1], sizes[1:])]
        self.size = sum(a * b for a, b in self.shapes)
        scratch = not self._lr_in_delta and (
            bool(model.alpha) or (self._update is not None and optimizer.inplace_scratch())
        )
        rows = lib is np and self.size > DOT_SUM_MAX  # summed by rows (see `_summers`)
        padded = -(-self.size // SUM_ROW) * SUM_ROW if rows else self.size
        with self._on_device():
            whole = [lib.zeros(padded, dtype=self.dtype) for _ in range(2)]  # the padding stays 0
            self._buffers = [flat[: self.size] for flat in whole]
            self._scratch = lib.empty(self.size if scratch else 0, dtype=self.dtype)  # the penalty's and update's
            self._sums = self._summers(whole, rows)  # Σ of each buffer's entries
        # the state's entries shaped like params become flat slots, others pass through (set by `_load`);
        # _fields: the entries after the count as handed out (the slots' views, the others)
        self._template, self._slots, self._slot_views, self._fields, self._last_state = None, [], [], (), None
        self._param_structure = [[0, 0]] * len(self.shapes)
        if model.alpha:  # the L2 penalty's factor per parameter: alpha · scale on W entries, 0 on the bias rows
            with self._on_device():
                self._decay = lib.empty(self.size, dtype=self.dtype)
            self._decay_blocks, self._decay_c = self._views(self._decay)[0], None
        blocks, self._params = zip(*(self._views(b) for b in self._buffers))
        # the views of each layer, with Θ in buffer k and dΘ in the other one, for k = 0, 1
        self._layers = [[_Layer.of(theta, dtheta) for theta, dtheta in zip(blocks[k], blocks[1 - k])] for k in (0, 1)]
        self._cur = 0  # self._buffers[self._cur] holds the parameters
        self._bias_in_products = bool(getattr(lib, "bias_in_products", False))  # see the module docstring
        # its 0-d results read as numbers where that costs no wait for a device (NumPy, torch's CPU)
        self._host_scalars = lib is np or bool(getattr(lib, "host_scalars", False))
        self._plans: dict[int, _Plan] = {}
        threaded = backend.name == "numpy" and lib is np and threads.libraries() != []  # a BLAS to set
        self._blas = threads.Session() if threaded else None  # this step's own (not reentrant)
        # what the BLAS thread choice depends on besides the batch size (`threads.remember`)
        self._workload = (
            tuple(sizes),
            activation.name,
            link.name,
            type(optimizer).__name__,
            self._lr_in_delta,
            backend.dtype_name,
        )
        self.blas_threads = blas_threads

    # -- BLAS threads (NumPy) --------------------------------------------------------------
    @property
    def blas_threads(self) -> int | None:
        """The fixed BLAS thread count (the argument, else ``BACKPROP_BLAS_THREADS``), None: automatic."""
        return self._fixed_threads

    @blas_threads.setter
    def blas_threads(self, value: int | None) -> None:
        self._fixed_threads = threads.setting(value)

    def threads(self, n: int) -> int | None:
        """The BLAS thread count the steps on batches of ``n`` rows run with: the fixed one, the one
        chosen for them (None before their first step), None off NumPy."""
        if self._blas is None:
            return None
        if self._fixed_threads is not None:
            return self._fixed_threads
        plan = self._plans.get(n)
        return None if plan is None or plan.blas is None else plan.blas[1]

    def _use_threads(self, session, plan: _Plan, X, Y, state, t: float, count: bool) -> None:
        """Set the plan's BLAS thread count in ``session``: the fixed one, else its automatic
        choice under the session's limit, made now (`_choose_threads`) if not made yet."""
        choice = plan.blas
        if self._fixed_threads is not None:
            session.use(self._fixed_threads)
        elif choice is not None and choice[0] == session.limit:
            session.use(choice[1])
        else:
            key = (self._workload, plan.n, session.limit)
            chosen = threads.chosen(key)
            if chosen is None:
                chosen = self._choose_threads(session, plan, X, Y, state, t, count)
                threads.remember(key, chosen)
            plan.blas = (session.limit, chosen)
            session.use(chosen)

    def _choose_threads(self, session, plan: _Plan, X, Y, state, t: float, count: bool) -> int:
        """The fastest BLAS thread count for the plan (`threads.choose`): trial steps on (X, Y) at
        each candidate count, each from the same parameters, slots and state, restored after it
        (a step writes its new parameters into the other buffer and leaves the parameters' buffer
        as it was: only the slots, updated in place, are copied).  A count other than the one in
        force is charged what switching to it costs a single step.  Each trial times the second
        of two such steps: in the first, BLAS threads left idle by the trial before wake up (a
        stall of milliseconds on a VM), which steps one after another do not pay."""
        candidates = threads.candidates(session.limit)
        if len(candidates) == 1:
            return candidates[0]
        flats = list(self._slots)
        kept, cur, fields = [flat.copy() for flat in flats], self._cur, self._fields
        session.use(None)  # the count in force (another plan's may be set in this epoch)

        def measure(n: int) -> float:  # a single step's cost: another count is read, set and put back
            for _ in range(2):  # the second: the first wakes the BLAS threads that the last trial left idle
                start = threads.clock()
                if n != session.limit:
                    session.read()
                    session.use(n)
                self._run(plan, X, Y, state, t, count, checked=False)
                session.use(None)
                seconds = threads.clock() - start
                self._cur, self._fields = cur, fields
                for flat, copy in zip(flats, kept, strict=True):
                    flat[...] = copy
            return seconds

        return threads.choose(candidates, measure, keep=session.limit)

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
        """Whether a state entry is shaped like the parameters ((W, b), ...): a slot of its own."""
        return tree_flatten(entry)[1] == self._param_structure

    def _on_device(self):
        """The backend's device as the current one (CuPy); not where the library places every array
        on its device itself (torch's `InPlace`: torch's device context would intercept each call)."""
        device = self.backend.device
        if hasattr(device, "__enter__") and not getattr(self.lib, "places_arrays", False):
            return device
        return contextlib.nullcontext()

    def _plan(self, n: int) -> _Plan:
        plan = self._plans.get(n)
        if plan is None:
            if len(self._plans) >= self.MAX_PLANS:
                self._plans.pop(next(iter(self._plans)))
            with self._on_device():
                plan = _Plan(self.lib, self.model, n, self.dtype, self._fused_derivative, self._bias_in_products)
                self._plans[n] = plan
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
        slots, fields = iter(self._slot_views), []
        for i, (slot, entry) in enumerate(zip(self._template, state[1:]), start=1):
            if slot:
                views = next(slots)
                if entry is not views:
                    self._copy_into(views, entry, f"optimizer state entry {i}")
                entry = views
            fields.append(entry)
        self._fields = tuple(fields)

    def _copy_into(self, views, tree, what: str) -> None:
        """The arrays of ``tree`` copied into the buffers' ``views`` (same nesting); ValueError on a shape mismatch."""
        for dst, src in zip(tree_leaves(views), tree_leaves(tree), strict=True):
            if tuple(src.shape) != tuple(dst.shape):
                raise ValueError(f"{what}: an array of shape {tuple(src.shape)}, expected {tuple(dst.shape)}")
            dst[...] = self.backend.asarray(src)

    def _state(self, state, count):
        """The state to hand out: ``count``, the slots' views, the other entries (`_fields`), of the
        state's own type (built as a tuple of that type: a NamedTuple's __new__ costs a Python call)."""
        self._last_state = tuple.__new__(type(state), (count, *self._fields))
        return self._last_state

    # -- the step --------------------------------------------------------------------------
    def _run(self, plan: _Plan, X, Y, state, t: float, count: bool, checked: bool = True, weight=None):
        """One step (the t-th, 0-based) on the batch (X, Y), X of the plan's H_0 shape and dtype
        (only read: the plan's own H_0 in an epoch, the caller's array or H_0 in a single step); returns
        (loss, correct, ok) (correct = 0 unless ``count``).  Unless ``checked``, the step is
        taken whatever the finiteness of its loss and update (ok is True; see `_epoch`).
        ``weight``: None, or (w, scale) for sample weights (`_batch_weight`): the weighted loss
        kernel scales δ's rows, and scale = 1/Σw replaces the plan's 1/n (the L2 term's too)."""
        lib, model, dot = self.lib, self.model, self.lib.dot
        layers = self._layers[self._cur]  # the views of Θ_l and dΘ_l (`_Layer`)
        Z, D = plan.Z, plan.D
        # H_l, H_lᵀ, and [H_l 1] and its transpose where the products take the bias (else None)
        if X is plan.H[0]:  # the plan's own batch buffer (gathered or copied into)
            H, HT, H1, H1T = plan.H, plan.HT, plan.H1, plan.H1T
        else:  # the caller's batch, read where it is: the first layer adds its bias itself
            H, HT, H1, H1T = (X, *plan.H[1:]), (X.T, *plan.HT[1:]), (None, *plan.H1[1:]), (None, *plan.H1T[1:])
        last, scale = len(layers) - 1, plan.scale
        for l, layer in enumerate(layers):  # forward
            if H1[l] is None:
                dot(H[l], layer.W, out=Z[l])  # Z_l = H_l W_l + b_l
                lib.add(Z[l], layer.b, out=Z[l])
            else:
                dot(H1[l], layer.theta, out=Z[l])  # Z_l = [H_l 1] Θ_l
            if l < last:
                self._activate(Z[l], H[l + 1], plan.T[l])  # H_(l+1) = f(Z_l)
        # δ_(L−1), over Z_(L−1); for plain SGD η rides along (every gradient is linear in δ, so η δ gives η g)
        if weight is None:
            loss, correct = self._loss(lib, Z[last], Y, scale, plan.dscale, count, plan)
        else:
            w, scale = weight
            loss, correct = self._weighted_loss(lib, Z[last], Y, scale, self._delta_lr * scale, count, plan, w)
        for l in range(last, -1, -1):  # backward
            layer = layers[l]
            if H1T[l] is None:
                dot(HT[l], D[l], out=layer.dW)  # (1): dW_l = H_lᵀ δ_l
                dot(plan.ones, D[l], out=layer.db)  # (2): db_l = 1ᵀ δ_l
            else:
                dot(H1T[l], D[l], out=layer.dtheta)  # (1) and (2): dΘ_l = [H_l 1]ᵀ δ_l
            if l > 0:
                dot(D[l], layer.WT, out=D[l - 1])  # (3): dH_l = δ_l W_lᵀ
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
            lr = float(optimizer.learning_rate(tree_node(state, (lib.asarray(t, dtype=self.dtype), *self._fields))))
        if optimizer.clip_norm is not None:
            norm = lib.sqrt(lib.vdot(G, G))
            G *= optimizer.clip_norm / lib.maximum(norm, optimizer.clip_norm)
        if self._lr_in_delta:
            lib.subtract(P, G, out=G)  # p − η g in one pass
        elif self._update is not None:
            self._update(lib, P, G, S, self._slots, lr, t)
        else:
            self._pure_update(lr, t)
        ok = not checked or self._finite(loss, 1 - self._cur)
        if ok:
            self._cur = 1 - self._cur
        return loss, correct, ok

    def _pure_update(self, lr: float, t: float) -> None:
        """The optimizer's own ``_step`` (it has no in-place form for it) over the (W, b) views of
        the buffers; the new parameters are copied into the gradient buffer, the new slots into
        theirs, and the state's other entries are kept to hand out."""
        xp, backend = self.backend.xp, self.backend
        params, grads = self._params[self._cur], self._params[1 - self._cur]
        count = xp.asarray(t, dtype=backend.dtype, device=backend.device)
        new_params, new_fields = self.optimizer._step(xp, params, grads, lr, count, self._fields)
        self._copy_into(grads, new_params, "the optimizer's new parameters")
        fields = []
        for slot, entry, new in zip(self._template, self._fields, new_fields, strict=True):
            if slot:
                self._copy_into(entry, new, f"the {type(self.optimizer).__name__} state")
            fields.append(entry if slot else new)
        self._fields = tuple(fields)

    def _any_loss(self, lib, Z, Y, scale, dscale, count, plan, w=None):
        """A loss layer without a fused form: its array-API δ copied over Z (``w``: sample weights)."""
        link, xp = self.model.loss_layer, self.backend.xp
        out = link(xp, Z, Y, scale) if w is None else link(xp, Z, Y, scale, w)
        correct = link.count_correct(xp, out.output, Y) if count else 0
        lib.multiply(out.delta, dscale / scale, out=Z)
        return out.value, correct

    def _summers(self, buffers, rows: bool) -> list[Callable]:
        """For each flat buffer (zero-padded to whole rows if ``rows``), a function that returns
        Σ of its entries, the cheapest way for its size: one BLAS dot with ones up to DOT_SUM_MAX
        entries (less per call than a reduction); above, on NumPy, a product of its rows of
        SUM_ROW entries with ones, then a dot over the row sums (faster than NumPy's own float32
        sum: docs/benchmarks.md); elsewhere the backend's reduction (one kernel on CuPy)."""
        lib, dtype = self.lib, self.dtype
        if self.size <= DOT_SUM_MAX:
            ones = lib.ones(self.size, dtype=dtype)
            return [lambda flat=flat: lib.dot(flat, ones) for flat in buffers]
        if not rows:
            return [flat.sum for flat in buffers]
        n_rows = buffers[0].size // SUM_ROW
        ones, partial, ones_rows = (
            lib.ones(SUM_ROW, dtype=dtype),
            lib.empty(n_rows, dtype=dtype),
            lib.ones(n_rows, dtype=dtype),
        )
        return [
            lambda table=flat.reshape(n_rows, SUM_ROW): lib.dot(lib.dot(table, ones, out=partial), ones_rows)  # noqa: B008
            for flat in buffers
        ]

    def _finite(self, loss, k: int) -> bool:
        """Whether the loss and every entry of buffer k are finite (NaN and inf propagate into a sum);
        tested on the host where reading the numbers costs nothing, else on the device, then read."""
        total = self._sums[k]()
        if self._host_scalars:
            return math.isfinite(float(loss) + float(total))
        return bool(self.lib.isfinite(loss + total))

    def __call__(self, params, state, X, Y, W=None, count_correct: bool = True):
        """One training step on the batch (X, Y); the same contract as the compiled pure step
        (``W``: None or the rows' sample weights; without ``count_correct`` the correct count is 0)."""
        count = self._classification and count_correct
        self._load(params, state)
        plan = self._plan(X.shape[0])
        t = float(state[0])  # the step count, as the optimizer's state holds it
        weight = None
        with self._quiet():
            if W is not None:
                weight = self._batch_weight(plan, W, None)
            H0 = plan.H[0]  # a C-contiguous batch of the step's dtype on its device is read where it is
            if not (
                self.backend.is_native(X)
                and X.dtype == H0.dtype
                and X.shape == H0.shape
                and getattr(X, "device", None) == getattr(H0, "device", None)
                and _c_contiguous(X)
            ):
                H0[...] = X  # any other is copied into the plan's buffer first
                X = H0
            if len(Y.shape) == 1:  # integer class labels (out of range: NaN rows on NumPy, see `one_hot_table`)
                one_hot_into(self.lib, Y, plan.labels, plan.Y)
                Y = plan.Y
            session, choice = self._blas, plan.blas
            if session is None or (choice is not None and choice[0] == choice[1] and self._fixed_threads is None):
                # off NumPy, or chosen to run at the count in force: nothing to read or set (reading
                # the count is a fair share of a tiny step)
                loss, correct, ok = self._run(plan, X, Y, state, t, count, self.check_finite, weight)
            else:
                session.enter()
                self._use_threads(session, plan, X, Y, state, t, self._classification)
                try:
                    loss, correct, ok = self._run(plan, X, Y, state, t, count, self.check_finite, weight)
                finally:
                    session.exit()
        state = self._state(state, self.lib.asarray(t + 1.0, dtype=self.dtype) if ok else state[0])
        return self._params[self._cur], state, np.array([float(loss), float(correct), float(ok)])

    def _batch_weight(self, plan: _Plan, W, index) -> tuple:
        """(w, scale) of a weighted step: the rows ``index`` of the weights W (all of W for None)
        in the plan's buffer ``w``, and the loss's scale for them, 1/Σw ("mean")."""
        lib, backend = self.lib, self.backend
        if plan.w is None:  # the plan's first weighted step
            with self._on_device():
                plan.w, plan.S = lib.empty(plan.n, dtype=self.dtype), lib.empty(plan.Y.shape, dtype=self.dtype)
        if index is None:
            plan.w[...] = backend.asarray(W)
        elif lib is np and isinstance(W, np.ndarray) and W.dtype == plan.w.dtype:
            W.take(index, out=plan.w, mode="clip")
        elif backend.is_native(W) and not isinstance(W, np.ndarray):
            lib.take(W, backend.asarray(index), out=plan.w)
        else:  # host weights, device buffers
            plan.w[...] = backend.asarray(np.asarray(W)[index])
        return plan.w, self.model.scale(plan.n, float(lib.dot(plan.w, plan.ones)))  # Σw: a dot with ones

    def _quiet(self):
        """No NumPy floating-point warnings inside a step (non-finite results are caught and
        refused); on CuPy, the backend's GPU as the current device."""
        return np.errstate(all="ignore") if self.lib is np else self._on_device()

    def epoch(
        self,
        params,
        state,
        X,
        Y,
        batches: Sequence,
        should_stop: Callable[[], bool] = lambda: False,
        count_correct: bool = True,
        sample_weight=None,
    ):
        """The steps on rows ``batches`` (index arrays) of (X, Y), gathered straight into the buffers
        (the rows of a scipy.sparse X densified into them, a batch at a time).

        Returns ``(params, state, totals)``, `EpochTotals` of the steps taken: running sums, so
        an epoch's memory does not grow with its length.  No step is taken after a refused one.
        ``should_stop`` is asked after every step (a deferred Ctrl-C); when it says so, the steps
        taken so far are returned.  On NumPy the BLAS thread count is set once for the epoch (per
        batch size, see the module docstring) and the caller's restored at its end.
        ``sample_weight``: None or one weight per row of X, gathered alike (see `_run`).
        """
        count_correct = count_correct and self._classification
        with self._quiet(), self._blas or contextlib.nullcontext() as session:
            return self._epoch(params, state, X, Y, batches, should_stop, count_correct, session, sample_weight)

    def _epoch(self, params, state, X, Y, batches, should_stop, count_correct, session=None, W=None):
        """On NumPy, for networks of up to DOT_SUM_MAX parameters, where the finiteness checks are
        a fair share of a step, the epoch follows the replay policy (`backprop.training.replay`):
        the steps run unchecked from a copy of the parameters and optimizer slots, and run again,
        each checked, from the copy when the summed loss or the final parameters are not finite."""
        self._load(params, state)
        if self.lib is not np or self.size > DOT_SUM_MAX:
            return self._steps(state, X, Y, batches, should_stop, count_correct, True, session, W)
        start, kept = self._cur, [flat.copy() for flat in (self._buffers[self._cur], *self._slots)]
        taken = []

        def unchecked():
            result = self._steps(state, X, Y, batches, should_stop, count_correct, False, session, W)
            taken.append(result[2].steps)
            return result, math.isfinite(result[2].loss) and self._finite(0.0, self._cur)

        def checked():
            self._cur = start
            for flat, copy in zip((self._buffers[start], *self._slots), kept, strict=True):
                flat[...] = copy
            return self._steps(state, X, Y, batches[: taken[0]], lambda: False, count_correct, True, session, W)

        return replay_if_not_finite(unchecked, checked)

    def _steps(self, state, X, Y, batches, should_stop, count_correct, checked: bool, session=None, W=None):
        """The epoch's steps from the state loaded into the buffers (see `_run` for ``checked``),
        each plan at its BLAS thread count in ``session`` (None: as they are); W: None or the
        rows' sample weights."""
        lib, backend = self.lib, self.backend
        sparse = is_sparse(X)  # a scipy.sparse X (on the host): each batch's rows are densified
        native = backend.is_native(X) and not isinstance(X, np.ndarray)
        gather = not sparse and (lib is np or native)  # X in lib's memory
        loss_sum, correct_sum, steps = 0.0, 0, 0
        count = np.asarray(float(state[0]), dtype=self.backend.dtype_name)[()]  # counted on the host, in the dtype
        one = count.dtype.type(1)
        threaded = None  # the plan whose thread count is in force
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
                if sparse:
                    dense_rows(X, index, plan.H[0], backend)
                else:
                    plan.H[0][...] = backend.asarray(X[index])
                plan.Y[...] = backend.asarray(Y[index])
            if session is not None and plan is not threaded:
                self._use_threads(session, plan, plan.H[0], plan.Y, state, float(count), count_correct)
                threaded = plan
            weight = None if W is None else self._batch_weight(plan, W, index)
            loss, correct, ok = self._run(plan, plan.H[0], plan.Y, state, float(count), count_correct, checked, weight)
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
