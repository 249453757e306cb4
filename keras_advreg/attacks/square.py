"""The Square attack (Andriushchenko et al. 2020), l-inf: gradient-free, forward passes only.

If it breaks examples the gradient attacks could not, their gradients are masked and
their accuracy overstates robustness. The search itself is in `square_core`.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from keras_advreg.attacks import square_core
from keras_advreg.attacks.base import Attack, register_attack
from keras_advreg.utils import check_positive_int


@register_attack("square")
class Square(Attack):
    """Random square-shaped updates at the vertices of the l-inf ball, kept when they help.

    Needs one image feature (`(height, width[, channels])`) and a bounded box
    (`clip_value_min` and `clip_value_max`).

    Args:
        epsilon: float or sequence of floats. Radius. Defaults to `0.1`.
        queries: int. Model queries per example. Defaults to `5000` (as in
            AutoAttack).
        p_init: float. Initial share of the image in a square. Defaults to `0.8`.
        **kwargs: `clip_value_min`, `clip_value_max`, `restarts`, `seed`.

    Example:

    >>> Square(epsilon=0.3, queries=1000).describe()
    'Square-1000'
    """

    uses_gradients = False
    norms = ("infinity",)

    def __init__(self, epsilon: Any = 0.1, queries: int = 5000, p_init: float = 0.8, **kwargs: Any):
        super().__init__(epsilon, **kwargs)
        self.queries = check_positive_int("queries", queries)
        if isinstance(p_init, bool) or not isinstance(p_init, numbers.Real) or not 0 < p_init <= 1:
            raise ValueError(f"`p_init` must be a number in (0, 1]. Received: p_init={p_init!r}")
        self.p_init = float(p_init)

    label = "square"

    def get_config(self) -> dict:
        return {**super().get_config(), "queries": self.queries, "p_init": self.p_init}

    def describe(self) -> str:
        return f"Square-{self.queries}"

    def check_problem(self, problem: Any) -> None:
        if problem.image_shape is None:
            raise ValueError(
                "attack 'square' needs image features: one float input of shape (height, "
                "width) or (height, width, channels). Received feature shapes "
                f"{[list(s) for s in problem.shapes]}"
            )
        if not problem.bounded:
            raise ValueError(
                "attack 'square' needs the valid input range: set `clip_value_min` and "
                "`clip_value_max` (e.g. 0.0 and 1.0 for images), since it samples the "
                "vertices of the eps-ball inside it. Received: an unbounded feature range"
            )
        if problem.head.binary:
            raise ValueError(
                "attack 'square' needs a classifier with at least 2 output units (its margin "
                "loss compares logits). Received a model with 1 output unit."
            )

    def draw(self, problem: Any, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """The initial stripes and each query's square of `n` examples (`square_core.draw`)."""
        return square_core.draw(rng, n, problem.image_shape, self.queries)

    def perturb(self, problem: Any, state: Any, eps: Any, noise: dict) -> tuple[Any, Any]:
        return square_core.square_linf(
            lambda v: problem.scores(state.x, v),
            state.v0,
            state.ids,
            eps,
            problem.lo,
            problem.hi,
            stripes=noise["stripes"],
            draws=noise["draws"],
            image_shape=problem.image_shape,
            queries=self.queries,
            p_init=self.p_init,
            compact=problem.compactable,
        )
