"""Drop-in Keras layers: every one a `keras.layers.Layer` in `keras.ops` (every backend),
registered for `.keras` files under the package `keras_advreg`."""

from keras_advreg.layers.input_range import InputRange

__all__ = [
    "InputRange",
]
