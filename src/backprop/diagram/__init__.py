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

The package: `numbers` (the numbers of one pass and how they are written), `sheet` (the drawing
toolkit on matplotlib), `pages` (one layout per step), `html` (the index page); `draw` here ties
them together.
"""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Sequence
from pathlib import Path

from .html import index_html
from .numbers import MAX_BATCH, MAX_LAYERS, MAX_UNITS, Numbers, check_limits, collect, fmt, parse_number, sub
from .pages import Page, page_builders

__all__ = [
    "FORMATS",
    "MAX_BATCH",
    "MAX_LAYERS",
    "MAX_UNITS",
    "Diagram",
    "Numbers",
    "Page",
    "check_limits",
    "collect",
    "draw",
    "fmt",
    "parse_number",
    "sub",
]

FORMATS = ("svg", "png")


@dataclasses.dataclass(frozen=True)
class Diagram:
    """What `draw` wrote: the pages in order and the ``index.html`` that shows them."""

    out_dir: Path
    index: Path
    pages: tuple


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
    pages = _write_pages(model, nb, out, formats, dpi)
    index = out / "index.html"
    index.write_text(index_html(model, nb, pages), encoding="utf-8")
    return Diagram(out, index, tuple(pages))


def _write_pages(model, nb: Numbers, out: Path, formats: tuple[str, ...], dpi: int) -> list[Page]:
    """Render every page of ``model`` into ``out`` as ``NN-name.<format>``; returns them in order."""
    pages = []
    collecting = gc.isenabled()
    gc.disable()  # matplotlib makes many small objects; the cyclic collector only slows drawing down
    try:
        for k, (name, build, title) in enumerate(page_builders(model, nb)):
            sheet, eq, note = build()
            key = f"{k:02d}-{name}"
            files = {f: out / f"{key}.{f}" for f in formats}
            sheet.render(files, dpi=dpi)
            pages.append(Page(key, title, eq, note, files))
    finally:
        if collecting:
            gc.enable()
    return pages
