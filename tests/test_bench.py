"""Smoke tests of the benchmarks, so they cannot rot: `backprop.bench`, ``backprop bench`` and the
pytest-benchmark suite in benchmarks/ (one round of tiny cells)."""

from __future__ import annotations

import json
import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from backprop import bench
from backprop.backends import probe
from backprop.cli import main

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _available_selected() -> list[str]:
    return [name for name in bench.selected_backends() if bench.probe(name).available]


# -- the grid and the FLOP count -------------------------------------------------------------
def test_step_flops_formula():
    # seed 2-3-1 at n = 2: forward 2·2·(6+3), dW 2·2·(6+3), dH only for layer 1: 2·2·3
    assert bench.step_flops((2, 3, 1), 2) == 4 * 9 + 4 * 9 + 4 * 3
    wide = bench.NETWORKS["wide"].layer_sizes
    assert bench.step_flops(wide, 2048) == 2 * 2048 * (3 * (2 * 1024 * 4096 + 4096 * 4096) - 1024 * 4096)


def test_grid_definition():
    assert bench.NETWORKS["mnist"].layer_sizes == (784, 512, 256, 10)
    assert bench.NETWORKS["wide"].activation == "relu" and bench.NETWORKS["wide"].loss == "squared_error"
    assert bench.GPU_BATCH_SIZES == (1, 2, 32, 256, 2048, 8192, 65536)
    cpu = bench.load_backend("numpy")
    assert bench.default_batch_sizes(cpu) == (1, 2, 32, 256, 2048)
    assert bench.is_huge("wide", 2048, cpu) and not bench.is_huge("wide", 256, cpu)
    assert not bench.is_huge("mnist", 2048, cpu)


# -- every contender on every installed backend ----------------------------------------------
@pytest.mark.parametrize("network", ["seed", "digits"])
@pytest.mark.parametrize("contender", bench.CONTENDERS)
def test_contender_takes_a_step(backend, network, contender):
    reason = bench.contender_unavailable(contender, backend)
    if reason:
        pytest.skip(reason)
    c = bench.build(contender, network, 2, backend)
    try:
        if contender == "matmul_floor":
            assert c.flops == bench.step_flops(bench.NETWORKS[network].layer_sizes, 2)  # counted from its products
            assert c.step() is None and c.params is None
            return
        before = c.params()
        assert [p.shape for p in before] == [
            s
            for a, b in zip(bench.NETWORKS[network].layer_sizes[:-1], bench.NETWORKS[network].layer_sizes[1:])
            for s in ((a, b), (b,))
        ]
        losses = [bench.loss_of(c.step()) for _ in range(2)]
        after = c.params()
        assert all(math.isfinite(v) for v in losses)
        assert any(not np.array_equal(x, y) for x, y in zip(before, after)), "the step did not change the parameters"
    finally:
        c.release()


@pytest.mark.parametrize("contender", ["train_step", "jax_grad", "torch"])
def test_contenders_compute_the_same_step(contender):
    """After the same steps from the same weights, a rival contender's parameters match backprop's."""
    candidates = [name for name in _available_selected() if contender != "jax_grad" or name == "jax"]
    if not candidates or bench.contender_unavailable(contender, bench.load_backend(candidates[0])):
        pytest.skip(f"{contender} cannot run on the selected backends here")
    backend = bench.load_backend(candidates[0])
    rtol = 1e-2 if bench.effective_matmul_precision(backend) == "tf32" else 1e-4
    ours = bench.build("backprop", "digits", 32, backend, optimizer="adam")
    theirs = bench.build(contender, "digits", 32, backend, optimizer="adam")
    try:
        for x, y in zip(ours.params(), theirs.params()):
            np.testing.assert_array_equal(x, y)
        for _ in range(3):
            np.testing.assert_allclose(bench.loss_of(ours.step()), bench.loss_of(theirs.step()), rtol=rtol)
        for x, y in zip(ours.params(), theirs.params()):
            np.testing.assert_allclose(x, y, rtol=10 * rtol, atol=10 * rtol * 0.1)
    finally:
        ours.release()
        theirs.release()


def test_measure_interleaves_and_reports_the_median():
    calls = []

    def contender(name):
        def step():
            calls.append(name)

        return bench.Contender(name, bench.NETWORKS["seed"], 1, bench.load_backend("numpy"), step)

    a, b = contender("a"), contender("b")
    timings = bench.measure([a, b], budget_s=0.01, min_rounds=3, max_rounds=5, warmup=1, min_round_s=0.0)
    assert set(timings) == {"a", "b"}
    for t in timings.values():
        assert 3 <= t.rounds <= 5 and t.iterations == 1
        assert 0 <= t.min <= t.q1 <= t.median <= t.q3 <= t.max
    measured = calls[2:]  # after one warm-up call each
    rounds = [measured[i : i + 2] for i in range(0, len(measured), 2)]  # an untimed step, then the timed one
    assert all(r[0] == r[1] for r in rounds)
    assert sorted(r[0] for r in rounds[:2]) == ["a", "b"]  # interleaved: one round of each in turn


