"""Data-parallel training on JAX's sharding: many devices, one process or many.

``Trainer(model, backend="jax", devices=...)`` trains with the same compiled step as on one
device -- the same hand-written backward pass -- but on a `jax.sharding.Mesh` with an axis
named ``"data"``:

* the global batch X, Y is split along its rows over the ``data`` axis
  (``NamedSharding(mesh, P("data"))``);
* the parameters and the optimizer state are replicated on every device
  (``NamedSharding(mesh, P())``), and the step's outputs are asked to be replicated too;
* XLA's partitioner (GSPMD) turns the batch sums of the backward pass -- dW = Hᵀδ and
  db = Σᵢ δᵢ, and the loss and the correct-count -- into per-device partial sums followed by an
  all-reduce, so every device applies the same update.  The loss is computed on the global
  batch, so the reduction "mean" still divides by the global batch size and losses and metrics
  are global, not per-shard.

``devices``: None (one device, no sharding), ``"all"`` (``jax.devices()``: every device of
every process), an int N (the first N of ``jax.devices()``), a list of JAX devices, or a
``Mesh`` with a ``"data"`` axis (other axes, if any, replicate the batch).

Batch sizes.  ``fit``'s ``batch_size`` is the global batch and must be a multiple of the size
of the ``data`` axis (a ValueError names both otherwise): a batch that is not is computed
*replicated* -- every device runs the whole batch, exactly as one device would, with no
speed-up -- which is how the last, partial batch of an epoch and `Trainer.train_step` batches
of any size are handled exactly (no padding, no dropped rows).

Several processes (multi-host).  Call `initialize` (``jax.distributed.initialize``) in every
process before anything else touches JAX, then build the same Trainer with ``devices="all"``
in each and call ``fit`` with the process's own shard of the data: every process must hold the
same number of rows, its ``batch_size`` is the *global* batch (each process contributes
``batch_size / process_count`` rows to each step, rows of process 0 first), and the same seed
gives every process the same permutation of its local rows.  Training losses and accuracies
are global; ``evaluate`` (and validation) sums its loss and counts over the processes, so it
is global too and every process must call it; ``predict`` is local (each process predicts the
rows it is given).  Every process holds the full, replicated parameters; save checkpoints from
process 0 only (``jax.process_index() == 0``).

``python -m backprop.distributed --help`` runs a small demo in one of several processes (see
docs/distributed.md for a two-process run on one machine over 127.0.0.1).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

AXIS = "data"

__all__ = ["AXIS", "DataParallel", "data_parallel", "initialize", "make_mesh"]


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    cpu_devices: int | None = None,
    **kwargs: Any,
) -> None:
    """Join a multi-process JAX run: ``jax.distributed.initialize`` with these arguments.

    Call it first, in every process, before any other use of JAX (before ``get_backend("jax")``).
    ``coordinator_address``: "host:port" of process 0 (the coordinator), the same in every
    process; ``num_processes``; ``process_id``: 0 … num_processes − 1.  On Slurm, Open MPI and
    Cloud TPU all three may be None (JAX detects them).  ``cpu_devices``: how many CPU devices
    this process exposes (``jax_num_cpu_devices``; for CPU-only runs and tests).  Other keyword
    arguments (``local_device_ids``, ``coordinator_bind_address``, ``initialization_timeout``…)
    go to ``jax.distributed.initialize`` unchanged.
    """
    import jax

    if cpu_devices is not None:
        if not (isinstance(cpu_devices, int) and not isinstance(cpu_devices, bool) and cpu_devices >= 1):
            raise ValueError(f"cpu_devices must be an integer >= 1, got {cpu_devices!r}")
        jax.config.update("jax_num_cpu_devices", cpu_devices)
    jax.distributed.initialize(
        coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id, **kwargs
    )


def make_mesh(devices):
    """A `jax.sharding.Mesh` with a ``"data"`` axis from a `Trainer` ``devices`` value."""
    import jax
    from jax.sharding import Mesh

    if isinstance(devices, Mesh):
        if AXIS not in devices.axis_names:
            raise ValueError(f"the mesh must have an axis named {AXIS!r} for the batch; its axes are {devices.axis_names}")
        return devices
    every = jax.devices()
    if isinstance(devices, str):
        if devices.strip().lower() != "all":
            raise ValueError(f"devices must be None, 'all', a number, a list of JAX devices or a Mesh, got {devices!r}")
        chosen = every
    elif isinstance(devices, int) and not isinstance(devices, bool):
        if not 1 <= devices <= len(every):
            raise ValueError(f"devices={devices}: JAX sees {len(every)} device(s) ({_names(every)}); on a CPU, "
                             f"XLA_FLAGS=--xla_force_host_platform_device_count={devices} simulates {devices}")
        chosen = every[:devices]
    elif isinstance(devices, (list, tuple)) and devices:
        chosen = list(devices)
        if not all(isinstance(d, jax.Device) for d in chosen):
            raise TypeError(f"devices must be JAX devices (e.g. jax.devices()[:2]), got {devices!r}")
        if len(set(chosen)) != len(chosen):
            raise ValueError(f"devices lists a device twice: {_names(chosen)}")
    else:
        raise ValueError(f"devices must be None, 'all', a number, a list of JAX devices or a Mesh, got {devices!r}")
    return Mesh(np.array(chosen, dtype=object), (AXIS,))


def _names(devices) -> str:
    return ", ".join(f"{d.platform}:{d.id}" for d in devices)


_LOCAL_BACKENDS: dict = {}
_WRAPPED_STEPS: dict = {}


def _local_backend(backend, device):
    """``backend`` with ``device`` (a device of this process) as its home device."""
    if backend.device == device:
        return backend
    key = (id(backend), device)
    if key not in _LOCAL_BACKENDS:
        _LOCAL_BACKENDS[key] = (backend, dataclasses.replace(backend, device=device, device_name=f"{device.platform}:{device.id}"))
    return _LOCAL_BACKENDS[key][1]


class DataParallel:
    """How a `Trainer` spreads its steps over ``mesh``: placement, the sharded step, global counts.

    ``backend``: the trainer's backend moved to this process's first device of the mesh (where
    parameters are initialised, and where evaluation and prediction run with a local replica of
    the parameters).  ``data_size``: devices along the ``data`` axis; ``process_count``.
    """

    def __init__(self, mesh, backend):
        import jax
        from jax.sharding import NamedSharding, PartitionSpec

        self.mesh = mesh
        self.data_size = int(mesh.shape[AXIS])
        self.process_count = jax.process_count()
        self.process_index = jax.process_index()
        flat = list(mesh.devices.flat)
        per_process = {}
        for d in flat:
            per_process[d.process_index] = per_process.get(d.process_index, 0) + 1
        if self.process_index not in per_process:
            raise ValueError(f"none of the mesh's devices ({_names(flat)}) belongs to this process ({self.process_index})")
        if len(per_process) != self.process_count or len(set(per_process.values())) != 1:
            raise ValueError(
                f"every one of the {self.process_count} processes must own the same number of the mesh's devices; "
                f"devices per process: {dict(sorted(per_process.items()))}"
            )
        self.device = next(d for d in flat if d.process_index == self.process_index)
        self.backend = _local_backend(backend, self.device)
        self.replicated = NamedSharding(mesh, PartitionSpec())
        self.sharded = NamedSharding(mesh, PartitionSpec(AXIS))

    def __repr__(self) -> str:
        return (f"DataParallel(data={self.data_size} devices [{_names(self.mesh.devices.flat)}], "
                f"processes={self.process_count})")

    # -- batch sizes ---------------------------------------------------------------------------
    def local_batch_size(self, batch_size: int, n_local: int) -> int:
        """Each process's share of the global ``batch_size``, after checking it divides evenly."""
        if batch_size % self.data_size:
            lower = batch_size - batch_size % self.data_size
            options = f"{lower} or {lower + self.data_size}" if lower else f"{self.data_size}"
            raise ValueError(
                f"batch_size={batch_size} is not a multiple of the {self.data_size} devices of the 'data' axis, "
                f"so its rows cannot be split evenly over them; use a batch_size such as {options}"
            )
        if self.process_count > 1:
            counts = self.gather(np.array([n_local], dtype=np.int64))[:, 0]
            if len(set(counts.tolist())) != 1:
                raise ValueError(
                    f"every process must fit on the same number of rows; rows per process: {counts.tolist()}"
                )
        return batch_size // self.process_count

    # -- placement -----------------------------------------------------------------------------
    def gather(self, local: np.ndarray, tiled: bool = False) -> np.ndarray:
        """``local`` of every process, stacked (tiled: concatenated along rows), in process order."""
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(local, tiled=tiled))

    def _host(self, A, index=None) -> np.ndarray:
        if isinstance(A, np.ndarray):
            host = A[index] if index is not None else A
            return host.astype(np.dtype(self.backend.dtype_name), copy=False) if host.dtype.kind == "f" else host
        host = self.backend.to_numpy(A)
        return host[index] if index is not None else host

    def _from_host(self, host: np.ndarray, sharding):
        import jax

        if sharding is self.sharded:
            return jax.make_array_from_process_local_data(sharding, host)
        return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

    def place_batch(self, A, index=None):
        """Rows ``index`` of A (all rows for None) as a global array: split over the ``data`` axis
        when the global batch divides evenly, else replicated (computed whole on every device).

        In several processes A holds this process's rows; the global batch is the rows of every
        process, in process order.
        """
        import jax

        sharding = getattr(A, "sharding", None)
        if index is None and sharding in (self.sharded, self.replicated):
            return A
        if self.process_count == 1:
            if index is not None:
                if isinstance(A, np.ndarray):
                    A = self._host(A, index)
                else:
                    A = self.backend.xp.take(A, jax.device_put(np.asarray(index), A.sharding), axis=0)
            elif isinstance(A, np.ndarray):
                A = self._host(A)
            split = A.shape[0] % self.data_size == 0
            return jax.device_put(A, self.sharded if split else self.replicated)
        host = self._host(A, index)
        if (host.shape[0] * self.process_count) % self.data_size == 0:
            return self._from_host(host, self.sharded)
        return self._from_host(self.gather(host, tiled=True), self.replicated)

    def replicate(self, tree):
        """Every array of ``tree`` replicated on the mesh (arrays already replicated are kept)."""
        import jax

        def one(a):
            if getattr(a, "sharding", None) == self.replicated:
                return a
            if self.process_count == 1:
                return jax.device_put(a, self.replicated)
            return self._from_host(self.backend.to_numpy(a), self.replicated)

        return jax.tree_util.tree_map(one, tree)

    def local(self, tree):
        """Single-device copies of ``tree`` on this process's first mesh device (no copy for
        replicated arrays: their replica there), for evaluation and prediction."""
        import jax

        def one(a):
            sharding = getattr(a, "sharding", None)
            if sharding is None or sharding.device_set == {self.device}:
                return a
            if sharding.is_fully_replicated:
                for shard in a.addressable_shards:
                    if shard.device == self.device:
                        return shard.data
            return jax.device_put(a, self.device)

        return jax.tree_util.tree_map(one, tree)

    def sum_over_processes(self, *values: float) -> tuple:
        """The sums of ``values`` over all processes (the values themselves in one process)."""
        if self.process_count == 1:
            return values
        return tuple(float(v) for v in self.gather(np.array(values, dtype=np.float64)).sum(axis=0))

    def evaluation_sums(self, loss: float, correct: float, count: int, penalty: float, batch_size: int) -> tuple:
        """(loss, correct, rows) of an evaluation summed over the processes, as one device computes
        them on every process's rows in turn: each evaluation batch's loss holds the L2 penalty
        once, so the penalties of the surplus per-process batches are taken off."""
        batches = -(-count // batch_size)
        loss, correct, count, batches = self.sum_over_processes(loss, correct, count, batches)
        loss -= (batches - -(-count // batch_size)) * penalty
        return loss, correct, int(count)

    # -- the step ------------------------------------------------------------------------------
    def wrap_step(self, step):
        """The data-parallel form of the compiled step ``(params, state, X, Y) -> (params, state,
        stats)``: the same computation, compiled for the mesh (replicated outputs,
        parameters and state donated), with its inputs placed on the mesh first."""
        import jax

        key = (id(step), self.mesh)
        if key not in _WRAPPED_STEPS:
            _WRAPPED_STEPS[key] = (step, jax.jit(step, out_shardings=self.replicated, donate_argnums=(0, 1)))
        jitted = _WRAPPED_STEPS[key][1]

        def parallel_step(params, state, X, Y):
            params, state = self.replicate((params, state))
            return jitted(params, state, self.place_batch(X), self.place_batch(Y))

        parallel_step.parallel = self
        return parallel_step


def data_parallel(devices, backend) -> DataParallel | None:
    """The `DataParallel` plan for a Trainer's ``devices`` on ``backend`` (None for devices=None)."""
    if devices is None:
        return None
    if backend.name != "jax":
        raise ValueError(
            f"devices={devices!r} needs the JAX backend (data-parallel training uses JAX's sharding), "
            f"but the backend is {backend.name!r}; pass backend='jax' or set BACKPROP_BACKEND=jax"
        )
    return DataParallel(make_mesh(devices), backend)


# -- throughput against device count (backprop bench --devices) -------------------------------
DEVICE_BENCH_BATCH_SIZES = (256, 2048)  # on a CPU; on GPUs 2048, 8192 and 65536


def parse_device_counts(text: str) -> list[int]:
    """``"1,2,4"`` as [1, 2, 4] (positive integers, duplicates dropped)."""
    from .cli import positive_ints

    return list(dict.fromkeys(positive_ints(text, "--devices", "1,2,4", what="device counts")))


def simulate_cpu_devices(count: int) -> None:
    """Ask JAX for ``count`` CPU devices (``jax_num_cpu_devices``) unless XLA_FLAGS already says
    how many, before JAX starts; GPUs and TPUs are unaffected (their devices are the real ones)."""
    import os

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
    import jax

    from . import bench
    from .trainer import Trainer

    network = bench.NETWORKS[network] if isinstance(network, str) else network
    trainer = Trainer(network.model(), bench.make_optimizer(optimizer), backend=bench.load_backend("jax"),
                      seed=seed, devices=devices)
    parallel = trainer.parallel
    _, X, Y = trainer.model.prepare(trainer._local_params(), *bench.make_data(network, batch, seed))
    X, Y = parallel.place_batch(X), parallel.place_batch(Y)
    box = {"params": trainer.params, "state": trainer.opt_state}
    trainer.params = trainer.opt_state = None  # donated: only the returned ones are valid
    step_fn = trainer.step

    def step():
        params, state, stats = step_fn(box["params"], box["state"], X, Y)
        box["params"], box["state"] = params, state
        jax.block_until_ready((params, state, stats))
        return stats  # [loss, correct, ok]

    info = {"devices": devices, "device_names": _names(parallel.mesh.devices.flat),
            "platform": parallel.device.platform}
    return bench.Contender(f"backprop x{devices}", network, batch, parallel.backend, step, None,
                           bench.step_flops(network.layer_sizes, batch), info, close=box.clear)


def bench_devices(counts, networks=("digits", "mnist"), batch_sizes=None, optimizer: str = "sgd",
                  budget_s: float = 2.0, log=None) -> dict:
    """Time the data-parallel step on 1, 2, 4… devices: one row per (network, batch, devices).

    The device counts of a cell are timed interleaved (`backprop.bench.measure`); a batch that
    does not split evenly over a device count is listed under "skipped".  ``speedup``: samples/s
    over those of the smallest device count measured in the cell.
    """
    import jax

    from . import bench

    simulate_cpu_devices(max(counts))
    available = len(jax.devices())
    gpu = jax.devices()[0].platform != "cpu"
    batch_sizes = list(batch_sizes or ((2048, 8192, 65536) if gpu else DEVICE_BENCH_BATCH_SIZES))
    report = {"schema": "backprop-bench-devices/1", "devices_available": available,
              "platform": jax.devices()[0].platform, "device_kind": getattr(jax.devices()[0], "device_kind", ""),
              "simulated": not gpu and available > 1,
              "counts": list(counts), "optimizer": optimizer, "time_budget_s": budget_s,
              "results": [], "skipped": []}
    for name in networks:
        for batch in batch_sizes:
            built = []
            for k in counts:
                reason = (f"JAX sees {available} device(s)" if k > available else
                          f"batch {batch} does not split over {k} devices" if batch % k else None)
                if reason is None:
                    try:
                        built.append(build_device_contender(name, batch, k, optimizer))
                    except Exception as exc:  # e.g. out of memory: record it, measure the others
                        reason = f"{type(exc).__name__}: {exc}"
                if reason is not None:
                    report["skipped"].append({"network": name, "batch": batch, "devices": k, "reason": reason})
            try:
                timings = bench.measure(built, budget_s=budget_s, warmup=2) if built else {}
            finally:
                for c in built:
                    c.release()
            rows = [{"network": name, "batch": batch, "devices": c.info["devices"], "median_s": timings[c.name].median,
                     "iqr_s": timings[c.name].iqr, "rounds": timings[c.name].rounds,
                     "samples_per_s": batch / timings[c.name].median} for c in built]
            base = min(rows, key=lambda r: r["devices"]) if rows else None
            for row in rows:
                row["speedup"] = row["samples_per_s"] / base["samples_per_s"]
            report["results"] += rows
            if log is not None and rows:
                log(f"{name} batch {batch}: " + ", ".join(f"{r['devices']} dev {bench.format_rate(r['samples_per_s'])} samples/s"
                                                          for r in rows))
    return report


def format_devices_table(report: dict) -> str:
    """The device-scaling report as a plain-text table."""
    from . import bench

    kind = report.get("device_kind") or ""
    where = report["platform"] + (f" ({kind})" if kind and kind.lower() != report["platform"] else "")
    lines = [f"data-parallel step (backprop.distributed) on {where}: {report['devices_available']} device(s)"
             + (" -- simulated CPU devices sharing the same cores, so expect no speed-up" if report.get("simulated") else "")]
    head = f"{'network':<8}{'batch':>7}{'devices':>9}{'median':>10}{'IQR':>10}{'rounds':>7}{'samples/s':>11}{'speedup':>9}"
    lines += [head, "-" * len(head)]
    for r in report["results"]:
        lines.append(f"{r['network']:<8}{r['batch']:>7}{r['devices']:>9}{bench.format_seconds(r['median_s']):>10}"
                     f"{bench.format_seconds(r['iqr_s']):>10}{r['rounds']:>7}{bench.format_rate(r['samples_per_s']):>11}"
                     f"{r['speedup']:>9.2f}")
    if report["skipped"]:
        lines += ["", "not measured:"]
        lines += [f"  {s['network']} batch {s['batch']} on {s['devices']} devices: {s['reason']}" for s in report["skipped"]]
    return "\n".join(lines)


def bench_command(args, opts: dict) -> int:
    """``backprop bench --devices 1,2,4``: the device-scaling table (and bench_devices.json in --out)."""
    import json
    import os
    import sys

    from . import bench

    counts = parse_device_counts(args.devices)
    if opts.get("backends") not in (None, ["jax"]):
        raise ValueError("--devices benchmarks the JAX backend only (leave out --backends or pass --backends jax)")
    if bench.probe("jax").reason is not None:
        raise ValueError(f"--devices needs the JAX backend: {bench.probe('jax').reason}")
    networks = opts["networks"] if args.networks else ["digits", "mnist"]
    report = bench_devices(counts, networks, opts["batch_sizes"], opts["optimizer"], opts["time_budget_s"],
                           log=lambda line: print(line, file=sys.stderr))
    table = format_devices_table(report)
    print(table)
    if args.out:
        with open(os.path.join(args.out, "bench_devices.json"), "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
        with open(os.path.join(args.out, "bench_devices.txt"), "w", encoding="utf-8") as f:
            f.write(table + "\n")
        print(f"wrote {os.path.join(args.out, 'bench_devices.json')}, bench_devices.txt", file=sys.stderr)
    return 0


# -- a demo run, one process of several ------------------------------------------------------
def main(argv=None) -> int:
    """Train a small network on the digits data set, one process of a multi-process JAX run."""
    import argparse
    import sys
    import time

    parser = argparse.ArgumentParser(
        prog="python -m backprop.distributed",
        description="Data-parallel training demo: run it once per process (same arguments, its own "
                    "--process-id); each process trains on its own half/third/... of the digits data.",
    )
    parser.add_argument("--coordinator", default="127.0.0.1:12355", help="host:port of process 0 (default 127.0.0.1:12355)")
    parser.add_argument("--num-processes", type=int, default=1, help="number of processes (default 1)")
    parser.add_argument("--process-id", type=int, default=0, help="this process: 0 … num-processes − 1")
    parser.add_argument("--cpu-devices", type=int, help="CPU devices per process (simulated; for CPU-only runs)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs (default 5)")
    parser.add_argument("--batch-size", type=int, default=64, help="global batch size (default 64)")
    parser.add_argument("--dtype", default="float32", help="float32 (default) or float64")
    parser.add_argument("--timeout", type=int, default=60, help="seconds to wait for the other processes (default 60)")
    args = parser.parse_args(argv)

    if args.num_processes > 1:
        bind = args.coordinator if args.coordinator.startswith(("127.", "localhost")) else None
        initialize(args.coordinator, args.num_processes, args.process_id, cpu_devices=args.cpu_devices,
                   initialization_timeout=args.timeout, coordinator_bind_address=bind)
    elif args.cpu_devices:
        import jax

        jax.config.update("jax_num_cpu_devices", args.cpu_devices)

    import jax
    from sklearn.preprocessing import StandardScaler

    from . import MLP, get_backend
    from .data import digits
    from .optim import Adam
    from .trainer import Trainer

    data = digits()
    X = StandardScaler().fit_transform(data.X)
    y = data.y
    n = (len(X) // args.num_processes) * args.num_processes
    rows = slice(args.process_id, n, args.num_processes)  # this process's shard: every num_processes-th row
    model = MLP([X.shape[1], 64, 10], loss="softmax_cross_entropy")
    trainer = Trainer(model, Adam(1e-2), backend=get_backend("jax", dtype=args.dtype), seed=0, devices="all")
    print(f"process {jax.process_index()}/{jax.process_count()}: {len(X[rows])} local rows, {trainer.parallel}",
          file=sys.stderr)
    start = time.perf_counter()
    history = trainer.fit(X[rows], y[rows], epochs=args.epochs, batch_size=args.batch_size, progress=False)
    seconds = time.perf_counter() - start
    if jax.process_index() == 0:
        for e, (loss, acc) in enumerate(zip(history["loss"], history["accuracy"])):
            print(f"epoch {e}: loss {loss:.4f}  accuracy {acc:.4f}")
        print(f"{trainer.steps} steps in {seconds:.2f} s on {trainer.parallel.data_size} devices")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
