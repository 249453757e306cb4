"""The names of the values keras_advreg writes into Keras' `logs`: one place for all of them.

`AdversarialRobustnessCallback` writes them, the tuner's objective and its blend read them,
and keras-tuner learns here that they are maximised. No Keras import: the lowest layer.
"""

from __future__ import annotations

from keras_advreg.utils import format_eps

#: Accuracy under the attack at its first epsilon (the callback's default `metric_name`).
ADV_ACCURACY = "val_adv_accuracy"
#: Accuracy on the unperturbed examples the callback attacks.
CLEAN_ACCURACY = "val_clean_accuracy"
#: Certified accuracy (`AdversarialRobustnessCallback(certify=True)`).
CERTIFIED_ACCURACY = "val_certified_accuracy"
#: The tuner's blend: `robust_weight * ADV_ACCURACY + (1 - robust_weight) * CLEAN_ACCURACY`.
CLEAN_ADV_ACCURACY = "val_clean_adv_accuracy"
#: What joins a metric name and an epsilon in the per-epsilon keys.
EPSILON_INFIX = "_eps_"

# The accuracies above without "val_" (keras-tuner strips it): maximised.
_ACCURACIES = tuple(
    k[len("val_") :] for k in (ADV_ACCURACY, CLEAN_ACCURACY, CLEAN_ADV_ACCURACY, CERTIFIED_ACCURACY)
)


def per_epsilon(metric_name: str, epsilon: float) -> str:
    """The log key of `metric_name` at one epsilon, e.g. `"val_adv_accuracy_eps_0.1"`.

    Example:

    >>> per_epsilon(ADV_ACCURACY, 0.1)
    'val_adv_accuracy_eps_0.1'
    """
    return f"{metric_name}{EPSILON_INFIX}{format_eps(epsilon)}"


def is_accuracy_key(name: str) -> bool:
    """Whether `name` is one of these accuracies (with or without "val_", or per epsilon).

    Example:

    >>> is_accuracy_key("val_adv_accuracy_eps_0.3"), is_accuracy_key("val_loss")
    (True, False)
    """
    bare = name[len("val_") :] if name.startswith("val_") else name
    return any(bare == p or bare.startswith(p + EPSILON_INFIX) for p in _ACCURACIES)


__all__ = [
    "ADV_ACCURACY",
    "CERTIFIED_ACCURACY",
    "CLEAN_ACCURACY",
    "CLEAN_ADV_ACCURACY",
    "EPSILON_INFIX",
    "is_accuracy_key",
    "per_epsilon",
]
