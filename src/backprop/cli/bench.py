"""Benchmark one training step across networks, batch sizes, backends and contenders.

For every cell (network, batch size, backend) the contenders run interleaved in one process:
backprop (the library's compiled step), train_step (Trainer.train_step on the raw batch, as a
user's loop calls it), matmul_floor (only the step's matrix products: the BLAS/cuBLAS limit),
jax_grad (jax.jit of jax.value_and_grad + the same update; JAX only) and torch (eager autograd +
torch.optim; only when torch is importable; on the torch backend it runs beside the library's own
step on torch tensors, on the same device and threads).  Each is warmed up, then
timed round after round until --time-budget seconds per cell are spent; the median is reported.

Prints one table per backend (the BLAS thread count each row ran with, median step time, IQR,
samples/s, GFLOP/s of the matrix products, and the ratio to every other contender of the cell).
On NumPy the backprop step picks its BLAS thread count per network and batch size (see
`backprop.training.fused`) and matmul_floor is timed at every candidate count, the fastest
reported; --blas-threads N runs everything at N.  --out DIR writes bench.json
(every number plus date, host, versions, BLAS library/kernel/threads, devices, matmul
precision), bench.txt (the tables) and bench.png (samples/s against batch size, log-log).
--quick runs a small grid with a short budget.  The float32 dtype is fixed; BACKPROP_DEVICE and
BACKPROP_MATMUL_PRECISION apply; BACKPROP_BACKEND narrows the default backends to one.
"""

from __future__ import annotations

import json
import os
import sys
import time

from . import CommandError, positive_ints


def add_arguments(parser) -> None:
    from .. import bench
    from ..backends.torch import InPlace  # (torch itself is imported only when a torch backend loads)

    parser.add_argument(
        "--networks",
        help=f"comma-separated, from: {', '.join(bench.NETWORKS)} "
        f"(default: all; --quick: {','.join(bench.QUICK_NETWORKS)})",
    )
    parser.add_argument(
        "--batch-sizes",
        help="comma-separated positive integers (default: "
        f"{','.join(map(str, bench.CPU_BATCH_SIZES))}, plus 8192,65536 on a GPU; "
        f"--quick: {','.join(map(str, bench.QUICK_BATCH_SIZES))})",
    )
    parser.add_argument(
        "--backends",
        help="comma-separated, from: "
        + ", ".join(bench.BACKENDS)
        + " (default: $BACKPROP_BACKEND, else every available backend)",
    )
    parser.add_argument(
        "--contenders", help=f"comma-separated, from: {', '.join(bench.CONTENDERS)} (default: every one that can run)"
    )
    parser.add_argument(
        "--optimizer", default="sgd", help="sgd (the default: lr 0.01, 1e-4 for wide) or adam (lr 1e-3)"
    )
    parser.add_argument(
        "--time-budget",
        type=float,
        default=None,
        help="seconds of timed rounds per cell, all contenders together (default 2; --quick 0.3); "
        "every contender still gets at least 3 rounds",
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=None,
        help="start no new cell after this many seconds; the rest is listed as not measured",
    )
    parser.add_argument(
        "--blas-threads",
        type=int,
        default=None,
        help="run every cell at this many BLAS threads (threadpoolctl, for the run: the backprop step, "
        "matmul_floor and torch); default: backprop chooses its count per network and batch size, "
        "matmul_floor is the fastest of the counts tried",
    )
    parser.add_argument("--quick", action="store_true", help="a small grid (small networks and batches, short budget)")
    parser.add_argument("--out", help="folder for bench.json, bench.txt and bench.png")
    parser.add_argument(
        "--devices",
        help="data-parallel scaling instead: the backprop step on JAX on 1,2,4… devices "
        "(comma-separated counts; simulated CPU devices where there is no GPU), "
        "see backprop.training.distributed",
    )
    parser.add_argument(
        "--choices",
        help="the torch backend's ways to compute the step instead: each of these (comma-separated, from: "
        f"{', '.join(InPlace.CHOICES)}; or all) flipped beside the default step and torch autograd, on "
        "BACKPROP_DEVICE (default networks digits,mnist, batch sizes 32,256,2048), see backprop.bench.choices",
    )


