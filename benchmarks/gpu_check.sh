#!/usr/bin/env bash
# The GPU check: on a CUDA machine, one command that
#   1. installs missing pure-Python wheels from .whl/ (offline; into .whl/site, nothing else is touched),
#   2. runs the whole test suite with BACKPROP_BACKEND=cupy, then again with BACKPROP_BACKEND=jax,
#   3. runs the benchmark grid (backprop bench) on both backends and torch,
#   4. times the torch backend's choices on CUDA (backprop bench --choices all),
# and writes every log, bench.json, bench.txt, bench.png and choices.* under $OUT (default bench-results/).
# Each phase has its own time limit, so the whole check ends in under 10 minutes; a failing test
# phase does not stop the benchmarks, but the script exits non-zero at the end.
#
#   bash benchmarks/gpu_check.sh              # on the GPU machine, from anywhere
#   OUT=/tmp/results bash benchmarks/gpu_check.sh
#   bash benchmarks/gpu_check.sh --dry-run    # the same test phases on the CPU (numpy + jax), small benchmarks
#   bash benchmarks/gpu_check.sh --fetch-wheels  # here, online: download the wheels the offline GPU machine lacks
#
# The GPU machine is offline.  It has CUDA, CuPy, JAX, PyTorch, NumPy, SciPy, scikit-learn, pytest,
# pytest-benchmark, hypothesis, pytest-xdist, tqdm, safetensors and matplotlib; it lacks the pure-Python
# wheels listed in WHEEL_LIST below, which --fetch-wheels puts in .whl/ (git-ignored).  The test phases
# run on PYTEST_WORKERS processes (pytest-xdist, one test file per worker) where xdist is installed.
#
# Knobs (environment): EPOCH_UNROLLS (e.g. "1 8 32 128": also time JAX's whole epochs at each
# scan unroll; off by default), PYTHON (default python), OUT, WHEELS (default .whl), TEST_TIMEOUT (150 s per
# test run; 480 on the dry run), PYTEST_WORKERS (8 on the GPU machine, 2 on the dry run; 0 for one process),
# BENCH_TIMEOUT (160 s), CHOICES_TIMEOUT (75 s), BENCH_BUDGET (0.5 s of timed rounds per cell), BENCH_BACKENDS (cupy,jax,torch:
# backprop's step on torch's CUDA beside torch autograd), TEST_BACKENDS ("cupy jax"; add torch for the
# suite on torch's CUDA, another 150 s),
# BENCH_BATCH_SIZES (1,2,32,256,2048,8192,65536), BACKPROP_MATMUL_PRECISION for the benchmarks
# (default highest: true float32 on JAX as on CuPy, so the two compare like with like; set it to
# tf32 together with CUPY_TF32=1 to measure TensorFloat-32 on both).
set -euo pipefail

# The pure-Python wheels the GPU machine lacks (Python 3.12 there), by distribution name.
WHEEL_LIST=(array-api-compat array-api-strict sybil)

DRY_RUN=0
case "${1:-}" in
  --dry-run) DRY_RUN=1 ;;
  --fetch-wheels)
    cd "$(dirname "${BASH_SOURCE[0]}")/.."
    exec "${PYTHON:-python3}" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --platform manylinux2014_x86_64 -d "${WHEELS:-.whl}" "${WHEEL_LIST[@]}" ;;
  "") ;;
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
  *) echo "usage: $0 [--dry-run | --fetch-wheels]" >&2; exit 2 ;;
esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-$ROOT/bench-results}"   # a relative $OUT is relative to where the script was started
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python}"
WHEELS="${WHEELS:-.whl}"
SITE="$ROOT/.whl/site"
TEST_TIMEOUT="${TEST_TIMEOUT:-150}"
PYTEST_WORKERS="${PYTEST_WORKERS:-8}"
BENCH_TIMEOUT="${BENCH_TIMEOUT:-160}"
CHOICES_TIMEOUT="${CHOICES_TIMEOUT:-75}"
BENCH_BUDGET="${BENCH_BUDGET:-0.5}"
BENCH_BACKENDS="${BENCH_BACKENDS:-cupy,jax,torch}"
BENCH_BATCH_SIZES="${BENCH_BATCH_SIZES:-1,2,32,256,2048,8192,65536}"
BENCH_NETWORKS="${BENCH_NETWORKS:-wide,mnist,digits,seed}"  # the costly cells first: --max-seconds drops the cheap ones
TEST_BACKENDS="${TEST_BACKENDS:-cupy jax}"
if [[ $DRY_RUN == 1 ]]; then
  # The same test phases on the CPU (the whole suite, once per backend), so what passes here can
  # only fail on the GPU for GPU reasons; the benchmarks small.
  TEST_BACKENDS="${DRY_RUN_TEST_BACKENDS:-numpy jax}"
  BENCH_BACKENDS="numpy,jax"
  BENCH_NETWORKS="seed,digits"
  BENCH_BATCH_SIZES="1,32"
  BENCH_BUDGET="0.1"
  TEST_TIMEOUT="${DRY_RUN_TEST_TIMEOUT:-480}"
  BENCH_TIMEOUT=120
  PYTEST_WORKERS="${DRY_RUN_PYTEST_WORKERS:-2}"
fi

export PYTHONPATH="$ROOT/src:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export XLA_PYTHON_CLIENT_PREALLOCATE="${XLA_PYTHON_CLIENT_PREALLOCATE:-false}"  # CuPy and torch share the GPU with JAX
export PYTHONUNBUFFERED=1
START=$SECONDS
STATUS=0
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"

note() { echo "$*" | tee -a "$SUMMARY"; }

# phase NAME LIMIT COMMAND...: run COMMAND with a time limit, its output in $OUT/NAME.log.
phase() {
  local name=$1 limit=$2 rc=0 t0=$SECONDS
  shift 2
  echo "== $name (limit ${limit}s): $*"
  timeout --kill-after=5 "$limit" "$@" >"$OUT/$name.log" 2>&1 || rc=$?
  if [[ $rc == 0 ]]; then
    note "$name: ok in $((SECONDS - t0)) s"
  else
    [[ $rc == 124 || $rc == 137 ]] && note "$name: TIMED OUT after ${limit} s (see $name.log)" \
                                   || note "$name: FAILED with exit code $rc in $((SECONDS - t0)) s (see $name.log)"
    STATUS=1
  fi
  tail -n 3 "$OUT/$name.log" | sed 's/^/   /'
}

note "backprop GPU check $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname)$([[ $DRY_RUN == 1 ]] && echo ' (dry run on the CPU)')"
if git rev-parse --short HEAD >/dev/null 2>&1; then
  note "git: $(git rev-parse --short HEAD)$([[ -n $(git status --porcelain 2>/dev/null) ]] && echo ' + local changes')"
fi

# 1. Missing pure-Python wheels from $WHEELS (filled with pip download, see docs/benchmarks.md).
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  phase install-wheels 120 "$PYTHON" - "$WHEELS" "$SITE" <<'EOF'
import importlib.metadata as md, pathlib, subprocess, sys, zipfile

wheels, site = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
newest = {}
for whl in sorted(wheels.glob("*.whl")):  # name-version-python-abi-platform.whl
    newest[whl.name.split("-")[0].lower().replace("_", "-")] = whl
missing = []
for dist, whl in sorted(newest.items()):
    try:
        print(f"{dist}: installed ({md.version(dist)})")
    except md.PackageNotFoundError:
        if whl.name.endswith("-none-any.whl"):
            missing.append(whl)
        else:
            print(f"{dist}: missing, but {whl.name} is not a pure-Python wheel: skipped")
if missing:
    print("installing into", site, ":", ", ".join(w.name for w in missing))
    site.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--target", str(site), *map(str, missing)]
    if subprocess.run(cmd).returncode != 0:
        print("pip failed; unpacking the wheels instead (a pure-Python wheel is a zip of site-packages)")
        for whl in missing:
            with zipfile.ZipFile(whl) as z:
                z.extractall(site)
