"""Backprop you can see: diagrams of the accumulated gradients, drawn from the library's own numbers.

Batch backpropagation is understood by following arrows: start at the loss, multiply the values
along each arrow, and add where several arrows meet.  A weight is used by every example of the
batch, so it receives one arrow per example, and its gradient is the sum of their contributions.
`draw` renders exactly that for a small network and a small batch, one figure per step of the
derivation (0-based layers as in `backprop.core.mlp`: layer l maps H[l] to H[l+1], δ_l = ∂L/∂Z[l]):

    0. forward pass   every unit per example (one shade per example) with its value, W and b
    1. loss layer     δ_{L−1} = ∂L/∂ŷ ⊙ f′(Z)   (= scale·(ŷ − y) for squared error + identity)
    then for l = L−1 … 0:
    2. weights        dW_l = H_lᵀ δ_l        one arrow per example into every weight: h_{i,a}·δ_{i,b}
    3. biases         db_l = 1ᵀ δ_l          one arrow per example into every bias: δ_{i,b}
    4. hidden units   dH_l = δ_l W_lᵀ        (l > 0) per example, arrows δ_{i,b}·w_{a,b} from the units above
    5. non-linearity  δ_{l−1} = dH_l ⊙ f′(Z_{l−1})   (l > 0)
    last: the matrix equations filled in with the numbers.

Every number comes from ``model.loss_and_grad(params, X, y, return_intermediates=True)``: the
sums (dW, db) are the returned gradients, dH and δ are the `Intermediates`, and the arrows'
labels are products of those arrays computed with the library's own namespace (f′ with the same
``activation.df`` that the backward pass uses).  Numbers are printed with 4 significant digits
(`fmt`, using the minus sign U+2212; `parse_number` reads them back).

Each page is written as SVG (text kept as ``<text>``, so it is searchable and testable) and PNG,
and ``index.html`` shows them in order with their equations (a static page that opens from disk).
Every number on a page is a text element inside a group whose id says what it is:

    H{k}_{i}_{a}            H[k][i, a] (forward page; H0 = X, H{L} = ŷ; row heads of the weights pages)
    y_{i}_{k}               the encoded targets (forward page)
    W{l}_{a}_{b}, b{l}_0_{b}  the parameters (forward page)
    loss, Yhat_{i}_{k}, Ytarget_{i}_{k}, dYhat_{i}_{k}, fprimeY_{i}_{k}, delta{L-1}_{i}_{k}   (loss page)
    delta{l}_{i}_{b}        δ_l[i, b] (column heads of the weights and biases pages, hidden-units page)
    dW{l}_{a}_{b}           the sum on the weights page; dW{l}_{a}_{b}_ex{i} example i's contribution,
                            dW{l}_{a}_{b}_l2 the L2 term (alpha > 0)
    db{l}_{b}, db{l}_{b}_ex{i}
    dH{l}_{i}_{a}           the sum on the hidden-units page; dH{l}_{i}_{a}_from{b} the term δ_{i,b}·w_{a,b}
    dH{l}_{i}_{a}, fprime{l}_{i}_{a}, Z{l-1}_{i}_{a}, delta{l-1}_{i}_{a}   (non-linearity page of H_l)
    eq-dW{l}_{a}_{b}, eq-db{l}_0_{b}, eq-dH{l}_{i}_{a}, eq-delta{l}_{i}_{b}, eq-Yhat_…, eq-Y_…   (equations page)

The drawings stay readable up to `MAX_UNITS` units a layer, `MAX_BATCH` examples and
`MAX_LAYERS` weight layers; larger networks are refused with a ValueError naming the limits.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import html
import math
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..backends import to_host

MAX_UNITS = 8
MAX_BATCH = 4
MAX_LAYERS = 6

FORMATS = ("svg", "png")

# (fill, line, text on fill, row tint, name): light/dark blue, then light/dark orange.
SHADES = (
    ("#c6dbef", "#5e9fd0", "black", "#edf4fb", "light blue"),
    ("#2166ac", "#2166ac", "white", "#cfe0f1", "dark blue"),
    ("#fdd0a2", "#f08a3c", "black", "#fff3e6", "light orange"),
    ("#b35806", "#b35806", "white", "#f7dcc3", "dark orange"),
)
GREY = "#777777"
EDGE = "#444444"

_SUB = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")


def sub(k: int) -> str:
    """``k`` in Unicode subscript digits (W₁₂)."""
    return str(k).translate(_SUB)


def fmt(value: float) -> str:
    """A number as drawn: 4 significant digits, the minus sign U+2212, ``e-5`` style exponents."""
    v = float(value)
    if v == 0.0:
        return "0"
    if not math.isfinite(v):
        return str(v)
    s = f"{v:.4g}"
    if "e" in s:
        mantissa, exponent = s.split("e")
        s = f"{mantissa}e{int(exponent)}"
    return s.replace("-", "−")


def parse_number(text: str) -> float:
    """The float a drawn label stands for (the inverse of `fmt`, up to its rounding)."""
    return float(str(text).strip().replace("−", "-"))


def check_limits(layer_sizes: Sequence[int], n_samples: int) -> None:
    """Raise ValueError when a network or batch is too large to draw legibly."""
    sizes = list(layer_sizes)
    problems = []
    widest = max(sizes)
    if widest > MAX_UNITS:
        problems.append(f"layer {sizes.index(widest)} has {widest} units")
    if n_samples > MAX_BATCH:
        problems.append(f"the batch has {n_samples} examples")
    if len(sizes) - 1 > MAX_LAYERS:
        problems.append(f"the network has {len(sizes) - 1} weight layers")
    if problems:
        raise ValueError(
            f"network {'-'.join(map(str, sizes))} with a batch of {n_samples} is too large to draw "
            f"({'; '.join(problems)}); the limits are {MAX_UNITS} units a layer, a batch of {MAX_BATCH} "
            f"and {MAX_LAYERS} weight layers"
        )


# -- the numbers -------------------------------------------------------------------------------
def _host(a) -> np.ndarray | None:
    return None if a is None else np.asarray(to_host(a), dtype=np.float64)


@dataclasses.dataclass
class Numbers:
    """Host copies of everything drawn, all taken from one ``loss_and_grad`` call.

    ``H``, ``Z``, ``delta``, ``dH``: the `Intermediates`; ``dW``, ``db``: the gradients;
    ``W``, ``b``: the parameters; ``Y``: the encoded targets; ``contrib[l][i, a, b]`` =
    H[l][i, a]·δ_l[i, b]; ``terms[l][i, a, b]`` = δ_l[i, b]·W_l[a, b] (l > 0);
    ``fprime[l]`` = f′(Z[l−1]) (l > 0); ``out_fprime`` = f′ of the output activation (None when
    δ = ∂L/∂ŷ or fused); ``penalty[l]`` = the L2 term of dW_l (None when alpha = 0).
    """

    loss: float
    scale: float
    H: list
    Z: list
    delta: list
    dH: list
    dW: list
    db: list
    W: list
    b: list
    Y: np.ndarray
    contrib: list
    terms: list
    fprime: list
    out_fprime: np.ndarray | None
    penalty: list

    @property
    def n_layers(self) -> int:
        return len(self.W)

    @property
    def n_samples(self) -> int:
        return self.H[0].shape[0]

    @property
    def sizes(self) -> list[int]:
        return [self.W[0].shape[0]] + [W.shape[1] for W in self.W]


def collect(model, params, X, y) -> Numbers:
    """The numbers of one forward and backward pass of ``model``, for drawing."""
    xp, _, Y = model.prepare(params, X, y)
    loss, grads, inter = model.loss_and_grad(params, X, y, return_intermediates=True)
    H, Z, delta, dH = inter
    L = len(params)
    scale = model.scale(H[0].shape[0])
    # The arrows' labels: products of the library's arrays, in its namespace.
    contrib = [xp.expand_dims(H[l], axis=2) * xp.expand_dims(delta[l], axis=1) for l in range(L)]
    terms = [None] + [xp.expand_dims(delta[l], axis=1) * xp.expand_dims(params[l][0], axis=0) for l in range(1, L)]
    fprime = [None] + [model.activation.df(xp, Z[l - 1], H[l]) for l in range(1, L)]
    out_act = model.loss_layer.activation
    out_fprime = None
    if model.loss_layer.name == "squared_error" and out_act.name != "identity":
        out_fprime = out_act.df(xp, Z[L - 1], H[L])
    penalty = [(model.alpha * scale) * W if model.alpha else None for W, _ in params]
    return Numbers(
        loss=float(_host(loss)),
        scale=scale,
        H=[_host(h) for h in H],
        Z=[_host(z) for z in Z],
        delta=[_host(d) for d in delta],
        dH=[_host(d) for d in dH],
        dW=[_host(g[0]) for g in grads],
        db=[_host(g[1]) for g in grads],
        W=[_host(p[0]) for p in params],
        b=[_host(p[1]) for p in params],
        Y=_host(Y),
        contrib=[_host(c) for c in contrib],
        terms=[_host(t) for t in terms],
        fprime=[_host(f) for f in fprime],
        out_fprime=_host(out_fprime),
        penalty=[_host(p) for p in penalty],
    )


# -- a sheet: drawing in inches, y downwards, sized to its contents -----------------------------
R = 0.28  # node radius
PITCH = 2 * R + 0.08  # between the examples' nodes of one unit
LH = 0.22  # line height in a sum box
MARGIN = 0.3
NUM = 7.5  # font size of numbers
SMALL = 6.5


@functools.lru_cache(maxsize=None)
def _font(family: str, size: float, weight: str):
    from matplotlib.font_manager import FontProperties

    return FontProperties(family=family, size=size, weight=weight)


@functools.lru_cache(maxsize=4096)
def _text_width(s: str, size: float, weight: str = "normal") -> float:
    """The width of ``s`` in inches, measured with matplotlib's text layout (DejaVu Sans)."""
    from matplotlib.textpath import text_to_path

    return text_to_path.get_text_width_height_descent(s, _font("DejaVu Sans", size, weight), ismath=False)[0] / 72


