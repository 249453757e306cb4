"""The box attacks stay in: the call's clip values, else the model's `InputRange`.

Every attack entry point (`evaluate_robustness`, `generate_adversarial_examples`, the
callbacks, the tuner, the CLI) passes its attack through `with_model_bounds` before any
work, and its data through `check_in_box`; an evaluation with no bounds at all carries
the `UNBOUNDED` notice once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
import numpy as np

from keras_advreg.attacks.heads import attack_target
from keras_advreg.layers.input_range import resolve_bounds
from keras_advreg.utils import format_eps

UNBOUNDED = (
    "The attack is unbounded: no clip values were given and the model declares no input "
    "range, so adversarial points may leave the valid input domain (e.g. pixels outside "
    "[0, 1]) and robust accuracy reads low. Put `keras_advreg.layers.InputRange(min, max)` "
    "first in the model, or pass clip_value_min/clip_value_max."
)


def with_model_bounds(model: Any, attack: Any) -> tuple[Any, bool]:
    """`attack` with the model's `InputRange` bounds where it has no clip values of its own,
    and whether the model declares an `InputRange`.

    Raises `ValueError` (before any work) when its clip values contradict the layer,
    or when an l-inf epsilon is larger than the declared box.
    """
    lo, hi, declared = resolve_bounds(
        attack_target(model), attack.clip_value_min, attack.clip_value_max
    )
    if not declared or (lo, hi) == (attack.clip_value_min, attack.clip_value_max):
        return attack, declared
    if attack.norm == "infinity":
        width = _width(lo, hi)
        wide = [e for e in attack.epsilons if width is not None and e > width]
        if wide:
            raise ValueError(
                f"`epsilon` must be at most the width of the model's input range ({width:g}, "
                f"declared by its InputRange: [{_show(lo)}, {_show(hi)}]) for an l-inf attack: "
                "a larger ball contains every input. Epsilon is in the units of the inputs fed "
                f"to the model. Received: epsilon={format_eps(wide[0])}"
            )
    return attack.replace(clip_value_min=lo, clip_value_max=hi), True


def _width(lo: Any, hi: Any) -> float | None:
    if isinstance(lo, Mapping) or isinstance(hi, Mapping):
        if not (isinstance(lo, Mapping) and isinstance(hi, Mapping)):
            return None
        widths = [hi[k] - lo[k] for k in lo if k in hi and lo[k] is not None and hi[k] is not None]
        return min(widths) if widths else None
    if lo is None or hi is None:
        return None
    return float(hi) - float(lo)


def _show(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {v:g}" for k, v in value.items()) + "}"
    return f"{value:g}"


def is_unbounded(attack: Any) -> bool:
    """Whether the attack has no clip value at all."""
    return attack.clip_value_min is None and attack.clip_value_max is None


def check_in_box(problem: Any, x: Any, where: str, from_model: bool = False) -> str | None:
    """Checks a batch's attacked features against the attack's box (before any work).

    Data outside a box the model declares (`InputRange`) is an error. Data outside clip
    values given by the call is returned as a finding to warn about: clipping to a
    narrower range than the data's is NSL's documented semantics, but usually a mistake
    (0-255 images with a [0, 1] clip).

    Args:
        problem: `AttackProblem`: its `lo`, `hi` and flattening.
        x: the batch's features.
        where: str. Named in the message (e.g. `"batch 0 of `data`"`).
        from_model: bool. The box comes from the model's `InputRange`.

    Returns:
        None, or the finding (clip values given by the call).

    Raises:
        ValueError: data outside the box of the model's `InputRange`.
    """
    if not problem._any_bound:
        return None
    leaves = keras.tree.flatten(x)
    arrays = [
        np.asarray(keras.ops.convert_to_numpy(leaves[i]), "float32") for i in problem.float_index
    ]
    parts = [a.reshape(a.shape[0], -1) for a in arrays if a.ndim]
    if not parts or not parts[0].size:
        return None
    v = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
    span = np.where(np.isfinite(problem.hi - problem.lo), problem.hi - problem.lo, 1.0)
    tolerance = 1e-5 * np.maximum(span, 1.0)
    below = v < problem.lo - tolerance
    above = v > problem.hi + tolerance
    if not (below.any() or above.any()):
        return None
    bad = below | above
    example, feature = np.argwhere(bad)[0]
    lo, hi = problem.lo[feature], problem.hi[feature]
    source = "the model's InputRange" if from_model else "clip_value_min/clip_value_max"
    hint = ""
    if hi - lo <= 1.0 + 1e-6 and float(v.max()) > 1.0 + 1e-6 and float(v.max()) <= 255.0:
        hint = (
            " It looks like 0-255 pixels fed to a model that expects [0, 1]: divide the "
            "images by 255, or declare InputRange(0, 255) followed by Rescaling(1 / 255)."
        )
    message = (
        f"The data are outside the input range [{lo:g}, {hi:g}] set by {source}: in {where}, "
        f"values run from {float(v.min()):g} to {float(v.max()):g} ({int(bad.sum())} values "
        f"outside; the first in example {int(example)}). Attacks would compare points "
        f"outside the valid domain.{hint}"
    )
    if from_model:
        raise ValueError(message)
    return message


def units(attack: Any) -> str:
    """The inputs' range as reports state it, e.g. `"inputs in [0, 255]"`."""
    lo, hi = attack.clip_value_min, attack.clip_value_max
    if lo is None and hi is None:
        return "unbounded inputs"
    low = "-inf" if lo is None else _show(lo)
    high = "inf" if hi is None else _show(hi)
    return f"inputs in [{low}, {high}]"


__all__ = ["UNBOUNDED", "check_in_box", "is_unbounded", "units", "with_model_bounds"]
