"""The gradient diagrams: every number drawn is checked against the library's own gradients.

The SVGs keep their text as <text> elements inside groups whose ids say what each number is
(see `backprop.diagram`); the tests parse them with xml.etree and compare each label, to the 4
significant digits drawn, with ``loss_and_grad(..., return_intermediates=True)``.  The per-example
contributions drawn on the arrows must add up to the drawn sums.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from backprop import MLP, get_backend  # noqa: E402
from backprop.backends import to_host  # noqa: E402
from backprop.cli import main  # noqa: E402
from backprop.cli.diagram import example  # noqa: E402
from backprop.diagram import MAX_BATCH, MAX_UNITS, check_limits, collect, draw, fmt, parse_number  # noqa: E402

SVG = "{http://www.w3.org/2000/svg}"
RTOL = 5.01e-4  # 4 significant digits


def labels(path: Path) -> dict[str, str]:
    """{group id: text} for every <text> that sits in a group with an id."""
    out = {}
    for g in ET.parse(path).getroot().iter(f"{SVG}g"):
        text = g.find(f"{SVG}text")
        if g.get("id") and text is not None:
            out[g.get("id")] = "".join(text.itertext())
    return out


def numbers(path: Path, pattern: str) -> dict[str, float]:
    """The numeric labels whose id matches ``pattern`` (a regular expression)."""
    found = {k: parse_number(v) for k, v in labels(path).items() if re.fullmatch(pattern, k)}
    assert found, f"no label matching {pattern!r} in {path.name}"
    return found


def agrees(drawn: float, value: float) -> bool:
    return math.isclose(drawn, float(value), rel_tol=RTOL, abs_tol=1e-12)


def assert_labels(lab: dict[str, str], gid: str, value) -> None:
    assert gid in lab, f"label {gid} is missing"
    drawn = parse_number(lab[gid])
    assert agrees(drawn, value), f"{gid}: drawn {lab[gid]}, library {value}"


def assert_sum(terms: list[float], total: float) -> None:
    """The drawn terms add up to the drawn sum, within the rounding of 4 significant digits."""
    slack = RTOL * (sum(abs(t) for t in terms) + abs(total)) + 1e-12
    assert abs(sum(terms) - total) <= slack, f"{terms} do not add up to {total}"


def host(a):
    return None if a is None else np.asarray(to_host(a), dtype=np.float64)


def check_diagram(out: Path, model, params, X, y) -> None:
    """Every page's labels against a fresh ``loss_and_grad`` of the library."""
    loss, grads, inter = model.loss_and_grad(params, X, y, return_intermediates=True)
    H = [host(h) for h in inter.H]
    Z = [host(z) for z in inter.Z]
    D = [host(d) for d in inter.delta]
    dH = [host(d) for d in inter.dH]
    dW = [host(g[0]) for g in grads]
    db = [host(g[1]) for g in grads]
    W = [host(p[0]) for p in params]
    b = [host(p[1]) for p in params]
    Y = host(model.prepare(params, X, y)[2])
    L, n = model.n_layers, H[0].shape[0]
    scale = model.scale(n)
    svgs = sorted(out.glob("*.svg"))
    pages = {p.stem.split("-", 1)[1]: p for p in svgs}
    expected = ["forward", "loss"]
    for l in reversed(range(L)):
        expected += [f"weights-{l}", f"biases-{l}"] + ([f"hidden-{l}", f"activation-{l}"] if l else [])
    assert [p.stem.split("-", 1)[1] for p in svgs] == expected + ["equations"]

    # 0. forward pass: every unit per example, the targets and the parameters.
    lab = labels(pages["forward"])
    for k in range(L + 1):
        for (i, a), v in np.ndenumerate(H[k]):
            assert_labels(lab, f"H{k}_{i}_{a}", v)
    for (i, k), v in np.ndenumerate(Y):
        assert_labels(lab, f"y_{i}_{k}", v)
    for l in range(L):
        for (a, c), v in np.ndenumerate(W[l]):
            assert_labels(lab, f"W{l}_{a}_{c}", v)
        for c, v in enumerate(b[l]):
            assert_labels(lab, f"b{l}_0_{c}", v)

    # 1. the loss layer.
    lab = labels(pages["loss"])
    assert_labels(lab, "loss", host(loss))
    for (i, k), v in np.ndenumerate(D[L - 1]):
        assert_labels(lab, f"delta{L - 1}_{i}_{k}", v)
        assert_labels(lab, f"Yhat_{i}_{k}", H[L][i, k])
        assert_labels(lab, f"Ytarget_{i}_{k}", Y[i, k])
    if dH[L] is not None and model.loss_layer.activation.name != "identity":
        for (i, k), v in np.ndenumerate(dH[L]):
            assert_labels(lab, f"dYhat_{i}_{k}", v)
            assert agrees(v, scale * (H[L][i, k] - Y[i, k]))
            assert_labels(lab, f"fprimeY_{i}_{k}", D[L - 1][i, k] / v)

    for l in reversed(range(L)):
        # 2. weights: one arrow per example into every weight, and their sum dW = Hᵀδ.
        lab = labels(pages[f"weights-{l}"])
        for (i, c), v in np.ndenumerate(D[l]):
            assert_labels(lab, f"delta{l}_{i}_{c}", v)
        for (i, a), v in np.ndenumerate(H[l]):
            assert_labels(lab, f"H{l}_{i}_{a}", v)
        for (a, c), total in np.ndenumerate(dW[l]):
            assert_labels(lab, f"dW{l}_{a}_{c}", total)
            terms = []
            for i in range(n):
                gid = f"dW{l}_{a}_{c}_ex{i}"
                assert_labels(lab, gid, H[l][i, a] * D[l][i, c])
                terms.append(parse_number(lab[gid]))
            if model.alpha:
                assert_labels(lab, f"dW{l}_{a}_{c}_l2", model.alpha * scale * W[l][a, c])
                terms.append(parse_number(lab[f"dW{l}_{a}_{c}_l2"]))
            assert_sum(terms, parse_number(lab[f"dW{l}_{a}_{c}"]))

        # 3. biases: db = column sums of δ.
        lab = labels(pages[f"biases-{l}"])
        for c, total in enumerate(db[l]):
            assert_labels(lab, f"db{l}_{c}", total)
            terms = [parse_number(lab[f"db{l}_{c}_ex{i}"]) for i in range(n)]
            for i in range(n):
                assert_labels(lab, f"db{l}_{c}_ex{i}", D[l][i, c])
            assert_sum(terms, parse_number(lab[f"db{l}_{c}"]))
        if l == 0:
            continue

        # 4. hidden units: dH = δWᵀ, per example, arrows δ·w from every unit above.
        lab = labels(pages[f"hidden-{l}"])
        for (i, a), total in np.ndenumerate(dH[l]):
            assert_labels(lab, f"dH{l}_{i}_{a}", total)
            terms = []
            for c in range(W[l].shape[1]):
                gid = f"dH{l}_{i}_{a}_from{c}"
                assert_labels(lab, gid, D[l][i, c] * W[l][a, c])
                terms.append(parse_number(lab[gid]))
            assert_sum(terms, parse_number(lab[f"dH{l}_{i}_{a}"]))
        for (i, c), v in np.ndenumerate(D[l]):
            assert_labels(lab, f"delta{l}_{i}_{c}", v)

        # 5. through the non-linearity: δ_{l−1} = dH_l ⊙ f′(Z_{l−1}).
        lab = labels(pages[f"activation-{l}"])
        for (i, a), v in np.ndenumerate(D[l - 1]):
            assert_labels(lab, f"delta{l - 1}_{i}_{a}", v)
            assert_labels(lab, f"dH{l}_{i}_{a}", dH[l][i, a])
            assert_labels(lab, f"Z{l - 1}_{i}_{a}", Z[l - 1][i, a])
            if dH[l][i, a] != 0:
                assert_labels(lab, f"fprime{l}_{i}_{a}", v / dH[l][i, a])
            drawn = parse_number(lab[f"dH{l}_{i}_{a}"]) * parse_number(lab[f"fprime{l}_{i}_{a}"])
            assert math.isclose(drawn, parse_number(lab[f"delta{l - 1}_{i}_{a}"]), rel_tol=2e-3, abs_tol=1e-12)

    # The closing page: the matrix equations filled in.
    lab = labels(pages["equations"])
    for l in range(L):
        for (a, c), v in np.ndenumerate(dW[l]):
            assert_labels(lab, f"eq-dW{l}_{a}_{c}", v)
        for c, v in enumerate(db[l]):
            assert_labels(lab, f"eq-db{l}_0_{c}", v)
        for (i, c), v in np.ndenumerate(D[l]):
            assert_labels(lab, f"eq-delta{l}_{i}_{c}", v)
        if l:
            for (i, a), v in np.ndenumerate(dH[l]):
                assert_labels(lab, f"eq-dH{l}_{i}_{a}", v)