def _names(text: str | None, valid, what: str) -> list[str] | None:
    if text is None:
        return None
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    if not names:
        raise CommandError(f"--{what} must name at least one of: {', '.join(valid)}")
    for name in names:
        if name not in valid:
            raise CommandError(f"unknown {what.rstrip('s')} {name!r} in --{what}; valid: {', '.join(valid)}")
    return list(dict.fromkeys(names))


def _options(args) -> dict:
    from .. import bench

    networks = _names(args.networks, tuple(bench.NETWORKS), "networks")
    batch_sizes = (
        None
        if args.batch_sizes is None
        else list(dict.fromkeys(positive_ints(args.batch_sizes, "--batch-sizes", "1,32,256")))
    )
    backends = _names(args.backends, bench.BACKENDS, "backends")
    contenders = _names(args.contenders, bench.CONTENDERS, "contenders")
    if args.optimizer not in bench.OPTIMIZERS:
        raise CommandError(f"unknown --optimizer {args.optimizer!r}; valid: {', '.join(bench.OPTIMIZERS)}")
    budget = args.time_budget if args.time_budget is not None else (0.3 if args.quick else 2.0)
    if not budget > 0:
        raise CommandError(f"--time-budget must be > 0 seconds, got {args.time_budget}")
    if args.max_seconds is not None and not args.max_seconds > 0:
        raise CommandError(f"--max-seconds must be > 0, got {args.max_seconds}")
    if args.blas_threads is not None and args.blas_threads < 1:
        raise CommandError(f"--blas-threads must be >= 1, got {args.blas_threads}")
    if args.quick:
        networks = networks or list(bench.QUICK_NETWORKS)
        batch_sizes = batch_sizes or list(bench.QUICK_BATCH_SIZES)
    return {
        "networks": networks or list(bench.NETWORKS),
        "batch_sizes": batch_sizes,  # None: each backend's default
        "backends": backends,
        "contenders": contenders,
        "explicit_backends": backends is not None or bool(os.environ.get("BACKPROP_BACKEND")),
        "explicit_contenders": contenders is not None,
        "optimizer": args.optimizer,
        "time_budget_s": budget,
        "max_seconds": args.max_seconds,
        "blas_threads": args.blas_threads,
        "quick": bool(args.quick),
    }


def _load_backends(opts: dict, unavailable: dict):
    from .. import bench

    names = opts["backends"] or bench.selected_backends()
    loaded = []
    for name in names:
        if name not in bench.BACKENDS:
            raise CommandError(f"unknown backend {name!r} in BACKPROP_BACKEND; valid: {', '.join(bench.BACKENDS)}")
        reason = bench.probe(name).reason
        if reason is not None:
            if opts["explicit_backends"]:
                raise CommandError(f"backend {name!r} is unavailable: {reason}")
            unavailable[name] = reason
            continue
        try:
            loaded.append(bench.load_backend(name))
        except Exception as exc:
            if opts["explicit_backends"]:
                raise CommandError(f"backend {name!r} cannot be loaded: {exc}") from None
            unavailable[name] = f"{type(exc).__name__}: {exc}"
    if not loaded:
        raise CommandError("no backend to benchmark: " + "; ".join(f"{k}: {v}" for k, v in unavailable.items()))
    return loaded


def _write(report: dict, out: str | None) -> None:
    if out:
        path = os.path.join(out, "bench.json")
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
        os.replace(path + ".tmp", path)


def run(args) -> int:
    opts = _options(args)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
    if opts["blas_threads"] is None:
        return _run(args, opts)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=opts["blas_threads"], user_api="blas"):
        return _run(args, opts)


