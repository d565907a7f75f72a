"""The page layouts: one `Sheet` per step of the derivation of the gradients.

Each ``page_*`` function draws one step from a `Numbers` and returns the sheet with the step's
equation and note (`page_forward` returns the sheet alone, `page_loss` the sheet, equation and
loss formula); `page_builders` lists the pages of a model in order, each as a (name, build, title)
whose ``build()`` returns (sheet, equation, note).  `equations` gives the closing page's matrix
equations, which ``index.html`` shows as well.  The text ids of every number are listed in
`backprop.diagram`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from .numbers import Numbers, fmt, scale_text, sub
from .sheet import (
    GREY,
    LH,
    MARGIN,
    PITCH,
    SHADES,
    SMALL,
    R,
    Sheet,
    group_width,
    sum_box,
    text_width,
    unit_group,
    unit_rows,
)


@dataclasses.dataclass(frozen=True)
class Page:
    """One figure: ``key`` (file stem), ``title``, ``equation`` (plain Unicode), ``note`` and files."""

    key: str
    title: str
    equation: str
    note: str
    files: dict


def _layer_name(k: int, L: int, act: str, out_act: str) -> str:
    """The heading of column H[k] of a network with L weight layers."""
    if k == 0:
        return "X = H₀ (input)"
    if k == L:
        return f"ŷ = H{sub(L)} = {out_act}(Z{sub(L - 1)})"
    return f"H{sub(k)} = {act}(Z{sub(k - 1)})"


def page_forward(nb: Numbers, act: str, out_act: str) -> Sheet:
    """Step 0: every unit of every H[k] with its examples' values, the targets, then each W and b."""
    s = Sheet()
    n, sizes, L = nb.n_samples, nb.sizes, nb.n_layers
    top = s.header(
        "Step 0 · the forward pass",
        "Zₗ = Hₗ Wₗ + bₗ,   Hₗ₊₁ = f(Zₗ)   for each example (row) of the batch",
        n,
        note="Every unit holds one value per example; the shades tell the examples apart. The parameters are below.",
    )
    gw = group_width(n)
    col = gw + 1.6
    row = 2 * R + 0.45
    umax = max(sizes)
    y0 = top + 0.45
    centres = []
    for k, size in enumerate(sizes):
        x0 = MARGIN + 0.35 + k * col
        s.text(x0 + gw / 2, y0 - 0.25, _layer_name(k, L, act, out_act), size=8.5, weight="bold")
        cs = []
        for a, off in enumerate(unit_rows(size, umax, row)):
            yc = y0 + R + 0.06 + off
            s.text(x0 - 0.2, yc, str(a), size=SMALL, color=GREY)
            unit_group(s, x0, yc, nb.H[k][:, a], n, lambda i, k=k, a=a: f"H{k}_{i}_{a}")
            cs.append((x0, yc))
        centres.append(cs)
    # Targets beside the output.
    xt = MARGIN + 0.35 + (L + 1) * col - 0.6
    s.text(xt + gw / 2, y0 - 0.25, "targets y", size=8.5, weight="bold", color=GREY)
    for k_, (_, yc) in enumerate(centres[-1]):
        unit_group(s, xt, yc, nb.Y[:, k_], n, lambda i, k_=k_: f"y_{i}_{k_}", ls="--")
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
        s.text(
            x,
            y + max(h, hb) + 0.15,
            f"rows: units of H{sub(l)} (inputs), columns: units of H{sub(l + 1)}",
            size=SMALL,
            color=GREY,
            ha="left",
        )
        x = xb + 0.4 + wb + 0.6
    return s


