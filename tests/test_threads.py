"""NumPy's BLAS thread count: the chooser (deterministic given the timings), the settings that
override it, and the trainer and estimators that set it around their work and restore the caller's."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

import backprop as bp
from backprop import optim
from backprop.backends import threads
from backprop.sklearn import MLPClassifier, MLPRegressor
from backprop.training.fused import FusedStep
from backprop.training.trainer import Trainer

MULTI = (threads.current() or 1) >= 2 and threads.usable_cpus() >= 2
needs_two = pytest.mark.skipif(not MULTI, reason="needs 2 BLAS threads and 2 usable CPUs")


@pytest.fixture(autouse=True)
def _fresh(monkeypatch):
    """No BACKPROP_BLAS_THREADS from the caller's environment, and no choice remembered from another test."""
    monkeypatch.delenv(threads.ENV_VAR, raising=False)
    threads.forget()
    yield
    threads.forget()


def _blas_counts() -> list[int]:
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def _fake_timings(monkeypatch, seconds: dict[int, float]) -> list[int]:
    """Make every automatic choice see ``seconds[count]`` per trial: the real trials run (the
    state they touch is restored), their timings replaced.  Returns the counts tried."""
    measured = []

    class FakeTrials(threads.Trials):
        def record(self, _seconds):
            count = self.next()
            measured.append(count)
            super().record(seconds[count])

    monkeypatch.setattr(threads, "Trials", FakeTrials)
    return measured


# -- the chooser ---------------------------------------------------------------------------------
def _measure(seconds: dict[int, float] | list[float], calls: list):
    """A fake ``measure``: per-count seconds (a dict), or the next of a list of timings."""
    timings = iter(seconds) if isinstance(seconds, list) else None

    def measure(n):
        calls.append(n)
        return next(timings) if timings is not None else seconds[n]

    return measure


@pytest.mark.parametrize(
    "seconds, expected",
    [
        ({1: 3.0, 2: 1.0}, 2),
        ({1: 1.0, 2: 3.0}, 1),
        ({1: 1.0, 2: 1.0}, 1),  # a tie goes to fewer threads
        ({1: 2.0, 2: 1.5, 4: 1.0}, 4),
    ],
)
def test_choose_takes_the_fastest(seconds, expected):
    calls = []
    assert threads.choose(list(seconds), _measure(seconds, calls), rounds=3, budget_s=1e9, clear=1e9) == expected
    counts = sorted(seconds)
    # one untimed warm-up at each count, then rounds ascending and descending by turns
    assert calls == [*counts, *counts, *counts[::-1], *counts]


def test_choose_is_deterministic_given_the_timings():
    timings = [9.0, 9.0, 1.0, 2.0, 2.5, 0.9, 1.0, 3.0]  # warm-ups (1, 2), then (1, 2), (2, 1), (1, 2)
    results = {threads.choose([1, 2], _measure(list(timings), []), rounds=3, budget_s=1e9, clear=1e9) for _ in range(5)}
    assert results == {1}  # 1 scores the median of (1.0, 0.9, 1.0), 2 of (2.0, 2.5, 3.0)


@pytest.mark.parametrize(
    "timings, expected",
    [
        ([0.0, 0.0, 5.0, 1.5, 1.5, 1.0, 1.0, 1.5], 1),  # 1: 5.0, 1.0, 1.0 (one slow trial); 2: 1.5 each
        ([0.0, 0.0, 0.5, 1.0, 1.0, 3.0, 3.0, 1.0], 2),  # 1: 0.5, 3.0, 3.0 (one fast trial); 2: 1.0 each
    ],
)
def test_choose_scores_each_count_by_its_median_trial(timings, expected):
    assert threads.choose([1, 2], _measure(timings, []), rounds=3, budget_s=1e9, clear=1e9) == expected


def test_trials_can_be_driven_from_outside():
    """`Trials` is `choose` with the caller running the trials (the L-BFGS objective does)."""
    trials, seconds, order = threads.Trials([2, 1], rounds=2, budget_s=1e9, clear=1e9), {1: 2.0, 2: 1.0}, []
    while (n := trials.next()) is not None:
        order.append(n)
        trials.record(seconds[n])
    assert order == [1, 2, 1, 2, 2, 1] and trials.chosen == 2 and trials.samples == {1: [2.0, 2.0], 2: [1.0, 1.0]}
    assert threads.Trials([3]).next() is None and threads.Trials([3]).chosen == 3


