"""Shared fixtures: every backend test runs once per installed backend.

``BACKPROP_BACKEND`` narrows the run to one backend (the GPU check script uses it); a backend
that cannot run here (CuPy without a GPU) is skipped with the probe's reason.
"""

from __future__ import annotations

import os

import pytest

from backprop.backends import BACKENDS, get_backend, probe

SELECTED = [os.environ["BACKPROP_BACKEND"]] if os.environ.get("BACKPROP_BACKEND") else list(BACKENDS)


@pytest.fixture(params=SELECTED)
def backend_name(request) -> str:
    """The name of each selected backend, skipped with its reason where unusable."""
    found = probe(request.param)
    if not found.available:
        pytest.skip(found.reason)
    return request.param


@pytest.fixture
def backend(backend_name):
    """The backend in float32 (the library's default dtype)."""
    return get_backend(backend_name, dtype="float32")


@pytest.fixture
def backend64(backend_name):
    """The backend in float64."""
    return get_backend(backend_name, dtype="float64")
