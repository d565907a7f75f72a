"""The package's layers stay visible: no module imports from a layer above its own.

    backends < core < training < sklearn, bench, diagram, gradcheck < cli < the package root

Every import in every module is read (with ``ast``, including imports inside functions) and
resolved to the module it names.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

import backprop

ROOT = pathlib.Path(backprop.__file__).parent
LAYERS = {"backends": 0, "core": 1, "training": 2, "sklearn": 3, "bench": 3, "diagram": 3, "gradcheck": 3, "cli": 4}
TOP = 5  # the package root (its __init__ is the public facade) and __main__


def _module_name(path: pathlib.Path) -> str:
    parts = ["backprop", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    parts = module.split(".")
    if parts[0] != "backprop":
        return -1  # outside the package
    if len(parts) == 1 or parts[1] == "__main__":
        return TOP
    return LAYERS[parts[1]]


def _imports(path: pathlib.Path):
    """(line, imported module) for every import in the module at ``path``."""
    name = _module_name(path)
    return _imports_of(path.read_text(encoding="utf-8"), name if path.name == "__init__.py" else name.rsplit(".", 1)[0])


def _imports_of(source: str, package: str):
    """(line, imported module) for every import in ``source``, a module of ``package``."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [alias.name for alias in node.names]
            if target == "backprop" and names == ["__version__"]:
                continue  # a constant of the root, not its facade
            # `from . import x` may name a submodule: judge the submodule's layer
            submodules = [
                f"{target}.{n}"
                for n in names
                if (ROOT.parent / f"{target}.{n}".replace(".", "/")).exists()
                or (ROOT.parent / (f"{target}.{n}".replace(".", "/") + ".py")).exists()
            ]
            yield from ((node.lineno, m) for m in (submodules or [target]))


MODULES = sorted(ROOT.rglob("*.py"))


def test_every_module_has_a_layer():
    for path in MODULES:
        _layer(_module_name(path))  # a KeyError names a folder that is in no layer


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_upward_import(path):
    own = _layer(_module_name(path))
    upward = [
        f"line {line}: {target} (layer {_layer(target)})" for line, target in _imports(path) if _layer(target) > own
    ]
    assert not upward, f"{_module_name(path)} (layer {own}) imports from above: {upward}"


def test_the_walker_resolves_every_form_of_import():
    """Relative, absolute, submodule and in-function imports all resolve to the module they name."""
    source = (
        "import numpy\n"
        "from ..training.trainer import Trainer\n"
        "from . import losses\n"
        "def f():\n"
        "    from .. import cli\n"
        "    import backprop.bench\n"
    )
    found = {target for _, target in _imports_of(source, "backprop.core")}
    assert found == {"numpy", "backprop.training.trainer", "backprop.core.losses", "backprop.cli", "backprop.bench"}
    assert {_layer(t) for t in found} == {-1, LAYERS["training"], LAYERS["core"], LAYERS["cli"], LAYERS["bench"]}
