"""APGD-CE, APGD-DLR and APGD-T (Croce & Hein 2020) as attack objects.

The algorithm (step size 2*eps halved at checkpoints, momentum 0.75, restarts from the
best point, per-example best tracking) is in `keras_advreg.attacks.apgd_core`; these
classes bind it to an `AttackProblem`.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
from keras import ops

from keras_advreg.attacks import apgd_core
from keras_advreg.attacks.base import Attack, register_attack, register_preset
from keras_advreg.utils import check_positive_int

_LOSSES = ("ce", "dlr")


def check_eot_iter(eot_iter: Any) -> int:
    """The number of draws a gradient is averaged over (expectation over transformation)."""
    if isinstance(eot_iter, bool) or not isinstance(eot_iter, numbers.Integral) or eot_iter < 1:
        raise ValueError(
            "`eot_iter` must be an integer >= 1 (the number of draws of a randomized model "
            f"each gradient is averaged over; 1 for a deterministic model). "
            f"Received: eot_iter={eot_iter!r}"
        )
    return int(eot_iter)


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


def draw_apgd(attack: Attack, problem: Any, n: int, rng: np.random.Generator) -> dict:
    """The host-side draws of one APGD run: its random start (`apgd_core.draw_start`)."""
    return {"start": apgd_core.draw_start(rng, n, problem.dims, attack.norm)}


def run_apgd(
    attack: Attack,
    problem: Any,
    state: Any,
    eps: Any,
    noise: dict,
    loss_fn: Any,
    target_ids: Any = None,
) -> tuple[Any, Any]:
    """`apgd_core.apgd` on an `AttackProblem` with the attack's norm, steps and rho.

    APGD always starts at a random point of the ball, from `noise["start"]` (`draw_apgd`).
    With expectation over transformation (`eot_iter > 1`: a randomized model) it keeps
    searching after a misclassifying draw and returns the clean point of an example it did
    not break, as the reference implementation does.
    """
    draws = getattr(attack, "eot_iter", 1)
    return apgd_core.apgd(
        lambda v, closure: problem.value_and_grad(state.x, v, closure, draws=draws),
        state.v0,
        state.ids,
        eps,
        problem.lo,
        problem.hi,
        norm=attack.norm,
        steps=attack.steps,
        loss_fn=loss_fn,
        rho=attack.rho,
        start=noise["start"],
        target_ids=target_ids,
        compact=problem.compactable,
        keep_searching=draws > 1,
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
        eot_iter: int. Expectation over transformation: each gradient is the
            mean of the gradients of this many forward passes of a randomized
            model (noise layers, dropout at inference); `20` in the reference
            AutoAttack's `rand` version. Defaults to `1`.
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
        eot_iter: int = 1,
        **kwargs: Any,
    ):
        super().__init__(epsilon, **kwargs)
        self.steps = check_positive_int("steps", steps)
        if loss not in _LOSSES:
            raise ValueError(f"`loss` must be one of 'ce', 'dlr'. Received: loss={loss!r}")
        self.loss = loss
        self.rho = _check_rho(rho)
        self.eot_iter = check_eot_iter(eot_iter)

    @property
    def label(self) -> str:
        return f"apgd-{self.loss}"

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "steps": self.steps,
            "loss": self.loss,
            "rho": self.rho,
            "eot_iter": self.eot_iter,
        }

    def describe(self) -> str:
        eot = f"-EOT{self.eot_iter}" if self.eot_iter > 1 else ""
        return f"APGD-{self.loss.upper()}-{self.steps}{eot}"

    def check_problem(self, problem: Any) -> None:
        if self.loss == "dlr":
            _require_classes(self, problem, 3, "the DLR loss divides by z_pi1 - z_pi3")

    def _loss_fn(self, problem: Any, state: Any):
        if self.loss == "dlr":
            return apgd_core.dlr
        if problem.custom_loss is None and not problem.head.binary:
            return apgd_core.cross_entropy
        return lambda z, ids: problem.loss(state.y, z)

    def draw(self, problem: Any, n: int, rng: np.random.Generator) -> dict:
        return draw_apgd(self, problem, n, rng)

    def perturb(self, problem, state, eps, noise):
        return run_apgd(self, problem, state, eps, noise, self._loss_fn(problem, state))


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
        eot_iter: int = 1,
        **kwargs: Any,
    ):
        super().__init__(epsilon, **kwargs)
        self.steps = check_positive_int("steps", steps)
        self.num_targets = check_positive_int("num_targets", num_targets)
        self.rho = _check_rho(rho)
        self.target_rank = check_positive_int("target_rank", target_rank, allow_none=True)
        self.eot_iter = check_eot_iter(eot_iter)

    label = "apgd-t"

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "steps": self.steps,
            "num_targets": self.num_targets,
            "rho": self.rho,
            "target_rank": self.target_rank,
            "eot_iter": self.eot_iter,
        }

    def describe(self) -> str:
        eot = f"-EOT{self.eot_iter}" if self.eot_iter > 1 else ""
        return f"APGD-T-{self.steps}x{self.num_targets}{eot}"

    def check_problem(self, problem: Any) -> None:
        _require_classes(self, problem, 4, "the targeted DLR loss divides by z_pi1 - z_pi3/4")

    def stages(self, problem: Any = None) -> list[Attack]:
        if self.target_rank is not None:
            return [self]
        targets = self.num_targets
        if problem is not None:  # at most every other class
            targets = min(targets, max(problem.head.num_classes - 1, 1))
        return [self.replace(target_rank=r) for r in range(1, targets + 1)]

    def draw(self, problem: Any, n: int, rng: np.random.Generator) -> dict:
        return draw_apgd(self, problem, n, rng)

    def perturb(self, problem, state, eps, noise, variant=None):
        # The target's rank arrives at run time (`variant`), so the 9 stages share one trace.
        rank = (self.target_rank or 1) if variant is None else ops.maximum(variant, 1)
        targets = target_classes(state.scores, state.ids, rank)
        return run_apgd(self, problem, state, eps, noise, apgd_core.targeted_dlr, targets)


def target_classes(scores: Any, ids: Any, rank: Any) -> Any:
    """The class of the given `rank` (1 = highest score) among each example's other classes.

    Ties go to the lower class id (a stable sort), on every backend.

    Args:
        scores: `(batch, C)` clean scores.
        ids: `(batch,)` true class ids.
        rank: int or int32 scalar tensor in `[1, C - 1]`.

    Returns:
        `(batch,)` int32 target class ids.
    """
    scores = ops.cast(scores, "float32")
    classes = scores.shape[-1]
    classes = ops.shape(scores)[-1] if classes is None else classes
    is_label = ops.equal(
        ops.arange(classes, dtype="int32")[None, :], ops.cast(ids, "int32")[:, None]
    )
    others = ops.where(is_label, ops.full_like(scores, -np.inf), scores)
    # Descending and stable = ascending and stable on the negated scores (the label, at
    # +inf, last). keras.ops.argsort is stable on every backend: jnp.argsort by default,
    # PyTorch with stable=True, TensorFlow's tf.argsort always (its unstable sort is not
    # implemented; tests/test_apgd_backends.py checks ties).
    order = ops.argsort(-others, axis=-1)
    return ops.cast(ops.take(order, ops.cast(rank, "int32") - 1, axis=1), "int32")


register_preset("apgd-ce", lambda **kwargs: APGD(**{"loss": "ce", **kwargs}))
register_preset("apgd-dlr", lambda **kwargs: APGD(**{"loss": "dlr", **kwargs}))
