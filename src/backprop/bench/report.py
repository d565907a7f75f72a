"""The report of a benchmark run as plain-text tables, and the number formats they use."""

from __future__ import annotations

from .contenders import CONTENDERS
from .grid import NETWORKS


def format_seconds(s: float) -> str:
    """Seconds in s, ms, µs or ns, three significant digits: ``"1.23 ms"``."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if s >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"


def format_rate(x: float) -> str:
    """A rate with a G, M or k suffix, three significant digits: ``"12.3k"``."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def format_tables(report: dict) -> str:
    """One plain-text table per backend: BLAS threads, median, IQR, rounds, samples/s, GFLOP/s and the ratios."""
    lines = _header(report)
    shown = []
    for backend in report.get("backends", []):
        rows = _rows_of(backend["backend"], report.get("results", []))
        if rows:
            lines += ["", *_backend_table(backend, rows)]
            shown += rows
    lines += _across_backends(shown)
    if report.get("skipped"):
        lines += ["", "not measured:"]
        lines += [f"  {s['cell']} {s['contender']}: {s['reason']}" for s in report["skipped"]]
    lines += [
        "",
        "÷X = this row's median step time ÷ contender X's in the same cell (>1: slower than X). "
        "GFLOP/s counts matrix-product FLOPs only.",
        "threads = the BLAS (torch: intra-op) thread count the row ran with: backprop's own choice per "
        "network and batch size unless --blas-threads; matmul_floor the fastest of the counts tried.",
    ]
    if any(_memory_ratio(r) is not None for r in shown):
        lines.append(
            "mem÷need = the step's peak memory (tracemalloc on NumPy, the memory pool on CuPy) ÷ parameters, "
            "gradients, optimizer state and one batch's activations, plus the batch the benchmark feeds it."
        )
    return "\n".join(lines)


def _across_backends(rows: list[dict]) -> list[str]:
    """The backprop step of each (network, batch) on every backend ÷ its step on the first backend
    measured there (numpy when it ran): which backend to pick for a cell.  Empty for one backend."""
    cells: dict[tuple, dict] = {}
    for r in rows:
        if r["contender"] == "backprop":
            cells.setdefault((r["network"], r["batch"]), {})[r["backend"]] = r["median_s"]
    cells = {k: v for k, v in cells.items() if len(v) > 1}
    if not cells:
        return []
    backends = list(dict.fromkeys(b for v in cells.values() for b in v))
    base = "numpy" if "numpy" in backends else backends[0]
    lines = [
        "",
        f"backprop step ÷ the {base} backend's, same cell",
        f"{'network':<8}{'batch':>7}  " + "".join(f"{b:>12}" for b in backends),
    ]
    for (network, batch), medians in cells.items():
        ratios = "".join(
            f"{(format(medians[b] / medians[base], '.2f') if b in medians and base in medians else '-'):>12}"
            for b in backends
        )
        lines.append(f"{network:<8}{batch:>7}  {ratios}")
    return lines


def _header(report: dict) -> list[str]:
    """The run's date, host, load, versions, NumPy's BLAS and the optimizer."""
    env = report.get("environment", {})
    host = env.get("host", {})
    blas = (
        ", ".join(
            f"{b.get('internal_api')} {b.get('version')} kernel={b.get('architecture')} threads={b.get('num_threads')}"
            for b in env.get("blas", [])
            if "error" not in b
        )
        or "none found"
    )
    return [
        f"backprop bench {env.get('date', '')} on {host.get('hostname', '')}: {host.get('cpu', '')}, "
        f"{host.get('cpus_usable')} CPUs, load average {host.get('load_average')} at the start, "
        f"{report.get('load_average_end')} at the end",
        "versions: " + ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items() if v),
        f"numpy BLAS: {blas}; optimizer: {report.get('settings', {}).get('optimizer', '?')}",
    ]


def _rows_of(backend: str, rows: list[dict]) -> list[dict]:
    """The rows of ``backend`` in grid order: network, batch, contender."""
    order = {name: i for i, name in enumerate(NETWORKS)}
    return sorted(
        (r for r in rows if r["backend"] == backend),
        key=lambda r: (order.get(r["network"], len(order)), r["batch"], CONTENDERS.index(r["contender"])),
    )


def _backend_table(backend: dict, rows: list[dict]) -> list[str]:
    """The table of one backend: a title naming its device, the column heads, one line per row."""
    threads = f", {backend['threads']} threads)" if backend.get("threads") else ")"
    title = (
        f"{backend['backend']} on {backend['device']} ({backend.get('kind', '?')}{threads}, {backend['dtype']}, "
        f"matmul in {backend['matmul']}"
    )
    others = [c for c in CONTENDERS if any(r["contender"] == c for r in rows)]
    memory = any(_memory_ratio(r) is not None for r in rows)
    head = (
        f"{'network':<8}{'batch':>7}  {'contender':<13}{'threads':>8}{'median':>10}{'IQR':>10}{'rounds':>7}"
        f"{'samples/s':>11}{'GFLOP/s':>9}"
        + "".join(f"{'÷' + ('floor' if c == 'matmul_floor' else c):>11}" for c in others)
        + (f"{'mem÷need':>10}" if memory else "")
    )
    return [title, head, "-" * len(head), *(_row_line(r, others, memory) for r in rows)]


def _row_line(row: dict, others: list[str], memory: bool) -> str:
    ratios = "".join(f"{(format(row['ratios'][c], '.2f') if c in row['ratios'] else '-'):>11}" for c in others)
    line = (
        f"{row['network']:<8}{row['batch']:>7}  {row['contender']:<13}{_threads(row):>8}"
        f"{format_seconds(row['median_s']):>10}"
        f"{format_seconds(row['iqr_s']):>10}{row['rounds']:>7}{format_rate(row['samples_per_s']):>11}"
        f"{row['gflops']:>9.3g}{ratios}"
    )
    if memory:
        ratio = _memory_ratio(row)
        line += f"{(format(ratio, '.2f') if ratio is not None else '-'):>10}"
    return line


def _threads(row: dict) -> str:
    """The row's thread count, "-" where none applies (a GPU, JAX)."""
    count = row.get("blas_threads")
    return "-" if count is None else str(count)


def _memory_ratio(row: dict) -> float | None:
    return (row.get("info") or {}).get("memory", {}).get("ratio")
