"""Robustness evaluation and reporting: `evaluate_robustness` and `RobustnessReport`.

Runs the attacks of `keras_advreg.attacks` over a dataset and reports clean and adversarial
accuracy per epsilon, with sanity checks against gradient masking (`check_attack_strength`).
"""

from __future__ import annotations

import dataclasses
import itertools
import time
import warnings
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_advreg.attacks import (
    AttackSpec,
    _attack_target,
    _batches,
    _check_labels,
    _check_positive_int,
    _compiled,
    _CompiledAttack,
    _format_eps,
    _model_inputs,
)

# A report warns when more than this fraction of examples has an all-zero input gradient.
ZERO_GRADIENT_WARNING_FRACTION = 0.05


# --------------------------------------------------------------------------- report
@dataclasses.dataclass
class RobustnessReport:
    """Clean and white-box adversarial accuracy of a classifier.

    Attributes:
        clean_accuracy: float. Accuracy on the unperturbed data.
        accuracy: dict. Epsilon -> accuracy on the adversarial examples.
        attack_success_rate: dict. Epsilon -> fraction of the correctly
            classified examples that the attack flips.
        clean_per_class_accuracy: dict. Class id -> clean accuracy (classes
            present in the data).
        per_class_accuracy: dict. Epsilon -> {class id -> accuracy}.
        num_examples: int. Number of examples evaluated.
        attack: str. `"fgsm"` or `"pgd"`.
        norm: str. `"infinity"`, `"l2"` or `"l1"`.
        zero_gradient_fraction: float. Fraction of examples whose input
            gradient is exactly zero (a hint of gradient masking).
        config: dict. The full attack configuration and what was attacked.
        warnings: list of str. Sanity-check findings (see Carlini et al.,
            "On Evaluating Adversarial Robustness").
        seconds: float. Wall time of the evaluation.
    """

    clean_accuracy: float
    accuracy: dict
    attack_success_rate: dict
    clean_per_class_accuracy: dict
    per_class_accuracy: dict
    num_examples: int
    attack: str
    norm: str
    zero_gradient_fraction: float
    config: dict
    warnings: list = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    @property
    def epsilons(self) -> tuple[float, ...]:
        return tuple(self.accuracy)

    @property
    def robust_accuracy(self) -> float:
        """Accuracy at the first epsilon (what the callback logs as `val_adv_accuracy`)."""
        return next(iter(self.accuracy.values()))

    def to_dict(self) -> dict:
        """A JSON-ready dict (epsilon and class keys become strings)."""

        def keyed(d):
            return {
                (_format_eps(k) if isinstance(k, float) else str(k)): (
                    keyed(v) if isinstance(v, dict) else v
                )
                for k, v in d.items()
            }

        return {
            "clean_accuracy": self.clean_accuracy,
            "accuracy": keyed(self.accuracy),
            "attack_success_rate": keyed(self.attack_success_rate),
            "clean_per_class_accuracy": keyed(self.clean_per_class_accuracy),
            "per_class_accuracy": keyed(self.per_class_accuracy),
            "num_examples": self.num_examples,
            "attack": self.attack,
            "norm": self.norm,
            "zero_gradient_fraction": self.zero_gradient_fraction,
            "config": self.config,
            "warnings": list(self.warnings),
            "seconds": self.seconds,
        }

    def __str__(self) -> str:
        title = f"{self.attack.upper()} ({self.norm})"
        if self.attack == "pgd":
            title += f", {self.config.get('pgd_steps')} steps"
        lines = [
            f"Robustness report: {title} on {self.num_examples} examples",
            f"  {'epsilon':>10}  {'accuracy':>8}  {'attack success':>14}",
            f"  {'0 (clean)':>10}  {self.clean_accuracy:8.4f}  {'-':>14}",
        ]
        for eps, acc in self.accuracy.items():
            rate = self.attack_success_rate[eps]
            lines.append(f"  {_format_eps(eps):>10}  {acc:8.4f}  {rate:14.4f}")
        lines.append(f"  zero-gradient fraction: {self.zero_gradient_fraction:.4f}")
        lines += [f"  WARNING: {w}" for w in self.warnings]
        return "\n".join(lines)


