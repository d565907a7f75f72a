"""The HTML index: a static ``index.html`` that shows the pages in order with their equations.

`index_html` returns the whole page as text: the model's configuration, the examples' shades,
the parameters, a table of contents and one section per `Page` (its equation, note, image and
links to its files); the closing equations page also gets the matrix equations as tables.  Images
and links name the pages' files relative to the index, so it opens from disk.
"""

from __future__ import annotations

import html

import numpy as np

from .numbers import Numbers, fmt, scale_text, sub
from .pages import Page, equations
from .sheet import SHADES

_STYLE = """\
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
.eq { font-family: "DejaVu Sans", "Cambria Math", serif; font-size: 1.15em; background: #f4f6f8; padding: .4em .7em; }
img { max-width: 100%; border: 1px solid #ddd; }
section { margin: 2.5em 0; }
.sw { display: inline-block; width: .9em; height: .9em; border-radius: 50%; border: 1px solid #444;
       margin: 0 .3em 0 1em; vertical-align: middle; }
table.m { display: inline-table; border-left: 2px solid #222; border-right: 2px solid #222;
          border-collapse: collapse; vertical-align: middle; margin: 0 .5em; }
table.m td { padding: .1em .5em; text-align: right; font-variant-numeric: tabular-nums; }
.links { font-size: .9em; color: #666; }
.mx { margin: .6em 0; font-family: "DejaVu Sans", serif; }
"""


def _html_matrix(M) -> str:
    """``M`` (a vector as one row) as a bracketed table of `fmt` numbers."""
    M = np.atleast_2d(M)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(v))}</td>" for v in r) + "</tr>" for r in M)
    return f'<table class="m">{rows}</table>'


def _legend(n_samples: int) -> str:
    """The shade swatch and name of each example."""
    return " ".join(
        f'<span class="sw" style="background:{SHADES[i][0]}"></span>example {i} ({SHADES[i][4]})'
        for i in range(n_samples)
    )


def _parameters_html(nb: Numbers) -> str:
    """W and b of every layer as tables."""
    return "".join(
        f'<div class="mx">W{sub(l)} = {_html_matrix(nb.W[l])} b{sub(l)} = {_html_matrix(nb.b[l][None, :])}</div>'
        for l in range(nb.n_layers)
    )


def _equations_html(nb: Numbers) -> str:
    """The closing page's matrix equations, one line each, matrices as tables."""
    return "".join(
        f'<div class="mx">{html.escape(lhs)} '
        + " ".join(f"{html.escape(op)} {_html_matrix(M)}" for op, M, _, _ in terms)
        + "</div>"
        for lhs, terms in equations(nb)
    )


def _section(k: int, page: Page, equations_html: str) -> str:
    """Page ``k``: title, equation, note, image (the SVG, else the PNG) and links to its files."""
    e = html.escape
    img = page.files.get("svg") or page.files.get("png")
    links = " · ".join(f'<a href="{e(f.name)}">{f.suffix[1:].upper()}</a>' for f in page.files.values())
    return (
        f'<section id="{e(page.key)}"><h2>{k}. {e(page.title)}</h2>'
        f'<p class="eq">{e(page.equation)}</p><p>{e(page.note)}</p>'
        f'<img src="{e(img.name)}" alt="{e(page.title)}"><p class="links">{links}</p>'
        + (equations_html if page.key.endswith("-equations") else "")
        + "</section>"
    )


def index_html(model, nb: Numbers, pages: list[Page]) -> str:
    """The text of ``index.html`` for the written ``pages`` of ``model``, whose numbers are ``nb``."""
    e = html.escape
    sizes = "-".join(map(str, model.layer_sizes))
    cfg = model.config
    equations_html = _equations_html(nb)
    sections = "".join(_section(k, p, equations_html) for k, p in enumerate(pages))
    toc = "".join(f'<li><a href="#{e(p.key)}">{e(p.title)}</a></li>' for p in pages)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>backprop diagram: {e(sizes)}</title>
<style>
{_STYLE}</style></head>
<body>
<h1>Backpropagation you can see: network {e(sizes)}, batch of {nb.n_samples}</h1>
<p>Start at the loss, multiply the values along each arrow, and add where several arrows meet.
A weight is used by every example in the batch, so it receives one arrow per example.
Every number below comes from the library's own <code>loss_and_grad(..., return_intermediates=True)</code>.</p>
<p>Hidden activation: <b>{e(cfg["activation"])}</b>; loss: <b>{e(cfg["loss"])}</b>
(output {e(model.loss_layer.activation.name)}, reduction “{e(cfg["reduction"])}”,
scale s = {e(scale_text(nb.scale, nb.n_samples))});
L2 α = {e(fmt(cfg["alpha"]))}; loss L = {e(fmt(nb.loss))}.
Layers are numbered from 0 as in <code>backprop.core.mlp</code>: layer l maps H<sub>l</sub> to H<sub>l+1</sub>,
Z<sub>l</sub> = H<sub>l</sub>W<sub>l</sub> + b<sub>l</sub>, δ<sub>l</sub> = ∂L/∂Z<sub>l</sub>,
dH<sub>l</sub> = ∂L/∂H<sub>l</sub>.</p>
<p>Examples: {_legend(nb.n_samples)}</p>
<p>Parameters:</p>{_parameters_html(nb)}
<ol start="0">{toc}</ol>
{sections}
</body></html>
"""
