"""backprop: neural networks trained by a hand-written, batched backward pass.

The same code runs on NumPy, CuPy, JAX and array_api_strict through the Python array API
standard; ``BACKPROP_BACKEND`` (or ``get_backend``) picks the backend.

The public API is what ``__all__`` lists; ``backprop.optim`` and ``backprop.callbacks`` are the
modules `backprop.core.optim` and `backprop.training.callbacks` under their public names, and
``backprop.sklearn`` holds the scikit-learn estimators (imported on first use).
"""

__version__ = "0.1.0"

import sys as _sys

from .backends import Backend, BackendUnavailableError, available_backends, get_backend, probe
from .core import optim
from .core.mlp import MLP, Intermediates, backward
from .gradcheck import GradCheckReport, check_gradients
from .training import callbacks
from .training.checkpoint import CheckpointError
from .training.trainer import Trainer, TrainingDivergedError

# `import backprop.optim` and `from backprop.callbacks import EarlyStopping` name the same modules
_sys.modules[__name__ + ".optim"] = optim
_sys.modules[__name__ + ".callbacks"] = callbacks

__all__ = [
    "MLP",
    "Backend",
    "BackendUnavailableError",
    "CheckpointError",
    "GradCheckReport",
    "Intermediates",
    "Trainer",
    "TrainingDivergedError",
    "__version__",
    "available_backends",
    "backward",
    "callbacks",
    "check_gradients",
    "get_backend",
    "optim",
    "probe",
]