def check_files(out: Path, formats=("svg", "png")) -> list[str]:
    """The figures exist in every format and index.html shows the SVGs in order, by relative links."""
    stems = sorted(p.stem for p in out.glob("*.svg")) or sorted(p.stem for p in out.glob("*.png"))
    assert stems
    for stem in stems:
        for f in formats:
            path = out / f"{stem}.{f}"
            assert path.stat().st_size > 1000, path
        if "png" in formats:
            assert (out / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "index.html").read_text(encoding="utf-8")
    shown = re.findall(r'<img src="([^"]+)"', page)
    assert shown == [f"{stem}.{formats[0]}" for stem in stems]
    assert "http" not in page and "<script" not in page
    return stems


@pytest.fixture(scope="module")
def cli_default(tmp_path_factory):
    """``backprop diagram --out DIR`` with every default, run once for the module."""
    out = tmp_path_factory.mktemp("diagram-default")
    return main(["diagram", "--out", str(out)]), out


def test_cli_default_writes_every_step(cli_default, capsys):
    rc, out = cli_default
    assert rc == 0
    stems = check_files(out)
    assert len(stems) == 9  # forward, loss, 4 steps of layer 1, weights and biases of layer 0, equations
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "dW₁ = H₁ᵀ δ₁" in page and "δ₀ = dH₁ ⊙ f′(Z₀)" in page