class Sheet:
    """Drawing operations recorded in inches (y downwards), rendered on a figure fitted to them."""

    def __init__(self):
        self.ops: list[Callable] = []
        self.x1 = self.y1 = 0.0

    def _extend(self, x: float, y: float) -> None:
        self.x1, self.y1 = max(self.x1, x), max(self.y1, y)

    def text(self, x, y, s, size=NUM, color="black", ha="center", va="center", gid=None, weight="normal",
             family="DejaVu Sans", bg=None):
        w = _text_width(s, size, weight)
        self._extend(x + (w if ha == "left" else w / 2 if ha == "center" else 0), y + size / 72)

        def op(ax, Y):
            t = ax.text(x, Y(y), s, fontproperties=_font(family, size, weight), color=color, ha=ha, va=va,
                        zorder=5)
            if bg is not None:
                t.set_bbox(dict(boxstyle="square,pad=0.1", fc=bg, ec="none"))
            if gid is not None:
                t.set_gid(gid)

        self.ops.append(op)

    def circle(self, x, y, r, fc, ec=EDGE, lw=0.8, ls="-"):
        self._extend(x + r, y + r)

        def op(ax, Y):
            from matplotlib.patches import Circle

            ax.add_artist(Circle((x, Y(y)), r, fc=fc, ec=ec, lw=lw, ls=ls, zorder=3))

        self.ops.append(op)

    def rect(self, x, y, w, h, fc="white", ec=EDGE, lw=0.8, pad=0.06, ls="-", zorder=2):
        self._extend(x + w, y + h)

        def op(ax, Y):
            from matplotlib.patches import FancyBboxPatch

            ax.add_artist(FancyBboxPatch((x, Y(y + h)), w, h, boxstyle=f"round,pad=0,rounding_size={pad}",
                                        fc=fc, ec=ec, lw=lw, ls=ls, zorder=zorder))

        self.ops.append(op)

    def line(self, points, color=EDGE, lw=0.8, zorder=1):
        for x, y in points:
            self._extend(x, y)

        def op(ax, Y):
            from matplotlib.lines import Line2D

            ax.add_artist(Line2D([p[0] for p in points], [Y(p[1]) for p in points], color=color, lw=lw,
                                 zorder=zorder, solid_capstyle="butt"))

        self.ops.append(op)

    def arrow(self, p0, p1, color=EDGE, lw=0.9, head=7, zorder=4):
        self._extend(*p0)
        self._extend(*p1)

        def op(ax, Y):
            from matplotlib.patches import FancyArrowPatch

            ax.add_artist(FancyArrowPatch((p0[0], Y(p0[1])), (p1[0], Y(p1[1])), arrowstyle="-|>",
                                         mutation_scale=head, color=color, lw=lw, shrinkA=0, shrinkB=0,
                                         zorder=zorder))

        self.ops.append(op)

    # composite pieces ---------------------------------------------------------------------
    def node(self, x, y, value, shade, gid=None, ls="-", r=R):
        fill, _, ink, _, _ = SHADES[shade]
        if ls != "-":
            fill, ink = "white", "black"
        self.circle(x, y, r, fill, ls=ls)
        self.text(x, y, fmt(value), color=ink, gid=gid)

    def header(self, title: str, equation: str, n: int, note: str = "") -> float:
        """Title, equation, legend of the examples' shades; returns the y where content starts."""
        self.text(MARGIN, 0.3, title, size=12, weight="bold", ha="left")
        self.text(MARGIN, 0.62, equation, size=10, ha="left")
        y = 0.92
        if note:
            self.text(MARGIN, y, note, size=8, color="#333333", ha="left")
            y += 0.28
        x = MARGIN
        for i in range(n):
            self.circle(x + 0.08, y, 0.08, SHADES[i][0])
            label = f"example {i} ({SHADES[i][4]})"
            self.text(x + 0.22, y, label, size=8, ha="left")
            x += 0.45 + _text_width(label, 8)
        return y + 0.35

    def matrix(self, x, y, M, gid: str | None = None, rows_shaded=False, cw=0.62, rh=0.22, label=None):
        """A bracketed matrix with its top-left at (x, y); returns (width, height)."""
        M = np.atleast_2d(M)
        r, c = M.shape
        w, h = c * cw + 0.16, r * rh + 0.1
        if label:
            self.text(x + w / 2, y - 0.1, label, size=SMALL, color=GREY)
        for i in range(r):
            yi = y + 0.05 + (i + 0.5) * rh
            if rows_shaded:
                self.rect(x + 0.06, yi - rh / 2 + 0.01, w - 0.12, rh - 0.02, fc=SHADES[i][3], ec="none", pad=0.02,
                          zorder=1)
            for j in range(c):
                self.text(x + 0.08 + (j + 0.5) * cw, yi, fmt(M[i, j]), gid=None if gid is None else f"{gid}_{i}_{j}")
        for side, x0 in (("l", x), ("r", x + w)):
            s = 0.06 if side == "l" else -0.06
            self.line([(x0 + s, y), (x0, y), (x0, y + h), (x0 + s, y + h)], color="black", lw=0.9)
        return w, h

    def render(self, paths: dict[str, Path], dpi: int = 100) -> None:
        import matplotlib
        from matplotlib.figure import Figure

        width, height = self.x1 + MARGIN, self.y1 + MARGIN
        with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "backprop", "font.family": "DejaVu Sans"}):
            fig = Figure(figsize=(width, height))
            ax = fig.add_axes((0, 0, 1, 1))
            ax.set_xlim(0, width)
            ax.set_ylim(0, height)
            ax.set_axis_off()

            def Y(y):
                return height - y

            for op in self.ops:
                op(ax, Y)
            for kind, path in paths.items():
                meta = {"Date": None} if kind == "svg" else {"Software": None}
                fig.savefig(path, format=kind, dpi=dpi, metadata=meta, facecolor="white")


