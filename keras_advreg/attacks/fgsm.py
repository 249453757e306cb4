"""FGSM (Goodfellow et al. 2015): one step of size epsilon along the loss gradient.

NSL's math: the gradient is turned into the steepest-ascent direction of unit `norm`
(`sign` for l-inf) and scaled by epsilon, then clipped to the box. Cheap, and an upper
bound on robust accuracy only: models trained against it often resist it alone.
"""

from __future__ import annotations

from typing import Any

import keras

from keras_advreg.attacks.base import Attack, register_attack
from keras_advreg.ball import unit_direction


def scale_small_gradients(grad: Any, norm: str) -> Any:
    """For l2/l1: scale tiny gradients up (same direction) so that NSL's normalisation,
    which divides by max(norm, 1e-6), still moves confident examples by epsilon.

    Args:
        grad: float tensor of shape `(batch, D)`.
        norm: str. `"infinity"` (returned as is), `"l2"` or `"l1"`.

    Returns:
        `grad` divided per example by its largest magnitude (rows of zeros unchanged).
    """
    if norm == "infinity":
        return grad
    peak = keras.ops.max(keras.ops.abs(grad), axis=1, keepdims=True)
    safe = keras.ops.where(peak > 0, peak, keras.ops.ones_like(peak))
    return grad * (1.0 / safe)


@register_attack("fgsm")
class FGSM(Attack):
    """Fast gradient sign method (l-inf), or its l2 / l1 fast-gradient variant.

    Args:
        epsilon: float or sequence of floats. Radius (several share one
            gradient). Defaults to `0.1`.
        norm: str. `"infinity"`, `"l2"` or `"l1"`. Defaults to `"infinity"`.
        clip_value_min, clip_value_max: Box of the features (see `Attack`).
        restarts, seed: Accepted for a uniform interface and ignored (FGSM is
            deterministic).

    Example:

    >>> FGSM(epsilon=0.3).describe()
    'FGSM'
    """

    strength = "single-step"
    norms = ("infinity", "l2", "l1")

    def __init__(
        self,
        epsilon: Any = 0.1,
        norm: str = "infinity",
        clip_value_min: Any = None,
        clip_value_max: Any = None,
        restarts: Any = None,
        seed: Any = None,
        **kwargs: Any,
    ):
        # `restarts` and `seed` are accepted and ignored: FGSM is deterministic (a restart
        # would repeat the same step). Any other argument is an error (see `Attack`).
        super().__init__(epsilon, norm, clip_value_min, clip_value_max, **kwargs)

    def get_config(self) -> dict:
        config = super().get_config()
        del config["restarts"], config["seed"]
        return config

    def perturb(self, problem: Any, state: Any, eps: Any, noise: dict) -> tuple[Any, Any]:
        direction = unit_direction(scale_small_gradients(state.grad, self.norm), self.norm)
        v_adv = problem.clip(state.v0 + eps * direction)
        wrong = keras.ops.not_equal(problem.classes(problem.scores(state.x, v_adv)), state.ids)
        return v_adv, wrong
