"""Options of the benchmark suites (``pytest benchmarks/ --benchmark-only``).

The root pyproject's ``testpaths`` is ``tests``, so name this folder on the command line.
Options (each with an environment variable, for CI):

    --bench-networks seed,digits      BACKPROP_BENCH_NETWORKS      (default: all networks)
    --bench-batch-sizes 1,32          BACKPROP_BENCH_BATCH_SIZES   (default: 1,2,32,256,2048, +8192,65536 on a GPU)
    --bench-huge                      BACKPROP_BENCH_HUGE=1        (include CPU cells above 50 GFLOP per step)
    --bench-optimizer adam            BACKPROP_BENCH_OPTIMIZER     (default: sgd)

BACKPROP_BACKEND narrows every suite to one backend; a backend that cannot run here (CuPy
without a GPU) is skipped with the reason.
"""

from __future__ import annotations

import os


def pytest_addoption(parser) -> None:
    group = parser.getgroup("backprop-bench", "backprop benchmark grid")
    group.addoption(
        "--bench-networks",
        default=os.environ.get("BACKPROP_BENCH_NETWORKS") or None,
        help="comma-separated networks of the step benchmarks (seed, digits, mnist, wide; default all)",
    )
    group.addoption(
        "--bench-batch-sizes",
        default=os.environ.get("BACKPROP_BENCH_BATCH_SIZES") or None,
        help="comma-separated batch sizes (default 1,2,32,256,2048, plus 8192,65536 on a GPU)",
    )
    group.addoption(
        "--bench-huge",
        action="store_true",
        default=os.environ.get("BACKPROP_BENCH_HUGE", "").strip() not in ("", "0"),
        help="also run CPU cells above 50 GFLOP per step (wide at batch 2048: ~0.3 TFLOP per step)",
    )
    group.addoption(
        "--bench-optimizer", default=os.environ.get("BACKPROP_BENCH_OPTIMIZER") or "sgd", help="sgd (default) or adam"
    )
