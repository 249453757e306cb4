"""The public API is a flat, explicit `__all__`; this pins it."""

import pytest

import keras_advreg


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:3] if part.isdigit())


PUBLIC_API = [
    "AdvConfig",
    "AdversarialExamplesCallback",
    "AdversarialRegularization",
    "AdversarialRobustnessCallback",
    "CertificationReport",
    "EpsilonSchedule",
    "RandomizedSmoothing",
    "RobustnessReport",
    "__version__",
    "adversarial_loss",
    "attacks",
    "certify",
    "check_attack_strength",
    "evaluate_robustness",
    "generate_adversarial_examples",
    "layers",
    "load_tfds",
    "losses",
    "make_adv_reg_config",
    "to_dict",
    "to_tuple",
]


#: Where each public name is defined (written out by hand, not read from the package).
DEFINED_IN = {
    "AdvConfig": "keras_advreg.training.config",
    "AdversarialExamplesCallback": "keras_advreg.callbacks.images",
    "AdversarialRegularization": "keras_advreg.training.model",
    "AdversarialRobustnessCallback": "keras_advreg.callbacks.robustness",
    "CertificationReport": "keras_advreg.certification.report",
    "EpsilonSchedule": "keras_advreg.training.schedule",
    "RandomizedSmoothing": "keras_advreg.certification.smoothing",
    "RobustnessReport": "keras_advreg.evaluation.report",
    "adversarial_loss": "keras_advreg.training.functional",
    "certify": "keras_advreg.certification.lipschitz",
    "check_attack_strength": "keras_advreg.evaluation.checks",
    "evaluate_robustness": "keras_advreg.evaluation.evaluate",
    "generate_adversarial_examples": "keras_advreg.attacks.generate",
    "load_tfds": "keras_advreg.data.tfds",
    "make_adv_reg_config": "keras_advreg.training.config",
    "to_dict": "keras_advreg.data.adapters",
    "to_tuple": "keras_advreg.data.adapters",
}


def test_public_api_is_pinned():
    import importlib

    assert sorted(keras_advreg.__all__) == sorted(PUBLIC_API)
    assert sorted(DEFINED_IN) == sorted(
        set(PUBLIC_API) - {"__version__", "attacks", "layers", "losses"}
    )
    for name, module in DEFINED_IN.items():
        value = getattr(keras_advreg, name)
        assert value is getattr(importlib.import_module(module), name), name
        assert value.__module__ == module, name
    assert keras_advreg.attacks is importlib.import_module("keras_advreg.attacks")
    assert keras_advreg.layers is importlib.import_module("keras_advreg.layers")
    assert keras_advreg.losses is importlib.import_module("keras_advreg.losses")
    assert _version(keras_advreg.__version__) >= (0, 1)


def test_type_checkers_see_every_public_name():
    """The `if TYPE_CHECKING:` imports of the root package (what pyright and mypy read, since
    the names are otherwise set from a table) name exactly the public names, from where
    they live."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(keras_advreg))
    (block,) = [
        node
        for node in tree.body
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "_TYPE_CHECKING"
    ]
    seen = {}
    for node in block.body:
        for alias in node.names:
            seen[alias.asname or alias.name] = (
                f"{node.module}.{alias.name}" if node.module == "keras_advreg" else node.module
            )
    assert seen == keras_advreg._LAZY_NAMES
    assert sorted(keras_advreg.__all__) == sorted([*keras_advreg._LAZY_NAMES, "__version__"])


def test_serializable_classes_are_registered_under_the_package():
    import keras

    name = keras.saving.get_registered_name(keras_advreg.AdversarialRegularization)
    assert name == "keras_advreg>AdversarialRegularization"


ATTACKS_API = [
    "APGD",
    "APGDTargeted",
    "Attack",
    "AutoAttack",
    "FAB",
    "FABTargeted",
    "FGSM",
    "PGD",
    "Square",
    "deserialize",
    "generate_adversarial_examples",
    "get",
    "names",
    "random_in_norm_ball",
    "register_attack",
    "serialize",
]


def test_attacks_api_is_pinned():
    assert sorted(keras_advreg.attacks.__all__) == sorted(ATTACKS_API)
    assert keras_advreg.attacks.names() == [
        "apgd",
        "apgd-ce",
        "apgd-dlr",
        "apgd-t",
        "autoattack",
        "autoattack-fast",
        "autoattack-rand",
        "fab",
        "fab-t",
        "fgsm",
        "pgd",
        "square",
    ]


def test_a_file_saved_before_the_package_reshape_still_loads():
    """tests/data/*v0.1*: saved by keras_advreg 0.1.0.dev0 (flat modules, `keras_advreg.wrappers`)."""
    import json
    import os
    import zipfile

    import keras
    import numpy as np

    here = os.path.join(os.path.dirname(__file__), "data")
    path = os.path.join(here, "adversarial_regularization_v0.1.keras")
    with zipfile.ZipFile(path) as archive:
        saved_by = json.loads(archive.read("metadata.json"))["keras_version"]
    if _version(keras.__version__) < _version(saved_by):  # the floor-version CI job
        pytest.skip(f"saved by Keras {saved_by}: Keras {keras.__version__} cannot read newer files")
    model = keras.models.load_model(path)
    expected = np.load(os.path.join(here, "adversarial_regularization_v0.1_expected.npz"))
    assert isinstance(model, keras_advreg.AdversarialRegularization)
    assert model.adv_config == keras_advreg.AdvConfig(
        multiplier=0.5,
        adv_step_size=0.05,
        adv_grad_norm="infinity",
        clip_value_min=0.0,
        clip_value_max=1.0,
        pgd_iterations=2,
        pgd_epsilon=0.1,
    )
    np.testing.assert_allclose(model.predict(expected["x"], verbose=0), expected["pred"], atol=1e-6)
    model.fit(expected["x"], expected["y"], epochs=1, verbose=0)  # compiled state came back too
