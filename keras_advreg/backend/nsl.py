"""The one place that imports Neural Structured Learning (NSL).

NSL 1.4.0 (its last release) imports `tf.estimator` from its package
`__init__`, and TensorFlow >= 2.16 no longer ships `tf.estimator`, so a plain
`import neural_structured_learning` fails there. NSL's math layer (`nsl.lib`,
`nsl.configs`, `nsl.keras.adversarial_loss`) does not need the estimator at
all. When, and only when, `tf.estimator` is missing, this module registers a
stand-in for the `neural_structured_learning.estimator` subpackage before the
import, and touches nothing else. Afterwards a user's own
`import neural_structured_learning` works too (Python reuses the imported
module), and only the estimator helpers raise, with an explanation.

Every other module of keras_advreg gets NSL from here:

    from keras_advreg.backend.nsl import nsl, adversarial_neighbor
"""

from __future__ import annotations

import importlib
import sys
import types

import tensorflow as tf

_ESTIMATOR_MODULE = "neural_structured_learning.estimator"
_ESTIMATOR_HELPERS = ("add_adversarial_regularization", "add_graph_regularization")


def _estimator_stand_in() -> types.ModuleType:
    module = types.ModuleType(_ESTIMATOR_MODULE)
    module.__doc__ = (
        "Stand-in installed by keras_advreg: NSL's estimator helpers need `tf.estimator`, "
        "which TensorFlow >= 2.16 no longer ships."
    )

    def _unavailable(name: str):
        def helper(*args, **kwargs):
            raise ImportError(
                f"`neural_structured_learning.estimator.{name}` needs `tf.estimator`, which "
                f"TensorFlow {tf.__version__} does not ship (it was removed in 2.16). Use "
                "`keras_advreg.AdversarialRegularization` (a Keras 3 model) instead."
            )

        helper.__name__ = name
        return helper

    for name in _ESTIMATOR_HELPERS:
        setattr(module, name, _unavailable(name))
    module.__all__ = list(_ESTIMATOR_HELPERS)
    module._keras_advreg_stand_in = True
    return module


def _tf_has_estimator() -> bool:
    try:
        from tensorflow import estimator  # noqa: F401
    except ImportError:
        return False
    return True


def import_nsl() -> types.ModuleType:
    """Imports and returns the `neural_structured_learning` package.

    On TensorFlow builds without `tf.estimator`, NSL's estimator subpackage is
    replaced by a stand-in whose helpers raise `ImportError` when called.
    Calling this more than once is cheap and returns the same module.
    """
    if "neural_structured_learning" in sys.modules:
        return sys.modules["neural_structured_learning"]
    if _ESTIMATOR_MODULE not in sys.modules and not _tf_has_estimator():
        sys.modules[_ESTIMATOR_MODULE] = _estimator_stand_in()
    return importlib.import_module("neural_structured_learning")


nsl = import_nsl()
# The pieces of NSL that keras_advreg builds on.
adversarial_neighbor = importlib.import_module(
    "neural_structured_learning.lib.adversarial_neighbor"
)
nsl_utils = importlib.import_module("neural_structured_learning.lib.utils")
nsl_configs = nsl.configs

__all__ = ["adversarial_neighbor", "import_nsl", "nsl", "nsl_configs", "nsl_utils"]