# -- the pages ---------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Page:
    """One figure: ``key`` (file stem), ``title``, ``equation`` (plain Unicode), ``note`` and files."""

    key: str
    title: str
    equation: str
    note: str
    files: dict


@dataclasses.dataclass(frozen=True)
class Diagram:
    """What `draw` wrote: the pages in order and the ``index.html`` that shows them."""

    out_dir: Path
    index: Path
    pages: tuple


def _unit_rows(sizes_here: int, size_max: int, pitch: float) -> list[float]:
    """Offsets of the units of a column of ``sizes_here`` units, centred on the tallest column."""
    return [((size_max - sizes_here) / 2 + a) * pitch for a in range(sizes_here)]


def _group_width(n: int) -> float:
    return (n - 1) * PITCH + 2 * R


def _unit_group(s: Sheet, x0: float, yc: float, values, n: int, gid: Callable[[int], str] | None, ls="-"):
    """One unit: its examples' nodes side by side in a rounded box (left edge x0, centre yc)."""
    gw = _group_width(n)
    s.rect(x0 - 0.06, yc - R - 0.06, gw + 0.12, 2 * R + 0.12, fc="#f6f6f6", ec="#bbbbbb", pad=0.1, zorder=1)
    for i in range(n):
        s.node(x0 + R + i * PITCH, yc, values[i], i, gid=None if gid is None else gid(i), ls=ls)


def _layer_name(k: int, L: int, act: str, out_act: str) -> str:
    if k == 0:
        return "X = H₀ (input)"
    if k == L:
        return f"ŷ = H{sub(L)} = {out_act}(Z{sub(L - 1)})"
    return f"H{sub(k)} = {act}(Z{sub(k - 1)})"