def page_loss(nb: Numbers, loss_name: str, out_act: str) -> tuple[Sheet, str, str]:
    """Step 1: the loss and, per example and output, ŷ and y into δ_{L−1}; returns (sheet, equation, loss formula)."""
    s = Sheet()
    n, L = nb.n_samples, nb.n_layers
    K = nb.sizes[-1]
    st = scale_text(nb.scale, n)
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
    top = s.header(
        "Step 1 · the loss layer",
        eq,
        n,
        note="Start at the loss: each example's output gets the arrow ∂L/∂ŷ; the target enters with −.",
    )
    s.text(MARGIN, top, "loss L =", size=9, ha="left")
    xv = MARGIN + text_width("loss L =", 9) + 0.08
    s.text(xv, top, fmt(nb.loss), size=9, ha="left", gid="loss", weight="bold")
    s.text(xv + text_width(fmt(nb.loss), 9, "bold") + 0.4, top, f"where {lossf}", size=9, ha="left", color=GREY)
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
                s.text(
                    (xd + xe) / 2, ym - 0.12, fmt(nb.out_fprime[i, k]), size=SMALL, ha="left", gid=f"fprimeY_{i}_{k}"
                )
                s.text((xd + xe) / 2, ym + 0.12, f"= f′(z), z = {fmt(nb.Z[L - 1][i, k])}", size=SMALL, color=GREY)
                xd = xe
            s.node(xd, ym, nb.delta[L - 1][i, k], i, gid=f"delta{L - 1}_{i}_{k}")
            s.text(
                xd, ym - R - 0.1, f"δ{sub(L - 1)}" + ("" if two_step or fused else " = ∂L/∂ŷ"), size=SMALL, color=GREY
            )
    return s, eq, lossf


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
    gw = group_width(n)
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
        unit_group(s, cx, yh, D[:, b], n, lambda i, b=b: f"delta{l}_{i}_{b}")
    yrows = [yh + R + 0.55 + a * rowp for a in range(A)]
    for a, yr in enumerate(yrows):
        ym = yr + box_h / 2
        s.text(MARGIN + 0.1, ym, str(a) if not bias else "", size=SMALL, color=GREY, ha="left")
        unit_group(s, MARGIN + 0.3, ym, rows_in[:, a], n, None if bias else (lambda i, a=a: f"H{l}_{i}_{a}"))
        for b in range(B):
            bx = left + b * col + gw + 0.3
            lines = []
            for i in range(n):
                mult = "×1" if bias else f"×{fmt(rows_in[i, a])}"
                lines.append((mult, contrib[i, a, b], f"{name}_{b}_ex{i}" if bias else f"{name}_{a}_{b}_ex{i}"))
            if penalty is not None:
                lines.append(("+ α·s·w", penalty[a, b], f"{name}_{a}_{b}_l2"))
            title = f"db{sub(l)}[{b}]" if bias else f"dW{sub(l)}[{a},{b}]"
            gid = f"{name}_{b}" if bias else f"{name}_{a}_{b}"
            ys, _ = sum_box(s, bx, yr, bw, lines, totals[a, b], gid, title=title)
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
    """dW_l = H_lᵀ δ_l: one arrow per example into every weight's sum box."""
    s = Sheet()
    eq = f"dW{sub(l)} = H{sub(l)}ᵀ δ{sub(l)}:   dW{sub(l)}[j,k] = Σᵢ h{sub(l)}[i,j] · δ{sub(l)}[i,k]"
    if nb.penalty[l] is not None:
        eq += f"  + α·s·W{sub(l)}[j,k]"
    note = (
        f"Each example i sends an arrow from δ{sub(l)}[i,k] into weight [j,k], multiplied by its input "
        f"h{sub(l)}[i,j]; the box adds the arrows."
    )
    top = s.header(f"Step {step} · weights of layer {l}", eq, nb.n_samples, note=note)
    _accumulation_grid(s, top, nb, l, bias=False)
    return s, eq, note


def page_biases(nb: Numbers, l: int, step: int) -> tuple[Sheet, str, str]:
    """db_l = 1ᵀ δ_l: one arrow per example into every bias's sum box."""
    s = Sheet()
    eq = f"db{sub(l)} = 1ᵀ δ{sub(l)}:   db{sub(l)}[k] = Σᵢ δ{sub(l)}[i,k]   (column sums of δ{sub(l)})"
    note = "A bias is a weight on a constant input 1: each example's arrow carries its δ unchanged."
    top = s.header(f"Step {step} · biases of layer {l}", eq, nb.n_samples, note=note)
    _accumulation_grid(s, top, nb, l, bias=True)
    return s, eq, note


def page_hidden(nb: Numbers, l: int, step: int) -> tuple[Sheet, str, str]:
    """dH_l = δ_l W_lᵀ (l > 0): per example, arrows δ_{i,k}·w_{j,k} into every unit's sum box."""
    s = Sheet()
    n = nb.n_samples
    W, D = nb.W[l], nb.delta[l]
    A, B = W.shape
    eq = f"dH{sub(l)} = δ{sub(l)} W{sub(l)}ᵀ:   dH{sub(l)}[i,j] = Σₖ δ{sub(l)}[i,k] · w{sub(l)}[j,k]"
    note = (
        "Per example: every unit k above sends its δ to every unit j below, multiplied by the weight "
        "w[j,k]; the examples do not mix."
    )
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
            lines = [(f"×{fmt(W[a, b])}", nb.terms[l][i, a, b], f"dH{l}_{i}_{a}_from{b}") for b in range(B)]
            ys, _ = sum_box(
                s, bx, yb0, bw, lines, nb.dH[l][i, a], f"dH{l}_{i}_{a}", arrow_side="right", title=f"unit {a}"
            )
            for b in range(B):
                s.arrow((xn - R, ynodes[b]), (bx + bw, ys[b]), color=SHADES[i][1], lw=0.9, head=7)
    return s, eq, note


