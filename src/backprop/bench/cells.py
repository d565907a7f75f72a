"""One cell of the grid run end to end: its contenders built, timed and released, as report rows."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from ..backends import Backend, threads
from .contenders import Contender, build
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


def result_row(
    cell: Cell, backend: Backend, name: str, t: Timing, flops: int, info: dict, blas_threads: int | None = None
) -> dict:
    """The report's row of contender ``name`` in ``cell``: the timing statistics, samples/s, GFLOP/s
    and the thread count it ran with (``blas_threads``; None where that does not apply)."""
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
        "blas_threads": blas_threads,
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
    blas_threads: int | None = None,
) -> tuple[list[dict], list[dict]]:
    """Build, measure and release the contenders of one cell; (rows, skipped).

    A contender that cannot be built or fails its first step (out of device memory, say) is
    listed in ``skipped`` with the reason; the others are measured.  ``blas_threads`` (NumPy's
    BLAS, see `build`): None lets the backprop step choose its count and times matmul_floor at
    every candidate count (`backprop.backends.threads.candidates`), interleaved with the others,
    its row being the fastest of them (so no ratio improves because the floor ran at a slow
    count); an integer runs both at that count.  Each row names the count it ran with.
    """
    built, skipped = [], []
    try:
        for name in contenders:
            try:
                built += _built(name, cell, backend, optimizer, blas_threads)
            except Exception as exc:
                skipped.append(_skipped(cell, name, exc))
        ready = []
        for c in built:
            try:
                c.warmup(1)
                ready.append(c)
            except Exception as exc:
                skipped.append(_skipped(cell, c.name.split("@")[0], exc))
        if not ready:
            return [], skipped
        timings = measure(ready, budget_s=budget_s, min_rounds=min_rounds, warmup=2)
        rows = _best_floor(
            [result_row(cell, backend, c.name, timings[c.name], c.flops, c.info, c.ran_with()) for c in ready]
        )
        add_ratios(rows)
        return rows, skipped
    finally:
        for c in built:
            c.release()
        release_memory(backend)


FLOOR_AT = "matmul_floor@"  # the name of matmul_floor timed at one thread count among several


def _built(name: str, cell: Cell, backend: Backend, optimizer: str, blas_threads: int | None) -> list[Contender]:
    """Contender ``name`` of the cell; matmul_floor on NumPy without ``blas_threads``: one per
    candidate thread count (named FLOOR_AT + count) when there are several."""
    counts = threads.candidates(threads.current() or 1) if backend.name == "numpy" else ()
    if name != "matmul_floor" or blas_threads is not None or len(counts) < 2:
        return [build(name, cell.network, cell.batch, backend, optimizer, blas_threads=blas_threads)]
    floors = []
    for n in counts:
        floor = build(name, cell.network, cell.batch, backend, optimizer, blas_threads=n)
        floor.name = f"{FLOOR_AT}{n}"
        floors.append(floor)
    return floors


def _best_floor(rows: list[dict]) -> list[dict]:
    """The rows with matmul_floor timed at several thread counts replaced by the fastest of them,
    named matmul_floor, the medians of all in its ``info["median_s_by_threads"]``."""
    floors = [r for r in rows if r["contender"].startswith(FLOOR_AT)]
    if not floors:
        return rows
    best = dict(min(floors, key=lambda r: (r["median_s"], r["blas_threads"])))
    best["contender"] = "matmul_floor"
    best["info"] = {**best["info"], "median_s_by_threads": {str(r["blas_threads"]): r["median_s"] for r in floors}}
    at = rows.index(floors[0])
    rest = [r for r in rows if not r["contender"].startswith(FLOOR_AT)]
    return rest[:at] + [best] + rest[at:]


def _skipped(cell: Cell, contender: str, exc: Exception) -> dict:
    return {"cell": cell.id, "contender": contender, "reason": f"{type(exc).__name__}: {exc}"}