def page_forward(nb: Numbers, act: str, out_act: str) -> Sheet:
    s = Sheet()
    n, sizes, L = nb.n_samples, nb.sizes, nb.n_layers
    top = s.header("Step 0 · the forward pass",
                   "Zₗ = Hₗ Wₗ + bₗ,   Hₗ₊₁ = f(Zₗ)   for each example (row) of the batch",
                   n, note="Every unit holds one value per example; the shades tell the examples apart. "
                   "The parameters are below.")
    gw = _group_width(n)
    col = gw + 1.6
    row = 2 * R + 0.45
    umax = max(sizes)
    y0 = top + 0.45
    centres = []
    for k, size in enumerate(sizes):
        x0 = MARGIN + 0.35 + k * col
        s.text(x0 + gw / 2, y0 - 0.25, _layer_name(k, L, act, out_act), size=8.5, weight="bold")
        cs = []
        for a, off in enumerate(_unit_rows(size, umax, row)):
            yc = y0 + R + 0.06 + off
            s.text(x0 - 0.2, yc, str(a), size=SMALL, color=GREY)
            _unit_group(s, x0, yc, nb.H[k][:, a], n, lambda i, k=k, a=a: f"H{k}_{i}_{a}")
            cs.append((x0, yc))
        centres.append(cs)
    # Targets beside the output.
    xt = MARGIN + 0.35 + (L + 1) * col - 0.6
    s.text(xt + gw / 2, y0 - 0.25, "targets y", size=8.5, weight="bold", color=GREY)
    for k_, (x0, yc) in enumerate(centres[-1]):
        _unit_group(s, xt, yc, nb.Y[:, k_], n, lambda i, k_=k_: f"y_{i}_{k_}", ls="--")
    for k in range(L):
        for xa, ya in centres[k]:
            for xb, yb in centres[k + 1]:
                s.arrow((xa + gw + 0.06, ya), (xb - 0.06, yb), color="#b0b0b0", lw=0.6, head=5, zorder=0)
    # Parameters.
    y = y0 + umax * row + 0.35
    x = MARGIN
    for l in range(L):
        w, h = s.matrix(x + 0.45, y, nb.W[l], gid=f"W{l}")
        s.text(x, y + h / 2, f"W{sub(l)} =", size=9, ha="left")
        xb = x + 0.45 + w + 0.3
        s.text(xb, y + h / 2, f"b{sub(l)} =", size=9, ha="left")
        wb, hb = s.matrix(xb + 0.4, y + h / 2 - 0.16, nb.b[l][None, :], gid=f"b{l}")
        s.text(x, y + max(h, hb) + 0.15, f"rows: units of H{sub(l)} (inputs), columns: units of H{sub(l + 1)}",
               size=SMALL, color=GREY, ha="left")
        x = xb + 0.4 + wb + 0.6
    return s


def _scale_text(scale: float, n: int) -> str:
    return "1" if scale == 1.0 else f"1/{n}" if abs(scale * n - 1) < 1e-12 else fmt(scale)


def page_loss(nb: Numbers, loss_name: str, out_act: str) -> tuple[Sheet, str, str]:
    s = Sheet()
    n, L = nb.n_samples, nb.n_layers
    K = nb.sizes[-1]
    st = _scale_text(nb.scale, n)
    sc = "" if st == "1" else f"{st}·"
    fused = loss_name != "squared_error"
    if loss_name == "squared_error":
        lossf = f"L = {sc}½ Σᵢₖ (ŷᵢₖ − yᵢₖ)²"
        if out_act == "identity":
            eq = f"δ{sub(L - 1)} = ∂L/∂ŷ = {sc}(ŷ − y)      (identity output: ŷ = Z{sub(L - 1)})"
        else:
            eq = f"∂L/∂ŷ = {sc}(ŷ − y),   δ{sub(L - 1)} = ∂L/∂ŷ ⊙ f′(Z{sub(L - 1)})   ({out_act} output)"
    elif loss_name == "binary_cross_entropy":
        lossf = f"L = −{sc}Σᵢₖ [y log ŷ + (1 − y) log(1 − ŷ)],  ŷ = σ(Z)"
        eq = f"δ{sub(L - 1)} = ∂L/∂Z{sub(L - 1)} = {sc}(ŷ − y)      (sigmoid and cross-entropy together)"
    else:
        lossf = f"L = −{sc}Σᵢₖ yᵢₖ log ŷᵢₖ,  ŷ = softmax(Z)"
        eq = f"δ{sub(L - 1)} = ∂L/∂Z{sub(L - 1)} = {sc}(ŷ − y)      (softmax and cross-entropy together)"
    top = s.header("Step 1 · the loss layer", eq, n,
                   note="Start at the loss: each example's output gets the arrow ∂L/∂ŷ; the target enters with −.")
    s.text(MARGIN, top, "loss L =", size=9, ha="left")
    xv = MARGIN + _text_width("loss L =", 9) + 0.08
    s.text(xv, top, fmt(nb.loss), size=9, ha="left", gid="loss", weight="bold")
    s.text(xv + _text_width(fmt(nb.loss), 9, "bold") + 0.4, top, f"where {lossf}", size=9, ha="left", color=GREY)
    two_step = nb.out_fprime is not None
    cell = 2 * R + 1.5 + 2 * R + (1.5 + 2 * R if two_step else 0) + 0.5
    rowh = 2 * R + 0.75 + 0.35
    y0 = top + 0.55
    for i in range(n):
        s.text(MARGIN + 0.4 + i * cell + cell / 2 - 0.25, y0, f"example {i}", size=8.5, weight="bold")
    for k in range(K):
        ytop = y0 + 0.3 + k * rowh
        s.text(MARGIN + 0.1, ytop + 0.4, f"out {k}", size=SMALL, color=GREY, ha="left")
        for i in range(n):
            x = MARGIN + 0.55 + i * cell
            yh, yt = ytop + R, ytop + R + 0.72
            ym = (yh + yt) / 2
            s.node(x + R, yh, nb.H[L][i, k], i, gid=f"Yhat_{i}_{k}")
            s.text(x + R, yh - R - 0.08, "ŷ", size=SMALL, color=GREY)
            s.node(x + R, yt, nb.Y[i, k], i, gid=f"Ytarget_{i}_{k}", ls="--")
            s.text(x + R, yt + R + 0.1, "y", size=SMALL, color=GREY)
            xd = x + 2 * R + 1.5 + R
            s.arrow((x + 2 * R, yh), (xd - R, ym - 0.06), color=SHADES[i][1])
            s.arrow((x + 2 * R, yt), (xd - R, ym + 0.06), color=SHADES[i][1])
            s.text(x + 2 * R + 0.7, yh + 0.02, f"×{st}", size=SMALL, color=GREY)
            s.text(x + 2 * R + 0.7, yt - 0.02, f"×(−{st})", size=SMALL, color=GREY)
            if two_step:
                s.node(xd, ym, nb.dH[L][i, k], i, gid=f"dYhat_{i}_{k}")
                s.text(xd, ym - R - 0.1, "∂L/∂ŷ", size=SMALL, color=GREY)
                xe = xd + R + 1.5 + R
                s.arrow((xd + R, ym), (xe - R, ym), color=SHADES[i][1])
                s.text((xd + xe) / 2, ym - 0.12, "×", size=SMALL, color=GREY, ha="right")
                s.text((xd + xe) / 2, ym - 0.12, fmt(nb.out_fprime[i, k]), size=SMALL, ha="left",
                       gid=f"fprimeY_{i}_{k}")
                s.text((xd + xe) / 2, ym + 0.12, f"= f′(z), z = {fmt(nb.Z[L - 1][i, k])}", size=SMALL, color=GREY)
                xd = xe
            s.node(xd, ym, nb.delta[L - 1][i, k], i, gid=f"delta{L - 1}_{i}_{k}")
            s.text(xd, ym - R - 0.1, f"δ{sub(L - 1)}" + ("" if two_step or fused else " = ∂L/∂ŷ"), size=SMALL,
                   color=GREY)
    return s, eq, lossf


