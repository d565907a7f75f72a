"""The report of a benchmark run as a figure: samples/s against batch size (needs matplotlib)."""

from __future__ import annotations

import math

from ..backends import BACKENDS
from .contenders import CONTENDERS
from .grid import NETWORKS

LINE_STYLES = {"backprop": "-", "train_step": "-", "matmul_floor": ":", "jax_grad": "--", "torch": "-."}
MARKERS = {"backprop": "o", "train_step": "x", "matmul_floor": "", "jax_grad": "s", "torch": "^"}


def plot(report: dict, path: str) -> bool:
    """samples/s against batch size, log-log, one panel per network, one line per backend × contender,
    saved as a PNG at ``path``.  False (and nothing written) without matplotlib or results."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = report.get("results", [])
    networks = [n for n in NETWORKS if any(r["network"] == n for r in rows)]
    if not networks:
        return False
    cols = min(2, len(networks))
    nrows = math.ceil(len(networks) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(6.5 * cols, 4.5 * nrows), squeeze=False)
    for ax, network in zip(axes.flat, networks):
        _network_panel(ax, network, rows)
    for ax in list(axes.flat)[len(networks) :]:
        ax.set_visible(False)
    fig.suptitle(f"one training step, float32 — {report.get('environment', {}).get('date', '')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _network_panel(ax, network: str, rows: list[dict]) -> None:
    """One line per backend × contender measured on ``network``: a colour per backend, a style per contender."""
    for colour, backend in enumerate(BACKENDS):
        for contender in CONTENDERS:
            points = sorted(
                (r["batch"], r["samples_per_s"])
                for r in rows
                if r["network"] == network and r["backend"] == backend and r["contender"] == contender
            )
            if points:
                ax.plot(
                    *zip(*points),
                    LINE_STYLES[contender],
                    marker=MARKERS[contender],
                    color=f"C{colour}",
                    label=f"{backend} {contender}",
                    markersize=4,
                )
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="batch size",
        ylabel="samples / s",
        title=f"{network}: {NETWORKS[network].description}",
    )
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7)