def page_activation(nb: Numbers, l: int, step: int, act: str) -> tuple[Sheet, str, str]:
    """δ_{l−1} = dH_l ⊙ f′(Z_{l−1}) (l > 0): one arrow per unit and example, labelled with f′ and z."""
    s = Sheet()
    n = nb.n_samples
    A = nb.sizes[l]
    lo, up = sub(l - 1), sub(l)
    eq = f"δ{lo} = dH{up} ⊙ f′(Z{lo}):   δ{lo}[i,j] = dH{up}[i,j] · f′(z{lo}[i,j]),   f = {act}"
    note = "Through the non-linearity: one arrow per unit and example, multiplied by the slope f′ at that example's z."
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
            s.text(
                xm + 0.02, ya + 0.13, fmt(nb.Z[l - 1][i, a]), size=SMALL, color=GREY, ha="left", gid=f"Z{l - 1}_{i}_{a}"
            )
            s.node(xd, ya, nb.delta[l - 1][i, a], i, gid=f"delta{l - 1}_{i}_{a}")
    return s, eq, note


def equations(nb: Numbers) -> list[tuple[str, list]]:
    """(left-hand side, [(operator text, matrix, gid, shaded rows)]) for the closing page."""
    L, n = nb.n_layers, nb.n_samples
    st = scale_text(nb.scale, n)
    sc = "" if st == "1" else f"{st}·"
    eqs = []
    if nb.out_fprime is not None:
        eqs.append(
            (
                f"δ{sub(L - 1)} = {sc}(ŷ − y) ⊙ f′(Z{sub(L - 1)}) =",
                [
                    ("", nb.H[L], "eq-Yhat", True),
                    ("−", nb.Y, "eq-Y", True),
                    ("⊙", nb.out_fprime, "eq-fprimeY", True),
                    ("=", nb.delta[L - 1], f"eq-delta{L - 1}", True),
                ],
            )
        )
    else:
        lhs = f"δ{sub(L - 1)} = {sc}(ŷ − y) ="
        eqs.append(
            (
                lhs,
                [
                    ("", nb.H[L], "eq-Yhat", True),
                    ("−", nb.Y, "eq-Y", True),
                    ("=", nb.delta[L - 1], f"eq-delta{L - 1}", True),
                ],
            )
        )
    for l in reversed(range(L)):
        terms = [("", nb.H[l].T, None, False), ("", nb.delta[l], None, True)]
        lhs = f"dW{sub(l)} = H{sub(l)}ᵀ δ{sub(l)}" + (f" + α·s·W{sub(l)}" if nb.penalty[l] is not None else "") + " ="
        if nb.penalty[l] is not None:
            terms.append(("+", nb.penalty[l], None, False))
        terms.append(("=", nb.dW[l], f"eq-dW{l}", False))
        eqs.append((lhs, terms))
        eqs.append((f"db{sub(l)} = 1ᵀ δ{sub(l)} =", [("", nb.db[l][None, :], f"eq-db{l}", False)]))
        if l > 0:
            eqs.append(
                (
                    f"dH{sub(l)} = δ{sub(l)} W{sub(l)}ᵀ =",
                    [("", nb.delta[l], None, True), ("", nb.W[l].T, None, False), ("=", nb.dH[l], f"eq-dH{l}", True)],
                )
            )
            eqs.append(
                (
                    f"δ{sub(l - 1)} = dH{sub(l)} ⊙ f′(Z{sub(l - 1)}) =",
                    [
                        ("", nb.dH[l], None, True),
                        ("⊙", nb.fprime[l], None, True),
                        ("=", nb.delta[l - 1], f"eq-delta{l - 1}", True),
                    ],
                )
            )
    return eqs


def page_equations(nb: Numbers, step: int) -> tuple[Sheet, str, str]:
    """The last step: `equations` drawn as bracketed matrices."""
    s = Sheet()
    eq = "The whole backward pass as matrix equations (rows of H, δ, dH: the examples)"
    note = "Each matrix product adds the arrows of the pages before; ⊙ multiplies entry by entry."
    top = s.header(f"Step {step} · the matrix equations with the numbers", eq, nb.n_samples, note=note)
    y = top + 0.1
    lines = equations(nb)
    lhs_w = max(text_width(lhs, 9.5) for lhs, _ in lines) + 0.2
    for lhs, terms in lines:
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


def page_builders(model, nb: Numbers) -> list[tuple[str, Callable[[], tuple[Sheet, str, str]], str]]:
    """The pages of ``model`` in order: (name, build, title), ``build()`` giving (sheet, equation, note)."""
    act = model.activation.name
    out_act = model.loss_layer.activation.name
    loss_name = model.loss_layer.name
    L = nb.n_layers

    def forward():
        eq = "Zₗ = Hₗ Wₗ + bₗ,  Hₗ₊₁ = f(Zₗ)"
        return (
            page_forward(nb, act, out_act),
            eq,
            ("Every unit holds one value per example; the shades tell the examples apart."),
        )

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
            pages.append(
                (
                    f"activation-{l}",
                    lambda l=l, k=step + 1: page_activation(nb, l, k, act),
                    f"Through the non-linearity of H{sub(l)}",
                )
            )
            step += 2
    pages.append(("equations", lambda k=step: page_equations(nb, k), "The matrix equations"))
    return pages
