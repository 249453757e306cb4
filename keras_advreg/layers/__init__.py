"""Drop-in Keras layers: 1-Lipschitz layers for certified robustness (`lipschitz.py`,
`activations.py`) and the point where adversarial regularization perturbs a model's inner
tensors (`perturbation.py`)."""

from keras_advreg.layers.activations import GroupSort
from keras_advreg.layers.lipschitz import (
    L2NormPooling2D,
    LipschitzConv2D,
    LipschitzDense,
    ScaledAveragePooling2D,
)
from keras_advreg.layers.perturbation import AdversarialPerturbation

__all__ = [
    "AdversarialPerturbation",
    "GroupSort",
    "L2NormPooling2D",
    "LipschitzConv2D",
    "LipschitzDense",
    "ScaledAveragePooling2D",
]
