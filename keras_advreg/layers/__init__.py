"""Drop-in Keras layers: 1-Lipschitz layers for certified robustness (`lipschitz.py`,
`activations.py`)."""

from keras_advreg.layers.activations import GroupSort
from keras_advreg.layers.lipschitz import (
    L2NormPooling2D,
    LipschitzConv2D,
    LipschitzDense,
    ScaledAveragePooling2D,
)

__all__ = [
    "GroupSort",
    "L2NormPooling2D",
    "LipschitzConv2D",
    "LipschitzDense",
    "ScaledAveragePooling2D",
]
