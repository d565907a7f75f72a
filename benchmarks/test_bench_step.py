"""pytest-benchmark suite: one full training step, float32, device synchronised inside the timed call.

    pytest benchmarks/test_bench_step.py --benchmark-only

One test per contender — ``test_backprop``, ``test_train_step``, ``test_matmul_floor``, ``test_jax_grad``,
``test_torch`` — over the grid network × batch size × backend, grouped per cell so that
pytest-benchmark prints the contenders of a cell side by side.  The grid, the contenders and
the FLOP count live in `backprop.bench` (shared with ``backprop bench``).  Each contender is
warmed up (compilation) before pytest-benchmark times it.  Options: see conftest.py.
"""

from __future__ import annotations

import math

import pytest

from backprop import bench


def _list(text, convert=str):
    return [convert(part.strip()) for part in text.split(",") if part.strip()] if text else None


def _cells(config, contender: str) -> list:
    """pytest params (network, batch, backend name) for one contender, with skip marks and ids."""
    networks = _list(config.getoption("--bench-networks")) or list(bench.NETWORKS)
    for name in networks:
        if name not in bench.NETWORKS:
            raise pytest.UsageError(f"unknown network {name!r} in --bench-networks; valid: {', '.join(bench.NETWORKS)}")
    sizes = _list(config.getoption("--bench-batch-sizes"), int)
    huge = config.getoption("--bench-huge")
    params = []
    for backend_id in bench.selected_backends():
        found = bench.probe(backend_id)
        if not found.available:
            params.append(
                pytest.param(
                    None, None, backend_id, id=f"{backend_id}-unavailable", marks=pytest.mark.skip(reason=found.reason)
                )
            )
            continue
        backend = bench.load_backend(backend_id)
        if contender == "jax_grad" and backend.name != "jax":
            continue
        unavailable = bench.contender_unavailable(contender, backend)
        for network in networks:
            for batch in sizes or bench.default_batch_sizes(backend):
                marks = []
                if unavailable:
                    marks.append(pytest.mark.skip(reason=unavailable))
                elif not huge and bench.is_huge(network, batch, backend):
                    marks.append(
                        pytest.mark.skip(
                            reason="huge CPU cell (> 50 GFLOP per step): add --bench-huge or BACKPROP_BENCH_HUGE=1"
                        )
                    )
                params.append(
                    pytest.param(network, batch, backend_id, marks=marks, id=bench.Cell(network, batch, backend_id).id)
                )
    if not params:  # jax_grad without the jax backend: one skipped test rather than an empty set
        params.append(
            pytest.param(
                None,
                None,
                None,
                id="not-applicable",
                marks=pytest.mark.skip(reason=f"{contender}: no selected backend can run it"),
            )
        )
    return params


def pytest_generate_tests(metafunc):
    if {"network", "batch", "backend_id"} <= set(metafunc.fixturenames):
        contender = metafunc.function.__name__.removeprefix("test_")
        metafunc.parametrize(("network", "batch", "backend_id"), _cells(metafunc.config, contender))


def _bench(benchmark, request, contender: str, network: str, batch: int, backend_id: str) -> None:
    optimizer = request.config.getoption("--bench-optimizer")
    c = bench.build(contender, network, batch, backend_id, optimizer=optimizer)
    try:
        c.warmup(2)
        benchmark.group = f"{network} batch={batch} {backend_id}"
        benchmark.extra_info.update(
            contender=contender,
            network=network,
            batch=batch,
            backend=backend_id,
            device=c.backend.device_name,
            flops=c.flops,
            matmul=bench.effective_matmul_precision(c.backend),
            **c.info,
        )
        loss = benchmark(c.step)
        if loss is not None:  # a step that computes garbage is not worth timing
            assert math.isfinite(bench.loss_of(loss))
    finally:
        c.release()


def test_backprop(benchmark, request, network, batch, backend_id):
    _bench(benchmark, request, "backprop", network, batch, backend_id)


def test_train_step(benchmark, request, network, batch, backend_id):
    _bench(benchmark, request, "train_step", network, batch, backend_id)


def test_matmul_floor(benchmark, request, network, batch, backend_id):
    _bench(benchmark, request, "matmul_floor", network, batch, backend_id)


def test_jax_grad(benchmark, request, network, batch, backend_id):
    _bench(benchmark, request, "jax_grad", network, batch, backend_id)


def test_torch(benchmark, request, network, batch, backend_id):
    _bench(benchmark, request, "torch", network, batch, backend_id)