def _sum_box(s: Sheet, x, y, w, lines, total, total_gid, arrow_side="left", title=None):
    """A box adding its lines: each line is (multiplier text, product, gid, shade).

    Returns the y of each line (where its arrow lands) and the box height.
    """
    h = (len(lines) + 1) * LH + 0.14
    s.rect(x, y, w, h, fc="white", ec=EDGE)
    if title:
        s.text(x + w / 2, y - 0.1, title, size=SMALL, color=GREY)
    ys = []
    for j, (mult, value, gid, shade) in enumerate(lines):
        yj = y + 0.07 + (j + 0.5) * LH
        ys.append(yj)
        if arrow_side == "left":
            s.text(x + 0.08, yj, mult, size=SMALL, color=GREY, ha="left")
            s.text(x + w - 0.08, yj, fmt(value), ha="right", gid=gid)
        else:
            s.text(x + w - 0.08, yj, mult, size=SMALL, color=GREY, ha="right")
            s.text(x + 0.08, yj, fmt(value), ha="left", gid=gid)
    yr = y + 0.07 + len(lines) * LH
    s.line([(x + 0.06, yr), (x + w - 0.06, yr)], color="#999999", lw=0.6, zorder=3)
    yt = yr + LH / 2
    if arrow_side == "left":
        s.text(x + 0.08, yt, "Σ", size=8, ha="left", weight="bold")
        s.text(x + w - 0.08, yt, fmt(total), ha="right", weight="bold", gid=total_gid)
    else:
        s.text(x + w - 0.08, yt, "Σ", size=8, ha="right", weight="bold")
        s.text(x + 0.08, yt, fmt(total), ha="left", weight="bold", gid=total_gid)
    return ys, h


def _accumulation_grid(s: Sheet, top: float, nb: Numbers, l: int, bias: bool):
    """Weights (or biases) of layer l: the examples' δ come down lanes into every parameter's box."""
    n = nb.n_samples
    D = nb.delta[l]
    B = D.shape[1]
    if bias:
        rows_in = np.ones((n, 1))
        contrib = D[:, None, :]
        totals = nb.db[l][None, :]
        penalty = None
        name = f"db{l}"
    else:
        rows_in = nb.H[l]
        contrib = nb.contrib[l]
        totals = nb.dW[l]
        penalty = nb.penalty[l]
        name = f"dW{l}"
    A = rows_in.shape[1]
    gw = _group_width(n)
    bw = 1.45
    col = gw + 0.3 + bw + 0.45
    nlines = n + (penalty is not None)
    box_h = (nlines + 1) * LH + 0.14
    rowp = box_h + 0.4
    left = MARGIN + 0.3 + gw + 0.5
    yh = top + 0.45 + R
    s.text(left - 0.35, yh, f"δ{sub(l)} →", size=8.5, weight="bold", ha="right")
    hname = "1" if bias else f"H{sub(l)}"
    s.text(MARGIN + 0.3 + gw / 2, yh + R + 0.28, f"{hname} ↓", size=8.5, weight="bold")
    for b in range(B):
        cx = left + b * col
        s.text(cx + gw / 2, yh - R - 0.14, f"unit {b}", size=SMALL, color=GREY)
        _unit_group(s, cx, yh, D[:, b], n, lambda i, b=b: f"delta{l}_{i}_{b}")
    yrows = [yh + R + 0.55 + a * rowp for a in range(A)]
    for a, yr in enumerate(yrows):
        ym = yr + box_h / 2
        s.text(MARGIN + 0.1, ym, str(a) if not bias else "", size=SMALL, color=GREY, ha="left")
        _unit_group(s, MARGIN + 0.3, ym, rows_in[:, a], n,
                    None if bias else (lambda i, a=a: f"H{l}_{i}_{a}"))
        for b in range(B):
            bx = left + b * col + gw + 0.3
            lines = []
            for i in range(n):
                mult = "×1" if bias else f"×{fmt(rows_in[i, a])}"
                lines.append((mult, contrib[i, a, b], f"{name}_{b}_ex{i}" if bias else f"{name}_{a}_{b}_ex{i}", i))
            if penalty is not None:
                lines.append(("+ α·s·w", penalty[a, b], f"{name}_{a}_{b}_l2", None))
            title = f"db{sub(l)}[{b}]" if bias else f"dW{sub(l)}[{a},{b}]"
            gid = f"{name}_{b}" if bias else f"{name}_{a}_{b}"
            ys, _ = _sum_box(s, bx, yr, bw, lines, totals[a, b], gid, title=title)
            for i in range(n):
                xl = left + b * col + R + i * PITCH
                s.arrow((xl, ys[i]), (bx, ys[i]), color=SHADES[i][1], lw=1.0, head=7)
    # The lanes: from each example's δ node down to its last arrow.
    for b in range(B):
        for i in range(n):
            xl = left + b * col + R + i * PITCH
            y_last = yrows[-1] + 0.07 + (i + 0.5) * LH
            s.line([(xl, yh + R), (xl, y_last)], color=SHADES[i][1], lw=1.0, zorder=2)


