"""keras_advreg: adversarial regularization and robustness evaluation for Keras 3.

Built on Neural Structured Learning's perturbation math (FGSM/PGD), with APGD, Square
and AutoAttack for evaluation, a Keras 3 model class, a robustness callback for
`model.fit`, dataset adapters and a keras-tuner builder (`keras_advreg.tuning`).
The package layout is described in ARCHITECTURE.md.
"""

# Importing NSL through the shim first makes a later `import neural_structured_learning` work too.
from keras_advreg import attacks
from keras_advreg.attacks import generate_adversarial_examples
from keras_advreg.backend import nsl as _nsl  # noqa: F401  (isort: keep first)
from keras_advreg.callbacks import AdversarialExamplesCallback, AdversarialRobustnessCallback
from keras_advreg.data import load_tfds, to_dict, to_tuple
from keras_advreg.evaluation import RobustnessReport, check_attack_strength, evaluate_robustness
from keras_advreg.training import (
    AdvConfig,
    AdversarialRegularization,
    EpsilonSchedule,
    make_adv_reg_config,
)
from keras_advreg.version import __version__

__all__ = [
    "AdvConfig",
    "AdversarialExamplesCallback",
    "AdversarialRegularization",
    "AdversarialRobustnessCallback",
    "EpsilonSchedule",
    "RobustnessReport",
    "__version__",
    "attacks",
    "check_attack_strength",
    "evaluate_robustness",
    "generate_adversarial_examples",
    "load_tfds",
    "make_adv_reg_config",
    "to_dict",
    "to_tuple",
]
