"""`AdversarialRegularization`'s clip range: its `AdvConfig`'s, else the model's `InputRange`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from keras_advreg.layers.input_range import resolve_bounds


def with_input_range(model: Any, config: Any) -> Any:
    """`config` with `clip_value_min/max` from the model's `InputRange` where it has none.

    Raises `ValueError` (before training) when the config's clip values contradict the
    layer, or when an l-inf perturbation (`pgd_epsilon`, else a single step's
    `adv_step_size`) is larger than the declared box.
    """
    lo, hi, declared = resolve_bounds(model, config.clip_value_min, config.clip_value_max)
    if not declared:
        return config
    if config.adv_grad_norm == "infinity" and not isinstance(lo, Mapping):
        width = float(hi) - float(lo)
        radius, name = config.pgd_epsilon, "pgd_epsilon"
        if radius is None and config.pgd_iterations == 1:
            radius, name = config.adv_step_size, "adv_step_size"
        if radius is not None and radius > width:
            raise ValueError(
                f"`{name}` must be at most the width of the model's input range ({width:g}, "
                f"declared by its InputRange: [{lo:g}, {hi:g}]) for an l-inf perturbation: "
                f"a larger ball contains every input. Received: {name}={radius!r}"
            )
    if (lo, hi) == (config.clip_value_min, config.clip_value_max):
        return config
    return config.replace(clip_value_min=lo, clip_value_max=hi)


def check_fit_in_range(model: Any, x: Any) -> None:
    """Raises when array features given to `fit` lie outside the model's `InputRange`
    (one input; other data, such as datasets, are not read here)."""
    lo, hi, declared = resolve_bounds(model, None, None)
    if not declared or isinstance(lo, Mapping) or not isinstance(x, np.ndarray):
        return
    if x.dtype.kind not in "iuf" or not x.size:
        return
    low, high = float(np.min(x)), float(np.max(x))
    tolerance = 1e-5 * max(hi - lo, 1.0)
    if low < lo - tolerance or high > hi + tolerance:
        hint = ""
        if hi - lo <= 1.0 and 1.0 < high <= 255.0:
            hint = (
                " It looks like 0-255 pixels fed to a model that expects [0, 1]: divide the "
                "images by 255, or declare InputRange(0, 255) followed by Rescaling(1 / 255)."
            )
        raise ValueError(
            f"`x` is outside the input range [{lo:g}, {hi:g}] declared by the base model's "
            f"InputRange: its values run from {low:g} to {high:g}.{hint}"
        )


__all__ = ["check_fit_in_range", "with_input_range"]
