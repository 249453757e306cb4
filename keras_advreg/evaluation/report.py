"""`RobustnessReport`: clean and adversarial accuracy of a classifier, per epsilon."""

from __future__ import annotations

import dataclasses

from keras_advreg.utils import format_eps


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
        attack: str. The attack's registered name (`"fgsm"`, `"pgd"`,
            `"apgd"`, `"autoattack"`, ...).
        norm: str. `"infinity"`, `"l2"` or `"l1"`.
        zero_gradient_fraction: float. Fraction of examples whose input
            gradient is exactly zero (a hint of gradient masking).
        config: dict. The full attack configuration and what was attacked.
        warnings: list of str. Sanity-check findings (see Carlini et al.,
            "On Evaluating Adversarial Robustness").
        seconds: float. Wall time of the evaluation.
        broken_by: dict. Epsilon -> {attack stage -> fraction of all examples
            it broke first} (a cascade shows which member did the work).
        description: str. The attack with its budget, e.g. `"PGD-40"`.
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
    broken_by: dict = dataclasses.field(default_factory=dict)
    description: str = ""

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
                (format_eps(k) if isinstance(k, float) else str(k)): (
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
            "broken_by": keyed(self.broken_by),
            "description": self.description,
        }

    @property
    def units(self) -> str:
        """The inputs' range the epsilons are measured in, e.g. `"inputs in [0, 255]"`
        (`"unbounded inputs"` when the attack had no clip values; the offsets' layers for
        a model wrapped in `keras_advreg.layers.EmbeddingSpace`)."""
        if self.config.get("space"):
            return self.config["space"]
        lo, hi = self.config.get("clip_value_min"), self.config.get("clip_value_max")
        if lo is None and hi is None:
            return "unbounded inputs"
        return f"inputs in [{_bound(lo, '-inf')}, {_bound(hi, 'inf')}]"

    def describe(self, epsilon: float | None = None) -> str:
        """The attack, a radius and its units, e.g. `"APGD-CE (infinity) eps 76.5 on inputs in
        [0, 255]"` (the first epsilon by default)."""
        eps = self.epsilons[0] if epsilon is None else epsilon
        name = self.description or self.attack.upper()
        return f"{name} ({self.norm}) eps {format_eps(eps)} on {self.units}"

    def __str__(self) -> str:
        title = f"{self.description or self.attack.upper()} ({self.norm})"
        clip = (self.config.get("clip_value_min"), self.config.get("clip_value_max"))
        if self.config.get("space"):
            title += ", embedding space"
        title += ", unclipped" if clip == (None, None) else f", clipped to [{clip[0]}, {clip[1]}]"
        if self.config.get("input_range") == "model":
            title += " (the model's InputRange)"
        lines = [
            f"Robustness report: {title} on {self.num_examples} examples",
            f"  {'epsilon':>10}  {'accuracy':>8}  {'attack success':>14}",
            f"  {'0 (clean)':>10}  {self.clean_accuracy:8.4f}  {'-':>14}",
        ]
        for eps, acc in self.accuracy.items():
            rate = self.attack_success_rate[eps]
            lines.append(f"  {format_eps(eps):>10}  {acc:8.4f}  {rate:14.4f}")
        lines.append(f"  epsilon in the units of the {self.units}")
        lines.append(f"  zero-gradient fraction: {self.zero_gradient_fraction:.4f}")
        for eps, shares in self.broken_by.items():
            if len(shares) > 1:
                parts = ", ".join(f"{name} {share:.4f}" for name, share in shares.items())
                lines.append(f"  broken at epsilon={format_eps(eps)} by: {parts}")
        lines += [f"  WARNING: {w}" for w in self.warnings]
        return "\n".join(lines)


def _bound(value, default: str) -> str:
    if value is None:
        return default
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_bound(v, default)}" for k, v in value.items()) + "}"
    return f"{value:g}"


__all__ = ["RobustnessReport"]