def page_weights(nb: Numbers, l: int, step: int) -> tuple[Sheet, str, str]:
    s = Sheet()
    eq = f"dW{sub(l)} = H{sub(l)}ᵀ δ{sub(l)}:   dW{sub(l)}[j,k] = Σᵢ h{sub(l)}[i,j] · δ{sub(l)}[i,k]"
    if nb.penalty[l] is not None:
        eq += f"  + α·s·W{sub(l)}[j,k]"
    note = (f"Each example i sends an arrow from δ{sub(l)}[i,k] into weight [j,k], multiplied by its input "
            f"h{sub(l)}[i,j]; the box adds the arrows.")
    top = s.header(f"Step {step} · weights of layer {l}", eq, nb.n_samples, note=note)
    _accumulation_grid(s, top, nb, l, bias=False)
    return s, eq, note


def page_biases(nb: Numbers, l: int, step: int) -> tuple[Sheet, str, str]:
    s = Sheet()
    eq = f"db{sub(l)} = 1ᵀ δ{sub(l)}:   db{sub(l)}[k] = Σᵢ δ{sub(l)}[i,k]   (column sums of δ{sub(l)})"
    note = "A bias is a weight on a constant input 1: each example's arrow carries its δ unchanged."
    top = s.header(f"Step {step} · biases of layer {l}", eq, nb.n_samples, note=note)
    _accumulation_grid(s, top, nb, l, bias=True)
    return s, eq, note