def test_measure_shuffles_so_each_contender_follows_every_other_about_as_often():
    """With three contenders a rotation (ABC, BCA, CAB) puts C before A twice as often as B; the
    seeded shuffle of `measure` lets each follow each other about equally often, the same every run."""
    runs = []
    for _ in range(2):
        calls = []

        def contender(name, calls=calls):
            return bench.Contender(
                name, bench.NETWORKS["seed"], 1, bench.load_backend("numpy"), lambda: calls.append(name)
            )

        cs = [contender(name) for name in "abc"]
        bench.measure(cs, budget_s=1e9, min_rounds=1, max_rounds=600, warmup=1, min_round_s=0.0)
        runs.append(calls)
    assert runs[0] == runs[1]  # seeded
    rounds = runs[0][3::2]  # after the warm-ups, one name per round (its untimed and timed steps)
    assert len(rounds) == 3 * 600
    follows = {}
    for before, after in zip(rounds, rounds[1:]):
        if before != after:
            follows[after, before] = follows.get((after, before), 0) + 1
    for name in "abc":
        counts = [n for (after, _), n in follows.items() if after == name]
        assert len(counts) == 2 and max(counts) / min(counts) < 1.25, follows


def test_measure_times_the_steps_after_an_untimed_one():
    """The first step of a round, which follows another contender's work, is not timed."""
    import time

    calls = []

    def step():
        time.sleep(0.02 if len(calls) % 2 == 1 else 0.0)  # calls 1, 3, 5: the first of each round (0: warm-up)
        calls.append(1)

    slow_first = bench.Contender("a", bench.NETWORKS["seed"], 1, bench.load_backend("numpy"), step)
    t = bench.measure([slow_first], budget_s=0.0, min_rounds=3, max_rounds=3, warmup=1, min_round_s=0.0)["a"]
    assert t.iterations == 1 and len(calls) == 1 + 3 * 2
    assert t.max < 0.01  # the three timed steps took no sleep; the untimed ones slept


def test_every_contender_runs_rounds_of_the_same_length():
    """Rounds have as many steps for every contender of a cell, enough for the slowest one's fastest
    warm-up step (not its last: the first steps are slow) to fill min_round_s."""
    import time

    def contender(name, seconds, first=0.0):
        calls = []

        def step():
            time.sleep(first if not calls else seconds)
            calls.append(name)

        return bench.Contender(name, bench.NETWORKS["seed"], 1, bench.load_backend("numpy"), step), calls

    (fast, fast_calls), (slow, slow_calls) = contender("fast", 0.0), contender("slow", 0.002, first=0.05)
    timings = bench.measure([fast, slow], budget_s=0.0, min_rounds=2, max_rounds=2, warmup=2, min_round_s=0.01)
    count = timings["fast"].iterations
    assert count == timings["slow"].iterations
    assert 2 <= count <= 5  # ceil(10 ms / ~2 ms, sleeping at least that long), not 1 from the 50 ms first step
    assert len(fast_calls) == len(slow_calls) == 2 + 2 * (1 + count)  # warm-ups, then two rounds each


