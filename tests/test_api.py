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
    "EpsilonSchedule",
    "RobustnessReport",
    "__version__",
    "adversarial_loss",
    "attacks",
    "check_attack_strength",
    "evaluate_robustness",
    "generate_adversarial_examples",
    "load_tfds",
    "make_adv_reg_config",
    "to_dict",
    "to_tuple",
]


def test_public_api_is_pinned():
    assert sorted(keras_advreg.__all__) == sorted(PUBLIC_API)
    for name in keras_advreg.__all__:
        assert getattr(keras_advreg, name) is not None


def test_serializable_classes_are_registered_under_the_package():
    import keras

    name = keras.saving.get_registered_name(keras_advreg.AdversarialRegularization)
    assert name == "keras_advreg>AdversarialRegularization"


ATTACKS_API = [
    "APGD",
    "APGDTargeted",
    "Attack",
    "AutoAttack",
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
