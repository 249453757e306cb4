"""Drop-in Keras layers, each a `keras.layers.Layer` in `keras.ops` (every backend),
registered for `.keras` files under the package `keras_advreg`: the valid input box inside
the model (`input_range.py`), 1-Lipschitz layers for certified robustness (`lipschitz.py`,
`activations.py`) and the point where adversarial regularization perturbs a model's inner
tensors (`perturbation.py`)."""

from keras_advreg.layers.activations import GroupSort
from keras_advreg.layers.embedding_space import EmbeddingSpace
from keras_advreg.layers.input_range import InputRange
from keras_advreg.layers.lipschitz import (
    L2NormPooling2D,
    LipschitzConv2D,
    LipschitzDense,
    ScaledAveragePooling2D,
)
from keras_advreg.layers.perturbation import AdversarialPerturbation

__all__ = [
    "AdversarialPerturbation",
    "EmbeddingSpace",
    "GroupSort",
    "InputRange",
    "L2NormPooling2D",
    "LipschitzConv2D",
    "LipschitzDense",
    "ScaledAveragePooling2D",
]