# -- backprop bench ----------------------------------------------------------------------------
def test_cli_bench_writes_json_table_and_plot(tmp_path, capsys):
    backends = _available_selected()
    if not backends:
        pytest.skip("none of the selected backends can run here")
    out = tmp_path / "bench"
    code = main(
        [
            "bench",
            "--quick",
            "--networks",
            "seed",
            "--batch-sizes",
            "2",
            "--backends",
            ",".join(backends),
            "--contenders",
            "backprop,train_step,matmul_floor",
            "--time-budget",
            "0.02",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "backprop" in printed and "÷floor" in printed and "÷train_step" in printed
    report = json.loads((out / "bench.json").read_text())
    assert report["complete"] is True
    for key in ("schema", "settings", "environment", "networks", "backends", "results", "skipped"):
        assert key in report
    env = report["environment"]
    for key in ("date", "host", "versions", "blas", "matmul_precision"):
        assert key in env
    assert env["versions"]["numpy"] == np.__version__
    assert all("architecture" in lib and "num_threads" in lib for lib in env["blas"] if "error" not in lib)
    assert {b["backend"] for b in report["backends"]} == set(backends)
    assert len(report["results"]) == 3 * len(backends)
    for row in report["results"]:
        for key in ("median_s", "iqr_s", "min_s", "rounds", "samples_per_s", "gflops", "ratios", "flops"):
            assert key in row
        assert row["rounds"] >= 3 and row["median_s"] > 0
        other = "matmul_floor" if row["contender"] == "backprop" else "backprop"
        assert row["ratios"][other] == pytest.approx(
            row["median_s"]
            / next(
                r["median_s"] for r in report["results"] if r["backend"] == row["backend"] and r["contender"] == other
            )
        )
    assert (out / "bench.txt").read_text().strip()
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "options",
    [
        ["--networks", "resnet"],
        ["--backends", "tensorflow"],
        ["--batch-sizes", "0"],
        ["--batch-sizes=-3"],
        ["--batch-sizes", "1,two"],
        ["--contenders", "tf"],
        ["--time-budget", "0"],
        ["--optimizer", "lbfgs"],
        ["--blas-threads", "0"],
        ["--max-seconds", "-1"],
    ],
)
def test_cli_bench_bad_options_exit_2(options, capsys, tmp_path):
    assert main(["bench", *options, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("backprop bench: error:")
    assert not (tmp_path / "bench.json").exists()


def test_cli_bench_unavailable_backend_exit_2(capsys):
    missing = [name for name in bench.BACKENDS if bench.probe(name).reason]
    if not missing:
        pytest.skip("every backend is available here")
    assert main(["bench", "--backends", missing[0], "--quick"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unavailable" in err[0]


# -- the pytest-benchmark suite ----------------------------------------------------------------
def test_pytest_benchmark_suite_runs_one_round():
    """benchmarks/test_bench_step.py collects the whole grid and runs its tiny cells once (--benchmark-disable)."""
    if not _available_selected():
        pytest.skip("none of the selected backends can run here")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        str(ROOT / "benchmarks" / "test_bench_step.py"),
        "-q",
        "-p",
        "no:cacheprovider",
        "--benchmark-disable",
        "-k",
        "seed-b2-",
    ]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    available = _available_selected()
    torch = bench.torch_unavailable() is None
    per_cell = {
        name: 4 + (name == "jax") for name in available
    }  # backprop, train_step, matmul_floor, torch (+ jax_grad)
    selected = sum(per_cell.values())
    total = sum(
        n * len(bench.NETWORKS) * len(bench.default_batch_sizes(bench.load_backend(name)))
        for name, n in per_cell.items()
    ) + len(bench.CONTENDERS) * (len(bench.selected_backends()) - len(available))
    total += "jax" not in bench.selected_backends()  # jax_grad's one "not-applicable" test
    passed = sum(3 + (name == "jax") + torch for name in available)
    assert f"{passed} passed" in done.stdout and " failed" not in done.stdout, done.stdout[-3000:]
    assert f"{total - selected} deselected" in done.stdout, done.stdout[-3000:]


def test_epoch_and_sklearn_benchmarks_run_one_round():
    """benchmarks/test_bench_epoch.py (100-step epochs) and test_bench_sklearn.py run once (--benchmark-disable)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])),
        "BACKPROP_BENCH_EPOCH_STEPS": "100",
    }
    files = [str(ROOT / "benchmarks" / name) for name in ("test_bench_epoch.py", "test_bench_sklearn.py")]
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        *files,
        "-q",
        "-p",
        "no:cacheprovider",
        "--benchmark-disable",
        "-k",
        "numpy or jax or scikit",
    ]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    expected = 2 * len([b for b in ("numpy", "jax") if probe(b).available])  # whole-epochs, step-by-step
    expected += 2 + 2 * len([b for b in ("numpy", "jax") if probe(b).available])  # sklearn: epoch and fit groups
    assert f"{expected} passed" in done.stdout and " failed" not in done.stdout, done.stdout[-3000:]


@pytest.mark.parametrize("network", list(bench.NETWORKS))
def test_encoded_targets_match_the_library(network):
    """The torch contender's targets are exactly what MLP.prepare hands the library's step."""
    net = bench.NETWORKS[network]
    X, y = bench.make_data(net, 8)
    model = net.model()
    _, Xb, Yb = model.prepare(model.init(0, "numpy"), X, y)
    np.testing.assert_array_equal(np.asarray(Xb), X)
    np.testing.assert_array_equal(np.asarray(Yb, dtype=np.float32), bench.encode_targets(net, y))


def test_wide_network_trains_stably_with_the_bench_optimizer():
    """Thousands of timed steps on one batch must not diverge (a NaN step would time garbage)."""
    c = bench.build("backprop", "wide", 2, "numpy")
    try:
        losses = [bench.loss_of(c.step()) for _ in range(4)]
    finally:
        c.release()
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]


def test_the_backprop_contender_reports_its_peak_memory(tmp_path):
    """On NumPy the benchmark measures a step's peak (tracemalloc) against what a step needs."""
    from backprop.backends import get_backend

    contender = bench.build("backprop", "mnist", 64, get_backend("numpy"), "adam")
    memory = contender.info["memory"]
    needed_bytes, sizes, params = (
        bench.needed_bytes,
        bench.NETWORKS["mnist"].layer_sizes,
        784 * 512 + 512 + 512 * 256 + 256 + 256 * 10 + 10,
    )
    assert needed_bytes(sizes, 64, 2 * 4 * params) == 4 * (4 * params + 64 * (784 + 2 * (512 + 256) + 2 * 10))
    assert memory["measured_with"] == "tracemalloc" and memory["needed_bytes"] > 4 * 4 * params
    assert memory["peak_bytes"] >= 4 * 4 * params and memory["ratio"] == memory["peak_bytes"] / memory["needed_bytes"]
    assert memory["ratio"] <= 1.3
    contender.release()
    out = tmp_path / "bench"
    assert (
        main(
            [
                "bench",
                "--networks",
                "seed",
                "--batch-sizes",
                "4",
                "--backends",
                "numpy",
                "--contenders",
                "backprop,matmul_floor",
                "--time-budget",
                "0.02",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    table = (out / "bench.txt").read_text()
    assert "mem÷need" in table
    backprop_row = next(line for line in table.splitlines() if line.startswith("seed") and "backprop" in line)
    rows = json.loads((out / "bench.json").read_text())["results"]
    ratio = next(r for r in rows if r["contender"] == "backprop")["info"]["memory"]["ratio"]
    assert backprop_row.split()[-1] == f"{ratio:.2f}"


def test_a_failing_build_leaves_no_tracing_behind(monkeypatch):
    """The memory probe stops tracemalloc even when building the contender fails."""
    import tracemalloc

    from backprop.backends import get_backend

    def fail(*args, **kwargs):
        raise MemoryError("no room for the step's buffers")

    monkeypatch.setattr(bench.contenders, "make_data", fail)  # where build_backprop looks it up
    assert not tracemalloc.is_tracing()
    with pytest.raises(MemoryError, match="no room"):
        bench.build_backprop(bench.NETWORKS["seed"], 2, get_backend("numpy"))
    assert not tracemalloc.is_tracing()


# -- BLAS threads ------------------------------------------------------------------------------
def test_the_floor_row_is_the_fastest_of_its_thread_counts():
    """matmul_floor timed at several counts reports the fastest of them, with every median in its info."""
    from backprop.bench.cells import _best_floor

    def row(contender, median, threads):
        return {"contender": contender, "median_s": median, "blas_threads": threads, "info": {}}

    rows = _best_floor(
        [row("backprop", 3.0, 1), row("matmul_floor@1", 2.0, 1), row("matmul_floor@2", 1.0, 2), row("torch", 4.0, 2)]
    )
    assert [r["contender"] for r in rows] == ["backprop", "matmul_floor", "torch"]
    floor = rows[1]
    assert floor["median_s"] == 1.0 and floor["blas_threads"] == 2
    assert floor["info"]["median_s_by_threads"] == {"1": 2.0, "2": 1.0}
    assert _best_floor([row("backprop", 3.0, 1)]) == [row("backprop", 3.0, 1)]


def test_cli_bench_shows_the_thread_count_of_every_row(tmp_path, capsys):
    from backprop.backends import threads

    out = tmp_path / "bench"
    args = ["bench", "--networks", "seed", "--batch-sizes", "2", "--backends", "numpy"]
    args += ["--contenders", "backprop,matmul_floor", "--time-budget", "0.02", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "threads" in printed.splitlines()[4]  # the table's head
    rows = json.loads((out / "bench.json").read_text())["results"]
    limit = threads.current()
    assert {r["contender"] for r in rows} == {"backprop", "matmul_floor"}
    for r in rows:
        assert 1 <= r["blas_threads"] <= limit
    floor = next(r for r in rows if r["contender"] == "matmul_floor")
    if len(threads.candidates(limit)) > 1:  # timed at every candidate count, the fastest kept
        tried = floor["info"]["median_s_by_threads"]
        assert set(tried) == {str(n) for n in threads.candidates(limit)}
        assert floor["median_s"] == min(tried.values()) == tried[str(floor["blas_threads"])]
    assert threads.current() == limit  # the caller's count, restored

    assert main([*args, "--blas-threads", "1"]) == 0  # everything at the count asked for
    rows = json.loads((out / "bench.json").read_text())["results"]
    assert [r["blas_threads"] for r in rows] == [1, 1] and "median_s_by_threads" not in rows[1]["info"]
    assert threads.current() == limit


def test_every_contender_has_a_line_style_in_the_plot():
    from backprop.bench.plot import LINE_STYLES, MARKERS

    assert set(LINE_STYLES) == set(MARKERS) == set(bench.CONTENDERS)
