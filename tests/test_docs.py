"""The documentation runs: every Python, shell and console block of README.md and docs/*.md.

Sybil (https://sybil.readthedocs.io) parses the Markdown.  Each document's blocks run in order in one
namespace, which its ``setup`` fills with tiny data (``X``, ``y``: the digits data set) and with
``GPU`` (whether CuPy has a GPU here); each document also gets its own temporary working directory,
so the files the examples write (checkpoints, figures) land there.

* ```` ```python ```` blocks run in that namespace.
* ```` ```bash ```` blocks run for real, as written, with ``bash -e -o pipefail`` in the working
  directory, as in a reader's shell: with the interpreter's ``bin`` first on ``PATH`` (``backprop``,
  ``python``) and without the ``BACKPROP_*`` variables of the test run.  The Python blocks, which run
  in this process, follow ``BACKPROP_BACKEND`` like the other tests.
* ```` ```console ```` blocks run each ``$ command`` and compare its output with the lines shown.
* ``<!-- invisible-code-block: python ... -->`` runs checks that the reader need not see.
* ``<!-- skip: next "reason" -->`` (Sybil's skip directive) skips the next block with that reason:
  blocks that install packages, need a GPU, run for minutes or start several processes.  A skip
  must say why, and ``skip: next if(not GPU, "reason")`` runs the block where a GPU is present.

pytest collects one test per block (the directives run just before the block they apply to), named
after the document and the block's first line.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import pytest

pytest.importorskip("sybil", reason="the documentation tests need sybil (the test extra)")

from sybil import Sybil  # noqa: E402
from sybil.evaluators.skip import Skipper  # noqa: E402
from sybil.parsers.markdown import CodeBlockParser, PythonCodeBlockParser, SkipParser  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = ["README.md", *sorted(path.relative_to(ROOT).as_posix() for path in ROOT.glob("docs/*.md"))]
SHELL_TIMEOUT = 300  # seconds per block; every block that runs takes a few seconds
WORKDIR = "_docs_workdir"  # the document's temporary working directory, in its namespace


@functools.cache
def _shell_env() -> dict:
    """The environment of the shell blocks: a reader's, so without the ``BACKPROP_*`` variables that
    a test run may set (the blocks set their own), with this interpreter's ``bin`` first on ``PATH``,
    and where the ``backprop`` command is not installed there (a source checkout on ``PYTHONPATH``),
    a ``backprop`` that runs ``python -m backprop``."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("BACKPROP_")}
    bin_dir = Path(sys.executable).parent
    path = [str(bin_dir), env.get("PATH", "")]
    if shutil.which("backprop", path=str(bin_dir)) is None or shutil.which("python", path=str(bin_dir)) is None:
        shims = Path(tempfile.mkdtemp(prefix="backprop-docs-bin-"))
        for name, command in (("backprop", f'"{sys.executable}" -m backprop'), ("python", f'"{sys.executable}"')):
            shim = shims / name
            shim.write_text(f'#!/bin/sh\nexec {command} "$@"\n')
            shim.chmod(0o755)
        path.insert(1, str(shims))
    env["PATH"] = os.pathsep.join(path)
    return env


def _run(command: str, example) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", command],
        cwd=example.namespace[WORKDIR],
        env=_shell_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=SHELL_TIMEOUT,
    )


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def evaluate_bash(example) -> str | None:
    """Run the block as written; a non-zero exit status fails it, with the end of its output."""
    result = _run(str(example.parsed), example)
    if result.returncode != 0:
        out, err = _tail(result.stdout), _tail(result.stderr)
        return f"exit status {result.returncode}\n--- stdout\n{out}\n--- stderr\n{err}"
    return None


