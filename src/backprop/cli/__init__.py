"""The ``backprop`` command line: one sub-command per module in `backprop.cli`.

Every sub-command module has ``add_arguments(parser)`` and ``run(args) -> exit code``, and a
docstring whose first line is its help.  Usage errors (a bad or unknown option, a bad option
value or input file, no command), a backend that is missing or cannot run here (CuPy without a
GPU) and a network that does not fit in memory exit with code 2 and one line on stderr:
``backprop <command>: error: <message>``.  Ctrl-C, at any point (imports included), prints
``backprop <command>: interrupted`` and exits with code 130.  A closed stdout (``backprop info |
head -1``) ends the run quietly with code 141, the shell's code for a reader that went away.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import sys

from .. import __version__
from ..backends import BackendUnavailableError

COMMANDS = ("info", "train", "check", "bench", "diagram")
BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a writer whose reader went away


class CommandError(Exception):
    """A bad option value or input file: reported as one line on stderr, exit code 2."""


def positive_ints(text: str, option: str, example: str, what: str = "positive integers", minimum: int = 1) -> list[int]:
    """A comma-separated option such as ``--hidden 128,64`` as [128, 64].

    At least ``minimum`` integers >= 1, spaces around them allowed; otherwise (an empty part as in
    "128,,64" or "128," included) a CommandError that names ``option``, says it must be ``what``
    separated by commas and gives ``example``.
    """
    try:
        values = [int(part) for part in str(text).split(",")]
    except ValueError:
        values = []
    if len(values) < minimum or min(values, default=0) < 1:
        raise CommandError(f"{option} must be {what} separated by commas, e.g. {example}; got {text!r}")
    return values


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors: ``<prog>: error: <message>`` on stderr and exit code 2, no usage
    block (``--help`` shows it).  Options must be spelt out: no prefix matching (``--epoch`` is an
    error, with a hint, rather than ``--epochs``).  The sub-parsers are of this class too."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")

    def unrecognized(self, extra: list[str]):
        """The error for arguments that no option takes, with the nearest option for a misspelt one."""
        message = f"unrecognized arguments: {' '.join(extra)}"
        known = [option for action in self._actions for option in action.option_strings]
        for arg in extra:
            close = difflib.get_close_matches(arg.split("=", 1)[0], known, n=1) if arg.startswith("--") else []
            if close:
                message += f" (did you mean {close[0]}?)"
                break
        self.error(message)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
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
        command.set_defaults(run=module.run, parser=command)
    return parser


def _prog(argv: list[str]) -> str:
    """ "backprop <command>" for the messages of a run, before (or without) parsing ``argv``."""
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    return f"backprop {command}" if command in COMMANDS else "backprop"


def main(argv: list[str] | None = None) -> int:
    """Run the command line on ``argv`` (default: sys.argv[1:]) and return the exit code: 0, the
    command's own code, 2 for usage errors, 130 for Ctrl-C, 141 for a closed stdout."""
    argv = sys.argv[1:] if argv is None else [str(arg) for arg in argv]
    prog = _prog(argv)
    try:
        code = _main(argv, prog)
        sys.stdout.flush()  # a closed pipe shows here, not as a message at exit
        return code
    except BrokenPipeError:
        # Python's advice (the signal module's docs, "Note on SIGPIPE"): send the rest of the output
        # to devnull, so the flush at exit does not fail again.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):  # no file descriptor (a captured stdout)
            pass
        return BROKEN_PIPE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def _main(argv: list[str], prog: str) -> int:
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:
            getattr(args, "parser", parser).unrecognized(extra)
    except SystemExit as exc:  # --help, --version and usage errors (already reported)
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    if not hasattr(args, "run"):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.run(args) or 0)
    except BrokenPipeError:
        raise
    except (CommandError, ValueError, TypeError, ImportError, OSError, BackendUnavailableError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except MemoryError as exc:
        print(f"{prog}: error: not enough memory{f': {exc}' if str(exc) else ''}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
