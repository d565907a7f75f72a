"""The ``backprop`` command line: one sub-command per module in `backprop.cli`.

Every sub-command module has ``add_arguments(parser)`` and ``run(args) -> exit code``, and a
docstring whose first line is its help.  Usage errors, and a backend that is missing or cannot run
here (CuPy without a GPU), exit with code 2
and one line on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__
from ..backends import BackendUnavailableError

COMMANDS = ("info", "train", "check", "bench", "diagram")


class CommandError(Exception):
    """A bad option value or input file: reported as one line on stderr, exit code 2."""


def positive_ints(text: str, option: str, example: str, what: str = "positive integers", minimum: int = 1) -> list[int]:
    """A comma-separated option such as ``--hidden 128,64`` as [128, 64].

    At least ``minimum`` integers >= 1 (blank parts ignored); otherwise a CommandError that names
    ``option``, says it must be ``what`` separated by commas and gives ``example``.
    """
    try:
        values = [int(part) for part in str(text).split(",") if part.strip()]
    except ValueError:
        values = []
    if len(values) < minimum or min(values, default=0) < 1:
        raise CommandError(f"{option} must be {what} separated by commas, e.g. {example}; got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="backprop",
        description="Neural networks trained by a hand-written backward pass on NumPy, CuPy or JAX.",
    )
    parser.add_argument("--version", action="version", version=f"backprop {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"backprop.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"backprop.cli.{name}":
                raise
            continue
        doc = (module.__doc__ or name).strip().splitlines()[0]
        command = sub.add_parser(
            name, help=doc, description=module.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        module.add_arguments(command)
        command.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 0
    try:
        return int(args.run(args) or 0)
    except (CommandError, ValueError, TypeError, ImportError, OSError, BackendUnavailableError) as exc:
        print(f"backprop {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"backprop {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
