"""JAX's pieces of `keras_advreg.backend.ops`: `jax.value_and_grad` and `jax.jit`.

A jitted function must not capture a model's variables as constants (a callback attacks
the same model after every epoch of training), so `compile` passes their values as an
argument and maps them back onto the variables with a `keras.StatelessScope`, the
mechanism under Keras' own `stateless_call`.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import keras
from keras.src.backend.common.stateless_scope import in_stateless_scope

DYNAMIC_SHAPES = False
_SEED_STATE = "seed_generator_state"
# Distinct constants for the forward passes of one trace (the draws of expectation over
# transformation are unrolled: each gets its own).
_PASSES = itertools.count(1)


def seed_states(variables: Sequence[Any]) -> list:
    """The states of the `keras.random.SeedGenerator`s among `variables`."""
    return [v for v in variables if getattr(v, "path", v.name).rsplit("/", 1)[-1] == _SEED_STATE]


def fuse(fn: Callable[..., Any], rows: Sequence[int] = ()) -> Callable[..., Any]:
    del rows
    return fn  # inside `jax.jit`, XLA fuses it with the rest


@contextlib.contextmanager
def fresh_randomness(model: Any, v: Any) -> Iterator[None]:
    """A forward pass of `model` at `v` with its own draw of the model's randomness.

    Inside a compiled attack (`compile`: a `keras.StatelessScope`) a randomized layer's
    `SeedGenerator` cannot advance its state: a state assigned inside a `jax.grad` or a
    loop body would leak out of it. Each pass instead runs in a nested scope whose seed
    states are the current ones mixed with a hash of the point `v` and a per-pass
    constant, and whose updates are dropped: every pass (every draw, every iterate) gets
    different random numbers, and nothing traced escapes.
    """
    variables = list(getattr(model, "variables", ()))
    seeds = seed_states(variables)
    if not seeds or not in_stateless_scope():
        yield  # eager: the generators advance by themselves
        return
    bits = jax.lax.bitcast_convert_type(jax.lax.stop_gradient(jnp.asarray(v, "float32")), "uint32")
    bits = bits.reshape(-1)
    weights = jnp.arange(bits.shape[0], dtype="uint32") * jnp.uint32(2654435761) + jnp.uint32(1)
    point = jnp.sum(bits * weights, dtype="uint32")
    constant = jnp.uint32((next(_PASSES) * 40503) % 2**32)
    mapping = [(variable, variable.value) for variable in variables]  # the current values
    for variable in seeds:
        state = variable.value
        mixed = state + jnp.stack([point, constant]).astype(state.dtype)
        mapping = [(k, mixed if k is variable else value) for k, value in mapping]
    with keras.StatelessScope(state_mapping=mapping):
        yield


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
    seeds = seed_states(variables)

    def call(*args):
        out = jitted([variable.value for variable in variables], *args)
        for state in seeds:  # the next call draws other random numbers
            state.assign(state.value + jnp.asarray([0, 1], state.dtype))
        return out

    return call
