"""The timer: contenders of one cell warmed up, then timed interleaved, round after round."""

from __future__ import annotations

import dataclasses
import math
import random
import statistics
import time
from collections.abc import Sequence

from ..backends import threads
from .contenders import Contender

ORDER_SEED = 0  # of the shuffled order of the contenders' rounds (`measure`)


@dataclasses.dataclass
class Timing:
    """Per-step seconds of one contender in one cell: the statistics over rounds.

    A round is ``iterations`` consecutive synchronised steps (more than one only for steps
    shorter than ``min_round_s``), its time divided by ``iterations``; every contender of a cell
    runs the same count (`measure`).
    """

    median: float
    q1: float
    q3: float
    min: float
    max: float
    mean: float
    rounds: int
    iterations: int
    warmup_s: float

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1

    @classmethod
    def of(cls, times: list[float], iterations: int, warmup_s: float) -> Timing:
        ordered = sorted(times)
        if len(ordered) >= 2:
            q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
        else:
            q1 = q3 = ordered[0]
        return cls(
            statistics.median(ordered),
            q1,
            q3,
            ordered[0],
            ordered[-1],
            statistics.fmean(ordered),
            len(ordered),
            iterations,
            warmup_s,
        )


def measure(
    contenders: Sequence[Contender],
    budget_s: float = 2.0,
    min_rounds: int = 3,
    max_rounds: int = 1000,
    warmup: int = 2,
    min_round_s: float = 1e-3,
) -> dict[str, Timing]:
    """Time the contenders of one cell side by side; {name: Timing}.

    Each is warmed up first (``warmup`` steps: compilation, caches, allocator).  Then rounds
    run interleaved — one round of each contender in turn, in an order shuffled every time — until
    ``budget_s`` seconds of rounds have passed and every contender has ``min_rounds`` rounds
    (a slow cell overruns the budget rather than report fewer), or all reach ``max_rounds``.
    Every contender's round has the same number of timed steps, enough for the slowest one's
    (its fastest warmup step) to last ``min_round_s``, after one untimed step: the first step
    after another contender's work runs on caches filled with that one's arrays, markedly slower
    (docs/benchmarks.md), which a training loop, one step after another, never pays.  The
    shuffle (seeded: the same orders every run) lets each contender follow each other one about
    equally often; a rotation does not from three contenders on (in rounds ABC, BCA, CAB, A
    follows C twice as often as B).
    """
    warmup_s, fastest = {}, {}
    for c in contenders:
        start = time.perf_counter()
        fastest[c.name] = c.warmup(warmup)
        warmup_s[c.name] = time.perf_counter() - start
    count = max(1, min(1000, math.ceil(min_round_s / max(max(fastest.values(), default=0.0), 1e-9))))
    iterations = dict.fromkeys(fastest, count)
    times = _timed_rounds(list(contenders), iterations, budget_s, min_rounds, max_rounds)
    return {c.name: Timing.of(times[c.name], iterations[c.name], warmup_s[c.name]) for c in contenders}


def _timed_rounds(
    order: list[Contender], iterations: dict, budget_s: float, min_rounds: int, max_rounds: int
) -> dict[str, list[float]]:
    """{name: the per-step seconds of each of its rounds}, run as `measure` describes."""
    times = {c.name: [] for c in order}
    shuffled = random.Random(ORDER_SEED)
    start = time.perf_counter()
    while True:
        todo = [c for c in shuffled.sample(order, len(order)) if len(times[c.name]) < max_rounds]
        if not todo:
            break
        for c in todo:
            times[c.name].append(_round(c, iterations[c.name]))
        if time.perf_counter() - start >= budget_s and all(len(t) >= min_rounds for t in times.values()):
            break
    return times


def _round(contender: Contender, iterations: int) -> float:
    """The per-step seconds of ``iterations`` consecutive steps after an untimed one (at the
    contender's ``blas_threads``, set outside the timed steps)."""
    with threads.running_at(contender.blas_threads):
        contender.step()
        start = time.perf_counter()
        for _ in range(iterations):
            contender.step()
        return (time.perf_counter() - start) / iterations
