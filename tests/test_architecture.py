"""ARCHITECTURE.md is the code as it is: every module listed, imports running one way."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "keras_advreg"

#: The layers, top to bottom (as ARCHITECTURE.md draws them): a module imports only from
#: its own folder and from layers below its own.
LAYERS = [
    ["apps"],
    ["tuning"],
    ["callbacks"],
    ["evaluation", "certification"],
    ["attacks", "training"],
    ["layers", "losses"],
    ["data"],
    ["backend"],
    ["ball", "log_keys", "plotting"],
    ["utils", "version"],
]
RANK = {unit: depth for depth, units in enumerate(LAYERS) for unit in units}

#: Imports known to go sideways (none today; kept for a deliberate exception with its reason).
KNOWN: set[tuple[str, str]] = set()


def _unit(module: str) -> str:
    """`keras_advreg.attacks.pgd` -> `attacks`; `keras_advreg.ball` -> `ball`."""
    return module.split(".")[1]


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "keras_advreg":  # from keras_advreg import plotting
                found += [(node.lineno, f"keras_advreg.{a.name}") for a in node.names]
            elif node.module.startswith("keras_advreg."):
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [
                (node.lineno, a.name) for a in node.names if a.name.startswith("keras_advreg.")
            ]
    return found


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.parent.name != "__pycache__")


def test_every_unit_has_a_layer():
    units = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in _modules()}
    assert units - {"__init__"} <= set(RANK), sorted(units - set(RANK) - {"__init__"})


def test_imports_run_one_way():
    wrong = []
    for path in _modules():
        rel = path.relative_to(PACKAGE)
        own = rel.parts[0].removesuffix(".py")
        if own == "__init__":  # the root package imports the public names from everywhere
            continue
        for line, module in _imports(path):
            target = _unit(module)
            if target in ("version",) or target == own:
                continue
            if RANK.get(target, -1) <= RANK[own] and (rel.as_posix(), target) not in KNOWN:
                wrong.append(f"{rel.as_posix()}:{line} imports {module}")
    assert wrong == []


def test_architecture_lists_every_module():
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    missing = []
    for path in _modules():
        rel = path.relative_to(PACKAGE)
        if rel.name == "__init__.py":
            continue
        if f"`{rel.name}`" not in text and f"`{rel.as_posix()}`" not in text:
            missing.append(rel.as_posix())
    assert missing == []


def test_architecture_draws_the_layers_in_order():
    """The folders' table lists the layers top to bottom, as `LAYERS` does."""
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    order = []
    for row in rows:
        first = row.split("|")[1]
        for unit in RANK:
            if f"`{unit}/`" in first or f"`{unit}.py`" in first:
                order.append(RANK[unit])
    assert order and order == sorted(order), order
