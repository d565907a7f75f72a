"""The BLAS thread count of the NumPy backend: an explicit setting, or the fastest count, measured.

More BLAS threads speed up only large matrix products; below that, the threads waiting for each
other (and spinning on the cores the rest of the step needs) make a step slower, so the best
count depends on the workload.  The NumPy backend therefore picks it per workload:

* `setting` says which count applies: a ``blas_threads`` argument (an integer >= 1), else the
  environment variable ``BACKPROP_BLAS_THREADS`` (an integer >= 1, or "auto"), else None:
  the automatic choice.
* `choose` is the automatic choice: it times trial runs of the workload at each of `candidates`
  (1 up to the current limit, at most the usable CPUs) through a ``measure(count) -> seconds``
  callable, and keeps the fastest (`Trials` is the same choice for a caller that runs the
  trials itself).  It is deterministic given the timings.
* `Session` applies a count around a step or an epoch and restores the count it found on exit.
  The current count is read when the session starts, so a caller's own ``threadpool_limits``
  is respected: an automatic choice never exceeds it.  Nothing is changed process-wide
  outside a session.

A session sets NumPy's own BLAS library (the one ``numpy.dot`` calls; `libraries`) through
threadpoolctl's per-library controllers, cheap enough to read and set around single steps, or
every loaded BLAS library (`all_libraries`: SciPy's too, for L-BFGS).  A fresh
``threadpoolctl.threadpool_limits`` scans every loaded library first, so it is left for
once-per-fit limits (`limited`).  The thread count can change float results at the level of
BLAS rounding (how a product is split between threads), so a run is bit-reproducible across
processes only with an explicit setting.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import re
import statistics
import time
from collections.abc import Callable, Hashable, Sequence

import numpy as np

ENV_VAR = "BACKPROP_BLAS_THREADS"
ROUNDS = 5  # most trial rounds (one run at each candidate count per round)
# no new round once the trials took this long (at least one round runs): long enough for a few
# rounds of steps of some milliseconds, whose one-sample choice a single slow trial could decide
BUDGET_S = 0.25
MARGIN = 0.03  # another count must beat the current one by this fraction to be chosen
CLEAR = 2.0  # no new round once the best count is this many times faster than every other
MAX_CHOICES = 256  # choices remembered per process (`remember`)

clock = time.perf_counter  # the clock of the trials (a test may replace it)


def parse(value, name: str = ENV_VAR) -> int | None:
    """An environment value as a thread count: an integer >= 1, or None for "auto" (or empty).
    ValueError naming ``name`` otherwise."""
    text = str(value).strip().lower()
    if text in ("", "auto"):
        return None
    if not re.fullmatch(r"\+?[0-9]+", text) or int(text) < 1:
        raise ValueError(f"{name} must be an integer >= 1 or 'auto', got {value!r}")
    return int(text)


def check(value, name: str = "blas_threads") -> int | None:
    """A ``blas_threads`` argument checked: None (automatic unless ``BACKPROP_BLAS_THREADS`` says
    otherwise) or an integer >= 1 (Python or NumPy, not bool); TypeError or ValueError naming ``name``."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be None or an integer >= 1, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be None or an integer >= 1, got {value!r}")
    return int(value)


def setting(blas_threads=None) -> int | None:
    """The thread count that applies: ``blas_threads`` when given (an integer >= 1), else
    ``BACKPROP_BLAS_THREADS`` (read now), else None: choose automatically."""
    count = check(blas_threads)
    return count if count is not None else parse(os.environ.get(ENV_VAR, ""))


def usable_cpus() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def candidates(limit: int) -> tuple[int, ...]:
    """The counts an automatic choice tries under the current ``limit``: 1 up to the limit, at
    most the usable CPUs; above 4, only powers of two and the top count (few trials on big machines)."""
    top = max(1, min(int(limit), usable_cpus()))
    if top <= 4:
        return tuple(range(1, top + 1))
    return tuple(sorted({*(1 << i for i in range(int(math.log2(top)) + 1)), top}))


