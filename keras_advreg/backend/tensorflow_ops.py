"""TensorFlow's pieces of `keras_advreg.backend.ops`: `tf.GradientTape` and `tf.function`."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import tensorflow as tf

DYNAMIC_SHAPES = True


def value_and_grad(fn: Callable[[Any], tuple[Any, Any]], v: Any) -> tuple[Any, Any]:
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(v)
        total, aux = fn(v)
    grad = tape.gradient(total, v, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return aux, grad


def compile(  # noqa: A001
    fn: Callable[..., Any], variables: Sequence[Any] = (), input_signature: Any = None
) -> Callable[..., Any]:
    del variables  # a tf.function reads variables by reference
    if input_signature is None:
        return tf.function(fn, reduce_retracing=True)
    signature = tf.nest.map_structure(
        lambda s: tf.TensorSpec(s.shape, s.dtype) if hasattr(s, "is_floating") else s,
        list(input_signature),
    )
    return tf.function(fn, input_signature=signature)


def fresh_randomness(model: Any, v: Any) -> Any:
    """A forward pass with its own draw of the model's randomness: here the model's
    `SeedGenerator`s advance by themselves, inside compiled code too."""
    del model, v
    return contextlib.nullcontext()
