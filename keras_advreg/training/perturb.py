"""`perturb_on_batch`: NSL's method of the same name, compiled per perturbation config
(a `tf.function` of NSL's `gen_adv_neighbor` on TensorFlow, a `jax.jit` of the same math in
`keras.ops` on JAX)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras

from keras_advreg.training.config import NEIGHBOR_FIELDS


class PerturbOnBatchMixin:
    """`AdversarialRegularization.perturb_on_batch` and its cache of compiled functions."""

    def perturb_on_batch(self, x: Any, **config_overrides: Any):
        """Generates adversarial examples for one batch (NSL's method of the same name).

        Args:
            x: One batch: a dict of features with the labels under
                `label_keys` (NSL's format), or a tuple `(x, y)` /
                `(x, y, sample_weight)`. Numpy arrays or tensors.
            **config_overrides: Fields of `AdvConfig` to override for this call:
                `feature_mask`, `adv_step_size`, `adv_grad_norm`,
                `clip_value_min`, `clip_value_max`, `pgd_iterations`,
                `pgd_epsilon`, `random_init`. `None` values are ignored.

        Returns:
            The perturbed batch in the input's format, as numpy arrays: a dict
            with the labels (and weights) put back, or a tuple `(x_adv, y[, w])`.
        """
        unknown = sorted(set(config_overrides) - set(NEIGHBOR_FIELDS))
        if unknown:
            raise ValueError(
                f"Unknown perturbation setting(s) {unknown}. Expected some of {list(NEIGHBOR_FIELDS)}."
            )
        self._require_loss("`perturb_on_batch` needs")
        overrides = {k: v for k, v in config_overrides.items() if v is not None}
        if keras.backend.backend() == "jax":
            from keras_advreg.training import jax_step

            features, labels, sample_weight, extras = self._unpack(x)
            config = self.adv_config.replace(**overrides)
            adv = jax_step.perturb(self, config, features, labels, sample_weight, extras)
            return _put_back(x, adv)
        import tensorflow as tf

        config = self._neighbor_config(**overrides)
        features, labels, sample_weight, extras = self._unpack(x)
        to_tensor = lambda t: tf.convert_to_tensor(t) if t is not None else None  # noqa: E731
        features = tf.nest.map_structure(tf.convert_to_tensor, features)
        labels = tf.nest.map_structure(to_tensor, labels)
        sample_weight = to_tensor(sample_weight)
        self._dense_features(features)  # a clear error for integer-only features, before tracing
        adv = _to_numpy(self._perturb_function(config)(features, labels, sample_weight, extras))
        return _put_back(x, adv)

    def _perturb_function(self, config):
        """A compiled `perturb_on_batch` for one perturbation config (cached until recompiled).

        NSL's method runs eagerly, which costs several times the compiled step per batch in
        Keras 3; the math is the same.
        """
        import tensorflow as tf

        key = repr(sorted((k, repr(v)) for k, v in vars(config).items()))
        cache = self._perturb_cache.functions
        if key not in cache:

            @tf.function(reduce_retracing=True)
            def perturb(features, labels, sample_weight, extras):
                dense = self._dense_features(features)
                with tf.GradientTape(watch_accessed_variables=False) as tape:
                    tape.watch(dense)
                    y_pred = self._call_base(features, extras, training=False)
                    loss = self._adv_compile_loss(labels, y_pred, sample_weight)
                return self._generate(
                    features, labels, sample_weight, extras, loss, tape, config, False
                )

            cache[key] = perturb
        return cache[key]


class FunctionCache:
    """Holds compiled functions (and the JAX step's random seed) out of Keras' attribute
    tracking."""

    def __init__(self):
        self.functions: dict = {}
        self.seed: int | None = None


def _to_numpy(value: Any) -> Any:
    return keras.tree.map_structure(
        lambda t: keras.ops.convert_to_numpy(t) if keras.ops.is_tensor(t) else t, value
    )


def _put_back(batch: Any, adv: Any) -> Any:
    """The perturbed features `adv` in the format of `batch`, as NumPy arrays."""
    if isinstance(batch, Mapping):
        return {**{k: _to_numpy(v) for k, v in batch.items()}, **adv}
    rest = tuple(_to_numpy(t) for t in tuple(batch)[1:])
    return (adv, *rest)
