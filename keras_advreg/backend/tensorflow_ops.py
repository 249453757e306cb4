"""TensorFlow's pieces of `keras_advreg.backend.ops`: `tf.GradientTape` and `tf.function`."""

from __future__ import annotations

import contextlib
import itertools
import types
from collections.abc import Callable, Sequence
from typing import Any

import tensorflow as tf

DYNAMIC_SHAPES = True

_COMPILATIONS = itertools.count()


def _distinct(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` with a code object of its own.

    TensorFlow counts traces per code object, not per `tf.function` (its "frequent
    tracing" detector keys on `python_function.__code__`), and logs "5 out of the last 5
    calls to <function ...> triggered tf.function retracing" when one code object is traced
    5 times in a row. Each compiled attack (one per model, attack and input layout) is traced
    once, from the same closure code: without this, evaluating a few models or attacks in
    one process (the demo, repeated `evaluate_robustness` calls) logs that warning although
    nothing is retraced.
    """
    code = getattr(fn, "__code__", None)
    if not isinstance(fn, types.FunctionType) or code is None:
        return fn
    name = f"{fn.__name__}_{next(_COMPILATIONS)}"
    names = {"co_name": name}
    if hasattr(code, "co_qualname"):  # Python 3.11+
        names["co_qualname"] = name
    code = code.replace(**names)
    distinct = types.FunctionType(code, fn.__globals__, name, fn.__defaults__, fn.__closure__)
    distinct.__kwdefaults__ = fn.__kwdefaults__
    return distinct


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
    fn = _distinct(fn)
    if input_signature is None:
        return tf.function(fn, reduce_retracing=True)
    signature = tf.nest.map_structure(
        lambda s: tf.TensorSpec(s.shape, s.dtype) if hasattr(s, "is_floating") else s,
        list(input_signature),
    )
    return tf.function(fn, input_signature=signature)


# Padded row counts: multiples of 8 up to 64, then eight per octave (72, 80, ..., 128, 144,
# ...): above 64 rows at most an eighth is padding, and a few dozen compilations cover all.
_ROW_BUCKETS = list(range(8, 65, 8)) + [2**k * q // 8 for k in range(6, 30) for q in range(9, 17)]


def fuse(fn: Callable[..., Any], rows: Sequence[int] = ()) -> Callable[..., Any]:
    compiled = tf.function(fn, jit_compile=True, autograph=False)
    if not rows:
        return compiled

    def call(*args: Any) -> Any:
        n = tf.shape(args[rows[0]])[0]
        buckets = tf.constant(_ROW_BUCKETS, tf.int32)
        size = tf.gather(buckets, tf.searchsorted(buckets, tf.reshape(n, [1])))[0]
        padded = list(args)
        for i in rows:
            a = tf.convert_to_tensor(args[i])
            padded[i] = tf.pad(a, [[0, size - n]] + [[0, 0]] * (a.shape.rank - 1))
        return tf.nest.map_structure(lambda t: t[:n], compiled(*padded))

    return call


def fresh_randomness(model: Any, v: Any) -> Any:
    """A forward pass with its own draw of the model's randomness: here the model's
    `SeedGenerator`s advance by themselves, inside compiled code too."""
    del model, v
    return contextlib.nullcontext()
