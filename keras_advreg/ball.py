"""The norm-ball math, below both the attacks and the training: NSL's steepest-ascent
directions and projections in `keras.ops`, and random points of a ball with NSL's
distributions, three ways (NumPy on the host, `keras.random`, TensorFlow ops).

`unit_direction` and `project` are NSL's `maximize_within_unit_norm` and `project_to_ball`
(`neural_structured_learning.lib.utils`) written with `keras.ops` and `keras.tree`, so they
run on the TensorFlow, JAX and PyTorch backends and give NSL's values (a nest of batched
tensors is normed jointly per example, with NSL's epsilon guards). `random_unit_ball` draws
NSL's `random_in_norm_ball` distributions with NumPy on the host, so every backend gets
the same points.

The random points, with one distribution per norm (NSL's `random_in_norm_ball`: uniform on
the l-inf cube; Barthe et al.'s construction for l2 and l1), for three callers:

- `random_unit_ball`: NumPy on the host, for the attacks (every backend gets the same
  points);
- `random_in_ball`: `keras.random`, for the training steps on backends other than
  TensorFlow (`keras_advreg.training.neighbor`);
- `random_in_norm_ball`: TensorFlow ops, for the training wrapper's random start inside
  `model.fit` on TensorFlow (public as `keras_advreg.attacks.random_in_norm_ball`); it
  imports TensorFlow when called.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping
from typing import Any

import keras
import numpy as np

NORMS = ("infinity", "l2", "l1")
#: NSL's lower bound on a norm (`epsilon` of `maximize_within_unit_norm` / `project_to_ball`).
EPSILON = 1e-6


def _check_norm(norm: Any, allowed: tuple[str, ...] = NORMS) -> str:
    value = getattr(norm, "value", norm)  # nsl.configs.NormType
    if isinstance(value, str) and value in allowed:
        return value
    names = ", ".join(repr(n) for n in allowed)
    raise ValueError(f"`norm` must be one of {names}. Received: norm={norm!r}")


def _expand_to_rank(vector: Any, rank: int) -> Any:
    """A per-example `(batch,)` vector reshaped to broadcast against a tensor of `rank`."""
    return keras.ops.reshape(vector, (-1,) + (1,) * (rank - 1))


def _reduce_across_tensors(reduce_fn: Any, tensors: list) -> Any:
    """`reduce_fn` over every non-batch axis of every tensor: one value per example."""
    reduced = [
        reduce_fn(t, axis=tuple(range(1, len(t.shape)))) if len(t.shape) > 1 else t for t in tensors
    ]
    if len(reduced) == 1:
        return reduced[0]
    return reduce_fn(keras.ops.stack(reduced, axis=-1), axis=-1)


def unit_direction(grad: Any, norm: str) -> Any:
    """NSL's `maximize_within_unit_norm`: the unit-`norm` vector along which `grad` rises most.

    Each example (first axis) of the nest is one problem, normed jointly over all its
    tensors: `sign(grad)` for l-inf; `grad / max(||grad||_2, 1e-6)` for l2; for l1, `sign`
    on the coordinates of largest magnitude (ties share the unit mass evenly, divided by
    `max(count, 1e-6)`) and 0 elsewhere.

    Args:
        grad: A batched tensor or a nest of batched tensors (the same batch size).
        norm: str. `"infinity"`, `"l2"` or `"l1"` (or NSL's `NormType`).

    Returns:
        A nest like `grad`.
    """
    norm = _check_norm(norm)
    if norm == "infinity":
        return keras.tree.map_structure(keras.ops.sign, grad)
    tensors = keras.tree.flatten(grad)
    if not tensors:
        return grad
    tensors = [keras.ops.convert_to_tensor(t) for t in tensors]
    ranks = [len(t.shape) for t in tensors]
    if norm == "l2":
        squared = _reduce_across_tensors(keras.ops.sum, [keras.ops.square(t) for t in tensors])
        inverse = keras.ops.rsqrt(keras.ops.maximum(squared, EPSILON**2))
        out = [t * _expand_to_rank(inverse, r) for t, r in zip(tensors, ranks)]
    else:
        magnitudes = [keras.ops.abs(t) for t in tensors]
        peak = _reduce_across_tensors(keras.ops.max, magnitudes)
        is_peak = [
            keras.ops.cast(keras.ops.equal(m, _expand_to_rank(peak, r)), m.dtype)
            for m, r in zip(magnitudes, ranks)
        ]
        count = keras.ops.maximum(_reduce_across_tensors(keras.ops.sum, is_peak), EPSILON)
        out = [
            p * keras.ops.sign(t) / _expand_to_rank(count, r)
            for t, r, p in zip(tensors, ranks, is_peak)
        ]
    return keras.tree.pack_sequence_as(grad, out)


def project(delta: Any, radius: Any, norm: str) -> Any:
    """NSL's `project_to_ball`: each example of `delta` projected onto the `norm` ball.

    l-inf clips every coordinate to `[-radius, radius]`; l2 scales an example whose norm
    (over all tensors of the nest, at least 1e-6) exceeds `radius` by `radius / norm`.

    Args:
        delta: A batched tensor or a nest of batched tensors.
        radius: float or scalar tensor. The radius of the ball.
        norm: str. `"infinity"` or `"l2"` (NSL does not project onto l1 balls).

    Returns:
        A nest like `delta`.
    """
    value = getattr(norm, "value", norm)
    if value == "l1":
        raise NotImplementedError(
            "`project` supports norm='infinity' and norm='l2' only (NSL's `project_to_ball`). "
            f"Received: norm={norm!r}"
        )
    norm = _check_norm(norm, ("infinity", "l2"))
    if norm == "infinity":
        return keras.tree.map_structure(lambda t: keras.ops.clip(t, -radius, radius), delta)
    tensors = [keras.ops.convert_to_tensor(t) for t in keras.tree.flatten(delta)]
    if not tensors:
        return delta
    total = _reduce_across_tensors(keras.ops.sum, [keras.ops.square(t) for t in tensors])
    length = keras.ops.sqrt(keras.ops.maximum(total, EPSILON**2))
    scale = keras.ops.where(length <= radius, keras.ops.ones_like(length), radius / length)
    out = [t * _expand_to_rank(scale, len(t.shape)) for t in tensors]
    return keras.tree.pack_sequence_as(delta, out)


def random_unit_ball(rng: np.random.Generator, n: int, dims: int, norm: str) -> np.ndarray:
    """`n` random points of the unit `norm` ball in `dims` dimensions, drawn on the host.

    NSL's distributions (`random_in_norm_ball`): uniform on the cube for l-inf; for l2 and
    l1 the construction of Barthe et al. (2005), uniform in the ball: normal coordinates
    scaled by `1 / sqrt(||g||^2 + E)` with `E ~ Exponential(mean 2)` (two extra squared
    normals) for l2; Laplace coordinates scaled by `1 / (||l||_1 + E)` with
    `E ~ Exponential(1)` for l1. A random start of radius `eps` is `eps * draw`.

    Args:
        rng: The NumPy generator to draw from.
        n: int >= 0. The number of points.
        dims: int >= 1. Their dimension (`AttackProblem.dims`).
        norm: str. `"infinity"`, `"l2"` or `"l1"`.

    Returns:
        float32 array of shape `(n, dims)`.
    """
    norm = _check_norm(norm)
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"`rng` must be a `np.random.Generator`. Received: rng={rng!r}")
    for name, value, low in (("n", n, 0), ("dims", dims, 1)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise ValueError(f"`{name}` must be an integer >= {low}. Received: {name}={value!r}")
    shape = (int(n), int(dims))
    if norm == "infinity":
        return rng.uniform(-1.0, 1.0, shape).astype(np.float32)
    if norm == "l2":
        samples = rng.standard_normal(shape)
        extra = rng.exponential(2.0, shape[0])  # Chi^2(2) = Gamma(1, rate 0.5)
        scale = 1.0 / np.sqrt(np.sum(samples**2, axis=1) + extra)
    else:
        samples = rng.exponential(1.0, shape) - rng.exponential(1.0, shape)  # Laplace(0, 1)
        extra = rng.exponential(1.0, shape[0])  # |Laplace(0, 1)|
        scale = 1.0 / (np.sum(np.abs(samples), axis=1) + extra)
    return (samples * scale[:, None]).astype(np.float32)


# ---------------------------------------------------------------------- TensorFlow (training)
class _Draws:
    """tf.random draws: stateless from a seed (each call a new subseed), else stateful."""

    def __init__(self, tf: Any, seed: Any):
        self.tf, self.seed, self.count = tf, seed, 0

    def _next(self):
        self.count += 1
        return self.tf.stack([self.seed[0], self.seed[1] + 7919 * self.count])

    def uniform(self, shape, low, high, dtype):
        if self.seed is None:
            return self.tf.random.uniform(shape, low, high, dtype)
        return self.tf.random.stateless_uniform(shape, self._next(), low, high, dtype)

    def normal(self, shape, dtype):
        if self.seed is None:
            return self.tf.random.normal(shape, dtype=dtype)
        return self.tf.random.stateless_normal(shape, self._next(), dtype=dtype)

    def gamma(self, shape, alpha, beta, dtype):
        if self.seed is None:
            return self.tf.random.gamma(shape, alpha, beta, dtype)
        return self.tf.random.stateless_gamma(shape, self._next(), alpha, beta, dtype)


def random_in_norm_ball(tensor_structure: Any, radius: Any, norm: str, seed: Any = None) -> Any:
    """NSL's `random_in_norm_ball`, for tensors whose batch size is only known at run time.

    TensorFlow only (the training wrapper's random start). NSL 1.4.0 samples with the
    static shape (`t.shape`), which fails inside `model.fit` where the batch dimension is
    `None`; this samples the same distributions (uniform for l-inf; the Barthe et al.
    construction for l2 and l1) with dynamic shapes.

    Args:
        tensor_structure: A nest of batched floating-point tensors.
        radius: float. Radius of the ball.
        norm: str. `"infinity"`, `"l2"` or `"l1"`.
        seed: int32 tensor of shape `[2]` for stateless (repeatable) draws, or
            `None` for TensorFlow's global random state.

    Returns:
        A nest of the same structure whose examples lie in the ball.
    """
    import tensorflow as tf

    tensors = tf.nest.flatten(tensor_structure)
    norm = getattr(norm, "value", norm)
    draw = _Draws(tf, seed)
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


__all__ = [
    "EPSILON",
    "NORMS",
    "project",
    "random_in_norm_ball",
    "random_unit_ball",
    "unit_direction",
]


def random_in_ball(dense: Mapping, radius: float, norm: str, seeds: Callable[[], Any]) -> dict:
    """NSL's `random_in_norm_ball` distributions with `keras.random` (each example of the
    dict of batched tensors one point; `seeds()` gives the `seed` of each draw).

    Uniform on the cube for l-inf; Barthe et al.'s construction for l2 (normal coordinates
    over `sqrt(||g||^2 + E)`, `E ~ Gamma(1, rate 0.5)`) and l1 (Laplace coordinates over
    `||l||_1 + E`, `E ~ Gamma(1, 1)`), as NSL draws them.
    """
    keys = list(dense)
    tensors = [dense[k] for k in keys]
    if norm == "infinity":
        out = [
            keras.random.uniform(t.shape, -radius, radius, dtype=t.dtype, seed=seeds())
            for t in tensors
        ]
        return dict(zip(keys, out))

    def per_example(values):
        total = None
        for v in values:
            s = keras.ops.sum(v, axis=tuple(range(1, len(v.shape)))) if len(v.shape) > 1 else v
            total = s if total is None else total + s
        return total

    def gamma(shape, dtype):
        return keras.random.gamma(shape, 1.0, dtype=dtype, seed=seeds())

    batch = tensors[0].shape[0]
    if norm == "l2":
        samples = [keras.random.normal(t.shape, dtype=t.dtype, seed=seeds()) for t in tensors]
        squared = per_example([keras.ops.square(s) for s in samples])
        extra = 2.0 * gamma((batch,), squared.dtype)  # Gamma(1, rate 0.5)
        scale = radius / keras.ops.sqrt(squared + extra)
    elif norm == "l1":
        samples = [gamma(t.shape, t.dtype) - gamma(t.shape, t.dtype) for t in tensors]
        l1 = per_example([keras.ops.abs(s) for s in samples])
        scale = radius / (l1 + gamma((batch,), l1.dtype))
    else:
        raise ValueError(f"`norm` must be one of 'infinity', 'l2', 'l1'. Received: norm={norm!r}")
    out = [s * keras.ops.reshape(scale, (-1,) + (1,) * (len(s.shape) - 1)) for s in samples]
    return dict(zip(keys, out))
