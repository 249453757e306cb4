"""Sanity checks on robustness reports: signs that an accuracy overstates robustness.

Following Carlini et al. 2019 ("On Evaluating Adversarial Robustness") and Croce & Hein
2020: single- and fixed-step attacks give upper bounds; accuracy must fall with epsilon;
zero input gradients and a gradient-free attack beating gradient attacks mean masking.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from keras_advreg.evaluation.report import RobustnessReport
from keras_advreg.utils import format_eps

# A report warns when more than this fraction of examples has an all-zero input gradient.
ZERO_GRADIENT_WARNING_FRACTION = 0.05
# ... when Square breaks at least this fraction of the points gradient attacks left robust.
GRADIENT_FREE_WARNING_FRACTION = 0.01
# ... when a weak attack leaves this much more accuracy than APGD-CE on a sample.
ATTACK_GAP_WARNING = 0.05
WEAK_STRENGTHS = ("single-step", "fixed-step")
# The randomness check: forward passes on one batch, and the largest l2 distance between two
# passes' scores (each scaled to unit l2 norm) still called deterministic (the reference's).
RANDOMNESS_PASSES = 5
# ... on at most this many examples of that batch: randomness in a layer shows on every
# example, and 5 passes over a whole batch cost about a third of FGSM's time on it.
RANDOMNESS_ROWS = 16
RANDOMNESS_TOLERANCE = 1e-4
UPPER_BOUND = (
    "{attack} accuracy is an upper bound on robust accuracy, not a measure of it: models "
    "(e.g. trained against FGSM) often resist one weak attack and fall to a stronger one. "
    "Use attack='autoattack' (or 'autoattack-fast', 'apgd-ce') for numbers to report."
)


def sanity_warnings(report: RobustnessReport, strength: str = "adaptive") -> list[str]:
    """Findings that hint at an overstated robust accuracy (Carlini et al. 2019)."""
    found = []
    if strength in WEAK_STRENGTHS:
        found.append(UPPER_BOUND.format(attack=report.description or report.attack.upper()))
    ordered = sorted(report.accuracy.items())
    for (e1, a1), (e2, a2) in zip(ordered, ordered[1:], strict=False):
        if a2 > a1:
            found.append(
                f"Accuracy rises with epsilon ({a1:.4f} at epsilon={format_eps(e1)}, "
                f"{a2:.4f} at epsilon={format_eps(e2)}): the attack is not finding the "
                "worst case (too large a step, or gradient masking). Try attack='autoattack'."
            )
    if report.zero_gradient_fraction > ZERO_GRADIENT_WARNING_FRACTION:
        found.append(
            f"{report.zero_gradient_fraction:.1%} of the examples have an all-zero input "
            "gradient, so gradient attacks cannot move them: a hint of gradient masking "
            "(saturated softmax, non-differentiable or quantizing layers). Robust accuracy may "
            "be overestimated; check with attack='autoattack' (it includes the gradient-free Square attack)."
        )
    return found


def check_attack_strength(
    weaker: RobustnessReport,
    stronger: RobustnessReport,
    tolerance: float = 0.0,
    warn: bool = True,
) -> list[str]:
    """Checks that a stronger attack (e.g. PGD) does at least as well as a weaker one (FGSM).

    Args:
        weaker: RobustnessReport. E.g. an FGSM report.
        stronger: RobustnessReport. E.g. a PGD report on the same model and data.
        tolerance: float. Accuracy difference allowed (random starts are noisy).
            Defaults to `0.0`.
        warn: bool. Also issue each finding with `warnings.warn`. Defaults to
            `True`.

    Returns:
        A list of findings; empty when the stronger attack is at least as strong
        at every epsilon both reports share.

    Example:

    >>> # fgsm = evaluate_robustness(model, data, epsilons=(0.1,), attack="fgsm")
    >>> # pgd = evaluate_robustness(model, data, epsilons=(0.1,), attack="pgd")
    >>> # assert not check_attack_strength(fgsm, pgd)
    """
    found = []
    for eps in sorted(set(weaker.accuracy) & set(stronger.accuracy)):
        weak, strong = weaker.accuracy[eps], stronger.accuracy[eps]
        if strong > weak + tolerance:
            found.append(
                f"{stronger.attack.upper()} accuracy {strong:.4f} is above "
                f"{weaker.attack.upper()} accuracy {weak:.4f} at epsilon={format_eps(eps)}: the "
                "stronger attack is failing (too few steps, too small a step size, or gradient "
                "masking)."
            )
    if warn:
        for message in found:
            warnings.warn(message, stacklevel=2)
    return found


def cascade_warnings(report: RobustnessReport) -> list[str]:
    """A gradient-free member breaking what the gradient attacks left: masked gradients."""
    found = []
    for eps, shares in report.broken_by.items():
        square = shares.get("square", 0.0)
        if square >= GRADIENT_FREE_WARNING_FRACTION:
            found.append(
                f"The gradient-free Square attack broke {square:.1%} of the examples that "
                f"the gradient attacks left robust at epsilon={format_eps(eps)}: the model's "
                "gradients are masked or obfuscated, and gradient-based accuracies overstate "
                "its robustness."
            )
    return found


def gap_warning(weak: RobustnessReport, strong: RobustnessReport) -> list[str]:
    """A single- or fixed-step attack leaving markedly more accuracy than APGD on a sample."""
    found = []
    for eps in sorted(set(weak.accuracy) & set(strong.accuracy)):
        gap = weak.accuracy[eps] - strong.accuracy[eps]
        if gap > ATTACK_GAP_WARNING:
            found.append(
                f"{weak.description or weak.attack.upper()} leaves {gap:.1%} more accuracy than "
                f"{strong.description} on a sample of {strong.num_examples} examples at "
                f"epsilon={format_eps(eps)} ({weak.accuracy[eps]:.4f} vs "
                f"{strong.accuracy[eps]:.4f}): the model resists this attack, not attacks. "
                "Report attack='autoattack' instead."
            )
    return found


def randomness(
    scores: Callable[[Any], Any],
    x: Any,
    passes: int = RANDOMNESS_PASSES,
    rows: int = RANDOMNESS_ROWS,
) -> dict:
    """Whether a model's scores change between forward passes on the same batch.

    As the reference AutoAttack's check: `passes` forward passes, each example's scores
    scaled to unit l2 norm; the model is randomized when two passes differ by more than
    `RANDOMNESS_TOLERANCE` (l2) on some example, or predict different classes.

    Args:
        scores: callable. The model's scores (logits) of a batch.
        x: The batch (an array, or a structure of arrays for a model of several inputs).
        passes: int. Forward passes. Defaults to `5`.
        rows: int. Check the first `rows` examples of the batch only. Defaults to `16`.

    Returns:
        A dict: `randomized` (bool), `max_difference` (float: the largest l2 distance
        between two passes' normalized scores), `predictions_differ` (int: examples whose
        predicted class changed between passes), `passes`, `examples` (how many were
        checked).
    """
    x = keras.tree.map_structure(lambda a: a[:rows], x)
    examples = len(keras.tree.flatten(x)[0])
    outputs = []
    for _ in range(passes):
        out = np.asarray(keras.ops.convert_to_numpy(scores(x)), "float64")
        out = out.reshape(len(out), -1)
        outputs.append(out)
    predictions = np.stack([o.argmax(-1) for o in outputs])
    changed = int(np.sum(np.any(predictions != predictions[:1], axis=0)))
    unit = [o / (np.linalg.norm(o, axis=-1, keepdims=True) + 1e-10) for o in outputs]
    difference = 0.0
    for i in range(passes):
        for j in range(i + 1, passes):
            difference = max(difference, float(np.linalg.norm(unit[i] - unit[j], axis=-1).max()))
    return {
        "randomized": bool(changed or difference > RANDOMNESS_TOLERANCE),
        "max_difference": difference,
        "predictions_differ": changed,
        "passes": passes,
        "examples": examples,
    }


def describe_randomness(found: dict, examples: int) -> str:
    """What the randomness check saw, in words."""
    return (
        f"{found['passes']} forward passes on the same {examples} examples gave different "
        f"scores (largest l2 distance between two passes' normalized scores "
        f"{found['max_difference']:.3g}; {found['predictions_differ']} examples changed "
        "their predicted class)"
    )


__all__ = [
    "cascade_warnings",
    "check_attack_strength",
    "describe_randomness",
    "gap_warning",
    "randomness",
    "sanity_warnings",
]