class Trials:
    """The automatic choice driven from outside: ``next()`` says which count to run a trial at
    (None once the choice is made, in `chosen`), ``record(seconds)`` takes that trial's time.

    The schedule: one untimed trial at each count first, ascending (caches, fresh buffers, and
    the first start of a thread pool, which can cost many steps: docs/benchmarks.md), then rounds
    of one trial at each count, in ascending and descending order by turns, until ``rounds`` rounds
    or, after the first, once the timed trials add up to ``budget_s`` or one count scores
    ``clear`` times faster than every other (a clear winner).  Each count scores the median of
    its trials (what a long run pays, intermittent waits for busy threads included, one outlier
    excepted); the lowest score wins, ties going to fewer threads.  ``keep`` (the
    count in force, which costs nothing to stay at) wins unless the best is faster by more than
    ``margin`` of its score.  A single count is chosen without trials.
    """

    def __init__(
        self,
        counts: Sequence[int],
        keep: int | None = None,
        rounds: int = ROUNDS,
        budget_s: float = BUDGET_S,
        margin: float = MARGIN,
        clear: float = CLEAR,
    ):
        self.counts = sorted(dict.fromkeys(int(n) for n in counts))
        if not self.counts:
            raise ValueError("no thread count to choose from")
        self.keep, self.rounds, self.budget_s, self.margin = keep, max(1, rounds), budget_s, margin
        self.clear = clear
        self.samples: dict[int, list[float]] = {n: [] for n in self.counts}
        self.chosen: int | None = self.counts[0] if len(self.counts) == 1 else None
        self._queue = [*self.counts, *self.counts]  # the untimed trials, then the first round
        self._untimed, self._round, self._spent = len(self.counts), 0, 0.0

    def next(self) -> int | None:
        """The count of the next trial, or None: the choice is made."""
        return None if self.chosen is not None else self._queue[0]

    def record(self, seconds: float) -> None:
        """The seconds of the trial at the count `next` gave."""
        n = self._queue.pop(0)
        if self._untimed:
            self._untimed -= 1
            return
        self.samples[n].append(float(seconds))
        self._spent += float(seconds)
        if self._queue:
            return
        self._round += 1
        score = {n: statistics.median(times) for n, times in self.samples.items()}
        fastest = min(self.counts, key=lambda n: (score[n], n))
        clear = all(score[n] >= self.clear * score[fastest] for n in self.counts if n != fastest)
        if self._round >= self.rounds or self._spent >= self.budget_s or clear:
            keep = self.keep in score and score[fastest] >= (1.0 - self.margin) * score[self.keep]
            self.chosen = self.keep if keep else fastest
        else:
            self._queue = list(self.counts if self._round % 2 == 0 else self.counts[::-1])


def choose(
    counts: Sequence[int],
    measure: Callable[[int], float],
    keep: int | None = None,
    rounds: int = ROUNDS,
    budget_s: float = BUDGET_S,
    margin: float = MARGIN,
    clear: float = CLEAR,
) -> int:
    """The fastest of ``counts``, from ``measure(count)``: the seconds of one trial run at that
    count, run on the schedule of `Trials` and judged by its rule (deterministic given the timings)."""
    trials = Trials(counts, keep, rounds, budget_s, margin, clear)
    while (n := trials.next()) is not None:
        trials.record(measure(n))
    return trials.chosen


_CHOICES: dict[Hashable, int] = {}


def chosen(key: Hashable) -> int | None:
    """The count `remember` kept for ``key`` in this process, or None."""
    return _CHOICES.get(key)


def remember(key: Hashable, count: int) -> None:
    """Keep an automatic choice for ``key`` (the workload and the limit it was chosen under), so
    later trainers of the same workload in this process skip the trials (the oldest of more than
    MAX_CHOICES is dropped)."""
    if len(_CHOICES) >= MAX_CHOICES and key not in _CHOICES:
        _CHOICES.pop(next(iter(_CHOICES)))
    _CHOICES[key] = count


def forget() -> None:
    """Drop every remembered choice (the next use of each workload measures again)."""
    _CHOICES.clear()


