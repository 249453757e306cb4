"""The public API is a flat, explicit `__all__`; this pins it."""

import keras_advreg

PUBLIC_API = [
    "AdvConfig",
    "AdversarialRegularization",
    "AdversarialRobustnessCallback",
    "RobustnessReport",
    "__version__",
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
