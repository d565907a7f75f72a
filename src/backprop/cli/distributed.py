"""A data-parallel training demo, one process of several: ``python -m backprop.cli.distributed --help``.

Each process trains on its own shard of the digits data with `backprop.training.distributed`
(see docs/distributed.md for a two-process run on one machine over 127.0.0.1).

Bad options (a --process-id outside 0 … --num-processes − 1, a count below 1) and a failure of
``initialize`` that JAX reports as a Python exception end with one line on stderr and exit code 2.
A peer that never starts is not one of those: when --timeout expires, JAX's coordination service
ends the process itself (SIGABRT, exit code 134, with a C++ stack trace on stderr) -- there is
nothing to catch.
"""

from __future__ import annotations

from ..training.distributed import initialize
from . import ArgumentParser


def main(argv=None) -> int:
    """Train a small network on the digits data set, one process of a multi-process JAX run."""
    import sys
    import time

    parser = ArgumentParser(
        prog="python -m backprop.cli.distributed",
        description="Data-parallel training demo: run it once per process (same arguments, its own "
        "--process-id); each process trains on its own half/third/... of the digits data.",
    )
    parser.add_argument(
        "--coordinator", default="127.0.0.1:12355", help="host:port of process 0 (default 127.0.0.1:12355)"
    )
    parser.add_argument("--num-processes", type=int, default=1, help="number of processes (default 1)")
    parser.add_argument("--process-id", type=int, default=0, help="this process: 0 … num-processes − 1")
    parser.add_argument("--cpu-devices", type=int, help="CPU devices per process (simulated; for CPU-only runs)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs (default 5)")
    parser.add_argument("--batch-size", type=int, default=64, help="global batch size (default 64)")
    parser.add_argument("--dtype", default="float32", help="float32 (default) or float64")
    parser.add_argument("--timeout", type=int, default=60, help="seconds to wait for the other processes (default 60)")
    args = parser.parse_args(argv)
    for option, value in (("--num-processes", args.num_processes), ("--cpu-devices", args.cpu_devices)):
        if value is not None and value < 1:
            parser.error(f"{option} must be >= 1, got {value}")
    if not 0 <= args.process_id < args.num_processes:
        parser.error(
            f"--process-id must be between 0 and {args.num_processes - 1} "
            f"(--num-processes {args.num_processes}), got {args.process_id}"
        )
    if args.timeout < 1:
        parser.error(f"--timeout must be >= 1 (seconds), got {args.timeout}")

    if args.num_processes > 1:
        bind = args.coordinator if args.coordinator.startswith(("127.", "localhost")) else None
        try:
            initialize(
                args.coordinator,
                args.num_processes,
                args.process_id,
                cpu_devices=args.cpu_devices,
                initialization_timeout=args.timeout,
                coordinator_bind_address=bind,
            )
        except Exception as exc:  # a refused or unreachable coordinator, JAX already in use
            reason = (str(exc).strip() or type(exc).__name__).splitlines()[0]  # one line of JAX's message
            print(f"{parser.prog}: error: cannot join the run: {reason}", file=sys.stderr)
            return 2
    elif args.cpu_devices:
        import jax

        jax.config.update("jax_num_cpu_devices", args.cpu_devices)

    import jax
    from sklearn.preprocessing import StandardScaler

    from ..backends import get_backend
    from ..core.mlp import MLP
    from ..core.optim import Adam
    from ..training.trainer import Trainer
    from .data import digits

    data = digits()
    X = StandardScaler().fit_transform(data.X)
    y = data.y
    n = (len(X) // args.num_processes) * args.num_processes
    rows = slice(args.process_id, n, args.num_processes)  # this process's shard: every num_processes-th row
    model = MLP([X.shape[1], 64, 10], loss="softmax_cross_entropy")
    trainer = Trainer(model, Adam(1e-2), backend=get_backend("jax", dtype=args.dtype), seed=0, devices="all")
    print(
        f"process {jax.process_index()}/{jax.process_count()}: {len(X[rows])} local rows, {trainer.parallel}",
        file=sys.stderr,
    )
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
