"""Shared fixtures: every backend test runs once per installed backend.

``BACKPROP_BACKEND`` narrows the run to one backend (the GPU check script uses it); a backend
that cannot run here (CuPy without a GPU) is skipped with the probe's reason.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

from backprop.backends import BACKENDS, get_backend, probe

# CI runs the property tests with a fixed seed sequence, so a run is repeatable; locally they explore.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

SELECTED = [os.environ["BACKPROP_BACKEND"]] if os.environ.get("BACKPROP_BACKEND") else list(BACKENDS)
# BACKPROP_BACKEND names the default backend too: where it cannot run here, so can no test of the default
_DEFAULT = probe(SELECTED[0]) if len(SELECTED) == 1 and SELECTED[0] in BACKENDS else None


@pytest.fixture(autouse=True)
def _default_backend_usable(request):
    """Skip, with the probe's reason, every test when BACKPROP_BACKEND names a backend that cannot
    run here (CuPy without CuPy or a GPU): the tests that use the default backend would fail with
    its ImportError, and those parametrized by backend skip anyway."""
    if _DEFAULT is not None and not _DEFAULT.available:
        pytest.skip(f"BACKPROP_BACKEND={_DEFAULT.name}: {_DEFAULT.reason}")


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


def pytest_terminal_summary(terminalreporter):
    """Report how many generated bad-input cases each entry point was given."""
    from _counts import CASES

    if CASES:
        terminalreporter.section("generated bad-input cases")
        for entry, count in sorted(CASES.items()):
            terminalreporter.write_line(f"{entry:<32}{count:>6}")
        terminalreporter.write_line(f"{'total':<32}{sum(CASES.values()):>6}")


@pytest.fixture(scope="session")
def blobs():
    """Three standardised blobs, 120 rows of 5 features (the estimator tests' classification data)."""
    from sklearn.datasets import make_blobs
    from sklearn.preprocessing import StandardScaler

    X, y = make_blobs(n_samples=120, centers=3, n_features=5, random_state=0)
    return StandardScaler().fit_transform(X), y
