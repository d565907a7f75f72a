"""JAX (CPU, GPU or TPU) through ``jax.numpy``, which implements the array API standard.

float64 switches on JAX's x64 mode (``jax_enable_x64``) and checks that it took effect, so a
float64 backend never silently computes in float32.
"""

from __future__ import annotations

import os

import numpy as np

from ._base import Backend, parse_device

PACKAGE = "jax"
PRECISIONS = ("default", "tf32", "highest")


def probe() -> str | None:
    try:
        import jax  # noqa: F401
    except ImportError:
        return 'JAX is not installed: pip install "backprop[jax]"'
    return None


def _enable_float64(jax, jnp) -> None:
    jax.config.update("jax_enable_x64", True)
    if jnp.zeros(1, dtype=jnp.float64).dtype != np.float64:
        raise RuntimeError("JAX could not be switched to float64 (jax_enable_x64 did not take effect)")


def _device(jax, name: str | None):
    if name is None:
        return jax.devices()[0]
    kind, index = parse_device(name, ("cpu", "gpu", "tpu"), "jax")
    try:
        found = jax.devices(kind)
    except RuntimeError:
        have = sorted({d.platform for d in jax.devices()})
        raise ValueError(f"JAX has no {kind!r} devices here; available platforms: {', '.join(have)}") from None
    if index >= len(found):
        raise ValueError(f"device '{kind}:{index}' does not exist: JAX sees {len(found)} {kind} device(s)")
    return found[index]


def matmul_precision() -> str:
    """The matmul precision from ``BACKPROP_MATMUL_PRECISION`` (default, tf32 or highest)."""
    value = os.environ.get("BACKPROP_MATMUL_PRECISION", "default").strip().lower() or "default"
    if value not in PRECISIONS:
        raise ValueError(f"unknown BACKPROP_MATMUL_PRECISION {value!r}; valid values: {', '.join(PRECISIONS)}")
    return value


UNROLL = {"cpu": 1}  # steps per iteration of a compiled epoch's loop, by platform; others: UNROLL_ACCELERATOR
UNROLL_ACCELERATOR = 32


def epoch_unroll(platform: str) -> int:
    """How many steps one iteration of a compiled epoch's ``lax.scan`` runs (its ``unroll``):
    ``BACKPROP_EPOCH_UNROLL``, else 1 on a CPU and 32 on a GPU or TPU.  On a GPU every iteration
    of XLA's loop returns to the host to test its condition, so several steps per iteration pay
    that once; on a CPU, XLA compiles a loop of one plain step into less work than an unrolled
    one (measurements: docs/benchmarks.md)."""
    value = os.environ.get("BACKPROP_EPOCH_UNROLL", "").strip()
    if not value:
        return UNROLL.get(platform, UNROLL_ACCELERATOR)
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"BACKPROP_EPOCH_UNROLL must be a whole number >= 1, got {value!r}")
    return int(value)


def load(device: str | None, dtype: str) -> Backend:
    import jax
    import jax.numpy as jnp

    if dtype == "float64":
        _enable_float64(jax, jnp)
    precision = matmul_precision()
    if precision != "default":
        jax.config.update("jax_default_matmul_precision", precision)
    dev = _device(jax, device)

    def synchronize(*arrays):
        jax.block_until_ready(arrays)

    def select(pred, if_true, if_false):
        return jax.tree_util.tree_map(lambda a, b: jnp.where(pred, a, b), if_true, if_false)

    def specialize(fn, *args, **kwargs):  # a function jax.jit made (it lowers), else None
        return fn.lower(*args, **kwargs).compile() if hasattr(fn, "lower") else None

    return Backend(
        name="jax",
        xp=jnp,
        device=dev,
        device_name=f"{dev.platform}:{dev.id}",
        dtype=getattr(jnp, dtype),
        dtype_name=dtype,
        array_type=jax.Array,
        _to_device=lambda host, device: jax.device_put(host, device),
        _to_numpy=lambda x: np.asarray(jax.device_get(x)),
        _jit=jax.jit,
        _synchronize=synchronize,
        _select=select,
        _specialize=specialize,
        _move=jax.device_put,  # jnp.asarray(x, device=...) refuses an array committed to another device
    )


def devices() -> list[str]:
    import jax

    return [f"{d.platform}:{d.id}" for d in jax.devices()]
