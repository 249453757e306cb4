"""FAB and FAB-T (Croce & Hein 2020) as attack objects: minimal perturbations to the boundary.

The search (linearise, project onto the nearest linearised boundary within the box, step
towards the clean point) is in `keras_advreg.attacks.fab_core`; these classes bind it to an
`AttackProblem`. An example counts as broken when FAB finds a misclassified point at a
distance of at most epsilon, as in the reference implementation.
"""

from __future__ import annotations

import numbers
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_advreg.attacks import fab_core
from keras_advreg.attacks.apgd import _require_classes, target_classes
from keras_advreg.attacks.base import Attack, register_attack
from keras_advreg.attacks.heads import class_mask, true_logit
from keras_advreg.utils import check_positive_int


def _check_fraction(name: str, value: Any, high: float, closed: bool = True) -> float:
    """A number in (0, high] (or (0, high) when not `closed`), or a Keras-style error."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    ok = ok and 0 < value and (value <= high if closed else value < high)
    if not ok:
        interval = f"(0, {high:g}]" if closed else f"(0, {high:g})"
        raise ValueError(f"`{name}` must be a number in {interval}. Received: {name}={value!r}")
    return float(value)


def _tile(tree: Any, times: int) -> Any:
    """Every tensor of a nest repeated `times` times along the batch axis (blocks)."""
    return keras.tree.map_structure(lambda a: ops.tile(a, [times] + [1] * (len(a.shape) - 1)), tree)


def linearize_untargeted(problem: Any, state: Any) -> Any:
    """`v -> (f, g)`: `z_k - z_y` for every class `k` and their gradients, `(B, C)` and
    `(B, C, D)`, from one backward pass over the batch tiled `C` times (`1e10` at `k = y`)."""
    classes = problem.head.num_classes

    def linearize(v):
        eye = ops.eye(classes, dtype="float32")
        labels = ops.one_hot(state.ids, classes, dtype="float32")

        def closure(z):  # z: (C * B, C), block k holds the batch again, for class k
            z = ops.reshape(ops.cast(z, "float32"), (classes, -1, classes))
            own = ops.sum(z * eye[:, None, :], axis=-1)  # z_k in block k
            label = ops.sum(z * labels[None, :, :], axis=-1)  # z_y
            return ops.reshape(own - label, (-1,))

        x = _tile(state.x, classes)
        loss, _, grad = problem.value_and_grad(x, ops.tile(v, [classes, 1]), closure)
        f = ops.transpose(ops.reshape(loss, (classes, -1)))
        g = ops.transpose(ops.reshape(grad, (classes, -1, problem.dims)), (1, 0, 2))
        f = ops.where(class_mask(f, state.ids), fab_core.NOT_FOUND, f)
        return f, g

    return linearize


def linearize_targeted(problem: Any, state: Any, targets: Any) -> Any:
    """`v -> (f, g)`: `z_t - z_y` for each example's target `t` and its gradient, `(B, 1)` and
    `(B, 1, D)` (one backward pass)."""

    def linearize(v):
        def closure(z):
            return true_logit(z, targets) - true_logit(z, state.ids)

        loss, _, grad = problem.value_and_grad(state.x, v, closure)
        return loss[:, None], grad[:, None, :]

    return linearize


@register_attack("fab")
class FAB(Attack):
    """Fast Adaptive Boundary attack: the smallest perturbation that changes the class.

    Each iteration linearises the classifier, projects the current point and
    the clean one onto the nearest linearised decision boundary (within the
    box) and moves to a combination of the two; an example counts as broken
    when a misclassified point at a distance of at most `epsilon` is found.
    The first run starts at the clean point, each further restart at a
    random point at distance `epsilon / 2`.

    Untargeted, it needs the gradients of every logit: one backward pass
    over the batch repeated once per class, per iteration.

    Args:
        epsilon: float or sequence of floats. Radius. Defaults to `0.1`.
        steps: int. Iterations. Defaults to `100`.
        alpha_max: float in (0, 1). Largest weight of the clean point's
            projection in a step. Defaults to `0.1`.
        eta: float >= 1. Overshoot of the projections. Defaults to `1.05`.
        beta: float in (0, 1). Step back towards the clean point after an
            adversarial iterate. Defaults to `0.9`.
        restart_index: int. Run once, as this restart (0: from the clean
            point, else from a random one); set by the cascade. Defaults to
            `None` (`restarts` runs).
        **kwargs: `norm` (`"infinity"`, `"l2"` or `"l1"`), `clip_value_min`,
            `clip_value_max`, `restarts`, `seed` (see `Attack`).

    Example:

    >>> FAB(epsilon=0.3).describe()
    'FAB-100'
    """

    norms = ("infinity", "l2", "l1")

    def __init__(
        self,
        epsilon: Any = 0.1,
        steps: int = 100,
        alpha_max: float = 0.1,
        eta: float = 1.05,
        beta: float = 0.9,
        restart_index: int | None = None,
        **kwargs: Any,
    ):
        super().__init__(epsilon, **kwargs)
        self.steps = check_positive_int("steps", steps)
        self.alpha_max = _check_fraction("alpha_max", alpha_max, 1.0, closed=False)
        if isinstance(eta, bool) or not isinstance(eta, numbers.Real) or not 1 <= eta < 10:
            raise ValueError(f"`eta` must be a number in [1, 10). Received: eta={eta!r}")
        self.eta = float(eta)
        self.beta = _check_fraction("beta", beta, 1.0, closed=False)
        if restart_index is not None and (
            isinstance(restart_index, bool)
            or not isinstance(restart_index, numbers.Integral)
            or restart_index < 0
        ):
            raise ValueError(
                "`restart_index` must be None or an integer >= 0. "
                f"Received: restart_index={restart_index!r}"
            )
        self.restart_index = None if restart_index is None else int(restart_index)

    label = "fab"

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "steps": self.steps,
            "alpha_max": self.alpha_max,
            "eta": self.eta,
            "beta": self.beta,
            "restart_index": self.restart_index,
        }

    def describe(self) -> str:
        return f"FAB-{self.steps}"

    def compiled_key(self) -> str:
        # Restarts differ only in their draws, targets only in `variant`: one trace for all.
        changes = {"restart_index": None}
        if self.runtime_field:
            changes[self.runtime_field] = None
        return self.replace(**changes).key()

    def check_problem(self, problem: Any) -> None:
        if problem.head.binary:
            _require_classes(self, problem, 2, "it compares logits")

    def _runs(self) -> list[Attack]:
        """One stage per restart (the first from the clean point), each run once."""
        if self.restart_index is not None:
            return [self]
        return [self.replace(restart_index=r, restarts=1) for r in range(self.restarts)]

    def stages(self, problem: Any = None) -> list[Attack]:
        return self._runs()

    def draw(self, problem: Any, n: int, rng: np.random.Generator) -> dict:
        """The random start of this restart (zeros for the first: the clean point)."""
        rng = rng if self.restart_index else None
        return {"start": fab_core.draw_start(rng, n, problem.dims, self.norm)}

    def _fab(self, problem: Any, state: Any, eps: Any, noise: dict, linearize: Any):
        adv, norms = fab_core.fab(
            linearize,
            lambda v: problem.scores(state.x, v),
            state.v0,
            state.ids,
            eps,
            problem.lo,
            problem.hi,
            norm=self.norm,
            steps=self.steps,
            start=noise["start"],
            alpha_max=self.alpha_max,
            eta=self.eta,
            beta=self.beta,
        )
        broken = ops.less_equal(norms, ops.cast(eps, "float32"))
        return ops.where(broken[:, None], adv, state.v0), broken

    def perturb(self, problem, state, eps, noise):
        return self._fab(problem, state, eps, noise, linearize_untargeted(problem, state))


@register_attack("fab-t")
class FABTargeted(FAB):
    """FAB-T: FAB towards one target class at a time (one backward pass per iteration).

    The targets of an example are the `num_targets` classes with the highest
    clean logits other than its label (as APGD-T); each target runs only on
    the examples the previous ones left robust. Needs at least 3 classes.

    Args:
        epsilon: float or sequence of floats. Radius. Defaults to `0.1`.
        steps: int. Iterations per target. Defaults to `100`.
        num_targets: int. Target classes per example (at most the number of
            classes - 1 are used). Defaults to `9`.
        target_rank: int. Run only the target of this rank (1 = the most
            likely other class); set by the cascade. Defaults to `None` (all).
        **kwargs: `alpha_max`, `eta`, `beta`, `restart_index` (see `FAB`),
            `norm`, `clip_value_min`, `clip_value_max`, `restarts`, `seed`.

    Example:

    >>> FABTargeted(epsilon=0.3).describe()
    'FAB-T-100x9'
    """

    runtime_field = "target_rank"

    def __init__(
        self,
        epsilon: Any = 0.1,
        steps: int = 100,
        num_targets: int = 9,
        target_rank: int | None = None,
        **kwargs: Any,
    ):
        super().__init__(epsilon, steps, **kwargs)
        self.num_targets = check_positive_int("num_targets", num_targets)
        self.target_rank = check_positive_int("target_rank", target_rank, allow_none=True)

    label = "fab-t"

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "num_targets": self.num_targets,
            "target_rank": self.target_rank,
        }

    def describe(self) -> str:
        return f"FAB-T-{self.steps}x{self.num_targets}"

    def check_problem(self, problem: Any) -> None:
        _require_classes(self, problem, 3, "it needs a target class besides the top two")

    def stages(self, problem: Any = None) -> list[Attack]:
        if self.target_rank is not None:
            return self._runs()
        targets = self.num_targets
        if problem is not None:  # at most every other class
            targets = min(targets, max(problem.head.num_classes - 1, 1))
        return [s for r in range(1, targets + 1) for s in self.replace(target_rank=r)._runs()]

    def perturb(self, problem, state, eps, noise, variant=None):
        # The target's rank arrives at run time (`variant`), so all stages share one trace.
        rank = (self.target_rank or 1) if variant is None else ops.maximum(variant, 1)
        targets = target_classes(state.scores, state.ids, rank)
        return self._fab(problem, state, eps, noise, linearize_targeted(problem, state, targets))
