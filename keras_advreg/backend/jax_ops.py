"""JAX's pieces of `keras_advreg.backend.ops`: `jax.value_and_grad` and `jax.jit`.

A jitted function must not capture a model's variables as constants (a callback attacks
the same model after every epoch of training), so `compile` passes their values as an
argument and maps them back onto the variables with a `keras.StatelessScope`, the
mechanism under Keras' own `stateless_call`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import keras

DYNAMIC_SHAPES = False


def value_and_grad(fn: Callable[[Any], tuple[Any, Any]], v: Any) -> tuple[Any, Any]:
    (_, aux), grad = jax.value_and_grad(fn, has_aux=True)(v)
    return aux, grad


def compile(  # noqa: A001
    fn: Callable[..., Any], variables: Sequence[Any] = (), input_signature: Any = None
) -> Callable[..., Any]:
    del input_signature  # jit traces once per input shape
    variables = list(variables)

    def stateless(values, *args):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return fn(*args)

    jitted = jax.jit(stateless)

    def call(*args):
        return jitted([variable.value for variable in variables], *args)

    return call
