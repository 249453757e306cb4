"""keras_advreg: adversarial regularization and robustness evaluation for Keras 3.

Built on Neural Structured Learning's perturbation math (FGSM/PGD), with APGD, Square
and AutoAttack for evaluation, a Keras 3 model class, a robustness callback for
`model.fit`, dataset adapters and a keras-tuner builder (`keras_advreg.tuning`).
The package layout is described in ARCHITECTURE.md.

`import keras_advreg` imports everything (TensorFlow too on its backend), which also registers the
serializable classes that `keras.models.load_model` looks up. Only the `keras-advreg`
command (or `KERAS_ADVREG_LAZY_IMPORT=1`) defers these imports to the first use of a name,
so that `keras-advreg --help` and argument errors never import TensorFlow.
"""

import os as _os
import sys as _sys

from keras_advreg.version import __version__

#: Where each public name lives, for the lazy import of the `keras-advreg` command.
_LAZY_NAMES = {
    "AdvConfig": "keras_advreg.training",
    "AdversarialExamplesCallback": "keras_advreg.callbacks",
    "AdversarialRegularization": "keras_advreg.training",
    "AdversarialRobustnessCallback": "keras_advreg.callbacks",
    "EpsilonSchedule": "keras_advreg.training",
    "RobustnessReport": "keras_advreg.evaluation",
    "adversarial_loss": "keras_advreg.training",
    "attacks": "keras_advreg.attacks",  # the subpackage itself
    "check_attack_strength": "keras_advreg.evaluation",
    "evaluate_robustness": "keras_advreg.evaluation",
    "generate_adversarial_examples": "keras_advreg.attacks",
    "layers": "keras_advreg.layers",  # the subpackage itself
    "load_tfds": "keras_advreg.data",
    "make_adv_reg_config": "keras_advreg.training",
    "to_dict": "keras_advreg.data",
    "to_tuple": "keras_advreg.data",
}

#: `os.path.basename(sys.argv[0])` of the `keras-advreg` console script.
_COMMAND_NAMES = ("keras-advreg", "keras-advreg.exe")


def _lazy_import() -> bool:
    """Whether this process is the `keras-advreg` command (or asked for lazy imports)."""
    if _os.environ.get("KERAS_ADVREG_LAZY_IMPORT") == "1":
        return True
    argv = getattr(_sys, "argv", None) or [""]
    return _os.path.basename(str(argv[0])).lower() in _COMMAND_NAMES


if _lazy_import():

    def __getattr__(name: str):
        """Imports a public name on first use (PEP 562)."""
        module_name = _LAZY_NAMES.get(name)
        if module_name is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        import importlib

        # As the eager imports do: NSL through the shim first (TensorFlow backend only).
        import keras

        if keras.backend.backend() == "tensorflow":
            importlib.import_module("keras_advreg.backend.nsl")
        module = importlib.import_module(module_name)
        value = module if name in ("attacks", "layers") else getattr(module, name)
        globals()[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(globals()) | set(_LAZY_NAMES))

else:
    import keras as _keras

    if _keras.backend.backend() == "tensorflow":
        # NSL through the shim first makes a later `import neural_structured_learning` work
        # too. Other backends never import TensorFlow or NSL unless a TensorFlow-only
        # feature is used.
        from keras_advreg.backend import nsl as _nsl  # noqa: F401

    from keras_advreg import attacks, layers
    from keras_advreg.attacks import generate_adversarial_examples
    from keras_advreg.callbacks import AdversarialExamplesCallback, AdversarialRobustnessCallback
    from keras_advreg.data import load_tfds, to_dict, to_tuple
    from keras_advreg.evaluation import (
        RobustnessReport,
        check_attack_strength,
        evaluate_robustness,
    )
    from keras_advreg.training import (
        AdvConfig,
        AdversarialRegularization,
        EpsilonSchedule,
        adversarial_loss,
        make_adv_reg_config,
    )

__all__ = [
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
    "layers",
    "load_tfds",
    "make_adv_reg_config",
    "to_dict",
    "to_tuple",
]
