"""The drawing toolkit: a `Sheet` records shapes and text in inches and renders them with matplotlib.

Coordinates are inches from the top-left corner, y downwards; the figure is sized to what was
drawn plus `MARGIN`.  Besides the primitives (text, circle, rect, line, arrow) a sheet draws the
composite pieces of the pages: a node holding one example's value, the page header, a bracketed
matrix; `unit_group` draws one unit's examples side by side and `sum_box` a box adding its lines.
Example i is drawn in ``SHADES[i]``.  matplotlib is imported only when something is measured or
rendered.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .numbers import fmt

# (fill, line, text on fill, row tint, name): light/dark blue, then light/dark orange.
SHADES = (
    ("#c6dbef", "#5e9fd0", "black", "#edf4fb", "light blue"),
    ("#2166ac", "#2166ac", "white", "#cfe0f1", "dark blue"),
    ("#fdd0a2", "#f08a3c", "black", "#fff3e6", "light orange"),
    ("#b35806", "#b35806", "white", "#f7dcc3", "dark orange"),
)
GREY = "#777777"
EDGE = "#444444"

R = 0.28  # node radius
PITCH = 2 * R + 0.08  # between the examples' nodes of one unit
LH = 0.22  # line height in a sum box
MARGIN = 0.3  # around the drawing
NUM = 7.5  # font size of numbers
SMALL = 6.5  # font size of annotations


@functools.cache
def _font(family: str, size: float, weight: str):
    from matplotlib.font_manager import FontProperties

    return FontProperties(family=family, size=size, weight=weight)


@functools.lru_cache(maxsize=4096)
def text_width(s: str, size: float, weight: str = "normal") -> float:
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

    def text(
        self,
        x,
        y,
        s,
        size=NUM,
        color="black",
        ha="center",
        va="center",
        gid=None,
        weight="normal",
        family="DejaVu Sans",
        bg=None,
    ):
        w = text_width(s, size, weight)
        self._extend(x + (w if ha == "left" else w / 2 if ha == "center" else 0), y + size / 72)

        def op(ax, Y):
            t = ax.text(x, Y(y), s, fontproperties=_font(family, size, weight), color=color, ha=ha, va=va, zorder=5)
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

            ax.add_artist(
                FancyBboxPatch(
                    (x, Y(y + h)),
                    w,
                    h,
                    boxstyle=f"round,pad=0,rounding_size={pad}",
                    fc=fc,
                    ec=ec,
                    lw=lw,
                    ls=ls,
                    zorder=zorder,
                )
            )

        self.ops.append(op)

    def line(self, points, color=EDGE, lw=0.8, zorder=1):
        for x, y in points:
            self._extend(x, y)

        def op(ax, Y):
            from matplotlib.lines import Line2D

            ax.add_artist(
                Line2D(
                    [p[0] for p in points],
                    [Y(p[1]) for p in points],
                    color=color,
                    lw=lw,
                    zorder=zorder,
                    solid_capstyle="butt",
                )
            )

        self.ops.append(op)

    def arrow(self, p0, p1, color=EDGE, lw=0.9, head=7, zorder=4):
        self._extend(*p0)
        self._extend(*p1)

        def op(ax, Y):
            from matplotlib.patches import FancyArrowPatch

            ax.add_artist(
                FancyArrowPatch(
                    (p0[0], Y(p0[1])),
                    (p1[0], Y(p1[1])),
                    arrowstyle="-|>",
                    mutation_scale=head,
                    color=color,
                    lw=lw,
                    shrinkA=0,
                    shrinkB=0,
                    zorder=zorder,
                )
            )

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
            x += 0.45 + text_width(label, 8)
        return y + 0.35

    def matrix(self, x, y, M, gid: str | None = None, rows_shaded=False, cw=0.62, rh=0.22):
        """A bracketed matrix with its top-left at (x, y); returns (width, height).

        Entry [i, j] is labelled ``{gid}_{i}_{j}``; ``rows_shaded`` tints row i in example i's shade.
        """
        M = np.atleast_2d(M)
        r, c = M.shape
        w, h = c * cw + 0.16, r * rh + 0.1
        for i in range(r):
            yi = y + 0.05 + (i + 0.5) * rh
            if rows_shaded:
                self.rect(
                    x + 0.06, yi - rh / 2 + 0.01, w - 0.12, rh - 0.02, fc=SHADES[i][3], ec="none", pad=0.02, zorder=1
                )
            for j in range(c):
                self.text(x + 0.08 + (j + 0.5) * cw, yi, fmt(M[i, j]), gid=None if gid is None else f"{gid}_{i}_{j}")
        for side, x0 in (("l", x), ("r", x + w)):
            s = 0.06 if side == "l" else -0.06
            self.line([(x0 + s, y), (x0, y), (x0, y + h), (x0 + s, y + h)], color="black", lw=0.9)
        return w, h

    def render(self, paths: dict[str, Path], dpi: int = 100) -> None:
        """Write the drawing to ``paths`` ({format: path}); SVG text stays ``<text>``, with no date stamp."""
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


def unit_rows(sizes_here: int, size_max: int, pitch: float) -> list[float]:
    """Offsets of the units of a column of ``sizes_here`` units, centred on the tallest column."""
    return [((size_max - sizes_here) / 2 + a) * pitch for a in range(sizes_here)]


def group_width(n: int) -> float:
    """The width of a unit drawn with ``n`` examples' nodes."""
    return (n - 1) * PITCH + 2 * R


def unit_group(s: Sheet, x0: float, yc: float, values, n: int, gid: Callable[[int], str] | None, ls="-"):
    """One unit: its examples' nodes side by side in a rounded box (left edge x0, centre yc)."""
    gw = group_width(n)
    s.rect(x0 - 0.06, yc - R - 0.06, gw + 0.12, 2 * R + 0.12, fc="#f6f6f6", ec="#bbbbbb", pad=0.1, zorder=1)
    for i in range(n):
        s.node(x0 + R + i * PITCH, yc, values[i], i, gid=None if gid is None else gid(i), ls=ls)


def sum_box(s: Sheet, x, y, w, lines, total, total_gid, arrow_side="left", title=None):
    """A box adding its lines: each line is (multiplier text, product, gid).

    Returns the y of each line (where its arrow lands) and the box height.
    """
    h = (len(lines) + 1) * LH + 0.14
    s.rect(x, y, w, h, fc="white", ec=EDGE)
    if title:
        s.text(x + w / 2, y - 0.1, title, size=SMALL, color=GREY)
    ys = []
    for j, (mult, value, gid) in enumerate(lines):
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