def test_choose_keeps_the_count_in_force_unless_another_is_clearly_faster():
    calls = []
    assert threads.choose([1, 2], _measure({1: 0.99, 2: 1.0}, calls), keep=2, margin=0.03, budget_s=1e9) == 2
    assert threads.choose([1, 2], _measure({1: 0.9, 2: 1.0}, calls), keep=2, margin=0.03, budget_s=1e9) == 1
    assert threads.choose([1, 2], _measure({1: 1.0, 2: 0.9}, calls), keep=1, margin=0.03, budget_s=1e9) == 2


def test_choose_stops_after_the_round_that_spends_the_budget():
    calls = []
    assert threads.choose([1, 2], _measure({1: 1.0, 2: 0.5}, calls), budget_s=1.0) == 2
    assert calls == [1, 2, 1, 2]  # the warm-ups, then one round


def test_one_slow_trial_of_a_step_of_milliseconds_does_not_decide():
    """mnist / 256 on NumPy: 2.9 ms a step at 2 threads, 4.3 ms at 1.  A first trial at 2 threads
    slowed to 4.5 ms (a neighbour, threads waking) decided for 1 thread when the trials stopped
    after 2 ms; the default budget runs rounds enough for the median to set it aside."""
    timings = [0.0043, 0.0029, 0.0043, 0.0045] + [0.0029, 0.0043, 0.0043, 0.0029] * 4  # warm-ups, (1, 2), (2, 1)...
    calls = []
    assert threads.choose([1, 2], _measure(timings, calls), keep=2) == 2
    assert len(calls) == 2 + threads.ROUNDS * 2
    assert threads.choose([1, 2], _measure(timings, []), keep=2, budget_s=2e-3) == 1  # the old budget


def test_the_first_trial_at_each_count_is_untimed():
    """OpenBLAS's first run at 2 threads in a process (after trials at 1) took 45 ms against 2.8 ms
    for a mnist / 256 step, and alone made 1 thread the clear winner; each count's first trial
    is now a warm-up."""
    first = {1: 0.0069, 2: 0.045}
    seconds = {1: 0.0043, 2: 0.0028}
    calls = []

    def measure(n):
        calls.append(n)
        return first.pop(n, None) or seconds[n]

    assert threads.choose([1, 2], measure, keep=2) == 2
    assert calls[:2] == [1, 2]


def test_choose_stops_once_one_count_is_clearly_fastest():
    calls = []
    assert threads.choose([1, 2], _measure({1: 1.0, 2: 2.5}, calls), rounds=5, budget_s=1e9, clear=2.0) == 1
    assert calls == [1, 2, 1, 2]  # the warm-ups, one round: 2.5× slower is beyond ``clear``
    calls.clear()
    assert threads.choose([1, 2], _measure({1: 1.0, 2: 1.5}, calls), rounds=5, budget_s=1e9, clear=2.0) == 1
    assert len(calls) == 2 + 5 * 2  # every round


def test_choose_measures_nothing_for_one_count():
    calls = []
    assert threads.choose([3], _measure({3: 1.0}, calls)) == 3 and calls == []
    with pytest.raises(ValueError, match="no thread count"):
        threads.choose([], _measure({}, calls))


def test_candidates_run_from_one_to_the_limit_and_the_cpus(monkeypatch):
    monkeypatch.setattr(threads, "usable_cpus", lambda: 2)
    assert threads.candidates(2) == (1, 2)
    assert threads.candidates(1) == (1,)
    assert threads.candidates(8) == (1, 2)  # no more threads than CPUs
    monkeypatch.setattr(threads, "usable_cpus", lambda: 16)
    assert threads.candidates(3) == (1, 2, 3)
    assert threads.candidates(6) == (1, 2, 4, 6)  # few trials on a big machine
    assert threads.candidates(16) == (1, 2, 4, 8, 16)


# -- the settings --------------------------------------------------------------------------------
@pytest.mark.parametrize("value, expected", [("3", 3), (" 1 ", 1), ("auto", None), ("AUTO", None), ("", None)])
def test_the_environment_variable_reads_a_count_or_auto(monkeypatch, value, expected):
    monkeypatch.setenv(threads.ENV_VAR, value)
    assert threads.setting() == expected


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5", "2 threads"])
def test_a_bad_environment_variable_is_a_value_error_naming_it(monkeypatch, value):
    monkeypatch.setenv(threads.ENV_VAR, value)
    with pytest.raises(ValueError, match="BACKPROP_BLAS_THREADS must be an integer >= 1 or 'auto'"):
        threads.setting()
    model = bp.MLP([2, 3, 1])
    with pytest.raises(ValueError, match="BACKPROP_BLAS_THREADS"):
        Trainer(model, backend="numpy")
    X, y = np.random.default_rng(0).normal(size=(20, 2)), np.arange(20) % 2
    with pytest.raises(ValueError, match="BACKPROP_BLAS_THREADS"):
        MLPClassifier(hidden_layer_sizes=(3,), max_iter=1, backend="numpy").fit(X, y)


