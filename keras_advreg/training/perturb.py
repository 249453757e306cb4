"""`perturb_on_batch`: NSL's method of the same name (at the inputs), compiled per perturbation config
(a `tf.function` of NSL's `gen_adv_neighbor` on TensorFlow, a `jax.jit` of the same math in
`keras.ops` on JAX)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras

from keras_advreg.training.config import NEIGHBOR_FIELDS
from keras_advreg.training.routing import call_base, dense_features, require_loss, unpack


def perturb_on_batch(model: Any, x: Any, **config_overrides: Any):
    """`AdversarialRegularization.perturb_on_batch` (see its docstring) for `model`."""
    unknown = sorted(set(config_overrides) - set(NEIGHBOR_FIELDS))
    if unknown:
        raise ValueError(
            f"Unknown perturbation setting(s) {unknown}. Expected some of {list(NEIGHBOR_FIELDS)}."
        )
    require_loss(model, "`perturb_on_batch` needs")
    overrides = {k: v for k, v in config_overrides.items() if v is not None}
    if keras.backend.backend() == "jax":
        from keras_advreg.training import jax_step

        features, labels, sample_weight, extras = unpack(model, x)
        config = model.adv_config.replace(**overrides)
        adv = jax_step.perturb(model, config, features, labels, sample_weight, extras)
        return _put_back(x, adv)
    import tensorflow as tf

    config = model.adv_config.to_nsl_neighbor_config(**overrides)
    features, labels, sample_weight, extras = unpack(model, x)
    to_tensor = lambda t: tf.convert_to_tensor(t) if t is not None else None  # noqa: E731
    features = tf.nest.map_structure(tf.convert_to_tensor, features)
    labels = tf.nest.map_structure(to_tensor, labels)
    sample_weight = to_tensor(sample_weight)
    dense_features(features)  # a clear error for integer-only features, before tracing
    adv = _to_numpy(_perturb_function(model, config)(features, labels, sample_weight, extras))
    return _put_back(x, adv)


def _perturb_function(model, config):
    """A compiled `perturb_on_batch` for one perturbation config (cached until recompiled).

    NSL's method runs eagerly, which costs several times the compiled step per batch in
    Keras 3; the math is the same.
    """
    import tensorflow as tf

    from keras_advreg.backend.nsl_private import neighbor
    from keras_advreg.ball import random_in_norm_ball

    key = repr(sorted((k, repr(v)) for k, v in vars(config).items()))
    cache = model.step_cache.functions
    if key not in cache:

        @tf.function(reduce_retracing=True)
        def perturb(features, labels, sample_weight, extras):
            dense = dense_features(features)
            model_fn = lambda f: call_base(model, f, extras, training=False)  # noqa: E731
            loss_fn = lambda _labels, pred: model.adv_compile_loss(  # noqa: E731
                labels, pred, sample_weight
            )
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(dense)
                loss = loss_fn(labels, model_fn(features))
            adv, _ = neighbor(
                features, labels, loss, config, tape, model_fn, loss_fn, random_in_norm_ball
            )
            return adv

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
