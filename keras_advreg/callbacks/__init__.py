"""Callbacks for `model.fit`: robust accuracy in `logs`, adversarial examples in TensorBoard."""

from keras_advreg.callbacks.images import AdversarialExamplesCallback
from keras_advreg.callbacks.robustness import AdversarialRobustnessCallback

__all__ = ["AdversarialExamplesCallback", "AdversarialRobustnessCallback"]