def test_the_argument_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv(threads.ENV_VAR, "2")
    assert threads.setting(1) == 1 and threads.setting(None) == 2
    assert threads.setting(np.int64(3)) == 3


@pytest.mark.parametrize("value, error", [(0, ValueError), (-2, ValueError), (True, TypeError), (1.5, TypeError)])
def test_a_bad_argument_is_refused(value, error):
    with pytest.raises(error, match="blas_threads must be None or an integer >= 1"):
        Trainer(bp.MLP([2, 3, 1]), backend="numpy", blas_threads=value)


def test_the_estimators_validate_blas_threads():
    X, y = np.random.default_rng(0).normal(size=(20, 2)), np.arange(20) % 2
    for bad in (0, 1.5, "two"):
        with pytest.raises(ValueError, match="blas_threads"):
            MLPClassifier(hidden_layer_sizes=(3,), max_iter=1, blas_threads=bad, backend="numpy").fit(X, y)
    assert MLPRegressor(blas_threads=2).get_params()["blas_threads"] == 2


# -- the session ---------------------------------------------------------------------------------
@needs_two
def test_a_session_sets_a_count_and_restores_the_callers():
    with threadpool_limits(limits=2, user_api="blas"):
        session = threads.Session()
        with session:
            assert session.limit == 2
            session.use(1)
            assert threads.current() == 1
            session.use(None)
            assert threads.current() == 2
            session.use(1)
        assert threads.current() == 2 and set(_blas_counts()) == {2}


# -- the fused step ------------------------------------------------------------------------------
def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 8)).astype(np.float32)
    return X, (X[:, 0] > 0).astype(np.int64)


def _trainer(**kwargs) -> Trainer:
    model = bp.MLP([8, 16, 2], activation="tanh", loss="softmax_cross_entropy")
    return Trainer(model, optim.Adam(1e-2), backend="numpy", seed=0, **kwargs)


@needs_two
@pytest.mark.parametrize("seconds, expected", [({1: 1.0, 2: 2.0}, 1), ({1: 2.0, 2: 1.0}, 2)])
def test_the_fused_step_runs_at_the_count_its_trials_chose(monkeypatch, seconds, expected):
    """The trials pick the count; every real step runs at it; training is bit-identical to a run
    at that count without trials; the caller's count is back after fit."""
    measured = _fake_timings(monkeypatch, seconds)
    X, y = _data()
    trainer = _trainer()
    seen = []
    run = trainer.step._run

    def counting_run(*args, **kwargs):
        seen.append(threads.current())
        return run(*args, **kwargs)

    trainer.step._run = counting_run
    with threadpool_limits(limits=2, user_api="blas"):
        trainer.fit(X, y, epochs=3, batch_size=16, progress=False)
        assert threads.current() == 2 and set(_blas_counts()) == {2}  # the caller's, restored
    assert trainer.step.threads(16) == expected
    assert sorted(set(measured)) == [1, 2]
    steps = 3 * 4
    # trials first, each two steps at its count (the second timed)
    assert seen[-steps:] == [expected] * steps and seen[:-steps] == [n for n in measured for _ in range(2)]
    with threadpool_limits(limits=2, user_api="blas"):
        untimed = _trainer(blas_threads=expected)
        untimed.fit(X, y, epochs=3, batch_size=16, progress=False)
    for (W, b), (W_, b_) in zip(trainer.params, untimed.params):
        np.testing.assert_array_equal(W, W_)
        np.testing.assert_array_equal(b, b_)
    assert trainer.history == untimed.history


@needs_two
def test_single_steps_choose_too_and_restore_the_callers_count(monkeypatch):
    _fake_timings(monkeypatch, {1: 1.0, 2: 2.0})
    X, y = _data(16)
    trainer = _trainer()
    with threadpool_limits(limits=2, user_api="blas"):
        losses = [trainer.train_step(X, y) for _ in range(3)]
        assert threads.current() == 2
    assert trainer.step.threads(16) == 1 and all(np.isfinite(losses))
    reference = _trainer(blas_threads=1)
    assert [reference.train_step(X, y) for _ in range(3)] == losses


