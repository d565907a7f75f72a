"""Show the version, every backend (available or why not), devices, dtype and the BLAS in use
(and, for backends that say more of themselves, such as torch: its version and CPU threads).

Reads BACKPROP_BACKEND, BACKPROP_DEVICE and BACKPROP_DTYPE like every other command.
"""

from __future__ import annotations

import json
import os
import platform


def add_arguments(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def report() -> dict:
    from .. import __version__
    from ..backends import BACKENDS, get_backend, probe
    from ..backends.numpy import blas_info

    backends = []
    for name in BACKENDS:
        p = probe(name)
        entry = {"name": name, "available": p.available, "reason": p.reason}
        if p.available:
            try:
                module = __import__(f"backprop.backends.{name}", fromlist=["devices"])
                entry["devices"] = module.devices()
                if hasattr(module, "details"):  # e.g. torch: version, CUDA, CPU threads
                    entry.update(module.details())
            except Exception as exc:  # a broken driver must not break the report
                entry["available"], entry["reason"] = False, f"{type(exc).__name__}: {exc}"
        backends.append(entry)
    selected = get_backend()
    return {
        "version": __version__,
        "python": platform.python_version(),
        "selected": {"backend": selected.name, "device": selected.device_name, "dtype": selected.dtype_name},
        "environment": {k: os.environ.get(k) for k in ("BACKPROP_BACKEND", "BACKPROP_DEVICE", "BACKPROP_DTYPE")},
        "backends": backends,
        "blas": blas_info(),
    }


def run(args) -> int:
    info = report()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    sel = info["selected"]
    print(f"backprop {info['version']} (Python {info['python']})")
    print(f"selected: backend={sel['backend']} device={sel['device']} dtype={sel['dtype']}")
    print("backends:")
    for b in info["backends"]:
        state = f"available, devices: {', '.join(b['devices'])}" if b["available"] else f"unavailable: {b['reason']}"
        if b["available"] and "version" in b:
            state += f"; version {b['version']}" + (f", CUDA {b['cuda']}" if b.get("cuda") else "")
        if b["available"] and "threads" in b:
            state += f"; CPU threads {b['threads']} (inter-op {b.get('interop_threads')})"
        print(f"  {b['name']:<17} {state}")
    print("numpy BLAS:")
    for lib in info["blas"] or [{"internal_api": "none found"}]:
        print(
            f"  {lib.get('internal_api')} {lib.get('version') or ''} kernel={lib.get('architecture')} "
            f"threads={lib.get('num_threads')}"
        )
    return 0
