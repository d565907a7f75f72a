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

``python -m backprop.cli.distributed --help`` runs a small demo in one of several processes (see
docs/distributed.md for a two-process run on one machine over 127.0.0.1).
"""

from __future__ import annotations

import dataclasses
import functools
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
            raise ValueError(
                f"the mesh must have an axis named {AXIS!r} for the batch; its axes are {devices.axis_names}"
            )
        return devices
    every = jax.devices()
    if isinstance(devices, str):
        if devices.strip().lower() != "all":
            raise ValueError(f"devices must be None, 'all', a number, a list of JAX devices or a Mesh, got {devices!r}")
        chosen = every
    elif isinstance(devices, int) and not isinstance(devices, bool):
        if not 1 <= devices <= len(every):
            raise ValueError(
                f"devices={devices}: JAX sees {len(every)} device(s) ({_names(every)}); on a CPU, "
                f"XLA_FLAGS=--xla_force_host_platform_device_count={devices} simulates {devices}"
            )
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


def _local_backend(backend, device):
    """``backend`` with ``device`` (a device of this process) as its home device (one object per pair)."""
    return backend if backend.device == device else _moved_backend(backend, device)


@functools.lru_cache(maxsize=32)
def _moved_backend(backend, device):
    return dataclasses.replace(backend, device=device, device_name=f"{device.platform}:{device.id}")


@functools.lru_cache(maxsize=32)
def _sharded(step, mesh, replicated):
    """``step`` compiled with its outputs replicated over ``mesh`` and its params and state donated."""
    import jax

    return jax.jit(step, out_shardings=replicated, donate_argnums=(0, 1))


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
            raise ValueError(
                f"none of the mesh's devices ({_names(flat)}) belongs to this process ({self.process_index})"
            )
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
        return (
            f"DataParallel(data={self.data_size} devices [{_names(self.mesh.devices.flat)}], "
            f"processes={self.process_count})"
        )

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
        jitted = _sharded(step, self.mesh, self.replicated)

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
