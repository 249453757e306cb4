"""NSL's adversarial-neighbour math (`_GenAdvNeighbor`) in `keras.ops`, for backends
other than TensorFlow.

On TensorFlow the wrapper calls NSL's `gen_adv_neighbor` itself. This module repeats NSL's
algorithm step for step with `keras.ops` (the input gradient is given by the caller, which
owns the backend's autodiff): the features are keyed as NSL keys them (a dict by its keys,
a list by position, a single tensor as `""`), split into perturbable (floating-point)
tensors and others, and each step is NSL's: the gradient masked by `feature_mask`, made a
unit-`adv_grad_norm` direction jointly over the perturbable features of an example
(`keras_advreg.ball.unit_direction`), scaled by `adv_step_size`, projected onto the
`pgd_epsilon` ball around the clean features (`keras_advreg.ball.project`), added to them
without gradient, and clipped to `clip_value_min` / `clip_value_max`.

NSL looks masks and clip values up by the same keys, so a scalar mask or clip value applies
to a single-tensor feature only (its key `""`), and per-feature values are given as a dict
(or list) keyed like the features; this module does the same.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import keras
import numpy as np

from keras_advreg.ball import random_in_ball
from keras_advreg.training.config import AdvConfig
from keras_advreg.training.routing import is_perturbable


def compose_as_dict(inputs: Any) -> dict:
    """NSL's `_compose_as_dict`: a dict by its keys, a list/tuple by position, a value as `""`."""
    if isinstance(inputs, Mapping):
        return dict(inputs)
    if isinstance(inputs, (tuple, list)):
        return dict(enumerate(inputs))
    return {"": inputs} if inputs is not None else {}


def decompose_as(structure: Any, values: Mapping) -> Any:
    """NSL's `_decompose_as`: `values` (keyed as `compose_as_dict` keys) in `structure`'s form."""
    if isinstance(structure, Mapping):
        return dict(values)
    if isinstance(structure, (tuple, list)):
        return [values[index] for index in range(len(structure))]
    return values[""] if structure is not None else None


def finite(tensors: Any) -> Any:
    """NSL's guard on gradients: NaN and Inf entries become 0 (that coordinate is not moved)."""
    return keras.tree.map_structure(
        lambda g: keras.ops.where(keras.ops.isfinite(g), g, keras.ops.zeros_like(g)), tensors
    )


def _check_mask(key: Any, mask: Any) -> None:
    values = np.asarray(mask, dtype="float64")
    if values.size and (values.min() < 0.0 or values.max() > 1.0):
        raise ValueError(
            "`feature_mask` values must be in [0, 1] (NSL's check). "
            f"Received: feature_mask[{key!r}] with values in [{values.min()}, {values.max()}]"
        )


class Neighbors:
    """NSL's neighbour generator for one batch of features and one `AdvConfig`.

    Args:
        features: The batch's features: a backend tensor, or a dict/list of them.
        config: The `AdvConfig` (its perturbation fields).

    Attributes:
        dense: dict of the perturbable features, keyed as NSL keys them.
        sparse: dict of the other features (left as they are).
    """

    def __init__(self, features: Any, config: AdvConfig):
        self.features = features
        self.config = config
        keyed = compose_as_dict(features)
        self.dense = {k: v for k, v in keyed.items() if is_perturbable(v)}
        self.sparse = {k: v for k, v in keyed.items() if k not in self.dense}
        self.masks = compose_as_dict(config.feature_mask)
        for key, mask in self.masks.items():
            if mask is not None and key in self.dense:
                _check_mask(key, mask)
        self.lo = compose_as_dict(config.clip_value_min)
        self.hi = compose_as_dict(config.clip_value_max)

    def features_of(self, dense: Mapping) -> Any:
        """The features with their perturbable part replaced by `dense`."""
        return decompose_as(self.features, {**self.sparse, **dense})

    def perturbations(self, at: Mapping, grads: Mapping) -> dict:
        """NSL's `_compute_perturbations`: one step from `at`, as an offset from the clean
        features, projected onto the `pgd_epsilon` ball."""
        from keras_advreg.ball import project, unit_direction

        config = self.config
        masked = {key: self.masked(key, g) for key, g in grads.items()}
        directions = unit_direction(masked, config.adv_grad_norm)
        step = config.adv_step_size
        perturbations = {
            key: direction * step + at[key] - self.dense[key]
            for key, direction in directions.items()
        }
        if config.pgd_epsilon is not None:
            perturbations = project(perturbations, config.pgd_epsilon, config.adv_grad_norm)
        return perturbations

    def apply(self, perturbations: Mapping) -> dict:
        """NSL's `_apply_perturbations`: clean features plus the perturbations (without
        gradient), clipped to the config's bounds."""
        perturbed = {}
        for key, feature in self.dense.items():
            if key not in perturbations:
                perturbed[key] = feature
                continue
            value = feature + keras.ops.stop_gradient(perturbations[key])
            lo, hi = self.lo.get(key), self.hi.get(key)
            if lo is not None:
                value = keras.ops.maximum(value, self._bound(lo, value))
            if hi is not None:
                value = keras.ops.minimum(value, self._bound(hi, value))
            perturbed[key] = value
        return perturbed

    def random_start(self, seeds: Callable[[], Any]) -> dict:
        """NSL's `random_in_norm_ball` of radius `pgd_epsilon` (or `adv_step_size`) around
        the clean features (clipped), drawn with `keras.random` from `seeds()` (one seed per
        draw)."""
        config = self.config
        radius = config.pgd_epsilon or config.adv_step_size
        offsets = random_in_ball(self.dense, radius, config.adv_grad_norm, seeds)
        return self.apply(offsets)

    def step(self, at: Mapping, grads: Mapping) -> dict:
        """One PGD step from the perturbed features `at` given the loss gradient there."""
        return self.apply(self.perturbations(at, finite(dict(grads))))

    def masked(self, key: Any, grad: Any) -> Any:
        mask = self.masks.get(key)
        if mask is None:
            return grad
        return grad * self._bound(mask, grad)

    @staticmethod
    def _bound(value: Any, like: Any) -> Any:
        return keras.ops.cast(keras.ops.convert_to_tensor(np.asarray(value)), like.dtype)


__all__ = ["Neighbors", "compose_as_dict", "decompose_as", "finite", "random_in_ball"]