def _sanity_warnings(report: RobustnessReport) -> list[str]:
    found = []
    ordered = sorted(report.accuracy.items())
    for (e1, a1), (e2, a2) in zip(ordered, ordered[1:], strict=False):
        if a2 > a1:
            found.append(
                f"Accuracy rises with epsilon ({a1:.4f} at epsilon={_format_eps(e1)}, "
                f"{a2:.4f} at epsilon={_format_eps(e2)}): the attack is not finding the "
                "worst case (too large a step, or gradient masking). Try attack='pgd'."
            )
    if report.zero_gradient_fraction > ZERO_GRADIENT_WARNING_FRACTION:
        found.append(
            f"{report.zero_gradient_fraction:.1%} of the examples have an all-zero input "
            "gradient, so gradient attacks cannot move them: a hint of gradient masking "
            "(saturated softmax, non-differentiable or quantizing layers). Robust accuracy may "
            "be overestimated; check with random-start PGD or a gradient-free attack."
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
                f"{weaker.attack.upper()} accuracy {weak:.4f} at epsilon={_format_eps(eps)}: the "
                "stronger attack is failing (too few steps, too small a step size, or gradient "
                "masking)."
            )
    if warn:
        for message in found:
            warnings.warn(message, stacklevel=2)
    return found


# --------------------------------------------------------------------------- entry point
def evaluate_robustness(
    model: keras.Model,
    data: Any,
    epsilons: Any = (0.1,),
    attack: str = "fgsm",
    norm: str = "infinity",
    pgd_steps: int = 10,
    pgd_step_size: float | None = None,
    random_start: bool = True,
    clip_value_min: Any = None,
    clip_value_max: Any = None,
    batch_size: int = 256,
    loss: Any = None,
    *,
    label_keys: Any = ("label",),
    sample_weight_key: str | None = None,
    max_examples: int | None = None,
    warn: bool = True,
) -> RobustnessReport:
    """Measures a classifier's accuracy under white-box FGSM or PGD attacks.

    The attack uses NSL's math: the input gradient of the loss is turned into
    the steepest-ascent direction of unit `norm` (`sign` for l-inf), scaled by
    epsilon, and the result clipped to `[clip_value_min, clip_value_max]`. PGD
    takes `pgd_steps` such steps of `pgd_step_size` from a random start in the
    epsilon ball, projecting back onto the ball after each. For several
    epsilons, FGSM computes the gradient once and reuses it.

    The loss attacked is cross-entropy on the model's logits: when the model
    ends in a softmax (or a 1-unit sigmoid), the logits before it are attacked,
    never the saturated probabilities. Sparse or one-hot labels are both
    accepted. A `keras_advreg.AdversarialRegularization` is evaluated through
    its `base_model`.

    Args:
        model: keras.Model. A classifier with output `(batch, num_classes)`.
        data: `(x, y)` arrays (x may be a dict of features), a dict of
            features holding the label key(s), or a `tf.data.Dataset` of such
            batches. A dataset of single examples is batched by `batch_size`:
            it is recognized by scalar labels, by features of one rank less
            than the model's inputs, or (a model whose input rank is unknown,
            such as an unbuilt subclassed one) by features and labels of
            different static leading sizes; any other dataset is used as
            batched.
        epsilons: float or sequence of floats >= 0. Attack radii. Defaults to
            `(0.1,)`.
        attack: str. `"fgsm"` or `"pgd"`. Defaults to `"fgsm"`.
        norm: str. `"infinity"`, `"l2"` or `"l1"` (FGSM only). Defaults to
            `"infinity"`.
        pgd_steps: int. PGD iterations. Defaults to `10`.
        pgd_step_size: float. PGD step size. Defaults to `None`
            (`2.5 * epsilon / pgd_steps`).
        random_start: bool. Start PGD from a random point in the ball.
            Defaults to `True`.
        clip_value_min: float or dict of floats per feature. Lower bound of
            perturbed features (e.g. `0.0` for images). Defaults to `None`.
        clip_value_max: float or dict of floats per feature. Upper bound.
            Defaults to `None`.
        batch_size: int. Batch size for array data and unbatched datasets.
            Defaults to `256`.
        loss: str, callable or `keras.losses.Loss`. Loss to attack, applied to
            the model's output. Defaults to `None` (cross-entropy on logits).
        label_keys: str or sequence of str. Label key(s) of feature dicts.
            Defaults to `("label",)`.
        sample_weight_key: str. Sample-weight key of feature dicts (ignored
            by the accuracy). Defaults to `None`.
        max_examples: int. Evaluate at most this many examples. Defaults to
            `None` (all).
        warn: bool. Issue sanity-check findings with `warnings.warn` too.
            Defaults to `True`.

    Returns:
        A `RobustnessReport`.

    Example:

    A linear classifier predicting class 0 when `x[0] > 0`: FGSM moves `x[0]`
    down by epsilon for label 0, so the first example (x[0] = 0.3) survives
    epsilon 0.1 but not 0.5, and the second is already wrong.

    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    >>> model.set_weights([np.array([[1.0, -1.0], [0.0, 0.0]], "float32"), np.zeros(2, "float32")])
    >>> x, y = np.array([[0.3, 0.5], [-0.05, 0.2]], "float32"), np.array([0, 0])
    >>> report = evaluate_robustness(model, (x, y), epsilons=(0.1, 0.5))
    >>> report.clean_accuracy, report.accuracy
    (0.5, {0.1: 0.5, 0.5: 0.0})
    """
    spec = AttackSpec(
        epsilons,
        attack,
        norm,
        pgd_steps,
        pgd_step_size,
        random_start,
        clip_value_min,
        clip_value_max,
    )
    batch_size = _check_positive_int("batch_size", batch_size)
    max_examples = _check_positive_int("max_examples", max_examples, allow_none=True)
    start = time.perf_counter()
    target = _attack_target(model)
    batches = _batches(data, batch_size, label_keys, sample_weight_key, max_examples, target)
    batches = ((_model_inputs(target, x), y) for x, y in batches)
    first = next(batches, None)
    if first is None:
        raise ValueError("`data` is empty: there is nothing to evaluate.")
    compiled = _compiled(model, spec, first[0], first[1], loss)
    eps = tf.constant(spec.epsilons, tf.float32)
    steps = tf.constant(spec.step_sizes(), tf.float32)
    totals: dict[str, np.ndarray] = {}
    for x, y in itertools.chain([first], batches):
        _check_labels(y, compiled)
        for name, value in compiled.counts(x, y, eps, steps).items():
            value = value.numpy()
            totals[name] = totals[name] + value if name in totals else value
    report = _make_report(compiled, spec, totals, loss, time.perf_counter() - start)
    if warn:
        for message in report.warnings:
            warnings.warn(message, stacklevel=2)
    return report


