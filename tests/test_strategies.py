"""The training step's structure: one strategy per `adv_loss`, imports one way, no module
reaching into another's private members."""

from __future__ import annotations

import ast
import re
from pathlib import Path

TRAINING = Path(__file__).resolve().parents[1] / "keras_advreg" / "training"


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {n for n in names if n.startswith("keras_advreg.training.")}


def test_training_imports_have_no_cycle():
    modules = {p.stem: p for p in TRAINING.glob("*.py") if p.stem != "__init__"}
    graph = {
        name: {i.split(".")[2] for i in _imports(path) if i.split(".")[2] in modules} - {name}
        for name, path in modules.items()
    }
    # The model imports the steps inside its methods; no step module imports the model back
    # (only what sits on top of it: the epsilon schedule, a callback for it).
    importers_of_model = sorted(name for name, deps in graph.items() if "model" in deps)
    assert importers_of_model == ["schedule"]
    state: dict[str, int] = {}

    def visit(node, trail):
        if state.get(node) == 1:
            raise AssertionError(f"import cycle: {' -> '.join(trail + [node])}")
        if state.get(node) == 2:
            return
        state[node] = 1
        for dep in sorted(graph[node]):
            visit(dep, trail + [node])
        state[node] = 2

    for name in sorted(graph):
        visit(name, [])


def test_no_private_members_of_the_model_used_outside_it():
    offenders = []
    for path in TRAINING.glob("*.py"):
        if path.stem == "model":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\bmodel\._[a-z]", line):
                offenders.append(f"{path.name}:{number}: {line.strip()}")
    assert not offenders, offenders


def test_every_adv_loss_name_has_one_strategy():
    from keras_advreg.training.config import ADV_LOSSES, AdvConfig
    from keras_advreg.training.free import FreeTraining
    from keras_advreg.training.losses import STRATEGIES, LabeledLoss, TradesLoss, VatLoss
    from keras_advreg.training.strategies import strategy_for

    assert tuple(STRATEGIES) == ADV_LOSSES == ("labeled", "trades", "vat")
    kinds = {name: type(strategy_for(AdvConfig(adv_loss=name))) for name in ADV_LOSSES}
    assert kinds == {"labeled": LabeledLoss, "trades": TradesLoss, "vat": VatLoss}
    free = AdvConfig.free(0.1)
    assert isinstance(strategy_for(free), FreeTraining)
