"""Teaches keras-tuner that keras_advreg's accuracies are maximised.

keras-tuner infers an objective's direction from a string (`objective="val_accuracy"`)
by looking the name up among Keras' metrics; for `"val_adv_accuracy"` it raises "Could
not infer optimization direction". keras-tuner has no registry of metric directions, so
this wraps its module-level `infer_metric_direction` (what `create_objective` calls):
names of keras_advreg's log keys give "max", every other name is keras-tuner's answer.
"""

from __future__ import annotations

from typing import Any

# The robust accuracy (and its per-epsilon keys), the clean accuracy of the robustness
# callback, and the tuner's blend: named in `keras_advreg.log_keys`.
from keras_advreg.log_keys import is_accuracy_key


def install() -> None:
    """Wraps keras-tuner's direction inference once (idempotent)."""
    from keras_tuner.src.engine import metrics_tracking

    original = metrics_tracking.infer_metric_direction
    if getattr(original, "_keras_advreg", False):
        return

    def infer_metric_direction(metric: Any) -> Any:
        if isinstance(metric, str) and is_accuracy_key(metric):
            return "max"
        return original(metric)

    infer_metric_direction._keras_advreg = True
    metrics_tracking.infer_metric_direction = infer_metric_direction


__all__ = ["install", "is_accuracy_key"]
