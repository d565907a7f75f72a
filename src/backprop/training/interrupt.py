"""Ctrl-C between steps, never inside one: the guard every loop that runs training steps holds."""

from __future__ import annotations

import contextlib
import signal
import threading


@contextlib.contextmanager
def deferred_interrupt():
    """Within the block, Ctrl-C (SIGINT) only sets a flag, read through the yielded ``interrupted()``.

    The trainer raises KeyboardInterrupt between steps, so no step is cut in half (the fused
    step's buffers are written in place; JAX's are donated).  Outside the main thread, or when
    SIGINT has a handler other than Python's default, nothing changes and ``interrupted()`` is False.
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield lambda: False
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield lambda: bool(received)
    finally:
        signal.signal(signal.SIGINT, previous)