def page_hidden(nb: Numbers, l: int, step: int) -> tuple[Sheet, str, str]:
    s = Sheet()
    n = nb.n_samples
    W, D = nb.W[l], nb.delta[l]
    A, B = W.shape
    eq = f"dH{sub(l)} = δ{sub(l)} W{sub(l)}ᵀ:   dH{sub(l)}[i,j] = Σₖ δ{sub(l)}[i,k] · w{sub(l)}[j,k]"
    note = ("Per example: every unit k above sends its δ to every unit j below, multiplied by the weight "
            "w[j,k]; the examples do not mix.")
    top = s.header(f"Step {step} · hidden units H{sub(l)}", eq, n, note=note)
    bw = 1.45
    box_h = (B + 1) * LH + 0.14
    boxp = box_h + 0.35
    col_h = A * boxp
    node_p = max(2 * R + 0.25, col_h / max(B, 1))
    panel_h = max(col_h, B * node_p) + 0.75
    panel_w = bw + 1.7 + 2 * R + 0.6
    ncols = 1 if n == 1 else 2
    for i in range(n):
        px = MARGIN + (i % ncols) * (panel_w + 0.4)
        py = top + (i // ncols) * (panel_h + 0.3)
        s.rect(px, py, panel_w, panel_h, fc="none", ec=SHADES[i][1], lw=0.8, pad=0.12, ls="--")
        s.text(px + 0.12, py + 0.18, f"example {i}", size=8.5, weight="bold", ha="left", color=SHADES[i][1])
        bx = px + 0.25
        xn = bx + bw + 1.7 + R - 0.2
        s.text(bx + bw / 2, py + 0.45, f"dH{sub(l)} (units j of H{sub(l)})", size=SMALL, color=GREY)
        s.text(xn, py + 0.45, f"δ{sub(l)} (units k)", size=SMALL, color=GREY)
        y_nodes_top = py + 0.7 + (max(col_h, B * node_p) - B * node_p) / 2
        ynodes = [y_nodes_top + (b + 0.5) * node_p for b in range(B)]
        for b, yb in enumerate(ynodes):
            s.node(xn, yb, D[i, b], i, gid=f"delta{l}_{i}_{b}")
            s.text(xn + R + 0.1, yb, str(b), size=SMALL, color=GREY, ha="left")
        y_boxes_top = py + 0.7 + (max(col_h, B * node_p) - col_h) / 2
        for a in range(A):
            yb0 = y_boxes_top + a * boxp + 0.12
            lines = [(f"×{fmt(W[a, b])}", nb.terms[l][i, a, b], f"dH{l}_{i}_{a}_from{b}", i) for b in range(B)]
            ys, _ = _sum_box(s, bx, yb0, bw, lines, nb.dH[l][i, a], f"dH{l}_{i}_{a}", arrow_side="right",
                             title=f"unit {a}")
            for b in range(B):
                s.arrow((xn - R, ynodes[b]), (bx + bw, ys[b]), color=SHADES[i][1], lw=0.9, head=7)
    return s, eq, note


def page_activation(nb: Numbers, l: int, step: int, act: str) -> tuple[Sheet, str, str]:
    s = Sheet()
    n = nb.n_samples
    A = nb.sizes[l]
    lo, up = sub(l - 1), sub(l)
    eq = f"δ{lo} = dH{up} ⊙ f′(Z{lo}):   δ{lo}[i,j] = dH{up}[i,j] · f′(z{lo}[i,j]),   f = {act}"
    note = ("Through the non-linearity: one arrow per unit and example, multiplied by the slope f′ at that "
            "example's z.")
    top = s.header(f"Step {step} · through the non-linearity of H{sub(l)}", eq, n, note=note)
    cell = 2 * R + 1.7 + 2 * R + 0.55
    rowh = 2 * R + 0.55
    y0 = top + 0.35
    for i in range(n):
        x = MARGIN + 0.45 + i * cell
        s.text(x + cell / 2 - 0.3, y0, f"example {i}", size=8.5, weight="bold")
        s.text(x + R, y0 + 0.28, f"dH{sub(l)}", size=SMALL, color=GREY)
        s.text(x + 2 * R + 1.7 + R, y0 + 0.28, f"δ{sub(l - 1)}", size=SMALL, color=GREY)
        s.text(x + 2 * R + 0.85, y0 + 0.28, f"× f′(z{sub(l - 1)})", size=SMALL, color=GREY)
    for a in range(A):
        ya = y0 + 0.45 + R + a * rowh
        s.text(MARGIN + 0.1, ya, str(a), size=SMALL, color=GREY, ha="left")
        for i in range(n):
            x = MARGIN + 0.45 + i * cell
            s.node(x + R, ya, nb.dH[l][i, a], i, gid=f"dH{l}_{i}_{a}")
            xd = x + 2 * R + 1.7 + R
            s.arrow((x + 2 * R, ya), (xd - R, ya), color=SHADES[i][1], lw=1.0)
            xm = (x + 2 * R + xd - R) / 2
            s.text(xm - 0.02, ya - 0.12, "×", size=SMALL, color=GREY, ha="right")
            s.text(xm, ya - 0.12, fmt(nb.fprime[l][i, a]), size=SMALL, ha="left", gid=f"fprime{l}_{i}_{a}")
            s.text(xm - 0.02, ya + 0.13, "z =", size=SMALL, color=GREY, ha="right")
            s.text(xm + 0.02, ya + 0.13, fmt(nb.Z[l - 1][i, a]), size=SMALL, color=GREY, ha="left",
                   gid=f"Z{l - 1}_{i}_{a}")
            s.node(xd, ya, nb.delta[l - 1][i, a], i, gid=f"delta{l - 1}_{i}_{a}")
    return s, eq, note


def _equations(nb: Numbers, loss_name: str, out_act: str) -> list[tuple[str, list]]:
    """(left-hand side, [(operator text, matrix, gid, shaded rows)]) for the closing page."""
    L, n = nb.n_layers, nb.n_samples
    st = _scale_text(nb.scale, n)
    sc = "" if st == "1" else f"{st}·"
    eqs = []
    if nb.out_fprime is not None:
        eqs.append((f"δ{sub(L - 1)} = {sc}(ŷ − y) ⊙ f′(Z{sub(L - 1)}) =",
                    [("", nb.H[L], "eq-Yhat", True), ("−", nb.Y, "eq-Y", True),
                     ("⊙", nb.out_fprime, "eq-fprimeY", True),
                     ("=", nb.delta[L - 1], f"eq-delta{L - 1}", True)]))
    else:
        lhs = f"δ{sub(L - 1)} = {sc}(ŷ − y) ="
        eqs.append((lhs, [("", nb.H[L], "eq-Yhat", True), ("−", nb.Y, "eq-Y", True),
                          ("=", nb.delta[L - 1], f"eq-delta{L - 1}", True)]))
    for l in reversed(range(L)):
        terms = [("", nb.H[l].T, None, False), ("", nb.delta[l], None, True)]
        lhs = f"dW{sub(l)} = H{sub(l)}ᵀ δ{sub(l)}" + (f" + α·s·W{sub(l)}" if nb.penalty[l] is not None else "") + " ="
        if nb.penalty[l] is not None:
            terms.append(("+", nb.penalty[l], None, False))
        terms.append(("=", nb.dW[l], f"eq-dW{l}", False))
        eqs.append((lhs, terms))
        eqs.append((f"db{sub(l)} = 1ᵀ δ{sub(l)} =", [("", nb.db[l][None, :], f"eq-db{l}", False)]))
        if l > 0:
            eqs.append((f"dH{sub(l)} = δ{sub(l)} W{sub(l)}ᵀ =",
                        [("", nb.delta[l], None, True), ("", nb.W[l].T, None, False), ("=", nb.dH[l], f"eq-dH{l}", True)]))
            eqs.append((f"δ{sub(l - 1)} = dH{sub(l)} ⊙ f′(Z{sub(l - 1)}) =",
                        [("", nb.dH[l], None, True), ("⊙", nb.fprime[l], None, True),
                         ("=", nb.delta[l - 1], f"eq-delta{l - 1}", True)]))
    return eqs


def page_equations(nb: Numbers, step: int, loss_name: str, out_act: str) -> tuple[Sheet, str, str]:
    s = Sheet()
    eq = "The whole backward pass as matrix equations (rows of H, δ, dH: the examples)"
    note = "Each matrix product adds the arrows of the pages before; ⊙ multiplies entry by entry."
    top = s.header(f"Step {step} · the matrix equations with the numbers", eq, nb.n_samples, note=note)
    y = top + 0.1
    lhs_w = max(_text_width(lhs, 9.5) for lhs, _ in _equations(nb, loss_name, out_act)) + 0.2
    for lhs, terms in _equations(nb, loss_name, out_act):
        heights = [np.atleast_2d(M).shape[0] * 0.22 + 0.1 for _, M, _, _ in terms]
        h = max(heights)
        ym = y + h / 2
        s.text(MARGIN, ym, lhs, size=9.5, ha="left")
        x = MARGIN + lhs_w
        for (op, M, gid, shaded), hm in zip(terms, heights):
            if op:
                s.text(x + 0.12, ym, op, size=10)
                x += 0.3
            w, _ = s.matrix(x, ym - hm / 2, M, gid=gid, rows_shaded=shaded)
            x += w + 0.12
        y += h + 0.3
    return s, eq, note


# -- the whole diagram -------------------------------------------------------------------------
def _pages(model, nb: Numbers) -> list[tuple[str, Callable[[], tuple[Sheet, str, str]], str]]:
    act = model.activation.name
    out_act = model.loss_layer.activation.name
    loss_name = model.loss_layer.name
    L = nb.n_layers

    def forward():
        eq = "Zₗ = Hₗ Wₗ + bₗ,  Hₗ₊₁ = f(Zₗ)"
        return page_forward(nb, act, out_act), eq, ("Every unit holds one value per example; the shades tell "
                                                     "the examples apart.")

    def loss():
        s, eq, lossf = page_loss(nb, loss_name, out_act)
        return s, eq, f"Start at the loss {lossf} = {fmt(nb.loss)}: each example's output gets its own arrow."

    pages = [("forward", forward, "The forward pass"), ("loss", loss, "The loss layer")]
    step = 2
    for l in reversed(range(L)):
        pages.append((f"weights-{l}", lambda l=l, k=step: page_weights(nb, l, k), f"Weights of layer {l}"))
        pages.append((f"biases-{l}", lambda l=l, k=step + 1: page_biases(nb, l, k), f"Biases of layer {l}"))
        step += 2
        if l > 0:
            pages.append((f"hidden-{l}", lambda l=l, k=step: page_hidden(nb, l, k), f"Hidden units H{sub(l)}"))
            pages.append((f"activation-{l}", lambda l=l, k=step + 1: page_activation(nb, l, k, act),
                          f"Through the non-linearity of H{sub(l)}"))
            step += 2
    pages.append(("equations", lambda k=step: page_equations(nb, k, loss_name, out_act), "The matrix equations"))
    return pages


def draw(model, params, X, y, out_dir, *, formats: Sequence[str] = FORMATS, dpi: int = 100) -> Diagram:
    """Draw the derivation of the gradients of ``model`` at ``params`` on the batch (X, y).

    Writes one figure per step (``NN-name.svg`` / ``.png``) and ``index.html`` into ``out_dir``
    (created if needed) and returns a `Diagram`.  ``formats``: any of "svg", "png".  Raises
    ValueError for a network or batch beyond `MAX_UNITS`, `MAX_BATCH`, `MAX_LAYERS`, and
    ImportError when matplotlib is missing.
    """
    formats = tuple(formats)
    if not formats or any(f not in FORMATS for f in formats):
        raise ValueError(f"formats must be some of {', '.join(FORMATS)}, got {formats!r}")
    n = int(getattr(X, "shape", (len(X),))[0])
    check_limits(model.layer_sizes, n)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ImportError('drawing diagrams needs matplotlib: pip install "backprop[plot]"') from None
    nb = collect(model, params, X, y)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pages = []
    collecting = gc.isenabled()
    gc.disable()  # matplotlib makes many small objects; the cyclic collector only slows drawing down
    try:
        for k, (name, build, title) in enumerate(_pages(model, nb)):
            sheet, eq, note = build()
            key = f"{k:02d}-{name}"
            files = {f: out / f"{key}.{f}" for f in formats}
            sheet.render(files, dpi=dpi)
            pages.append(Page(key, title, eq, note, files))
    finally:
        if collecting:
            gc.enable()
    index = out / "index.html"
    index.write_text(_html(model, nb, pages), encoding="utf-8")
    return Diagram(out, index, tuple(pages))


def _html_matrix(M) -> str:
    M = np.atleast_2d(M)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(v))}</td>" for v in r) + "</tr>" for r in M)
    return f'<table class="m">{rows}</table>'


