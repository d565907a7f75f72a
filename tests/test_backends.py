"""The backend shim: choosing a backend/device/dtype, its errors, and the gaps it fills
(asarray, to_numpy, seeded random numbers, jit, synchronize, probe), plus ``backprop info``."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest

import backprop
from backprop import cli
from backprop.backends import (
    BACKENDS,
    DTYPES,
    Backend,
    BackendUnavailableError,
    Generator,
    Probe,
    _load,
    available_backends,
    get_backend,
    probe,
    to_host,
)

ENV = ("BACKPROP_BACKEND", "BACKPROP_DEVICE", "BACKPROP_DTYPE")
HAVE_CUPY = importlib.util.find_spec("cupy") is not None
HAVE_JAX = probe("jax").available
NP_DTYPES = {"float32": np.float32, "float64": np.float64}


@pytest.fixture
def clean_env(monkeypatch):
    """No BACKPROP_* variables, so get_backend() sees only what the test sets."""
    for var in ENV:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


@pytest.fixture(params=DTYPES)
def any_backend(request, backend_name):
    """Each selected backend in each dtype."""
    return get_backend(backend_name, dtype=request.param)


# -- choosing a backend ----------------------------------------------------------------------


def test_defaults_are_numpy_float32(clean_env):
    b = get_backend()
    assert (b.name, b.device_name, b.dtype_name) == ("numpy", "cpu", "float32")
    assert b.asarray([1.0]).dtype == np.float32


def test_environment_selects_backend_and_dtype(clean_env):
    clean_env.setenv("BACKPROP_BACKEND", "array_api_strict")
    clean_env.setenv("BACKPROP_DTYPE", "float64")
    b = get_backend()
    assert (b.name, b.dtype_name) == ("array_api_strict", "float64")
    assert b.dtype == b.xp.float64


def test_environment_is_case_and_space_insensitive(clean_env):
    clean_env.setenv("BACKPROP_BACKEND", " NumPy ")
    clean_env.setenv("BACKPROP_DTYPE", "FLOAT64")
    b = get_backend()
    assert (b.name, b.dtype_name) == ("numpy", "float64")


def test_environment_selects_device(clean_env):
    clean_env.setenv("BACKPROP_DEVICE", "cpu")
    assert get_backend().device_name == "cpu"
    clean_env.setenv("BACKPROP_DEVICE", "gpu")
    with pytest.raises(ValueError, match=r"unknown device 'gpu' for backend 'numpy'; valid devices: 'cpu'"):
        get_backend()


def test_arguments_override_environment(clean_env):
    clean_env.setenv("BACKPROP_BACKEND", "foo")
    clean_env.setenv("BACKPROP_DTYPE", "float16")
    b = get_backend("numpy", dtype="float64")
    assert (b.name, b.dtype_name) == ("numpy", "float64")


def test_backend_instance_passes_through():
    b = get_backend("numpy", dtype="float64")
    assert get_backend(b) is b
    assert get_backend("numpy", dtype="float64") is b  # cached: one Backend per (name, device, dtype)


@pytest.mark.parametrize("name", ["foo", "tensorflow", "numpy2"])
def test_unknown_backend_lists_valid_ones(clean_env, name):
    with pytest.raises(
        ValueError, match=rf"unknown backend '{name}'; valid backends: numpy, cupy, jax, torch, array_api_strict"
    ):
        get_backend(name)
    clean_env.setenv("BACKPROP_BACKEND", name)
    with pytest.raises(ValueError, match="valid backends: numpy, cupy, jax, torch, array_api_strict"):
        get_backend()


@pytest.mark.parametrize("dtype", ["float16", "int32", "double", "bfloat16"])
def test_unknown_dtype_lists_valid_ones(clean_env, dtype):
    with pytest.raises(ValueError, match=rf"unknown dtype '{dtype}'; valid dtypes: float32, float64"):
        get_backend("numpy", dtype=dtype)
    clean_env.setenv("BACKPROP_DTYPE", dtype)
    with pytest.raises(ValueError, match="valid dtypes: float32, float64"):
        get_backend("numpy")


@pytest.mark.parametrize("device", ["gpu", "gpu:1", "tpu", "banana", "cuda:0", ""])
def test_unknown_device_lists_valid_ones(device):
    if device == "":  # empty means "the default device"
        assert get_backend("numpy", device=device).device_name == "cpu"
        return
    with pytest.raises(ValueError, match=r"valid devices: 'cpu'$"):
        get_backend("numpy", device=device)
    with pytest.raises(ValueError, match=r"valid devices: 'cpu'$"):
        get_backend("array_api_strict", device=device)


@pytest.mark.skipif(not HAVE_JAX, reason="JAX is not installed")
def test_jax_device_errors():
    import jax

    with pytest.raises(ValueError, match="valid devices: 'cpu', 'cpu:N', 'gpu', 'gpu:N', 'tpu', 'tpu:N'"):
        get_backend("jax", device="banana")
    n_cpu = len(jax.devices("cpu"))
    with pytest.raises(ValueError, match=rf"device 'cpu:{n_cpu}' does not exist: JAX sees {n_cpu} cpu device"):
        get_backend("jax", device=f"cpu:{n_cpu}")
    if not any(d.platform == "tpu" for d in jax.devices()):
        with pytest.raises(ValueError, match="JAX has no 'tpu' devices here; available platforms"):
            get_backend("jax", device="tpu")
    assert get_backend("jax", device="cpu").device_name == "cpu:0"


@pytest.mark.skipif(HAVE_CUPY, reason="CuPy is installed here")
def test_missing_cupy_raises_import_error_naming_the_extra():
    with pytest.raises(ImportError, match=r'pip install "backprop\[cupy\]"'):
        get_backend("cupy")
    found = probe("cupy")
    assert found == Probe("cupy", False, found.reason)
    assert 'pip install "backprop[cupy]"' in found.reason
    assert "cupy" not in available_backends()


def _fake_cupy(get_device_count):
    """A module that looks like an installed CuPy whose CUDA runtime has no usable GPU."""
    cupy = types.ModuleType("cupy")
    cupy.__spec__ = importlib.machinery.ModuleSpec("cupy", None)
    cupy.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=get_device_count))
    return cupy


@pytest.fixture
def fresh_load_cache():
    _load.cache_clear()
    yield
    _load.cache_clear()


def _raise_no_driver():
    raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")


@pytest.mark.parametrize(
    "count, reason",
    [
        (_raise_no_driver, r"CuPy is installed but no usable CUDA GPU was found \(RuntimeError: cudaErrorNoDevice"),
        (lambda: 0, "CuPy is installed but no CUDA GPU is visible"),
    ],
)
def test_cupy_without_gpu_raises_backend_unavailable(monkeypatch, fresh_load_cache, count, reason):
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(count))
    with pytest.raises(BackendUnavailableError, match=rf"backend 'cupy' is unavailable: {reason}"):
        get_backend("cupy")
    assert issubclass(BackendUnavailableError, RuntimeError)
    assert not issubclass(BackendUnavailableError, ImportError)
    found = probe("cupy")
    assert not found.available
    assert "no" in found.reason and "GPU" in found.reason
    assert "cupy" not in available_backends()


@pytest.mark.skipif(not HAVE_JAX, reason="JAX is not installed")
def test_jax_float64_really_is_float64():
    b = get_backend("jax", dtype="float64")
    assert b.dtype == b.xp.float64
    assert b.asarray([1.0, 2.0]).dtype == np.float64
    assert b.asarray(np.ones(3, dtype=np.float32)).dtype == np.float64
    x = b.rng(0).normal((4, 3))
    assert x.dtype == np.float64
    assert b.rng(0).uniform((4,)).dtype == np.float64
    # the float64 numbers are the host's, not float32 ones widened
    np.testing.assert_array_equal(b.to_numpy(x), np.random.Generator(np.random.PCG64(0)).normal(size=(4, 3)))
    third = b.asarray([1.0]) / 3.0
    assert b.to_numpy(third)[0] == 1.0 / 3.0


# -- per backend: the gaps the shim fills ----------------------------------------------------


def test_probe_of_selected_backend(backend_name):
    found = probe(backend_name)
    assert isinstance(found, Probe)
    assert (found.name, found.available, found.reason) == (backend_name, True, None)
    assert backend_name in available_backends()
    assert probe(backend_name.upper()).name == backend_name


def test_probe_unknown_name_raises():
    with pytest.raises(ValueError, match="valid backends"):
        probe("foo")
    assert "numpy" in available_backends()
    assert available_backends() == [n for n in BACKENDS if probe(n).available]


def test_backend_record(any_backend):
    b = any_backend
    assert isinstance(b, Backend)
    assert b.dtype_name in DTYPES and b.dtype == getattr(b.xp, b.dtype_name)
    assert repr(b) == f"Backend(name={b.name!r}, device={b.device_name!r}, dtype={b.dtype_name!r})"
    assert b.is_native(b.asarray([1.0]))
    assert not b.is_native([1.0])


@pytest.mark.parametrize("data", [[1.5, -2.0, 3.25], [[0.5, 1.0], [2.0, -4.0]], 2.5])
def test_asarray_floats_take_backend_dtype(any_backend, data):
    b = any_backend
    for x in (data, np.asarray(data, dtype=np.float64), np.asarray(data, dtype=np.float32)):
        a = b.asarray(x)
        assert b.is_native(a)
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(b.to_numpy(a), np.asarray(data, dtype=NP_DTYPES[b.dtype_name]))
    # a native array of the other float dtype is converted too
    other = "float32" if b.dtype_name == "float64" else "float64"
    native = b.asarray(np.asarray(data), dtype=other)
    assert b.asarray(native).dtype == b.dtype


def test_asarray_keeps_integers_and_bools(any_backend):
    b = any_backend
    xp = b.xp
    for x in ([1, 2, 3], np.arange(3), np.arange(3, dtype=np.int32), np.array([0, 5], dtype=np.uint8)):
        a = b.asarray(x)
        assert xp.isdtype(a.dtype, "integral"), a.dtype
        np.testing.assert_array_equal(b.to_numpy(a), np.asarray(x))
        assert xp.isdtype(b.asarray(a).dtype, "integral")  # native integers stay integers
    a = b.asarray([True, False])
    assert a.dtype == xp.bool
    assert b.asarray(np.array([True])).dtype == xp.bool


def test_asarray_explicit_dtype(any_backend):
    b = any_backend
    a = b.asarray(np.arange(3), dtype=b.dtype_name)
    assert a.dtype == b.dtype
    a = b.asarray([1.0, 2.0], dtype=b.dtype)
    assert a.dtype == b.dtype
    if b.name != "jax" or b.dtype_name == "float64":  # JAX without x64 has no float64
        assert b.asarray([1, 2], dtype="float64").dtype == b.xp.float64
        assert b.asarray(b.asarray([1, 2]), dtype="float64").dtype == b.xp.float64


def test_asarray_from_every_other_backend(any_backend):
    b = any_backend
    expected = np.asarray([[1.5, -2.0], [0.25, 8.0]])
    for source in available_backends():
        src = get_backend(source, dtype="float64" if source != "jax" else b.dtype_name)
        x = src.asarray(expected)
        a = b.asarray(x)
        assert b.is_native(a), f"{source} -> {b.name}"
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(b.to_numpy(a), expected.astype(NP_DTYPES[b.dtype_name]))
        labels = b.asarray(src.asarray(np.array([2, 0, 1])))
        assert b.xp.isdtype(labels.dtype, "integral")
        np.testing.assert_array_equal(b.to_numpy(labels), [2, 0, 1])


@pytest.mark.skipif(not HAVE_JAX, reason="JAX is not installed")
def test_jax_array_into_numpy_and_numpy_array_into_jax():
    import jax.numpy as jnp

    n = get_backend("numpy", dtype="float32")
    j = get_backend("jax", dtype="float32")
    a = n.asarray(jnp.asarray([1.0, 2.0, 3.0]))
    assert type(a) is np.ndarray and a.dtype == np.float32
    np.testing.assert_array_equal(a, [1.0, 2.0, 3.0])
    x = j.asarray(np.array([4.0, 5.0]))
    assert isinstance(x, type(jnp.zeros(1))) and x.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(x), [4.0, 5.0])


def test_to_numpy_round_trip(any_backend):
    b = any_backend
    host = np.random.default_rng(3).normal(size=(4, 5)).astype(NP_DTYPES[b.dtype_name])
    back = b.to_numpy(b.asarray(host))
    assert isinstance(back, np.ndarray)
    assert back.dtype == host.dtype and back.shape == host.shape
    np.testing.assert_array_equal(back, host)
    ints = b.to_numpy(b.asarray(np.arange(6)))
    np.testing.assert_array_equal(ints, np.arange(6))
    np.testing.assert_array_equal(to_host(b.asarray(host)), host)
    assert to_host([1, 2]).tolist() == [1, 2]


def test_rng_same_numbers_on_every_backend(any_backend):
    b = any_backend
    ref = get_backend("numpy", dtype=b.dtype_name)
    host = np.random.Generator(np.random.PCG64(123))
    for seed in (0, 123, 2**40 + 7):
        got, want = b.rng(seed), ref.rng(seed)
        assert isinstance(got, Generator)
        normal = got.normal((6, 5), mean=1.0, std=3.0)
        assert normal.dtype == b.dtype and tuple(normal.shape) == (6, 5)
        np.testing.assert_array_equal(b.to_numpy(normal), want.normal((6, 5), mean=1.0, std=3.0))
        uniform = got.uniform((7,), -2.0, 5.0)
        assert uniform.dtype == b.dtype
        u = b.to_numpy(uniform)
        np.testing.assert_array_equal(u, want.uniform((7,), -2.0, 5.0))
        assert np.all((u >= -2.0) & (u <= 5.0))
        perm = got.permutation(20)
        assert b.xp.isdtype(perm.dtype, "integral")
        p = b.to_numpy(perm)
        np.testing.assert_array_equal(p, want.permutation(20))
        assert sorted(p.tolist()) == list(range(20))
    # and they are NumPy's PCG64 draws, rounded to the backend's dtype
    np.testing.assert_array_equal(
        b.to_numpy(b.rng(123).normal((3, 2))), host.normal(size=(3, 2)).astype(NP_DTYPES[b.dtype_name])
    )


def test_rng_seeds_differ_and_state_restores(any_backend):
    b = any_backend
    a0 = b.to_numpy(b.rng(0).normal((10,)))
    a1 = b.to_numpy(b.rng(1).normal((10,)))
    assert not np.array_equal(a0, a1)
    np.testing.assert_array_equal(a0, b.to_numpy(b.rng(0).normal((10,))))
    g = b.rng(5)
    g.uniform((3,))
    state = json.loads(json.dumps(g.state))  # JSON-serialisable
    first = b.to_numpy(g.normal((4,)))
    g.state = state
    np.testing.assert_array_equal(b.to_numpy(g.normal((4,))), first)


def test_jit(any_backend):
    b = any_backend

    def f(x, y):
        return x * 2.0 + y

    compiled = b.jit(f)
    if b.name == "jax":
        assert compiled is not f
        assert hasattr(compiled, "lower")  # a jax.jit-wrapped function
    else:
        assert compiled is f
    x, y = b.asarray([1.0, 2.0]), b.asarray([0.5, 0.25])
    out = compiled(x, y)
    assert out.dtype == b.dtype
    np.testing.assert_array_equal(b.to_numpy(out), [2.5, 4.25])
    # keyword arguments reach jax.jit (static arguments); ignored elsewhere only by not being used
    if b.name == "jax":
        g = b.jit(lambda x, n: x * n, static_argnums=1)
        np.testing.assert_array_equal(b.to_numpy(g(x, 3)), [3.0, 6.0])


def test_synchronize(any_backend):
    b = any_backend
    x = b.asarray([1.0, 2.0])
    y = x @ x
    assert b.synchronize() is None
    assert b.synchronize(y) is None
    assert b.synchronize(x, y) is None
    assert float(b.to_numpy(y)) == 5.0


def test_package_exports():
    for name in ("get_backend", "probe", "available_backends", "Backend", "BackendUnavailableError"):
        assert hasattr(backprop, name)


# -- backprop info ---------------------------------------------------------------------------


def test_info_lists_every_backend_and_blas(clean_env, capsys):
    assert cli.main(["info"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert f"backprop {backprop.__version__}" in out
    assert "selected: backend=numpy device=cpu dtype=float32" in out
    lines = out.split("backends:\n", 1)[1].split("numpy BLAS:", 1)[0].splitlines()
    assert len(lines) == len(BACKENDS)
    for name in BACKENDS:
        [line] = [ln for ln in lines if ln.split() and ln.split()[0] == name]
        found = probe(name)
        if found.available:
            assert "available, devices: " in line
            assert "unavailable" not in line
        else:
            assert f"unavailable: {found.reason}" in line
    assert "numpy BLAS:" in out
    from threadpoolctl import threadpool_info

    for lib in threadpool_info():
        if lib.get("user_api") == "blas":
            assert lib["internal_api"] in out


def test_info_json(clean_env, capsys):
    clean_env.setenv("BACKPROP_DTYPE", "float64")
    assert cli.main(["info", "--json"]) == 0
    out, err = capsys.readouterr()
    info = json.loads(out)
    assert info["version"] == backprop.__version__
    assert info["selected"] == {"backend": "numpy", "device": "cpu", "dtype": "float64"}
    assert info["environment"]["BACKPROP_DTYPE"] == "float64"
    assert [b["name"] for b in info["backends"]] == list(BACKENDS)
    for entry in info["backends"]:
        found = probe(entry["name"])
        assert entry["available"] == found.available
        if entry["available"]:
            assert entry["reason"] is None and entry["devices"]
        else:
            assert entry["reason"] == found.reason and entry["reason"]
    assert isinstance(info["blas"], list)
    for lib in info["blas"]:
        assert set(lib) == {"internal_api", "version", "architecture", "num_threads", "filepath"}


def test_info_reports_cupy_without_gpu(clean_env, capsys, fresh_load_cache):
    clean_env.setitem(sys.modules, "cupy", _fake_cupy(lambda: 0))
    assert cli.main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    [cupy] = [b for b in info["backends"] if b["name"] == "cupy"]
    assert cupy == {"name": "cupy", "available": False, "reason": "CuPy is installed but no CUDA GPU is visible"}


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--backend", "cupy", "--epochs", "1", "--no-progress"],
        ["check", "--backend", "cupy"],
        ["diagram", "--out", "diagram"],
    ],
)
def test_commands_on_cupy_without_gpu_exit_2_with_one_line(clean_env, capsys, fresh_load_cache, tmp_path, argv):
    """CuPy installed but no GPU: one line naming the reason and exit code 2, not a traceback
    (diagram reads the backend from BACKPROP_BACKEND)."""
    clean_env.setitem(sys.modules, "cupy", _fake_cupy(lambda: 0))
    clean_env.setenv("BACKPROP_BACKEND", "cupy")
    clean_env.chdir(tmp_path)
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.strip().splitlines() == [
        f"backprop {argv[0]}: error: backend 'cupy' is unavailable: CuPy is installed but no CUDA GPU is visible"
    ]
    assert not (tmp_path / "diagram").exists()


def test_info_as_subprocess():
    env = {k: v for k, v in os.environ.items() if k not in ENV}
    done = subprocess.run(
        [sys.executable, "-m", "backprop", "info"], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    for name in BACKENDS:
        assert name in done.stdout
    assert "numpy BLAS:" in done.stdout
    if not HAVE_CUPY:
        assert 'unavailable: CuPy is not installed: pip install "backprop[cupy]"' in done.stdout


@pytest.mark.parametrize(
    "var, value, message",
    [
        ("BACKPROP_BACKEND", "foo", "unknown backend 'foo'; valid backends: numpy, cupy, jax, torch, array_api_strict"),
        ("BACKPROP_DTYPE", "float16", "unknown dtype 'float16'; valid dtypes: float32, float64"),
        ("BACKPROP_DEVICE", "gpu", "unknown device 'gpu' for backend 'numpy'"),
    ],
)
def test_info_bad_environment_exits_2_with_one_line(clean_env, capsys, var, value, message):
    clean_env.setenv(var, value)
    assert cli.main(["info"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("backprop info: error: ")
    assert message in err


@pytest.mark.parametrize("name", ["numpy", "array_api_strict"])
def test_single_device_backends_refuse_an_index(name):
    with pytest.raises(ValueError, match=r"unknown device 'cpu:3'.*valid devices: 'cpu'"):
        get_backend(name, device="cpu:3")
    assert get_backend(name, device="cpu:0").device_name == "cpu"
