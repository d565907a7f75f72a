"""The memory of a step: what it needs, what it takes at its peak, and giving cached memory back."""

from __future__ import annotations

import gc
import sys
import tracemalloc
from collections.abc import Sequence

from ..backends import Backend


def release_memory(backend: Backend | None = None) -> None:
    """Collect garbage and empty the CuPy and torch CUDA caches (so cells do not starve each other)."""
    gc.collect()
    if backend is not None and backend.name == "cupy":
        _cupy_pool().free_all_blocks()
    torch = sys.modules.get("torch")  # only when already imported: never import torch here
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def needed_bytes(layer_sizes: Sequence[int], batch: int, state_bytes: int, itemsize: int = 4) -> int:
    """What a training step cannot do without: parameters + gradients + the optimizer state
    (``state_bytes``) + one batch's activations (H_0 and Y, then Z_l and H_(l+1) for every layer;
    δ_l can be written over Z_l)."""
    sizes = list(layer_sizes)
    params = sum((fan_in + 1) * fan_out for fan_in, fan_out in zip(sizes[:-1], sizes[1:]))
    activations = batch * (sizes[0] + 2 * sum(sizes[1:-1]) + 2 * sizes[-1])
    return itemsize * (2 * params + activations) + state_bytes


class StepMemory:
    """The peak memory of a step on the backend's device, counting everything allocated since this
    object was made that is still held: NumPy through tracemalloc (NumPy reports its buffers to
    it), CuPy through its memory pool, which keeps the blocks freed during a step, so its size
    after the step bounds the step's peak.  On JAX `peak` is None: XLA's peak statistic counts
    from the start of the process, not per step."""

    def __init__(self, backend: Backend):
        self.kind = {"numpy": "tracemalloc", "cupy": "cupy memory pool"}.get(backend.name)
        self._tracing = self.kind == "tracemalloc" and not tracemalloc.is_tracing()
        if self._tracing:
            tracemalloc.start()
        release_memory(backend)

    def settle(self) -> None:
        """Forget what the set-up freed (initial parameters copied into the step's buffers)."""
        gc.collect()
        if self.kind == "tracemalloc":
            tracemalloc.reset_peak()
        elif self.kind is not None:
            _cupy_pool().free_all_blocks()

    def peak(self) -> int | None:
        """The peak since `settle`."""
        if self.kind == "tracemalloc":
            return tracemalloc.get_traced_memory()[1]
        if self.kind is not None:
            return int(_cupy_pool().total_bytes())
        return None

    def stop(self) -> None:
        """Stop tracing, if this object started it (also when building or stepping failed)."""
        if self._tracing:
            tracemalloc.stop()
            self._tracing = False


def _cupy_pool():
    import cupy

    return cupy.get_default_memory_pool()