def _html(model, nb: Numbers, pages: list[Page]) -> str:
    e = html.escape
    sizes = "-".join(map(str, model.layer_sizes))
    cfg = model.config
    legend = " ".join(
        f'<span class="sw" style="background:{SHADES[i][0]}"></span>example {i} ({SHADES[i][4]})'
        for i in range(nb.n_samples)
    )
    equations = "".join(
        f'<div class="mx">{e(lhs)} '
        + " ".join(f"{e(op)} {_html_matrix(M)}" for op, M, _, _ in terms)
        + "</div>"
        for lhs, terms in _equations(nb, model.loss_layer.name, model.loss_layer.activation.name)
    )
    parts = []
    for k, p in enumerate(pages):
        img = p.files.get("svg") or p.files.get("png")
        links = " · ".join(f'<a href="{e(f.name)}">{f.suffix[1:].upper()}</a>' for f in p.files.values())
        parts.append(
            f'<section id="{e(p.key)}"><h2>{k}. {e(p.title)}</h2>'
            f'<p class="eq">{e(p.equation)}</p><p>{e(p.note)}</p>'
            f'<img src="{e(img.name)}" alt="{e(p.title)}"><p class="links">{links}</p>'
            + (equations if p.key.endswith("-equations") else "") + "</section>"
        )
    toc = "".join(f'<li><a href="#{e(p.key)}">{e(p.title)}</a></li>' for p in pages)
    params = "".join(
        f'<div class="mx">W{sub(l)} = {_html_matrix(nb.W[l])} b{sub(l)} = {_html_matrix(nb.b[l][None, :])}</div>'
        for l in range(nb.n_layers)
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>backprop diagram: {e(sizes)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }}
.eq {{ font-family: "DejaVu Sans", "Cambria Math", serif; font-size: 1.15em; background: #f4f6f8; padding: .4em .7em; }}
img {{ max-width: 100%; border: 1px solid #ddd; }}
section {{ margin: 2.5em 0; }}
.sw {{ display: inline-block; width: .9em; height: .9em; border-radius: 50%; border: 1px solid #444;
       margin: 0 .3em 0 1em; vertical-align: middle; }}
table.m {{ display: inline-table; border-left: 2px solid #222; border-right: 2px solid #222;
          border-collapse: collapse; vertical-align: middle; margin: 0 .5em; }}
table.m td {{ padding: .1em .5em; text-align: right; font-variant-numeric: tabular-nums; }}
.links {{ font-size: .9em; color: #666; }}
.mx {{ margin: .6em 0; font-family: "DejaVu Sans", serif; }}
</style></head>
<body>
<h1>Backpropagation you can see: network {e(sizes)}, batch of {nb.n_samples}</h1>
<p>Start at the loss, multiply the values along each arrow, and add where several arrows meet.
A weight is used by every example in the batch, so it receives one arrow per example.
Every number below comes from the library's own <code>loss_and_grad(..., return_intermediates=True)</code>.</p>
<p>Hidden activation: <b>{e(cfg["activation"])}</b>; loss: <b>{e(cfg["loss"])}</b>
(output {e(model.loss_layer.activation.name)}, reduction “{e(cfg["reduction"])}”,
scale s = {e(_scale_text(nb.scale, nb.n_samples))});
L2 α = {e(fmt(cfg["alpha"]))}; loss L = {e(fmt(nb.loss))}.
Layers are numbered from 0 as in <code>backprop.core.mlp</code>: layer l maps H<sub>l</sub> to H<sub>l+1</sub>,
Z<sub>l</sub> = H<sub>l</sub>W<sub>l</sub> + b<sub>l</sub>, δ<sub>l</sub> = ∂L/∂Z<sub>l</sub>,
dH<sub>l</sub> = ∂L/∂H<sub>l</sub>.</p>
<p>Examples: {legend}</p>
<p>Parameters:</p>{params}
<ol start="0">{toc}</ol>
{"".join(parts)}
</body></html>
"""