def test_cli_default_labels_are_the_library_gradients(cli_default):
    _, out = cli_default
    model, params, X, y = example()  # what the command draws by default
    assert model.config["layer_sizes"] == [2, 3, 1] and model.activation.name == "sigmoid"
    assert model.reduction == "sum" and model.loss_layer.name == "squared_error"
    check_diagram(out, model, params, X, y)


def test_three_layer_network_labels(tmp_path):
    """3-4-3-2 tanh, batch 3, mean reduction with an L2 penalty, through the API."""
    model = MLP((3, 4, 3, 2), activation="tanh", reduction="mean", alpha=0.01)
    params = model.init(1, get_backend("numpy"))
    rng = np.random.default_rng(3)
    X, y = rng.uniform(-1, 1, (3, 3)), rng.uniform(-1, 1, (3, 2))
    result = draw(model, params, X, y, tmp_path / "d", formats=("svg",))
    assert result.index == tmp_path / "d" / "index.html"
    assert [p.key for p in result.pages][:3] == ["00-forward", "01-loss", "02-weights-2"]
    assert len(check_files(tmp_path / "d", ("svg",))) == 13
    check_diagram(tmp_path / "d", model, params, X, y)


@pytest.mark.parametrize(
    "kwargs, y",
    [
        (dict(layer_sizes=(2, 3), loss="softmax_cross_entropy"), np.array([2, 0])),
        (dict(layer_sizes=(2, 2), output_activation="sigmoid", reduction="sum"), np.array([[0.2, 0.9], [0.5, 0.1]])),
    ],
    ids=["softmax-cross-entropy", "sigmoid-output"],
)
def test_single_layer_losses(tmp_path, kwargs, y):
    model = MLP(activation="relu", init="sklearn", **kwargs)
    params = model.init(0, get_backend("numpy", dtype="float64"))
    X = np.array([[0.5, -0.3], [0.1, 0.8]])
    draw(model, params, X, y, tmp_path, formats=("svg",))
    assert len(check_files(tmp_path, ("svg",))) == 5
    check_diagram(tmp_path, model, params, X, y)


def test_collect_on_every_backend(backend_name):
    """The numbers drawn are the same on every backend (no drawing: cheap)."""
    nb = {}
    for name in ("numpy", backend_name):
        model, params, X, y = example((2, 3, 2), 3, "tanh", backend=get_backend(name, dtype="float64"))
        nb[name] = collect(model, params, X, y)
    a, b = nb["numpy"], nb[backend_name]
    for field in ("dW", "db", "contrib", "terms", "fprime", "delta"):
        for u, v in zip(getattr(a, field), getattr(b, field)):
            if u is not None:
                np.testing.assert_allclose(v, u, rtol=1e-10, atol=1e-12)


def test_too_large_networks_and_batches_are_refused(tmp_path):
    model = MLP((2, MAX_UNITS + 1, 1))
    params = model.init(0)
    with pytest.raises(ValueError, match=rf"{MAX_UNITS} units a layer, a batch of {MAX_BATCH}"):
        draw(model, params, np.zeros((2, 2)), np.zeros((2, 1)), tmp_path / "big")
    assert not (tmp_path / "big").exists()
    model = MLP((2, 3, 1))
    with pytest.raises(ValueError, match=r"batch has 5 examples.*limits"):
        draw(model, model.init(0), np.zeros((5, 2)), np.zeros((5, 1)), tmp_path / "big")
    with pytest.raises(ValueError, match=r"7 weight layers"):
        check_limits((2,) * 8, 1)
    check_limits((MAX_UNITS,) * 3, MAX_BATCH)  # the largest drawable network passes


@pytest.mark.parametrize(
    "args, message",
    [
        (["--layers", "2,x,1"], "--layers"),
        (["--layers", "2,9,1"], "8 units a layer"),
        (["--batch", "5"], "a batch of 4"),
        (["--batch", "0"], "--batch"),
        (["--activation", "nope"], "unknown activation"),
        (["--loss", "hinge"], "unknown loss"),
        (["--format", "gif"], "--format"),
        (["--reduction", "max"], "--reduction"),
    ],
)
def test_cli_bad_options_exit_2_with_one_line(tmp_path, capsys, args, message):
    assert main(["diagram", "--out", str(tmp_path / "d"), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("backprop diagram: error:") and message in err
    assert not (tmp_path / "d").exists()


def test_number_format_round_trips():
    assert fmt(0.123456) == "0.1235" and fmt(-2.5) == "−2.5" and fmt(0.0) == fmt(-0.0) == "0"
    assert fmt(-1.23456e-6) == "−1.235e−6" and parse_number("−1.235e−6") == -1.235e-6
    assert parse_number(fmt(12345.678)) == 12350.0
