"""Norm-ball math on perturbations: NSL's steepest-ascent directions and projections, and
random points in a ball (NSL's distributions, with run-time shapes and optional seeds).
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from keras_advreg.backend.nsl import nsl_configs, nsl_utils


def unit_direction(grad: Any, norm: str) -> Any:
    """NSL's `maximize_within_unit_norm`: the unit-`norm` vector along which `grad` rises most."""
    return nsl_utils.maximize_within_unit_norm(grad, nsl_configs.NormType(norm))


def project(delta: Any, radius: Any, norm: str) -> Any:
    """NSL's `project_to_ball`: `delta` projected onto the `norm` ball of `radius`."""
    return nsl_utils.project_to_ball(delta, radius, nsl_configs.NormType(norm))


_STATELESS_SALT = 0x5EED  # second word of a stateless seed built from one integer


def seed_pair(seed: Any) -> tf.Tensor:
    """A stateless-op seed (`[2]` int64) from None (drawn), an int or a `[]`/`[2]` int tensor."""
    if seed is None:
        return tf.random.uniform([2], 0, tf.int64.max, dtype=tf.int64)
    seed = tf.convert_to_tensor(seed)
    if not seed.dtype.is_integer:
        raise ValueError(f"`seed` must be an integer or an integer tensor. Received: {seed!r}")
    seed = tf.cast(seed, tf.int64)
    if seed.shape.rank == 0:
        seed = tf.stack([seed, tf.constant(_STATELESS_SALT, tf.int64)])
    elif seed.shape.rank != 1 or seed.shape[0] not in (None, 2):
        raise ValueError(f"`seed` must be a scalar or have shape [2]. Received: {seed!r}")
    return seed


class _Draws:
    """tf.random draws: stateless from a seed (each call a new subseed), else stateful."""

    def __init__(self, seed: Any):
        self.seed, self.count = seed, 0

    def _next(self):
        self.count += 1
        return tf.stack([self.seed[0], self.seed[1] + 7919 * self.count])

    def uniform(self, shape, low, high, dtype):
        if self.seed is None:
            return tf.random.uniform(shape, low, high, dtype)
        return tf.random.stateless_uniform(shape, self._next(), low, high, dtype)

    def normal(self, shape, dtype):
        if self.seed is None:
            return tf.random.normal(shape, dtype=dtype)
        return tf.random.stateless_normal(shape, self._next(), dtype=dtype)

    def gamma(self, shape, alpha, beta, dtype):
        if self.seed is None:
            return tf.random.gamma(shape, alpha, beta, dtype)
        return tf.random.stateless_gamma(shape, self._next(), alpha, beta, dtype)


def random_in_norm_ball(tensor_structure: Any, radius: Any, norm: str, seed: Any = None) -> Any:
    """NSL's `random_in_norm_ball`, for tensors whose batch size is only known at run time.

    NSL 1.4.0 samples with the static shape (`t.shape`), which fails inside
    `model.fit` where the batch dimension is `None`; this samples the same
    distributions (uniform for l-inf; the Barthe et al. construction for l2 and
    l1) with dynamic shapes.

    Args:
        tensor_structure: A nest of batched floating-point tensors.
        radius: float. Radius of the ball.
        norm: str. `"infinity"`, `"l2"` or `"l1"`.
        seed: int32 tensor of shape `[2]` for stateless (repeatable) draws, or
            `None` for TensorFlow's global random state.

    Returns:
        A nest of the same structure whose examples lie in the ball.
    """
    tensors = tf.nest.flatten(tensor_structure)
    norm = getattr(norm, "value", norm)
    draw = _Draws(seed)
    if norm == "infinity":
        return tf.nest.map_structure(
            lambda t: draw.uniform(tf.shape(t), -radius, radius, t.dtype), tensor_structure
        )
    batch = tf.shape(tensors[0])[0]

    def per_example(reduce, values):
        axes = lambda t: tf.range(1, tf.rank(t))  # noqa: E731
        return tf.add_n([reduce(v, axis=axes(v)) for v in values])

    def scale_to_rank(scale, t):
        return tf.reshape(scale, tf.concat([[batch], tf.ones([tf.rank(t) - 1], tf.int32)], 0))

    if norm == "l2":
        samples = [draw.normal(tf.shape(t), t.dtype) for t in tensors]
        squared = per_example(tf.reduce_sum, [tf.square(s) for s in samples])
        extra = draw.gamma(tf.shape(squared), 1.0, 0.5, squared.dtype)
        scale = radius / tf.sqrt(squared + extra)
    elif norm == "l1":
        samples = [
            draw.gamma(tf.shape(t), 1.0, 1.0, t.dtype) - draw.gamma(tf.shape(t), 1.0, 1.0, t.dtype)
            for t in tensors
        ]
        l1 = per_example(tf.reduce_sum, [tf.abs(s) for s in samples])
        extra = draw.gamma(tf.shape(l1), 1.0, 1.0, l1.dtype)
        scale = radius / (l1 + extra)
    else:
        raise ValueError(f"`norm` must be one of 'infinity', 'l2', 'l1'. Received: norm={norm!r}")
    return tf.nest.pack_sequence_as(
        tensor_structure, [s * scale_to_rank(scale, s) for s in samples]
    )
