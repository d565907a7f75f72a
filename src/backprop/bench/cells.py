"""One cell of the grid run end to end: its contenders built, timed and released, as report rows."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from ..backends import Backend
from .contenders import build
from .grid import NETWORKS
from .memory import release_memory
from .timing import Timing, measure


@dataclasses.dataclass(frozen=True)
class Cell:
    """One point of the grid: a network of `NETWORKS`, a batch size and a backend name."""

    network: str
    batch: int
    backend: str

    @property
    def id(self) -> str:
        return f"{self.network}-b{self.batch}-{self.backend}"


def result_row(cell: Cell, backend: Backend, name: str, t: Timing, flops: int, info: dict) -> dict:
    """The report's row of contender ``name`` in ``cell``: the timing statistics, samples/s and GFLOP/s."""
    return {
        "network": cell.network,
        "layer_sizes": list(NETWORKS[cell.network].layer_sizes),
        "batch": cell.batch,
        "backend": cell.backend,
        "device": backend.device_name,
        "contender": name,
        "flops": flops,
        "median_s": t.median,
        "q1_s": t.q1,
        "q3_s": t.q3,
        "iqr_s": t.iqr,
        "min_s": t.min,
        "max_s": t.max,
        "mean_s": t.mean,
        "rounds": t.rounds,
        "iterations": t.iterations,
        "warmup_s": t.warmup_s,
        "samples_per_s": cell.batch / t.median,
        "gflops": flops / t.median / 1e9,
        "info": info,
    }


def add_ratios(rows: list[dict]) -> None:
    """Add ``ratios`` to every row: {other contender: this median ÷ its median} within the cell (>1: slower)."""
    cells: dict[tuple, list] = {}
    for row in rows:
        cells.setdefault((row["network"], row["batch"], row["backend"]), []).append(row)
    for group in cells.values():
        for row in group:
            row["ratios"] = {o["contender"]: row["median_s"] / o["median_s"] for o in group if o is not row}


def run_cell(
    cell: Cell,
    backend: Backend,
    contenders: Sequence[str],
    optimizer: str = "sgd",
    budget_s: float = 2.0,
    min_rounds: int = 3,
) -> tuple[list[dict], list[dict]]:
    """Build, measure and release the contenders of one cell; (rows, skipped).

    A contender that cannot be built or fails its first step (out of device memory, say) is
    listed in ``skipped`` with the reason; the others are measured.
    """
    built, skipped = [], []
    try:
        for name in contenders:
            try:
                built.append(build(name, cell.network, cell.batch, backend, optimizer))
            except Exception as exc:
                skipped.append(_skipped(cell, name, exc))
        ready = []
        for c in built:
            try:
                c.warmup(1)
                ready.append(c)
            except Exception as exc:
                skipped.append(_skipped(cell, c.name, exc))
        if not ready:
            return [], skipped
        timings = measure(ready, budget_s=budget_s, min_rounds=min_rounds, warmup=1)
        rows = [result_row(cell, backend, c.name, timings[c.name], c.flops, c.info) for c in ready]
        add_ratios(rows)
        return rows, skipped
    finally:
        for c in built:
            c.release()
        release_memory(backend)


def _skipped(cell: Cell, contender: str, exc: Exception) -> dict:
    return {"cell": cell.id, "contender": contender, "reason": f"{type(exc).__name__}: {exc}"}