def _make_report(
    compiled: _CompiledAttack, spec: AttackSpec, totals: dict, loss: Any, seconds: float
) -> RobustnessReport:
    total = totals["total"]
    n = int(total.sum())
    present = [c for c in range(len(total)) if total[c] > 0]
    clean_correct = int(totals["clean"].sum())

    def per_class(correct):
        return {c: float(correct[c] / total[c]) for c in present}

    accuracy, success, classes = {}, {}, {}
    for i, eps in enumerate(spec.epsilons):
        accuracy[eps] = float(totals["adversarial"][i].sum() / n)
        success[eps] = float(totals["flipped"][i] / clean_correct) if clean_correct else 0.0
        classes[eps] = per_class(totals["adversarial"][i])
    config = spec.to_dict()
    if spec.attack == "pgd":
        config["pgd_step_sizes"] = spec.step_sizes()
    config["attacked"] = compiled.head.description
    config["label_mode"] = compiled.label_mode
    config["loss"] = "cross-entropy" if loss is None else getattr(loss, "__name__", repr(loss))
    report = RobustnessReport(
        clean_accuracy=clean_correct / n,
        accuracy=accuracy,
        attack_success_rate=success,
        clean_per_class_accuracy=per_class(totals["clean"]),
        per_class_accuracy=classes,
        num_examples=n,
        attack=spec.attack,
        norm=spec.norm,
        zero_gradient_fraction=float(totals["zero_gradient"] / n),
        config=config,
        seconds=seconds,
    )
    report.warnings = _sanity_warnings(report)
    return report


__all__ = [
    "RobustnessReport",
    "check_attack_strength",
    "evaluate_robustness",
]
