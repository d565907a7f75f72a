"""The replay policy of whole epochs: run unchecked, replay with the checks when something is not finite.

A training step refuses an update whose loss or new parameters are not finite.  The check costs a
reduction over every parameter and a keep-or-update per step, a fair share of a small step.  A
whole epoch can skip it and still refuse exactly the same step: a step that would be refused leaves
a non-finite loss or non-finite parameters, and a non-finite parameter stays non-finite through
every later update (p − η·u is ±inf or NaN whenever p is).  So the epoch runs unchecked from kept
inputs, and its result stands when every loss and the final parameters are finite; otherwise it
runs again from the kept inputs with the checks, which stop at the first bad step.  Both the
compiled JAX epoch (`backprop.training.trainer.compiled_epoch`) and the fused epoch
(`backprop.training.fused.FusedStep.epoch`) follow it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

R = TypeVar("R")


def replay_if_not_finite(unchecked: Callable[[], tuple[R, bool]], checked: Callable[[], R]) -> R:
    """``unchecked()`` returns (result, finite): its result when finite, else ``checked()``'s, which
    must start again from the inputs ``unchecked`` started from."""
    result, finite = unchecked()
    return result if finite else checked()