@needs_two
def test_the_callers_limit_caps_the_choice(monkeypatch):
    """Under the caller's threadpool_limits(1) nothing is timed and every step runs at 1."""
    measured = _fake_timings(monkeypatch, {1: 2.0, 2: 1.0})
    X, y = _data()
    trainer = _trainer()
    with threadpool_limits(limits=1, user_api="blas"):
        trainer.fit(X, y, epochs=2, batch_size=16, progress=False)
        assert threads.current() == 1
    assert trainer.step.threads(16) == 1 and measured == []


@needs_two
@pytest.mark.parametrize("how", ["environment", "argument", "both"])
def test_an_explicit_count_overrides_the_choice(monkeypatch, how):
    measured = _fake_timings(monkeypatch, {1: 2.0, 2: 1.0})  # the trials would choose 2
    if how in ("environment", "both"):
        monkeypatch.setenv(threads.ENV_VAR, "2" if how == "both" else "1")
    trainer = _trainer(blas_threads=1) if how in ("argument", "both") else _trainer()
    X, y = _data()
    seen = []
    run = trainer.step._run
    trainer.step._run = lambda *a, **k: (seen.append(threads.current()), run(*a, **k))[1]
    with threadpool_limits(limits=2, user_api="blas"):
        trainer.fit(X, y, epochs=2, batch_size=16, progress=False)
        trainer.train_step(X[:16], y[:16])
        assert threads.current() == 2
    assert measured == [] and set(seen) == {1} and trainer.step.threads(16) == 1


def test_the_choice_is_remembered_per_workload(monkeypatch):
    measured = _fake_timings(monkeypatch, {n: 1.0 / n for n in range(1, 65)})
    X, y = _data()
    first = _trainer()
    first.fit(X, y, epochs=1, batch_size=16, progress=False)
    trials = len(measured)
    second = _trainer()
    second.fit(X, y, epochs=1, batch_size=16, progress=False)
    assert len(measured) == trials  # the same network and batch size: no new trials
    assert second.step.threads(16) == first.step.threads(16)


def test_off_numpy_there_is_no_thread_count():
    if not bp.backends.probe("array_api_strict").available:
        pytest.skip("array_api_strict is not installed")
    trainer = Trainer(bp.MLP([2, 3, 1]), backend="array_api_strict")
    assert not isinstance(trainer.step, FusedStep) or trainer.step.threads(2) is None


# -- the estimators ------------------------------------------------------------------------------
@needs_two
@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
def test_fit_restores_the_callers_limits(monkeypatch, solver):
    """The estimators choose (1 here) and run at it, and the caller's limits are back after fit."""
    measured = _fake_timings(monkeypatch, {1: 1.0, 2: 2.0})
    X, y = _data(200)
    seen = []
    if solver == "lbfgs":
        from backprop.sklearn import _lbfgs

        objective = _lbfgs._objective

        def counting_objective(*args):
            fun = objective(*args)
            return lambda w: (seen.append(threads.current()), fun(w))[1]

        monkeypatch.setattr(_lbfgs, "_objective", counting_objective)
    with threadpool_limits(limits=2, user_api="blas"):
        before = _blas_counts()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf = MLPClassifier(
                hidden_layer_sizes=(16,), solver=solver, max_iter=10, random_state=0, backend="numpy"
            ).fit(X, y)
        assert _blas_counts() == before
    assert sorted(set(measured)) == [1, 2]
    if solver == "lbfgs":  # its first calls are the trials, the rest run at the choice
        assert seen[: len(measured)] == measured and len(seen) > len(measured)
        assert seen[len(measured) :] == [1] * (len(seen) - len(measured))
    else:
        assert clf._trainer.step.threads(200) == 1


@needs_two
def test_the_estimators_argument_overrides_the_choice(monkeypatch):
    measured = _fake_timings(monkeypatch, {1: 2.0, 2: 1.0})
    X, y = _data(200)
    with threadpool_limits(limits=2, user_api="blas"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = MLPClassifier(hidden_layer_sizes=(16,), max_iter=2, random_state=0, blas_threads=1, backend="numpy").fit(
            X, y
        )
        assert clf._trainer.step.threads(200) == 1
        clf.set_params(blas_threads=None)
        monkeypatch.setenv(threads.ENV_VAR, "1")
        clf.partial_fit(X, y)  # the reused trainer follows the new setting (the environment's 1)
        assert clf._trainer.step.threads(200) == 1 and measured == []
        monkeypatch.delenv(threads.ENV_VAR)
        clf.partial_fit(X, y)
        assert clf._trainer.step.threads(200) == 2 and measured
        MLPClassifier(hidden_layer_sizes=(16,), solver="lbfgs", max_iter=2, blas_threads=1, backend="numpy").fit(X, y)
        assert threads.current() == 2
