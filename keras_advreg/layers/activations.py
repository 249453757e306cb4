"""Gradient-norm-preserving activations for 1-Lipschitz networks: `GroupSort` (MaxMin)."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

#: Activations (by function name) and their l2 Lipschitz constant, elementwise.
_ACTIVATION_CONSTANTS = {
    "linear": 1.0,
    "relu": 1.0,
    "relu6": 1.0,
    "tanh": 1.0,
    "sigmoid": 0.25,
    "hard_sigmoid": 1.0 / 6.0,
    "softsign": 1.0,
    "elu": 1.0,
    "leaky_relu": 1.0,
    "silu": 1.1,  # max |d/dx x*sigmoid(x)| = 1.0998...
}


def lipschitz_constant_of_activation(fn: Any) -> float | None:
    """The l2 Lipschitz constant of an elementwise Keras activation, or None if unknown."""
    if fn is None:
        return 1.0
    name = getattr(fn, "__name__", None)
    return _ACTIVATION_CONSTANTS.get(name.lower() if isinstance(name, str) else None)


@keras.saving.register_keras_serializable(package="keras_advreg")
class GroupSort(keras.layers.Layer):
    """Sorts the features in groups of `group_size` along `axis` (Anil et al. 2019).

    A permutation of its input that depends on the input: 1-Lipschitz in l2 and
    gradient-norm preserving (the Jacobian is a permutation matrix), unlike ReLU, which
    zeroes half of the gradient. `group_size=2` is MaxMin: each pair `(a, b)` becomes
    `(max(a, b), min(a, b))`. The size of `axis` must be a multiple of `group_size`.

    Args:
        group_size: int >= 2. Features per sorted group (2: MaxMin).
        axis: int. The feature axis (-1 for channels-last images and vectors).

    Example:

    >>> import numpy as np
    >>> from keras_advreg.layers import GroupSort
    >>> x = np.array([[1.0, 3.0, 4.0, 2.0]], dtype="float32")
    >>> keras.ops.convert_to_numpy(GroupSort(2)(x)).tolist()
    [[3.0, 1.0, 4.0, 2.0]]
    """

    def __init__(self, group_size: int = 2, axis: int = -1, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(group_size, int) or isinstance(group_size, bool) or group_size < 2:
            raise ValueError(
                f"`group_size` must be an integer >= 2. Received: group_size={group_size!r}"
            )
        self.group_size = group_size
        self.axis = axis

    def build(self, input_shape):
        size = input_shape[self.axis]
        if size is not None and size % self.group_size:
            raise ValueError(
                f"`GroupSort` needs a feature axis whose size is a multiple of group_size="
                f"{self.group_size}. Received: input shape {tuple(input_shape)}, axis={self.axis}"
            )

    def call(self, inputs):
        x = (
            ops.moveaxis(inputs, self.axis, -1)
            if self.axis not in (-1, len(inputs.shape) - 1)
            else inputs
        )
        shape = ops.shape(x)
        groups = ops.reshape(x, (*shape[:-1], shape[-1] // self.group_size, self.group_size))
        if self.group_size == 2:
            a, b = groups[..., 0], groups[..., 1]
            out = ops.stack([ops.maximum(a, b), ops.minimum(a, b)], axis=-1)
        else:
            out = ops.flip(ops.sort(groups, axis=-1), axis=-1)
        out = ops.reshape(out, shape)
        if x is not inputs:
            out = ops.moveaxis(out, -1, self.axis)
        return out

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "group_size": self.group_size, "axis": self.axis}


__all__ = ["GroupSort", "lipschitz_constant_of_activation"]