EOF
else
  note "install-wheels: no $WHEELS/*.whl, nothing to install"
fi

# 2. Facts about the machine.
if command -v nvidia-smi >/dev/null; then
  nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || true
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv \
    >>"$OUT/nvidia-smi.txt" 2>&1 || true
  note "gpu: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -n 1)"
else
  note "nvidia-smi: not found"
fi
if timeout 60 "$PYTHON" -m backprop info --json >"$OUT/info.json" 2>"$OUT/info.log"; then
  note "info: $("$PYTHON" -c 'import json,sys; d=json.load(open(sys.argv[1])); print("backprop", d["version"], "python", d["python"], "|", ", ".join(b["name"] + ("" if b["available"] else " (unavailable)") for b in d["backends"]))' "$OUT/info.json" 2>/dev/null || echo 'see info.json')"
else
  note "info: FAILED (see info.log)"
  STATUS=1
fi

# 3. The whole test suite, once per backend (-x: stop at the first failure), in full float32
#    matmul precision: the float32 gradient tolerances are not meant for TF32.
TEST_ARGS=()
if [[ $PYTEST_WORKERS != 0 ]] && "$PYTHON" -c "import xdist" 2>/dev/null; then
  TEST_ARGS=(-n "$PYTEST_WORKERS" --dist loadfile)
fi
for backend in $TEST_BACKENDS; do
  phase "tests-$backend" "$TEST_TIMEOUT" env BACKPROP_BACKEND="$backend" BACKPROP_MATMUL_PRECISION=highest \
    "$PYTHON" -m pytest -x -q -p no:cacheprovider --junitxml="$OUT/tests-$backend.xml" ${TEST_ARGS[@]+"${TEST_ARGS[@]}"}
done

# 4. The benchmark grid on both backends; --max-seconds leaves time to write the results.
phase bench "$BENCH_TIMEOUT" env BACKPROP_MATMUL_PRECISION="${BACKPROP_MATMUL_PRECISION:-highest}" \
  "$PYTHON" -m backprop bench --backends "$BENCH_BACKENDS" --networks "$BENCH_NETWORKS" \
  --batch-sizes "$BENCH_BATCH_SIZES" --time-budget "$BENCH_BUDGET" --max-seconds "$((BENCH_TIMEOUT - 35))" \
  --out "$OUT"

# 5. The torch backend's ways to compute the step (`backprop.backends.torch.InPlace.CHOICES`, all off on
#    a GPU until measured there): each flipped beside the default and torch autograd on CUDA, so the
#    defaults can follow a measurement (choices.txt, choices.json).
if [[ $DRY_RUN == 0 && ",$BENCH_BACKENDS," == *",torch,"* ]] \
    && "$PYTHON" -c "import sys, torch; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
  phase torch-choices "$CHOICES_TIMEOUT" env BACKPROP_DEVICE=cuda \
    BACKPROP_MATMUL_PRECISION="${BACKPROP_MATMUL_PRECISION:-highest}" "$PYTHON" -m backprop bench --choices all \
    --backends torch --networks digits,mnist --batch-sizes 32,8192 --time-budget 0.3 --out "$OUT"
fi

# 6. Optional (EPOCH_UNROLLS="1 8 32 128"): JAX's whole epochs of the 2-3-1 network at each scan
#    unroll, to set backends.jax.UNROLL_ACCELERATOR from a measurement (2,000-step epochs).
for unroll in ${EPOCH_UNROLLS:-}; do
  phase "epoch-unroll-$unroll" 120 env BACKPROP_EPOCH_UNROLL="$unroll" BACKPROP_BENCH_EPOCH_STEPS=2000 \
    "$PYTHON" -m pytest -q -p no:cacheprovider benchmarks/test_bench_epoch.py --benchmark-only \
    -k "jax and whole" --benchmark-columns=median,iqr,rounds
done

note "total: $((SECONDS - START)) s; results in $OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
[[ $STATUS == 0 ]] && note "GPU check: PASSED" || note "GPU check: FAILED (see the logs above)"
exit "$STATUS"
