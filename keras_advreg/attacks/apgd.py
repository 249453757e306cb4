"""APGD-CE, APGD-DLR and APGD-T (Croce & Hein 2020) as attack objects.

The algorithm (step size 2*eps halved at checkpoints, momentum 0.75, restarts from the
best point, per-example best tracking) is in `keras_advreg.attacks.apgd_core`; these
classes bind it to an `AttackProblem`.
"""

from __future__ import annotations

import numbers
from typing import Any

import tensorflow as tf

from keras_advreg.attacks import apgd_core
from keras_advreg.attacks.base import Attack, register_attack, register_preset
from keras_advreg.utils import check_positive_int

_LOSSES = ("ce", "dlr")


def _check_rho(rho: Any) -> float:
    if isinstance(rho, bool) or not isinstance(rho, numbers.Real) or not 0 < rho <= 1:
        raise ValueError(f"`rho` must be a number in (0, 1]. Received: rho={rho!r}")
    return float(rho)


def _require_classes(attack: Attack, problem: Any, needed: int, why: str) -> None:
    classes = 1 if problem.head.binary else problem.head.num_classes
    if classes < needed:
        raise ValueError(
            f"attack {attack.describe()!r} needs a classifier with at least {needed} classes "
            f"({why}). Received a model with {classes} output unit(s). Use attack='apgd-ce' "
            "or 'pgd' for binary and 2-class models."
        )


def run_apgd(attack, problem, state, eps, seed, loss_fn, target_ids=None):
    """`apgd_core.apgd` on an `AttackProblem` with the attack's norm, steps and rho."""
    return apgd_core.apgd(
        lambda v, closure: problem.value_and_grad(state.x, v, closure),
        state.v0,
        state.ids,
        eps,
        problem.lo,
        problem.hi,
        norm=attack.norm,
        steps=attack.steps,
        loss_fn=loss_fn,
        rho=attack.rho,
        seed=seed,
        target_ids=target_ids,
        compact=problem.compactable,
    )


@register_attack("apgd")
class APGD(Attack):
    """Auto-PGD: PGD without a step size to tune (untargeted).

    Args:
        epsilon: float or sequence of floats. Radius. Defaults to `0.1`.
        steps: int. Iterations. Defaults to `100` (the paper's budget).
        loss: str. `"ce"` (cross-entropy on the logits, or the evaluation's
            `loss`) or `"dlr"` (difference of logits ratio: scale-invariant,
            needs >= 3 classes). Defaults to `"ce"`.
        rho: float. Checkpoint threshold on the share of steps that raised the
            loss. Defaults to `0.75`.
        **kwargs: `norm` (`"infinity"` or `"l2"`), `clip_value_min`,
            `clip_value_max`, `restarts`, `seed` (see `Attack`).

    Example:

    >>> APGD(epsilon=0.3, loss="dlr").describe()
    'APGD-DLR-100'
    """

    def __init__(
        self,
        epsilon: Any = 0.1,
        steps: int = 100,
        loss: str = "ce",
        rho: float = 0.75,
        **kwargs: Any,
    ):
        super().__init__(epsilon, **kwargs)
        self.steps = check_positive_int("steps", steps)
        if loss not in _LOSSES:
            raise ValueError(f"`loss` must be one of 'ce', 'dlr'. Received: loss={loss!r}")
        self.loss = loss
        self.rho = _check_rho(rho)

    @property
    def label(self) -> str:
        return f"apgd-{self.loss}"

    def get_config(self) -> dict:
        return {**super().get_config(), "steps": self.steps, "loss": self.loss, "rho": self.rho}

    def describe(self) -> str:
        return f"APGD-{self.loss.upper()}-{self.steps}"

    def check_problem(self, problem: Any) -> None:
        if self.loss == "dlr":
            _require_classes(self, problem, 3, "the DLR loss divides by z_pi1 - z_pi3")

    def _loss_fn(self, problem: Any, state: Any):
        if self.loss == "dlr":
            return apgd_core.dlr
        if problem.custom_loss is None and not problem.head.binary:
            return apgd_core.cross_entropy
        return lambda z, ids: problem.loss(state.y, z)

    def perturb(self, problem, state, eps, seed):
        return run_apgd(self, problem, state, eps, seed, self._loss_fn(problem, state))


@register_attack("apgd-t")
class APGDTargeted(Attack):
    """APGD-T: APGD on the targeted DLR loss, once per target class.

    The targets of an example are the `num_targets` classes with the highest
    clean logits other than its label; each target runs only on the examples
    the previous ones left robust.

    Args:
        epsilon: float or sequence of floats. Radius. Defaults to `0.1`.
        steps: int. Iterations per target. Defaults to `100`.
        num_targets: int. Target classes per example, at most the number of
            classes - 1. Defaults to `9` (all other classes of a 10-class
            model). Needs at least 4 classes.
        rho: float. As for `APGD`. Defaults to `0.75`.
        target_rank: int. Run only the target of this rank (1 = the most
            likely other class); set by the cascade. Defaults to `None` (all).
        **kwargs: `norm`, `clip_value_min`, `clip_value_max`, `restarts`,
            `seed` (see `Attack`).
    """

    runtime_field = "target_rank"

    def __init__(
        self,
        epsilon: Any = 0.1,
        steps: int = 100,
        num_targets: int = 9,
        rho: float = 0.75,
        target_rank: int | None = None,
        **kwargs: Any,
    ):
        super().__init__(epsilon, **kwargs)
        self.steps = check_positive_int("steps", steps)
        self.num_targets = check_positive_int("num_targets", num_targets)
        self.rho = _check_rho(rho)
        self.target_rank = check_positive_int("target_rank", target_rank, allow_none=True)

    label = "apgd-t"

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "steps": self.steps,
            "num_targets": self.num_targets,
            "rho": self.rho,
            "target_rank": self.target_rank,
        }

    def describe(self) -> str:
        return f"APGD-T-{self.steps}x{self.num_targets}"

    def check_problem(self, problem: Any) -> None:
        _require_classes(self, problem, 4, "the targeted DLR loss divides by z_pi1 - z_pi3/4")

    def stages(self, problem: Any = None) -> list[Attack]:
        if self.target_rank is not None:
            return [self]
        targets = self.num_targets
        if problem is not None:  # at most every other class
            targets = min(targets, max(problem.head.num_classes - 1, 1))
        return [self.replace(target_rank=r) for r in range(1, targets + 1)]

    def perturb(self, problem, state, eps, seed, variant=None):
        # The target's rank arrives at run time (`variant`), so the 9 stages share one trace.
        rank = (self.target_rank or 1) if variant is None else tf.maximum(variant, 1)
        scores = tf.cast(state.scores, tf.float32)
        is_label = tf.one_hot(state.ids, tf.shape(scores)[-1], on_value=True, off_value=False)
        others = tf.where(is_label, tf.fill(tf.shape(scores), float("-inf")), scores)
        order = tf.argsort(others, axis=-1, direction="DESCENDING", stable=True)
        targets = tf.cast(tf.gather(order, rank - 1, axis=1), tf.int32)
        return run_apgd(self, problem, state, eps, seed, apgd_core.targeted_dlr, targets)


register_preset("apgd-ce", lambda **kwargs: APGD(**{"loss": "ce", **kwargs}))
register_preset("apgd-dlr", lambda **kwargs: APGD(**{"loss": "dlr", **kwargs}))