def _run(args, opts: dict) -> int:
    from .. import bench

    if getattr(args, "devices", None):
        return bench_command(args, opts)
    if getattr(args, "choices", None):
        return choices_command(args, opts)
    # JAX would otherwise grab 75% of a GPU's memory and starve CuPy and torch in this process.
    if "jax" not in sys.modules:
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    unavailable: dict[str, str] = {}
    backends = _load_backends(opts, unavailable)

    plan, skipped = {}, []  # backend name -> contenders to run
    for backend in backends:
        names = []
        for name in opts["contenders"] or bench.CONTENDERS:
            reason = bench.contender_unavailable(name, backend)
            if reason is None:
                names.append(name)
            elif name != "jax_grad" or opts["explicit_contenders"]:
                skipped.append({"cell": f"{backend.name} (every cell)", "contender": name, "reason": reason})
        plan[backend.name] = names
    if not any(plan.values()):
        raise CommandError(
            "no contender can run here: " + "; ".join(f"{s['contender']}: {s['reason']}" for s in skipped)
        )
    if opts["explicit_contenders"]:
        missing = [n for n in opts["contenders"] if not any(n in names for names in plan.values())]
        if missing:
            raise CommandError(
                f"contender {missing[0]} cannot run on "
                f"{', '.join(b.name for b in backends)}: "
                f"{bench.contender_unavailable(missing[0], backends[0]) or 'not applicable'}"
            )
    for contender, reason in dict.fromkeys((s["contender"], s["reason"]) for s in skipped):
        where = ", ".join(
            s["cell"].split(" ")[0] for s in skipped if (s["contender"], s["reason"]) == (contender, reason)
        )
        print(f"backprop bench: {contender} not measured on {where}: {reason}", file=sys.stderr)

    cells = []
    for network in opts["networks"]:
        for backend in backends:
            for batch in opts["batch_sizes"] or bench.default_batch_sizes(backend):
                cells.append((bench.Cell(network, batch, backend.name), backend))
    cells.sort(
        key=lambda cb: (
            opts["networks"].index(cb[0].network),
            cb[0].batch,
            [b.name for b in backends].index(cb[0].backend),
        )
    )

    report = {
        "schema": "backprop-bench/1",
        "settings": {k: v for k, v in opts.items() if not k.startswith("explicit")},
        "environment": bench.environment(),
        "networks": {
            n: {
                "layer_sizes": list(bench.NETWORKS[n].layer_sizes),
                "activation": bench.NETWORKS[n].activation,
                "output_activation": bench.NETWORKS[n].output_activation,
                "loss": bench.NETWORKS[n].loss,
            }
            for n in opts["networks"]
        },
        "backends": [bench.device_description(b) for b in backends],
        "unavailable": unavailable,
        "results": [],
        "skipped": skipped,
        "complete": False,
    }
    for name, reason in unavailable.items():
        print(f"backprop bench: backend {name} skipped: {reason}", file=sys.stderr)
    start = time.perf_counter()
    for i, (cell, backend) in enumerate(cells, 1):
        elapsed = time.perf_counter() - start
        if opts["max_seconds"] is not None and elapsed >= opts["max_seconds"]:
            reason = f"not started: --max-seconds {opts['max_seconds']:g} reached"
            report["skipped"] += [{"cell": c.id, "contender": "all", "reason": reason} for c, _ in cells[i - 1 :]]
            print(
                f"backprop bench: --max-seconds reached after {elapsed:.0f} s; {len(cells) - i + 1} cells not measured",
                file=sys.stderr,
            )
            break
        rows, cell_skipped = bench.run_cell(
            cell,
            backend,
            plan[backend.name],
            opts["optimizer"],
            opts["time_budget_s"],
            blas_threads=opts["blas_threads"],
        )
        report["results"] += rows
        report["skipped"] += cell_skipped
        summary = ", ".join(f"{r['contender']} {bench.format_seconds(r['median_s'])}" for r in rows)
        print(
            f"[{i}/{len(cells)}] {cell.network} batch {cell.batch} {cell.backend}: {summary}"
            + "".join(f"; {s['contender']} failed: {s['reason']}" for s in cell_skipped),
            file=sys.stderr,
        )
        report["elapsed_s"] = time.perf_counter() - start
        _write(report, args.out)
    else:
        report["complete"] = True
    report["elapsed_s"] = time.perf_counter() - start
    report["load_average_end"] = bench.load_average()
    tables = bench.format_tables(report)
    print(tables)
    if args.out:
        _write(report, args.out)
        with open(os.path.join(args.out, "bench.txt"), "w", encoding="utf-8") as f:
            f.write(tables + "\n")
        written = ["bench.json", "bench.txt"]
        if bench.plot(report, os.path.join(args.out, "bench.png")):
            written.append("bench.png")
        else:
            print(
                "backprop bench: matplotlib is missing (or nothing was measured), no bench.png "
                '(pip install "backprop[plot]")',
                file=sys.stderr,
            )
        print(f"wrote {', '.join(os.path.join(args.out, w) for w in written)}", file=sys.stderr)
    return 0


