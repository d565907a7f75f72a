"""A session-wide tally of generated cases per entry point (printed by conftest at the end)."""

from __future__ import annotations

import collections

CASES: collections.Counter = collections.Counter()


def count_case(entry: str) -> None:
    CASES[entry] += 1
