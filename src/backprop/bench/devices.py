"""Throughput of the data-parallel step against the device count (``backprop bench --devices``).

The device counts of a cell are timed interleaved, as every benchmark here is (`backprop.bench.measure`).
"""

from __future__ import annotations

import os

from ..training.distributed import _names
from ..training.trainer import Trainer
from .contenders import Contender, feedback_step
from .grid import get_network, load_backend, step_flops
from .report import format_rate, format_seconds
from .timing import measure
from .workload import make_data, make_optimizer

DEVICE_BENCH_BATCH_SIZES = (256, 2048)  # on a CPU
GPU_DEVICE_BENCH_BATCH_SIZES = (2048, 8192, 65536)


def simulate_cpu_devices(count: int) -> None:
    """Ask JAX for ``count`` CPU devices (``jax_num_cpu_devices``) unless XLA_FLAGS already says
    how many, before JAX starts; GPUs and TPUs are unaffected (their devices are the real ones)."""
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return
    import jax

    try:
        jax.config.update("jax_num_cpu_devices", max(count, 1))
    except RuntimeError:  # JAX has already started: its device count stands
        pass


def build_device_contender(network, batch: int, devices: int, optimizer: str = "sgd", seed: int = 0):
    """A `backprop.bench.Contender` running the data-parallel step of ``network`` on the first
    ``devices`` JAX devices, the global batch of ``batch`` rows placed on the mesh once."""
    network = get_network(network)
    trainer = Trainer(
        network.model(), make_optimizer(optimizer), backend=load_backend("jax"), seed=seed, devices=devices
    )
    parallel = trainer.parallel
    _, X, Y = trainer.model.prepare(trainer._local_params(), *make_data(network, batch, seed))
    X, Y = parallel.place_batch(X), parallel.place_batch(Y)
    box = {"params": trainer.params, "state": trainer.opt_state}
    trainer.params = trainer.opt_state = None  # donated: only the returned ones are valid
    step = feedback_step(trainer.step, box, X, Y, parallel.backend)  # returns the stats [loss, correct, ok]
    info = {
        "devices": devices,
        "device_names": _names(parallel.mesh.devices.flat),
        "platform": parallel.device.platform,
    }
    return Contender(
        f"backprop x{devices}",
        network,
        batch,
        parallel.backend,
        step,
        None,
        step_flops(network.layer_sizes, batch),
        info,
        close=box.clear,
    )


def bench_devices(
    counts, networks=("digits", "mnist"), batch_sizes=None, optimizer: str = "sgd", budget_s: float = 2.0, log=None
) -> dict:
    """Time the data-parallel step on 1, 2, 4… devices: one row per (network, batch, devices).

    The device counts of a cell are timed interleaved (`backprop.bench.measure`); a batch that
    does not split evenly over a device count is listed under "skipped".  ``speedup``: samples/s
    over those of the smallest device count measured in the cell.
    """
    import jax

    simulate_cpu_devices(max(counts))
    first, available = jax.devices()[0], len(jax.devices())
    gpu = first.platform != "cpu"
    report = {
        "schema": "backprop-bench-devices/1",
        "devices_available": available,
        "platform": first.platform,
        "device_kind": getattr(first, "device_kind", ""),
        "simulated": not gpu and available > 1,
        "counts": list(counts),
        "optimizer": optimizer,
        "time_budget_s": budget_s,
        "results": [],
        "skipped": [],
    }
    for name in networks:
        for batch in list(batch_sizes or (GPU_DEVICE_BENCH_BATCH_SIZES if gpu else DEVICE_BENCH_BATCH_SIZES)):
            rows, skipped = _device_cell(name, batch, counts, available, optimizer, budget_s)
            report["results"] += rows
            report["skipped"] += skipped
            if log is not None and rows:
                log(
                    f"{name} batch {batch}: "
                    + ", ".join(f"{r['devices']} dev {format_rate(r['samples_per_s'])} samples/s" for r in rows)
                )
    return report


def _device_cell(network: str, batch: int, counts, available: int, optimizer: str, budget_s: float):
    """The device counts of one (network, batch) timed interleaved; (rows, skipped)."""
    built, skipped = [], []
    for k in counts:
        reason = (
            f"JAX sees {available} device(s)"
            if k > available
            else f"batch {batch} does not split over {k} devices"
            if batch % k
            else None
        )
        if reason is None:
            try:
                built.append(build_device_contender(network, batch, k, optimizer))
            except Exception as exc:  # e.g. out of memory: record it, measure the others
                reason = f"{type(exc).__name__}: {exc}"
        if reason is not None:
            skipped.append({"network": network, "batch": batch, "devices": k, "reason": reason})
    try:
        timings = measure(built, budget_s=budget_s, warmup=2) if built else {}
    finally:
        for c in built:
            c.release()
    rows = [
        {
            "network": network,
            "batch": batch,
            "devices": c.info["devices"],
            "median_s": timings[c.name].median,
            "iqr_s": timings[c.name].iqr,
            "rounds": timings[c.name].rounds,
            "samples_per_s": batch / timings[c.name].median,
        }
        for c in built
    ]
    base = min(rows, key=lambda r: r["devices"]) if rows else None
    for row in rows:
        row["speedup"] = row["samples_per_s"] / base["samples_per_s"]
    return rows, skipped


def format_devices_table(report: dict) -> str:
    """The device-scaling report as a plain-text table."""
    kind = report.get("device_kind") or ""
    where = report["platform"] + (f" ({kind})" if kind and kind.lower() != report["platform"] else "")
    simulated = (
        " -- simulated CPU devices sharing the same cores, so expect no speed-up" if report.get("simulated") else ""
    )
    lines = [
        f"data-parallel step (backprop.training.distributed) on {where}: "
        f"{report['devices_available']} device(s){simulated}"
    ]
    head = (
        f"{'network':<8}{'batch':>7}{'devices':>9}{'median':>10}{'IQR':>10}{'rounds':>7}{'samples/s':>11}{'speedup':>9}"
    )
    lines += [head, "-" * len(head)]
    for r in report["results"]:
        lines.append(
            f"{r['network']:<8}{r['batch']:>7}{r['devices']:>9}{format_seconds(r['median_s']):>10}"
            f"{format_seconds(r['iqr_s']):>10}{r['rounds']:>7}{format_rate(r['samples_per_s']):>11}"
            f"{r['speedup']:>9.2f}"
        )
    if report["skipped"]:
        lines += ["", "not measured:"]
        lines += [
            f"  {s['network']} batch {s['batch']} on {s['devices']} devices: {s['reason']}" for s in report["skipped"]
        ]
    return "\n".join(lines)
