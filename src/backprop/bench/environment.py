"""The machine a benchmark runs on: devices, matmul precision, threads, versions, BLAS, load."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform

from .. import __version__
from ..backends import Backend
from ..backends.jax import matmul_precision
from ..backends.numpy import blas_info

ENV_VARS = (
    "BACKPROP_BACKEND",
    "BACKPROP_DEVICE",
    "BACKPROP_MATMUL_PRECISION",
    "BACKPROP_BLAS_THREADS",
    "CUPY_TF32",
    "NVIDIA_TF32_OVERRIDE",
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_CORETYPE",
    "XLA_FLAGS",
    "XLA_PYTHON_CLIENT_PREALLOCATE",
    "CUDA_VISIBLE_DEVICES",
)
VERSIONED = (
    "numpy",
    "jax",
    "jaxlib",
    "jax-cuda12-plugin",
    "jax-cuda13-plugin",
    "cupy",
    "cupy-cuda12x",
    "cupy-cuda13x",
    "torch",
    "array-api-compat",
    "array-api-strict",
    "threadpoolctl",
    "pytest-benchmark",
)


def is_gpu(backend: Backend) -> bool:
    """Whether the backend computes on a GPU."""
    return backend.device_name.split(":")[0] in ("gpu", "cuda", "rocm", "mps")


def effective_matmul_precision(backend: Backend) -> str:
    """What float32 matrix products really compute in on this backend: "float32" or "tf32".

    JAX on a GPU rounds float32 products to TF32 unless BACKPROP_MATMUL_PRECISION=highest
    (its "default" precision leans to speed); CuPy computes in full float32 unless CUPY_TF32=1;
    torch in full float32 unless its own setting allows TF32; CPUs compute in float32.
    """
    if not is_gpu(backend):
        return "float32"
    if backend.name == "jax":
        return "float32" if matmul_precision() == "highest" else "tf32"
    if backend.name == "torch":
        import torch

        matmul = torch.backends.cuda.matmul
        tf32 = getattr(matmul, "fp32_precision", None) == "tf32" or getattr(matmul, "allow_tf32", False)
        return "tf32" if backend.device.type == "cuda" and tf32 else "float32"
    return "tf32" if os.environ.get("CUPY_TF32", "0").strip() not in ("", "0") else "float32"


def usable_cpus() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def cpu_threads() -> int:
    """The BLAS thread count NumPy uses (threadpoolctl), else `usable_cpus`."""
    try:
        threads = [lib["num_threads"] for lib in blas_info() if lib.get("num_threads")]
    except Exception:  # threadpoolctl missing or broken
        threads = []
    return int(threads[0]) if threads else usable_cpus()


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list | None:
    """The 1, 5 and 15 minute load averages (other work on the machine skews every number)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def device_description(backend: Backend) -> dict:
    """The backend's device in words: name, kind (CPU model or GPU name) and matmul precision."""
    entry = {
        "backend": backend.name,
        "device": backend.device_name,
        "dtype": backend.dtype_name,
        "matmul": effective_matmul_precision(backend),
    }
    if backend.name == "cupy":
        entry.update(_cuda_device(int(backend.device_name.split(":")[1])))
    elif backend.name == "torch":
        import torch

        cuda = backend.device.type == "cuda"
        entry["kind"] = torch.cuda.get_device_name(backend.device) if cuda else cpu_model()
        if not cuda:
            entry["threads"] = torch.get_num_threads()  # torch's intra-op threads, not NumPy's BLAS
    elif backend.name == "jax" and backend.device.platform != "cpu":
        entry["kind"] = str(getattr(backend.device, "device_kind", backend.device.platform))
    else:
        entry["kind"] = cpu_model()
        entry["threads"] = cpu_threads() if backend.name != "jax" else os.cpu_count()
    return entry


def _cuda_device(index: int) -> dict:
    """The GPU's name and the CUDA runtime and driver versions, from CuPy."""
    import cupy

    name = cupy.cuda.runtime.getDeviceProperties(index)["name"]
    return {
        "kind": name.decode() if isinstance(name, bytes) else str(name),
        "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(),
        "cuda_driver": cupy.cuda.runtime.driverGetVersion(),
    }


def environment() -> dict:
    """Date, host, versions, BLAS (threadpoolctl: library, kernel, threads), environment variables."""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": {
            "hostname": platform.node(),
            "platform": platform.platform(),
            "machine": platform.machine(),
            "cpu": cpu_model(),
            "cpu_count": os.cpu_count(),
            "cpus_usable": usable_cpus(),
            "load_average": load_average(),
        },
        "versions": {
            "backprop": __version__,
            "python": platform.python_version(),
            **{dist: _version(dist) for dist in VERSIONED},
        },
        "blas": _blas(),
        "matmul_precision": matmul_precision(),
        "environment": {k: os.environ.get(k) for k in ENV_VARS},
    }


def _blas() -> list[dict]:
    """`blas_info`, or one entry saying why it failed (threadpoolctl missing or broken): never raises."""
    try:
        return blas_info()
    except Exception as exc:
        return [{"error": f"{type(exc).__name__}: {exc}"}]


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None