def evaluate_console(example) -> str | None:
    """Run each ``$ command`` line and compare its standard output with the lines shown under it."""
    sessions: list[tuple[str, list[str]]] = []
    for line in str(example.parsed).splitlines():
        if line.startswith("$ "):
            sessions.append((line[2:], []))
        elif sessions:
            sessions[-1][1].append(line.rstrip())
        elif line.strip():
            return f"console output before the first '$ ' command: {line!r}"
    for command, shown in sessions:
        result = _run(command, example)
        if result.returncode != 0:
            return f"$ {command}\nexit status {result.returncode}\n--- stderr\n{_tail(result.stderr)}"
        got = [line.rstrip() for line in result.stdout.rstrip().splitlines()]
        while shown and not shown[-1]:
            shown.pop()
        if got != shown:
            return "$ {}\nexpected:\n{}\ngot:\n{}".format(command, "\n".join(shown), "\n".join(got))
    return None


def setup(namespace: dict) -> None:
    """Tiny data and a working directory for one document's examples."""
    from sklearn.datasets import load_digits

    from backprop.backends import probe

    X, y = load_digits(return_X_y=True)
    namespace.update(X=(X / 16).astype("float32"), y=y, GPU=probe("cupy").available)
    namespace[WORKDIR] = tempfile.mkdtemp(prefix="backprop-docs-")


def teardown(namespace: dict) -> None:
    shutil.rmtree(namespace.pop(WORKDIR), ignore_errors=True)


DOCS = Sybil(
    parsers=[
        PythonCodeBlockParser(),
        CodeBlockParser("bash", evaluate_bash),
        CodeBlockParser("console", evaluate_console),
        SkipParser(),
    ],
    patterns=DOCUMENTS,
    path=str(ROOT),
    setup=setup,
    teardown=teardown,
)
PARSED = {name: DOCS.parse(ROOT / name) for name in DOCUMENTS}


def _blocks():
    """One test per code block, with the skip directives before it, which run just before it."""
    for name, document in PARSED.items():
        directives = []
        for example in document.examples():
            if isinstance(example.region.evaluator, Skipper):
                directives.append(example)
                continue
            first = next((line.strip() for line in str(example.parsed).splitlines() if line.strip()), "")
            yield pytest.param(directives, example, id=f"{name}:{example.line}:{first[:40]}")
            directives = []


@pytest.fixture(scope="module")
def documents():
    """Set up each document before its first block runs, and tear them all down at the end."""
    started = {}

    def start(document):
        if document.path not in started:
            DOCS.setup(document.namespace)
            started[document.path] = document

    yield start
    for document in started.values():
        DOCS.teardown(document.namespace)


@pytest.mark.parametrize(("directives", "example"), list(_blocks()))
def test_block(directives, example, documents, monkeypatch):
    documents(example.document)
    monkeypatch.chdir(example.namespace[WORKDIR])
    for directive in directives:
        action, reason = directive.parsed
        assert reason or action == "end", f"line {directive.line}: 'skip: {action}' must say why the block is skipped"
        directive.evaluate()
    try:
        example.evaluate()
    except unittest.SkipTest as skip:  # Sybil's skip: report where in the docs, and why
        pytest.skip(f"{Path(example.path).relative_to(ROOT)}:{example.line}: {skip}")


FENCE = re.compile(r"^[ \t]*(?:`{3,}|~{3,})[ \t]*([^\s`]*)", re.MULTILINE)
RUN = {"python", "bash", "console"}  # the languages of the blocks above
SHOWN = {"", "text"}  # blocks that are not code: a file tree, text quoted verbatim


@pytest.mark.parametrize("name", DOCUMENTS)
def test_every_code_block_runs(name):
    """A fenced block in another language (``sh``, ``py``, ``pycon``...), or one whose info line the
    parsers do not read, would be silently left out: refuse it."""
    document = PARSED[name]
    languages = FENCE.findall(document.text)[::2]  # opening and closing fences alternate
    unknown = sorted(set(languages) - RUN - SHOWN)
    assert not unknown, f"{name}: blocks in {unknown} are not run by tests/test_docs.py; use one of {sorted(RUN)}"
    fenced = [
        example
        for example in document.examples()
        if not isinstance(example.region.evaluator, Skipper) and FENCE.match(document.text, example.start)
    ]
    assert len(fenced) == sum(language in RUN for language in languages)
