"""Draw the backward pass of a small network, step by step, as figures of the accumulated gradients.

One figure per step of the derivation (forward pass, loss layer, then for each layer from the top:
weights dW = Hᵀδ, biases db = Σᵢ δᵢ, hidden units dH = δWᵀ, the non-linearity dH ⊙ f′(Z)) and a
closing page with the matrix equations filled in, as SVG and PNG, plus an index.html that shows
them in order.  Every number comes from the library's own loss_and_grad(..., return_intermediates=True).

The network's weights and biases come from its seeded initialisation (scikit-learn's uniform
scheme, so the biases are not zero) rounded to 2 decimals, the inputs X are drawn uniformly in
[-1, 1] and rounded to 1 decimal, the targets y in [0, 1] (rounded to 1 decimal; 0/1 or class
labels for the cross-entropies): numbers a student can multiply by hand.  The default loss is
squared error with reduction "sum" and an identity output, so δ = ŷ − y: the classic derivation.

At most 8 units a layer, a batch of 4 and 6 weight layers.  Reads BACKPROP_BACKEND,
BACKPROP_DEVICE and BACKPROP_DTYPE like every other command.

example:  backprop diagram --out diagram/ && open diagram/index.html
"""

from __future__ import annotations

import numpy as np

from . import CommandError, positive_ints


def add_arguments(parser) -> None:
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="the folder to write the figures and index.html into"
    )
    parser.add_argument(
        "--layers", default="2,3,1", metavar="N,N,...", help="layer sizes: inputs, hidden..., outputs (default: 2,3,1)"
    )
    parser.add_argument("--batch", default=2, type=int, metavar="N", help="examples in the batch, 1-4 (default: 2)")
    parser.add_argument("--activation", default="sigmoid", help="the hidden layers' activation (default: sigmoid)")
    parser.add_argument(
        "--output-activation", default=None, help="squared_error only: the output activation (default: identity)"
    )
    parser.add_argument(
        "--loss", default="squared_error", help="squared_error (default), binary_cross_entropy or softmax_cross_entropy"
    )
    parser.add_argument("--reduction", default="sum", help='"sum" (default: δ = ŷ − y) or "mean" (δ = (ŷ − y)/n)')
    parser.add_argument("--alpha", default=0.0, type=float, help="L2 penalty (default: 0)")
    parser.add_argument("--seed", default=0, type=int, help="seed of the weights and the batch (default: 0)")
    parser.add_argument("--format", default="svg,png", metavar="FMT[,FMT]", help="svg, png or svg,png (default)")
    parser.add_argument("--dpi", default=100, type=int, help="resolution of the PNGs (default: 100)")


def parse_layers(text: str) -> tuple[int, ...]:
    """ "2,3,1" → (2, 3, 1); a CommandError for anything else."""
    return tuple(positive_ints(text, "--layers", "2,3,1", what="at least two positive integers", minimum=2))


def example(
    layers=(2, 3, 1),
    batch: int = 2,
    activation: str = "sigmoid",
    loss: str = "squared_error",
    reduction: str = "sum",
    seed: int = 0,
    output_activation: str | None = None,
    alpha: float = 0.0,
    backend=None,
):
    """The network, parameters and batch that ``backprop diagram`` draws: ``(model, params, X, y)``.

    Weights and biases: the seeded scikit-learn-style initialisation rounded to 2 decimals; X
    uniform in [−1, 1] rounded to 1 decimal; y uniform in [0, 1] rounded to 1 decimal (0/1 for
    binary_cross_entropy, integer labels for softmax_cross_entropy).
    """
    from ..backends import get_backend
    from ..core.mlp import MLP
    from ..diagram import check_limits

    sizes = tuple(layers)
    check_limits(sizes, batch)
    backend = get_backend(backend)
    model = MLP(
        sizes,
        activation=activation,
        output_activation=output_activation,
        loss=loss,
        alpha=alpha,
        reduction=reduction,
        init="sklearn",
    )
    params = tuple(
        (backend.asarray(np.round(backend.to_numpy(W), 2)), backend.asarray(np.round(backend.to_numpy(b), 2)))
        for W, b in model.init(seed, backend)
    )
    rng = np.random.default_rng([seed, 1])
    X = np.round(rng.uniform(-1.0, 1.0, (batch, sizes[0])), 1)
    k = sizes[-1]
    if model.loss_layer.name == "squared_error":
        y = np.round(rng.uniform(0.0, 1.0, (batch, k)), 1)
    elif model.loss_layer.name == "binary_cross_entropy":
        y = rng.integers(0, 2, (batch, k)).astype(np.float64)
    else:
        y = rng.integers(0, k, batch)
    return model, params, X, y


def run(args) -> int:
    from ..diagram import FORMATS, draw

    sizes = parse_layers(args.layers)
    if args.batch < 1:
        raise CommandError(f"--batch must be at least 1, got {args.batch}")
    formats = tuple(f.strip().lower() for f in str(args.format).split(",") if f.strip())
    if not formats or any(f not in FORMATS for f in formats):
        raise CommandError(f"--format must be svg, png or svg,png; got {args.format!r}")
    if not 10 <= args.dpi <= 600:
        raise CommandError(f"--dpi must be between 10 and 600, got {args.dpi}")
    if args.reduction not in ("sum", "mean"):
        raise CommandError(f'--reduction must be "sum" or "mean", got {args.reduction!r}')
    model, params, X, y = example(
        sizes, args.batch, args.activation, args.loss, args.reduction, args.seed, args.output_activation, args.alpha
    )
    result = draw(model, params, X, y, args.out, formats=formats, dpi=args.dpi)
    print(f"wrote {len(result.pages)} figures ({', '.join(formats)}) to {result.out_dir}")
    print(f"open {result.index}")
    return 0
