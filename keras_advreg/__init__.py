"""keras_advreg: adversarial regularization and robustness evaluation for Keras 3.

Built on Neural Structured Learning's perturbation math (FGSM/PGD), with a
Keras 3 model class, a robustness callback for `model.fit`, dataset adapters
and a keras-tuner builder (`keras_advreg.tuning`).
"""

# Importing NSL through the shim first makes a later `import neural_structured_learning` work too.
from keras_advreg import _nsl  # noqa: F401  (isort: keep first)
from keras_advreg.adapters import to_dict, to_tuple
from keras_advreg.attacks import generate_adversarial_examples
from keras_advreg.callbacks import AdversarialRobustnessCallback
from keras_advreg.config import AdvConfig, make_adv_reg_config
from keras_advreg.datasets import load_tfds
from keras_advreg.robustness import RobustnessReport, check_attack_strength, evaluate_robustness
from keras_advreg.version import __version__
from keras_advreg.wrappers import AdversarialRegularization

__all__ = [
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
