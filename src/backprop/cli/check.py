"""Check the hand-written gradients against jax.grad (float64) on random architectures.

Runs on the selected backend (--backend, or BACKPROP_BACKEND) for every activation and loss,
prints one row per architecture and exits with code 1 if any gradient disagrees.  On the torch
backend every architecture is also checked against torch.autograd (a second, independent oracle,
its own column).
"""

from __future__ import annotations

import numpy as np


def add_arguments(parser) -> None:
    parser.add_argument("--backend", help="backend to check (default: $BACKPROP_BACKEND or numpy)")
    parser.add_argument("--dtype", default="float64", help="float64 (default, rtol 1e-10) or float32 (rtol 1e-4)")
    parser.add_argument("--cases", type=int, default=18, help="number of random architectures (default 18)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the architectures and data")


def random_case(rng: np.random.Generator, index: int):
    """A random (model, X, y): depth 0-3 hidden layers, widths 1-16, batch 1-16, cycling activations and losses."""
    from ..core.activations import ACTIVATIONS
    from ..core.losses import LOSSES
    from ..core.mlp import MLP

    activation = sorted(ACTIVATIONS)[index % len(ACTIVATIONS)]
    loss = LOSSES[index % len(LOSSES)]
    n_out = int(rng.integers(2, 6)) if loss == "softmax_cross_entropy" else int(rng.integers(1, 6))
    sizes = [int(rng.integers(1, 17)) for _ in range(int(rng.integers(0, 4)) + 1)] + [n_out]
    batch = int(rng.integers(1, 17))
    model = MLP(
        sizes,
        activation=activation,
        loss=loss,
        alpha=float(rng.choice([0.0, 0.1])),
        reduction=str(rng.choice(["mean", "sum"])),
    )
    X = rng.normal(size=(batch, sizes[0]))
    if loss == "softmax_cross_entropy":
        y = rng.integers(0, n_out, size=batch)
    elif loss == "binary_cross_entropy":
        y = rng.uniform(size=(batch, n_out))
    else:
        y = rng.normal(size=(batch, n_out))
    return model, X, y


def run(args) -> int:
    from ..backends import get_backend
    from ..gradcheck import check_gradients
    from . import CommandError

    if args.cases < 1:
        raise CommandError(f"--cases must be >= 1, got {args.cases}")
    backend = get_backend(args.backend, dtype=args.dtype)
    references = ("jax", "torch") if backend.name == "torch" else ("jax",)
    oracles = " and ".join({"jax": "jax.grad", "torch": "torch.autograd"}[r] for r in references)
    rng = np.random.default_rng(args.seed)
    where = f"{backend.name} ({backend.device_name}, {backend.dtype_name})"
    print(f"gradient check on {where} against {oracles} in float64")
    width = 13 if len(references) == 1 else 15
    columns = "".join(f"{'rel err ' + r if len(references) > 1 else 'max rel err':>{width}}" for r in references)
    print(f"{'layers':<22}{'activation':<12}{'loss':<23}{'batch':>6}{columns}  result")
    failures = 0
    for i in range(args.cases):
        model, X, y = random_case(rng, i)
        params = model.init(seed=i, backend=backend)
        reports = [check_gradients(model, params, X, y, reference=r) for r in references]
        report = reports[0]
        passed = all(r.passed for r in reports)
        failures += not passed
        errors = "".join(f"{r.max_rel_error:>{width}.2e}" for r in reports)
        print(
            f"{str(list(model.layer_sizes)):<22}{model.activation.name:<12}{model.loss_layer.name:<23}"
            f"{len(X):>6}{errors}  {'ok' if passed else 'MISMATCH'}"
        )
    print(f"{args.cases - failures}/{args.cases} architectures agree (rtol {report.rtol:g})")
    return 1 if failures else 0
