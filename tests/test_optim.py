"""Optimizers, schedules and clipping: textbook updates, every backend, jax.jit and round-trips."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from array_api_compat import array_namespace, device

from backprop import MLP, optim
from backprop.optim import (
    SGD,
    Adam,
    AdamW,
    RMSprop,
    clip_by_global_norm,
    constant,
    cosine_decay,
    exponential_decay,
    from_config,
    get_optimizer,
    global_norm,
    inverse_scaling,
    step_decay,
    tree_leaves,
    tree_map,
)

OPTIMIZERS = {
    "sgd": lambda: SGD(lr=0.1),
    "sgd-momentum-wd": lambda: SGD(lr=0.1, momentum=0.9, weight_decay=0.01),
    "sgd-nesterov": lambda: SGD(lr=step_decay(0.1, 2, gamma=0.5), momentum=0.9, nesterov=True),
    "adam": lambda: Adam(lr=0.01),
    "adam-clip": lambda: Adam(lr=cosine_decay(0.01, 10), clip_norm=0.5),
    "adamw": lambda: AdamW(lr=0.01, weight_decay=0.1),
    "rmsprop": lambda: RMSprop(lr=0.01),
    "rmsprop-momentum": lambda: RMSprop(lr=inverse_scaling(0.01), momentum=0.5, clip_norm=1.0),
}


@pytest.fixture(params=list(OPTIMIZERS))
def opt(request):
    return OPTIMIZERS[request.param]()


def make_tree(backend, seed: int = 0):
    """((W (3, 2), b (2,)), (W (2, 1), b (1,))) of normal numbers on the backend."""
    rng = np.random.default_rng(seed)
    shapes = ((3, 2), (2, 1))
    return tuple((backend.asarray(rng.normal(size=(a, b))), backend.asarray(rng.normal(size=b))) for a, b in shapes)


def host(backend, tree) -> list[np.ndarray]:
    return [np.asarray(backend.to_numpy(a), dtype=np.float64) for a in tree_leaves(tree)]


def flat(backend, tree) -> np.ndarray:
    """Every entry of the tree in one float64 host vector."""
    return np.concatenate([a.ravel() for a in host(backend, tree)])


def run(backend, opt, params, grads_seq, update=None):
    """Host copies of the parameters after applying ``update`` (default opt.update) to each grads."""
    update = update or opt.update
    state = opt.init(params)
    for grads in grads_seq:
        params, state = update(params, grads, state)
    return host(backend, params), state


# -- (1) every backend: parameters change, dtype/shape/namespace/device kept -------------------
def test_one_step_changes_params_and_keeps_layout(backend, opt):
    params, grads = make_tree(backend, 0), make_tree(backend, 1)
    before = host(backend, params)
    state = opt.init(params)
    new_params, new_state = opt.update(params, grads, state)
    for old, new, kept in zip(tree_leaves(params), tree_leaves(new_params), before):
        assert array_namespace(new) is backend.xp
        assert new.dtype == old.dtype == backend.dtype
        assert tuple(new.shape) == tuple(old.shape)
        assert device(new) == device(old)
        assert not np.allclose(backend.to_numpy(new), kept), "the step did not change the parameters"
    for now, kept in zip(host(backend, params), before):  # the inputs are left untouched
        np.testing.assert_array_equal(now, kept)
    for leaf in tree_leaves(state) + tree_leaves(new_state):
        assert array_namespace(leaf) is backend.xp
        assert leaf.dtype == backend.dtype
    tree_map(lambda a, b: None, state, new_state)  # the same nesting before and after
    assert new_state[0].shape == () and float(backend.to_numpy(new_state[0])) == 1.0


def test_state_is_a_named_tuple_of_nested_tuples(backend):
    params = make_tree(backend)
    assert len(tree_leaves(SGD().init(params))) == 1  # count only: no velocity without momentum
    assert len(tree_leaves(SGD(momentum=0.5).init(params))) == 1 + 4
    assert len(tree_leaves(Adam().init(params))) == 1 + 2 * 4
    assert len(tree_leaves(RMSprop(momentum=0.5).init(params))) == 1 + 2 * 4
    state = AdamW().init(params)
    assert type(state) is optim.AdamState and state._fields == ("count", "m", "v")
    assert all(type(s) is tuple for s in state[1:])
    new_params, new_state = AdamW().update(params, params, state)
    assert type(new_state) is optim.AdamState and float(backend.to_numpy(new_state.count)) == 1.0
    assert type(SGD(momentum=0.5).update(params, params, SGD(momentum=0.5).init(params))[1]) is optim.SGDState
    rms = RMSprop(momentum=0.5)
    assert rms.update(params, params, rms.init(params))[1]._fields == ("count", "square_avg", "velocity")


def test_mismatched_grads_raise(backend):
    params = make_tree(backend)
    opt = SGD()
    with pytest.raises(ValueError, match="nesting"):
        opt.update(params, params[:1], opt.init(params))


# -- (2) textbook updates on hand-computed examples (float64) ---------------------------------
def scalar_run(backend, opt, grads):
    """Run ``opt`` on one scalar-like parameter p = [1.0] with the gradients ``grads``; p after each step."""
    params, out = (backend.asarray(np.array([1.0])),), []
    state = opt.init(params)
    for g in grads:
        params, state = opt.update(params, (backend.asarray(np.array([float(g)])),), state)
        out.append(float(backend.to_numpy(params[0])[0]))
    return out


def test_sgd_by_hand(backend64):
    # p = 1, g = 1, lr = 0.1: plain 0.9, 0.8; momentum 0.9: buf 1 → 1.9, p 0.9 → 0.71;
    # Nesterov: buf 1, p −= 0.1·(1 + 0.9·1) → 0.81; buf 1.9, p −= 0.1·(1 + 0.9·1.9) → 0.539.
    np.testing.assert_allclose(scalar_run(backend64, SGD(lr=0.1), [1, 1]), [0.9, 0.8], rtol=1e-14)
    np.testing.assert_allclose(scalar_run(backend64, SGD(lr=0.1, momentum=0.9), [1, 1]), [0.9, 0.71], rtol=1e-14)
    nesterov = SGD(lr=0.1, momentum=0.9, nesterov=True)
    np.testing.assert_allclose(scalar_run(backend64, nesterov, [1, 1]), [0.81, 0.539], rtol=1e-14)
    # weight decay 0.5: g ← 1 + 0.5·1 = 1.5, p = 1 − 0.15 = 0.85
    np.testing.assert_allclose(scalar_run(backend64, SGD(lr=0.1, weight_decay=0.5), [1]), [0.85], rtol=1e-14)


def test_adam_rmsprop_by_hand(backend64):
    # Adam's bias-corrected first step is lr·g/(|g| + eps) whatever β: p = 1 − 0.1·2/(2 + 1e-8)
    np.testing.assert_allclose(scalar_run(backend64, Adam(lr=0.1), [2.0]), [1 - 0.1 * 2 / (2 + 1e-8)], rtol=1e-14)
    # AdamW with wd 0.5: p ← 1 − 0.1·0.5·1 = 0.95, then the same Adam step
    adamw = AdamW(lr=0.1, weight_decay=0.5)
    np.testing.assert_allclose(scalar_run(backend64, adamw, [2.0]), [0.95 - 0.1 * 2 / (2 + 1e-8)], rtol=1e-14)
    # RMSprop ρ = 0.9, g = 1: s = 0.1, p = 1 − 0.01/(√0.1 + 1e-8)
    rmsprop = RMSprop(lr=0.01, rho=0.9)
    np.testing.assert_allclose(scalar_run(backend64, rmsprop, [1.0]), [1 - 0.01 / (math.sqrt(0.1) + 1e-8)], rtol=1e-14)


def textbook(name, hp, p, grads_seq):
    """The update rules as written in the papers / torch docs, on float64 NumPy arrays."""
    p = [a.copy() for a in p]
    buf = [np.zeros_like(a) for a in p]
    m = [np.zeros_like(a) for a in p]
    v = [np.zeros_like(a) for a in p]
    for t, grads in enumerate(grads_seq, start=1):
        lr = hp["lr"]
        for i, g in enumerate(grads):
            if name == "sgd":
                g = g + hp["weight_decay"] * p[i]
                buf[i] = hp["momentum"] * buf[i] + g
                p[i] = p[i] - lr * ((g + hp["momentum"] * buf[i]) if hp["nesterov"] else buf[i])
            elif name in ("adam", "adamw"):
                p[i] = p[i] * (1 - lr * hp.get("weight_decay", 0.0))
                m[i] = hp["beta1"] * m[i] + (1 - hp["beta1"]) * g
                v[i] = hp["beta2"] * v[i] + (1 - hp["beta2"]) * g**2
                m_hat, v_hat = m[i] / (1 - hp["beta1"] ** t), v[i] / (1 - hp["beta2"] ** t)
                p[i] = p[i] - lr * m_hat / (np.sqrt(v_hat) + hp["eps"])
            else:  # rmsprop
                v[i] = hp["rho"] * v[i] + (1 - hp["rho"]) * g**2
                buf[i] = hp["momentum"] * buf[i] + g / (np.sqrt(v[i]) + hp["eps"])
                p[i] = p[i] - lr * buf[i]
    return p


TEXTBOOK_CASES = [
    SGD(lr=0.1, momentum=0.0),
    SGD(lr=0.1, momentum=0.9, weight_decay=0.05),
    SGD(lr=0.1, momentum=0.8, nesterov=True, weight_decay=0.05),
    Adam(lr=0.01, beta1=0.8, beta2=0.9, eps=1e-6),
    AdamW(lr=0.01, beta1=0.8, beta2=0.9, eps=1e-6, weight_decay=0.3),
    RMSprop(lr=0.01, rho=0.8, eps=1e-6),
    RMSprop(lr=0.01, rho=0.8, eps=1e-6, momentum=0.7),
]


@pytest.mark.parametrize("opt", TEXTBOOK_CASES, ids=repr)
def test_matches_textbook_for_three_steps(backend64, opt):
    params = make_tree(backend64, 0)
    grads_seq = [make_tree(backend64, seed) for seed in (1, 2, 3)]
    got, state = run(backend64, opt, params, grads_seq)
    expected = textbook(opt.name, opt.config, host(backend64, params), [host(backend64, g) for g in grads_seq])
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    assert float(backend64.to_numpy(state[0])) == 3.0


# -- (3) schedules ----------------------------------------------------------------------------
SCHEDULE_CASES = [
    (constant(0.1), {0: 0.1, 7: 0.1, 1000: 0.1}),
    (step_decay(0.1, 10, gamma=0.5), {0: 0.1, 9: 0.1, 10: 0.05, 25: 0.025}),
    (exponential_decay(0.1, 0.5, decay_steps=10), {0: 0.1, 5: 0.1 * 0.5**0.5, 10: 0.05, 30: 0.0125}),
    (cosine_decay(1.0, 10, alpha=0.1), {0: 1.0, 5: 0.55, 10: 0.1, 20: 0.1}),
    (cosine_decay(2.0, 4), {0: 2.0, 1: 1 + math.cos(math.pi / 4), 2: 1.0, 4: 0.0, 9: 0.0}),
    (inverse_scaling(0.1, power_t=0.5), {0: 0.1, 3: 0.05, 99: 0.01}),
    (inverse_scaling(0.1, power_t=1.0), {0: 0.1, 1: 0.05, 9: 0.01}),
]


@pytest.mark.parametrize("schedule, values", SCHEDULE_CASES, ids=lambda c: getattr(c, "name", ""))
def test_schedule_values(backend64, schedule, values):
    xp = backend64.xp
    for t, expected in values.items():
        got = schedule(xp, backend64.asarray(np.asarray(float(t))))
        got = backend64.xp.asarray(got, dtype=backend64.dtype)  # a Python float: float32 by default on torch
        assert float(backend64.to_numpy(got)) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_schedule_drives_the_update(backend64):
    # step t uses lr_t (0-based): 1·1, 0.5·1, 0.25·1 → p = 0, −0.5, −0.75
    opt = SGD(lr=step_decay(1.0, 1, gamma=0.5))
    assert scalar_run(backend64, opt, [1, 1, 1]) == pytest.approx([0.0, -0.5, -0.75])
    params = (backend64.asarray(np.zeros(1)),)
    state = opt.init(params)
    assert float(backend64.to_numpy(backend64.xp.asarray(opt.learning_rate(state)))) == 1.0
    _, state = opt.update(params, params, state)
    assert float(backend64.to_numpy(backend64.xp.asarray(opt.learning_rate(state)))) == 0.5


# -- (4) clipping by global norm --------------------------------------------------------------
def test_clip_by_global_norm(backend64):
    a = backend64.asarray
    grads = ((a(np.array([[3.0]])), a(np.array([0.0]))), (a(np.array([[0.0, 4.0]])),))
    assert float(backend64.to_numpy(global_norm(grads))) == pytest.approx(5.0)
    clipped = clip_by_global_norm(grads, 1.0)
    assert float(backend64.to_numpy(global_norm(clipped))) == pytest.approx(1.0, rel=1e-14)
    np.testing.assert_allclose(flat(backend64, clipped), [0.6, 0.0, 0.0, 0.8], rtol=1e-14)
    for max_norm in (5.0, 10.0):  # at or below the limit: unchanged
        np.testing.assert_array_equal(flat(backend64, clip_by_global_norm(grads, max_norm)), [3.0, 0.0, 0.0, 4.0])
    zeros = tree_map(lambda g: backend64.xp.zeros_like(g), grads)
    np.testing.assert_array_equal(flat(backend64, clip_by_global_norm(zeros, 1.0)), 0.0)  # no 0/0


def test_optimizer_clips_first(backend64):
    # ‖(3, 4)‖ = 5 clipped to 1: SGD(lr=1) moves p by exactly (0.6, 0.8)
    params = (backend64.asarray(np.zeros(2)),)
    grads = (backend64.asarray(np.array([3.0, 4.0])),)
    got, _ = run(backend64, SGD(lr=1.0, clip_norm=1.0), params, [grads])
    np.testing.assert_allclose(got[0], [-0.6, -0.8], rtol=1e-14)


# -- (5) jax.jit (backend.jit: jax.jit on JAX, the plain function elsewhere) -------------------
def test_update_under_jit_matches_eager(backend, opt):
    params = make_tree(backend, 0)
    grads_seq = [make_tree(backend, seed) for seed in (1, 2)]
    eager, _ = run(backend, opt, params, grads_seq)
    jitted, state = run(backend, opt, params, grads_seq, update=backend.jit(opt.update))
    for a, b in zip(jitted, eager):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert all(leaf.dtype == backend.dtype for leaf in tree_leaves(state))


def test_whole_training_step_under_jit(backend):
    model = MLP([3, 4, 1], activation="tanh")
    params = model.init(seed=0, backend=backend)
    xp, X, Y = model.prepare(params, np.random.default_rng(0).normal(size=(16, 3)), np.arange(16.0) / 16)
    for opt in (SGD(lr=0.1, momentum=0.9), AdamW(lr=cosine_decay(0.01, 100), clip_norm=1.0)):

        def train_step(params, state, X, Y, opt=opt):
            loss, grads, _ = model.value_and_grad(xp, params, X, Y)
            params, state = opt.update(params, grads, state)
            return params, state, loss

        step = backend.jit(train_step)
        p, state = params, opt.init(params)
        losses = []
        for _ in range(5):
            p, state, loss = step(p, state, X, Y)
            losses.append(float(backend.to_numpy(loss)))
        assert losses[-1] < losses[0], f"{opt!r}: loss did not go down ({losses})"


# -- (6) config round-trip --------------------------------------------------------------------
def test_config_round_trip(backend, opt):
    config = json.loads(json.dumps(opt.config))
    rebuilt = from_config(config)
    assert config["name"] == opt.name and rebuilt.config == opt.config and repr(rebuilt) == repr(opt)
    params = make_tree(backend, 0)
    grads_seq = [make_tree(backend, seed) for seed in (1, 2)]
    for a, b in zip(run(backend, opt, params, grads_seq)[0], run(backend, rebuilt, params, grads_seq)[0]):
        np.testing.assert_array_equal(a, b)


def test_get_optimizer():
    assert isinstance(get_optimizer("AdamW", lr=0.1), AdamW)
    assert get_optimizer("sgd", momentum=0.5).momentum == 0.5
    assert from_config({"name": "sgd", "lr": 0.5}).lr(None, None) == 0.5
    with pytest.raises(ValueError, match="sgd, adam, adamw, rmsprop"):
        get_optimizer("nadam")


# -- (7) bad hyperparameters ------------------------------------------------------------------
@pytest.mark.parametrize(
    "build, name",
    [
        (lambda: SGD(lr=0), "lr"),
        (lambda: SGD(lr=-0.1), "lr"),
        (lambda: Adam(lr=float("nan")), "lr"),
        (lambda: Adam(lr="0.1"), "lr"),
        (lambda: SGD(momentum=1.0), "momentum"),
        (lambda: SGD(nesterov=True), "nesterov"),
        (lambda: SGD(momentum=0.9, nesterov="yes"), "nesterov"),
        (lambda: SGD(weight_decay=-1e-4), "weight_decay"),
        (lambda: SGD(clip_norm=0), "clip_norm"),
        (lambda: Adam(beta1=1.0), "beta1"),
        (lambda: Adam(beta2=-0.1), "beta2"),
        (lambda: Adam(eps=0.0), "eps"),
        (lambda: AdamW(weight_decay=-0.01), "weight_decay"),
        (lambda: RMSprop(rho=1.5), "rho"),
        (lambda: RMSprop(momentum=-0.5), "momentum"),
        (lambda: RMSprop(eps=float("inf")), "eps"),
        (lambda: step_decay(0.1, 0), "step_size"),
        (lambda: step_decay(0.1, 2.5), "step_size"),
        (lambda: step_decay(0.1, 2, gamma=0.0), "gamma"),
        (lambda: exponential_decay(0.1, 1.5), "decay_rate"),
        (lambda: exponential_decay(0.1, 0.5, decay_steps=0), "decay_steps"),
        (lambda: cosine_decay(0.1, -3), "decay_steps"),
        (lambda: cosine_decay(0.1, 10, alpha=2.0), "alpha"),
        (lambda: inverse_scaling(0.1, power_t=-1), "power_t"),
        (lambda: inverse_scaling(-0.1), "lr"),
        (lambda: clip_by_global_norm((np.ones(2),), 0.0), "max_norm"),
        (lambda: from_config({"name": "adam", "lr": {"name": "warmup", "lr": 0.1}}), "schedule"),
    ],
)
def test_bad_hyperparameters_raise(build, name):
    with pytest.raises(ValueError, match=name):
        build()


# -- optional: torch.optim ----------------------------------------------------------------------
def test_matches_torch():
    try:
        import torch
    except ImportError as exc:  # not installed, or installed without its shared libraries
        pytest.skip(f"torch is not importable: {exc}")
    cases = [
        (
            SGD(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
            lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
        ),
        (Adam(lr=0.01), lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.9, 0.999), eps=1e-8)),
        (
            AdamW(lr=0.01, weight_decay=0.1),
            lambda p: torch.optim.AdamW(p, lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1),
        ),
        (
            RMSprop(lr=0.01, rho=0.9, momentum=0.5),
            lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.9, eps=1e-8, momentum=0.5),
        ),
    ]
    from backprop.backends import get_backend

    backend = get_backend("numpy", dtype="float64")
    params = make_tree(backend, 0)
    grads_seq = [make_tree(backend, seed) for seed in (1, 2, 3)]
    for opt, build_torch in cases:
        ours, _ = run(backend, opt, params, grads_seq)
        tensors = [torch.tensor(a, requires_grad=True) for a in host(backend, params)]
        torch_opt = build_torch(tensors)
        for grads in grads_seq:
            for t, g in zip(tensors, host(backend, grads)):
                t.grad = torch.tensor(g)
            torch_opt.step()
        for a, t in zip(ours, tensors):
            np.testing.assert_allclose(a, t.detach().numpy(), rtol=1e-10, atol=1e-12)
