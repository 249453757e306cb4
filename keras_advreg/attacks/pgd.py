"""PGD (Madry et al. 2018): projected gradient steps from a random start in the ball.

NSL's step math (steepest-ascent direction of unit norm, projection onto the ball,
clipping to the box). As strong as its budget allows: an example counts as broken if
ANY iterate misclassifies it (that iterate is returned), and `restarts` reruns it from
new random starts on the examples still robust.
"""

from __future__ import annotations

import numbers
from typing import Any

import keras
import numpy as np

from keras_advreg.attacks.base import Attack, register_attack
from keras_advreg.attacks.fgsm import scale_small_gradients
from keras_advreg.ball import project, random_unit_ball, unit_direction
from keras_advreg.utils import check_positive_int


@register_attack("pgd")
class PGD(Attack):
    """Projected gradient descent with a fixed step size.

    Args:
        epsilon: float or sequence of floats. Radius. Defaults to `0.1`.
        steps: int. Iterations. Defaults to `10`.
        step_size: float. Step size. Defaults to `None` (`2.5 * epsilon / steps`).
        random_start: bool. Start at a uniform random point of the ball.
            Defaults to `True`.
        **kwargs: `norm` (`"infinity"` or `"l2"`), `clip_value_min`,
            `clip_value_max`, `restarts`, `seed` (see `Attack`).

    Example:

    >>> PGD(epsilon=0.3, steps=40).describe()
    'PGD-40'
    """

    strength = "fixed-step"
    legacy_arguments = {
        **Attack.legacy_arguments,
        "pgd_steps": "steps",
        "pgd_step_size": "step_size",
        "random_start": "random_start",
    }

    def __init__(
        self,
        epsilon: Any = 0.1,
        steps: int = 10,
        step_size: float | None = None,
        random_start: bool = True,
        **kwargs: Any,
    ):
        if kwargs.get("norm") is not None and str(kwargs["norm"]).strip().lower() == "l1":
            raise ValueError(
                "attack='pgd' cannot be used with norm='l1': NSL can only project perturbations "
                "onto an 'infinity' or 'l2' ball. Use attack='fgsm' for l1, or norm='infinity' "
                "or 'l2' for PGD. Received: attack='pgd', norm='l1'"
            )
        super().__init__(epsilon, **kwargs)
        self.steps = check_positive_int("steps", steps)
        if step_size is not None and (
            isinstance(step_size, bool) or not isinstance(step_size, numbers.Real) or step_size <= 0
        ):
            raise ValueError(
                f"`step_size` must be a number > 0 or None. Received: step_size={step_size!r}"
            )
        self.step_size = None if step_size is None else float(step_size)
        if not isinstance(random_start, bool):
            raise ValueError(
                f"`random_start` must be True or False. Received: random_start={random_start!r}"
            )
        self.random_start = random_start

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "steps": self.steps,
            "step_size": self.step_size,
            "random_start": self.random_start,
        }

    def describe(self) -> str:
        return f"PGD-{self.steps}"

    def details(self) -> list[str]:
        size = (
            f"{self.step_size:g}" if self.step_size is not None else f"2.5 * epsilon / {self.steps}"
        )
        return [
            f"{self.steps} steps of size {size}",
            *(["random start"] if self.random_start else []),
        ]

    def report_fields(self) -> dict:
        """The step sizes per epsilon, under the names of the keyword arguments."""
        return {
            "pgd_steps": self.steps,
            "pgd_step_size": self.step_size,
            "pgd_step_sizes": self.step_sizes(),
        }

    def step_sizes(self) -> list[float]:
        """The step size per epsilon: `step_size`, or `2.5 * epsilon / steps`."""
        if self.step_size is not None:
            return [self.step_size] * len(self.epsilons)
        return [2.5 * e / self.steps for e in self.epsilons]

    def draw(self, problem: Any, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """The random start: `{"start": (n, D)}` points of the unit ball (NSL's
        distributions), or `{}` without `random_start`."""
        if not self.random_start:
            return {}
        return {"start": random_unit_ball(rng, n, problem.dims, self.norm)}

    def perturb(self, problem: Any, state: Any, eps: Any, noise: dict) -> tuple[Any, Any]:
        x, v0, ids = state.x, state.v0, state.ids
        size = self.step_size if self.step_size else 2.5 * eps / self.steps
        v = v0
        if self.random_start:
            v = problem.clip(v0 + eps * keras.ops.cast(noise["start"], v0.dtype))
        broken = keras.ops.zeros_like(ids, "bool")
        best = v0

        def body(t, v, best, broken):
            _, scores, grad = problem.value_and_grad(x, v, lambda s: problem.loss(state.y, s))
            wrong = keras.ops.not_equal(problem.classes(scores), ids)
            # keep the first iterate that breaks each example
            newly = keras.ops.logical_and(wrong, keras.ops.logical_not(broken))
            best = keras.ops.where(newly[:, None], v, best)
            broken = keras.ops.logical_or(broken, wrong)
            direction = unit_direction(scale_small_gradients(grad, self.norm), self.norm)
            delta = project(v + size * direction - v0, eps, self.norm)
            return t + 1, problem.clip(v0 + delta), best, broken

        start = keras.ops.convert_to_tensor(0, "int32")
        _, v, best, broken = keras.ops.while_loop(
            lambda t, *_: t < self.steps, body, (start, v, best, broken)
        )
        last_wrong = keras.ops.not_equal(problem.classes(problem.scores(x, v)), ids)
        best = keras.ops.where(broken[:, None], best, v)
        return best, keras.ops.logical_or(broken, last_wrong)
