"""backprop: neural networks trained by a hand-written, batched backward pass.

The same code runs on NumPy, CuPy, JAX and array_api_strict through the Python array API
standard; ``BACKPROP_BACKEND`` (or ``get_backend``) picks the backend.
"""

__version__ = "0.1.0"

from .backends import Backend, BackendUnavailableError, available_backends, get_backend, probe
from .gradcheck import GradCheckReport, check_gradients
from .mlp import MLP, Intermediates, backward

__all__ = [
    "MLP",
    "Backend",
    "BackendUnavailableError",
    "GradCheckReport",
    "Intermediates",
    "__version__",
    "available_backends",
    "backward",
    "check_gradients",
    "get_backend",
    "probe",
]
