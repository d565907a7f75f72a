"""The torch backend's ways to compute the same step (`backprop.backends.torch.InPlace.CHOICES`),
timed one against the other, so that each is taken where it measures faster.

For every cell (network, batch size) and choice: the library's step as the backend makes it, the
same step with that one choice flipped and torch autograd, on the same device and threads, timed
interleaved by `measure` (the order shuffled every round).  Before timing, both steps take a few
steps from the same weights and must reach the same parameters: a flipped choice that computes
something else would make its time meaningless, so it stops the run.

    python -m backprop.bench.choices                                # the CPU, digits and mnist
    python -m backprop.bench.choices --device cuda --out DIR        # what the GPU check runs
    python -m backprop.bench.choices --networks mnist --batch-sizes 2048 --choices host_scalars

The report: per row the default and flipped medians, flipped ÷ default (< 1: the flip is faster,
and the default should change on this device) and each ÷ torch autograd.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
from collections.abc import Sequence

import numpy as np

from ..backends import Backend, get_backend
from .contenders import build_backprop, build_torch, torch_unavailable
from .environment import device_description, environment
from .grid import get_network
from .memory import release_memory
from .report import format_seconds
from .timing import measure

AGREE_STEPS = 3  # steps both variants take from the same weights before they are compared
AGREE_RTOL = 1e-4  # float32: the two orders of summation differ in the last bits, not more
DEFAULT_NETWORKS = ("digits", "mnist")
DEFAULT_BATCH_SIZES = (32, 256, 2048)


def flipped(backend: Backend, choice: str) -> Backend:
    """``backend`` with its in-place namespace's ``choice`` the other way (ValueError: not a choice of it)."""
    lib = backend.inplace
    if not hasattr(lib, "CHOICES"):
        raise ValueError(f"backend {backend.name!r} has no choices to time; only torch has them")
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
        worst = max(
            float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))
            for a, b in zip(contenders[1].params(), contenders[0].params())
        )
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
    networks: Sequence[str] = DEFAULT_NETWORKS,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    device: str | None = None,
    choices: Sequence[str] | None = None,
    optimizer: str = "sgd",
    budget_s: float = 2.0,
) -> dict:
    """Every (network, batch size, choice) of torch on ``device`` (None: torch's default), as a report."""
    reason = torch_unavailable()
    if reason:
        raise RuntimeError(reason)
    backend = get_backend("torch", device=device, dtype="float32")
    names = tuple(choices) if choices else backend.inplace.CHOICES
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


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m backprop.bench.choices", description=__doc__.split("\n\n")[0].replace("\n", " ")
    )
    parser.add_argument("--device", default=None, help="torch device: cpu, cuda, cuda:N, mps (default: torch's)")
    parser.add_argument("--networks", type=_names, default=list(DEFAULT_NETWORKS), help="comma-separated")
    parser.add_argument("--batch-sizes", type=_ints, default=list(DEFAULT_BATCH_SIZES), help="comma-separated")
    parser.add_argument("--choices", type=_names, default=None, help="comma-separated (default: every one)")
    parser.add_argument("--optimizer", default="sgd", choices=("sgd", "adam"))
    parser.add_argument("--time-budget", type=float, default=2.0, help="seconds of timed rounds per row")
    parser.add_argument("--out", type=pathlib.Path, default=None, help="also write choices.json and choices.txt here")
    args = parser.parse_args(argv)
    try:
        report = run(args.networks, args.batch_sizes, args.device, args.choices, args.optimizer, args.time_budget)
    except (ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    table = format_table(report)
    print(table)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "choices.json").write_text(json.dumps(report, indent=1, default=str))
        (args.out / "choices.txt").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
