"""The torch backend's ways to compute the same step (`backprop.backends.torch.InPlace.CHOICES`),
timed one against the other, so that each is taken where it measures faster.

For every cell (network, batch size) and choice: the library's step as the backend makes it, the
same step with that one choice flipped and torch autograd, on the same device and threads, timed
interleaved by `measure` (the order shuffled every round).  Before timing, both steps take a few
steps from the same weights and must reach the same parameters: a flipped choice that computes
something else would make its time meaningless, so it stops the run.

The command line is ``backprop bench --choices`` (`backprop.cli.bench`); the GPU check runs it on
CUDA.  The report: per row the default and flipped medians, flipped ÷ default (< 1: the flip is
faster, and the default should change on this device) and each ÷ torch autograd.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from ..backends import Backend
from ..gradcheck import relative_error
from .contenders import build_backprop, build_torch
from .environment import device_description, environment
from .grid import get_network
from .memory import release_memory
from .report import format_seconds
from .timing import measure

AGREE_STEPS = 3  # steps both variants take from the same weights before they are compared
AGREE_RTOL = 1e-4  # float32: the two orders of summation differ in the last bits, not more
DEFAULT_NETWORKS = ("digits", "mnist")
DEFAULT_BATCH_SIZES = (32, 256, 2048)


def _namespace(backend: Backend):
    """The backend's in-place namespace, which has the choices (ValueError elsewhere than torch)."""
    if not hasattr(backend.inplace, "CHOICES"):
        raise ValueError(f"backend {backend.name!r} has no choices to time; only torch has them")
    return backend.inplace


def flipped(backend: Backend, choice: str) -> Backend:
    """``backend`` with its in-place namespace's ``choice`` the other way (ValueError: not a choice of it)."""
    lib = _namespace(backend)
    return dataclasses.replace(backend, inplace=lib.choose(**{choice: not lib.choices().get(choice)}))


def compare(
    network: str, batch: int, backend: Backend, choice: str, optimizer: str = "sgd", budget_s: float = 2.0
) -> dict:
    """One row: the step with ``choice`` as ``backend`` takes it beside the step with it flipped
    and torch autograd.  RuntimeError where the two steps reach different parameters."""
    other = flipped(backend, choice)
    contenders = [build_backprop(get_network(network), batch, b, optimizer) for b in (backend, other)]
    try:
        contenders[1].name = "flipped"
        for c in contenders:
            for _ in range(AGREE_STEPS):
                c.step()
        worst = max(relative_error(a, b)[1] for a, b in zip(contenders[1].params(), contenders[0].params()))
        if not worst <= AGREE_RTOL:
            raise RuntimeError(
                f"{choice} flipped changes the step's result at {network} / {batch}: parameters after "
                f"{AGREE_STEPS} steps differ by {worst:.3g} (relative), more than {AGREE_RTOL:g}"
            )
        contenders.append(build_torch(get_network(network), batch, backend, optimizer))
        timings = measure(contenders, budget_s=budget_s)
    finally:
        for c in contenders:
            c.release()
        release_memory(backend)
    default, flip, autograd = (timings[name].median for name in ("backprop", "flipped", "torch"))
    return {
        "network": network,
        "batch": batch,
        "choice": choice,
        "default": backend.inplace.choices()[choice],
        "default_s": default,
        "flipped_s": flip,
        "autograd_s": autograd,
        "flipped_over_default": flip / default,
        "default_over_autograd": default / autograd,
        "flipped_over_autograd": flip / autograd,
        "rounds": timings["backprop"].rounds,
        "max_relative_difference": worst,
    }


def run(
    backend: Backend,
    networks: Sequence[str] = DEFAULT_NETWORKS,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    choices: Sequence[str] | None = None,
    optimizer: str = "sgd",
    budget_s: float = 2.0,
) -> dict:
    """Every (network, batch size, choice: every one by default) on the torch ``backend``, as a report."""
    names = tuple(choices) if choices else _namespace(backend).CHOICES
    for name in names:
        flipped(backend, name)  # an unknown name fails here, before anything is timed
    rows = [
        compare(network, batch, backend, name, optimizer, budget_s)
        for network in networks
        for batch in batch_sizes
        for name in names
    ]
    return {
        **environment(),
        "device": device_description(backend),
        "optimizer": optimizer,
        "budget_s": budget_s,
        "defaults": backend.inplace.choices(),
        "rows": rows,
    }


def format_table(report: dict) -> str:
    """The rows as one plain-text table."""
    device = report["device"]
    threads = f", {device['threads']} threads" if "threads" in device else ""
    lines = [
        f"torch on {device['device']} ({device['kind']}{threads}), {report['date']}, {report['optimizer']}: "
        "the step with each choice as taken by default, and flipped",
        f"{'network':<8}{'batch':>7}  {'choice':<18}{'default':>8}{'as default':>12}{'flipped':>12}"
        f"{'flip÷dflt':>11}{'dflt÷torch':>11}{'flip÷torch':>11}",
        "-" * 98,
    ]
    for r in report["rows"]:
        lines.append(
            f"{r['network']:<8}{r['batch']:>7}  {r['choice']:<18}{'on' if r['default'] else 'off':>8}"
            f"{format_seconds(r['default_s']):>12}{format_seconds(r['flipped_s']):>12}"
            f"{r['flipped_over_default']:>11.3f}{r['default_over_autograd']:>11.3f}{r['flipped_over_autograd']:>11.3f}"
        )
    lines.append("flip÷dflt < 1: the step is faster with the choice flipped on this device; torch: eager autograd.")
    return "\n".join(lines)
