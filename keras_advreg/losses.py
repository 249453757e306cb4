"""Losses for 1-Lipschitz classifiers: the Lipschitz-margin cross-entropy."""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_advreg")
class LipschitzMarginCrossEntropy(keras.losses.Loss):
    """Cross-entropy on logits whose true class is lowered by the margin a certificate needs.

    For a model with l2 Lipschitz constant `L` (1 for a model of `keras_advreg.layers`), an
    input is certified at radius `epsilon` when its logit margin exceeds
    `sqrt(2) * L * epsilon`. This loss is the cross-entropy of
    `(z - sqrt(2) * L * epsilon * onehot(y)) / temperature`, times `temperature`
    (Tsuzuku et al. 2018; the offset/temperature form of Prach & Lampert 2022): it keeps
    pushing each margin until it clears the certified radius `epsilon`. A larger
    `temperature` is a softer loss (more clean accuracy, less certified); a larger
    `epsilon` trades clean accuracy for certified accuracy at large radii.

    Args:
        epsilon: float > 0. The l2 radius training aims to certify.
        temperature: float > 0. The logits are divided by it (and the loss multiplied).
        lipschitz_constant: float > 0. The model's l2 Lipschitz bound (1 for models built
            from `keras_advreg.layers`).
        from_logits: must be True: the model outputs logits (a softmax would hide the
            margin).

    Labels may be sparse class ids or one-hot.

    Example:

    >>> import numpy as np
    >>> from keras_advreg.losses import LipschitzMarginCrossEntropy
    >>> loss = LipschitzMarginCrossEntropy(epsilon=0.5, temperature=1.0)
    >>> z = np.array([[3.0, 0.0]], dtype="float32")
    >>> round(float(loss(np.array([0]), z)), 4)  # cross-entropy of [3 - 0.7071, 0]
    0.0962
    """

    def __init__(
        self,
        epsilon: float = 1.0,
        temperature: float = 0.25,
        lipschitz_constant: float = 1.0,
        from_logits: bool = True,
        reduction: str = "sum_over_batch_size",
        name: str = "lipschitz_margin_cross_entropy",
        dtype: Any = None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        for arg, value in (
            ("epsilon", epsilon),
            ("temperature", temperature),
            ("lipschitz_constant", lipschitz_constant),
        ):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                raise ValueError(f"`{arg}` must be a number > 0. Received: {arg}={value!r}")
        if from_logits is not True:
            raise ValueError(
                "`LipschitzMarginCrossEntropy` needs logits (the model without a softmax). "
                f"Received: from_logits={from_logits!r}"
            )
        self.epsilon = float(epsilon)
        self.temperature = float(temperature)
        self.lipschitz_constant = float(lipschitz_constant)
        self.from_logits = True

    @property
    def margin(self) -> float:
        """`sqrt(2) * lipschitz_constant * epsilon`, subtracted from the true logit."""
        return math.sqrt(2.0) * self.lipschitz_constant * self.epsilon

    def call(self, y_true, y_pred):
        y_pred = ops.convert_to_tensor(y_pred)
        num_classes = y_pred.shape[-1]
        y_true = ops.convert_to_tensor(y_true)
        if (
            len(y_true.shape) == len(y_pred.shape)
            and y_true.shape[-1] == num_classes
            and num_classes > 1
        ):
            onehot = ops.cast(y_true, y_pred.dtype)
        else:
            ids = ops.reshape(ops.cast(y_true, "int32"), (-1,))
            onehot = ops.one_hot(ids, num_classes, dtype=y_pred.dtype)
        z = (y_pred - self.margin * onehot) / self.temperature
        return self.temperature * keras.losses.categorical_crossentropy(onehot, z, from_logits=True)

    def get_config(self):
        return {
            "epsilon": self.epsilon,
            "temperature": self.temperature,
            "lipschitz_constant": self.lipschitz_constant,
            "from_logits": self.from_logits,
            "reduction": self.reduction,
            "name": self.name,
            "dtype": self.dtype if isinstance(self.dtype, str) else None,
        }


__all__ = ["LipschitzMarginCrossEntropy"]
