"""`CertificationReport`: clean and certified accuracy of a classifier, per l2 radius."""

from __future__ import annotations

import dataclasses
from typing import Any

from keras_advreg.utils import format_eps


@dataclasses.dataclass
class CertificationReport:
    """Clean and certified accuracy of a classifier.

    A certified example is classified correctly and *proved* to keep its class for every
    perturbation of l2 norm at most epsilon (no attack is involved: the number is a lower
    bound on the accuracy under any attack of that budget, up to the stated failure
    probability for randomized smoothing).

    Attributes:
        clean_accuracy: float. Accuracy on the unperturbed data (for randomized smoothing:
            of the smoothed classifier's certified prediction, abstentions counted wrong).
        accuracy: dict. Epsilon -> certified accuracy.
        num_examples: int. Number of examples.
        certificate: str. `"lipschitz-margin"` or `"randomized-smoothing"`.
        norm: str. `"l2"`.
        description: str. The certificate and how it was computed.
        config: dict. Its settings (Lipschitz bound; sigma, n0, n, alpha).
        abstain_rate: float. Fraction of abstentions (randomized smoothing; 0 otherwise).
        seconds: float. Wall time.
        radii: NumPy array or None. Certified radius per example (0 where misclassified
            or abstained); not in `to_dict`.
    """

    clean_accuracy: float
    accuracy: dict
    num_examples: int
    certificate: str
    norm: str = "l2"
    description: str = ""
    config: dict = dataclasses.field(default_factory=dict)
    abstain_rate: float = 0.0
    seconds: float = 0.0
    radii: Any = dataclasses.field(default=None, repr=False)

    @property
    def epsilons(self) -> tuple[float, ...]:
        return tuple(self.accuracy)

    @property
    def certified_accuracy(self) -> float:
        """Certified accuracy at the first epsilon (what the callback logs)."""
        return next(iter(self.accuracy.values()))

    def to_dict(self) -> dict:
        """A JSON-ready dict (epsilon keys become strings)."""
        return {
            "clean_accuracy": self.clean_accuracy,
            "accuracy": {format_eps(k): v for k, v in self.accuracy.items()},
            "num_examples": self.num_examples,
            "certificate": self.certificate,
            "norm": self.norm,
            "description": self.description,
            "config": self.config,
            "abstain_rate": self.abstain_rate,
            "seconds": self.seconds,
        }

    def __str__(self) -> str:
        lines = [
            f"Certification report: {self.description} ({self.norm}) on {self.num_examples} examples",
            f"  {'epsilon':>10}  {'certified accuracy':>18}",
            f"  {'0 (clean)':>10}  {self.clean_accuracy:18.4f}",
        ]
        lines += [f"  {format_eps(e):>10}  {a:18.4f}" for e, a in self.accuracy.items()]
        if self.certificate == "randomized-smoothing":
            lines.append(f"  abstained: {self.abstain_rate:.4f}")
        return "\n".join(lines)


__all__ = ["CertificationReport"]