def bench_command(args, opts: dict) -> int:
    """``backprop bench --devices 1,2,4``: the device-scaling table (and bench_devices.json in --out)."""
    from .. import bench
    from ..bench.devices import bench_devices, format_devices_table

    counts = parse_device_counts(args.devices)
    if opts.get("backends") not in (None, ["jax"]):
        raise ValueError("--devices benchmarks the JAX backend only (leave out --backends or pass --backends jax)")
    jax_missing = bench.probe("jax").reason
    if jax_missing is not None:
        raise ValueError(f"--devices needs the JAX backend: {jax_missing}")
    networks = opts["networks"] if args.networks else ["digits", "mnist"]
    report = bench_devices(
        counts,
        networks,
        opts["batch_sizes"],
        opts["optimizer"],
        opts["time_budget_s"],
        log=lambda line: print(line, file=sys.stderr),
    )
    _print_and_write(report, format_devices_table(report), args.out, "bench_devices")
    return 0


def choices_command(args, opts: dict) -> int:
    """``backprop bench --choices all``: each of the torch step's choices flipped beside the default
    (`backprop.bench.choices`), the table (and choices.json, choices.txt in --out)."""
    from .. import bench
    from ..backends.torch import InPlace
    from ..bench import choices

    if opts["backends"] not in (None, ["torch"]):
        raise CommandError("--choices times the torch backend only (leave out --backends or pass --backends torch)")
    names = (
        list(InPlace.CHOICES)
        if args.choices.strip().lower() == "all"
        else _names(args.choices, InPlace.CHOICES, "choices")
    )
    torch_missing = bench.probe("torch").reason
    if torch_missing is not None:
        raise CommandError(f"--choices needs the torch backend: {torch_missing}")
    report = choices.run(
        bench.load_backend("torch"),
        opts["networks"] if args.networks else choices.DEFAULT_NETWORKS,
        opts["batch_sizes"] or choices.DEFAULT_BATCH_SIZES,
        names,
        opts["optimizer"],
        opts["time_budget_s"],
    )
    _print_and_write(report, choices.format_table(report), args.out, "choices")
    return 0


def _print_and_write(report: dict, table: str, out: str | None, stem: str) -> None:
    """Print ``table``; in ``out`` (if given) write ``stem``.json (the report) and ``stem``.txt (the table)."""
    print(table)
    if out:
        with open(os.path.join(out, f"{stem}.json"), "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
        with open(os.path.join(out, f"{stem}.txt"), "w", encoding="utf-8") as f:
            f.write(table + "\n")
        print(f"wrote {os.path.join(out, stem + '.json')}, {stem}.txt", file=sys.stderr)


def parse_device_counts(text: str) -> list[int]:
    """``"1,2,4"`` as [1, 2, 4] (positive integers, duplicates dropped)."""
    return list(dict.fromkeys(positive_ints(text, "--devices", "1,2,4", what="device counts")))