@functools.cache
def libraries() -> list:
    """threadpoolctl's controllers of NumPy's BLAS: the BLAS libraries loaded under NumPy's own
    folders (a wheel's bundled OpenBLAS), else every BLAS library loaded (a shared system BLAS);
    none without threadpoolctl.  Found once per process."""
    try:
        from threadpoolctl import ThreadpoolController

        blas = ThreadpoolController().select(user_api="blas").lib_controllers
    except Exception:  # threadpoolctl missing or broken: the counts stay as they are
        blas = []
    home = os.path.dirname(os.path.realpath(np.__file__))
    own = [lib for lib in blas if os.path.realpath(lib.filepath).startswith((home + os.sep, home + ".libs"))]
    return own or list(blas)


def all_libraries() -> list:
    """threadpoolctl's controllers of every BLAS library loaded now (NumPy's, SciPy's...); none
    without threadpoolctl.  Found anew at each call (a scan of the loaded libraries)."""
    try:
        from threadpoolctl import ThreadpoolController

        return list(ThreadpoolController().select(user_api="blas").lib_controllers)
    except Exception:
        return []


def current() -> int | None:
    """The BLAS thread count in force for NumPy now (the lowest of its libraries'), or None without a BLAS."""
    counts = [lib.get_num_threads() for lib in libraries()]
    counts = [c for c in counts if c]
    return min(counts) if counts else None


class Session:
    """A reusable context that runs NumPy's BLAS at a chosen count and restores what it found.

    ``with session: session.use(n); ...``: `limit` is the count in force when the session was
    entered (the caller's own setting, ``threadpool_limits`` included; the lowest, should NumPy's
    libraries differ); ``use(n)`` sets n, and ``use(None)`` or ``use(limit)`` leaves (or puts
    back) what was in force, costing nothing when that is in force already; on exit the
    libraries get back the counts they had.  Without a BLAS that threadpoolctl can control, it
    does nothing.  Not reentrant: one session per user (a `FusedStep` keeps its own).
    ``blas``: the libraries' controllers (default `libraries`, NumPy's).
    """

    __slots__ = ("_libs", "_one", "_original", "limit", "_applied")

    def __init__(self, blas: list | None = None):
        self._libs = libraries() if blas is None else list(blas)
        self._one = self._libs[0].get_num_threads if len(self._libs) == 1 else None  # the usual case, fast
        self.limit, self._original, self._applied = 1, [], None

    def __enter__(self) -> Session:
        self.enter()
        return self

    def __exit__(self, *exc) -> None:
        self.exit()

    def enter(self) -> int:
        """Start: read the counts in force; returns `limit` (``with`` calls it, as `exit`)."""
        if self._one is not None:
            self.limit = self._one() or 1
        else:
            self._original = [lib.get_num_threads() for lib in self._libs]
            counts = [c for c in self._original if c]
            self.limit = min(counts) if counts else 1
        self._applied = None  # None: the original counts are in force
        return self.limit

    def read(self) -> int:
        """The count in force now (what `enter` reads; the session is left as it is)."""
        if self._one is not None:
            return self._one() or 1
        counts = [c for c in (lib.get_num_threads() for lib in self._libs) if c]
        return min(counts) if counts else 1

    def exit(self) -> None:
        """End: put back the counts found by `enter` (nothing to do unless `use` changed them)."""
        if self._applied is not None:
            self.use(None)

    def use(self, count: int | None) -> None:
        """Run at ``count`` threads from now on (None: the counts the session found)."""
        if count == self.limit:
            count = None
        if count == self._applied:
            return
        if self._one is not None:
            self._libs[0].set_num_threads(self.limit if count is None else count)
        else:
            for lib, original in zip(self._libs, self._original):
                if original:
                    lib.set_num_threads(original if count is None else count)
        self._applied = count


@contextlib.contextmanager
def running_at(count: int | None):
    """A context running NumPy's BLAS at ``count`` threads (a `Session`); None: as it is."""
    if count is None:
        yield
        return
    with Session() as session:
        session.use(count)
        yield


def limited(count: int | None, user_api: str = "blas"):
    """A context limiting every loaded BLAS library to ``count`` threads (threadpoolctl's
    ``threadpool_limits``, restoring the previous limits on exit); None: nothing."""
    if count is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=count, user_api=user_api)
