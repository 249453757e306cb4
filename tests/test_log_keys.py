"""The log keys: named in one module (`keras_advreg.log_keys`), maximised by keras-tuner."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from keras_advreg import log_keys

PACKAGE = Path(__file__).resolve().parent.parent / "keras_advreg"


def test_the_names():
    assert log_keys.ADV_ACCURACY == "val_adv_accuracy"
    assert log_keys.CLEAN_ACCURACY == "val_clean_accuracy"
    assert log_keys.CLEAN_ADV_ACCURACY == "val_clean_adv_accuracy"
    assert log_keys.per_epsilon("val_adv_accuracy", 0.1) == "val_adv_accuracy_eps_0.1"
    assert log_keys.per_epsilon("robust", 1 / 3) == "robust_eps_0.333333"


@pytest.mark.parametrize(
    "name, expected",
    [
        ("val_adv_accuracy", True),
        ("adv_accuracy", True),
        ("val_adv_accuracy_eps_0.3", True),
        ("val_clean_accuracy", True),
        ("val_clean_adv_accuracy", True),
        ("val_loss", False),
        ("val_adv_accuracy2", False),
        ("accuracy", False),
    ],
)
def test_is_accuracy_key(name, expected):
    assert log_keys.is_accuracy_key(name) is expected


def test_no_module_spells_a_key_itself():
    """Every other module takes the names from `log_keys` (string constants scanned by ast)."""
    keys = {log_keys.ADV_ACCURACY, log_keys.CLEAN_ACCURACY, log_keys.CLEAN_ADV_ACCURACY}
    keys |= {log_keys.EPSILON_INFIX}
    spelled = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "log_keys.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in keys:
                spelled.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {node.value!r}")
    assert spelled == []


def test_the_tuner_and_the_callback_use_them():
    pytest.importorskip("keras_tuner")
    from keras_advreg import tuning
    from keras_advreg.backend import keras_tuner_directions
    from keras_advreg.tuning import hypermodel

    assert (tuning.ADV_ACCURACY, tuning.CLEAN_ADV_ACCURACY) == (
        "val_adv_accuracy",
        "val_clean_adv_accuracy",
    )
    assert hypermodel.CLEAN_ACCURACY_KEYS[0] == "val_clean_accuracy"
    assert keras_tuner_directions.is_accuracy_key("val_clean_adv_accuracy")
