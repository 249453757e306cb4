"""PyTorch's pieces of `keras_advreg.backend.ops`: `torch.autograd.grad`, run eagerly.

Compiled functions run under `torch.no_grad()` (no graph is kept for the model's
parameters); `value_and_grad` turns gradients back on for the one input it differentiates.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import torch

DYNAMIC_SHAPES = True


def value_and_grad(fn: Callable[[Any], tuple[Any, Any]], v: Any) -> tuple[Any, Any]:
    with torch.enable_grad():
        v = v.detach().requires_grad_(True)
        total, aux = fn(v)
        grad = None
        if total.requires_grad:  # else nothing in `total` depends on `v` (e.g. an int cast)
            (grad,) = torch.autograd.grad(total, v, allow_unused=True)
    grad = torch.zeros_like(v) if grad is None else grad
    aux = keras.tree.map_structure(lambda t: t.detach() if torch.is_tensor(t) else t, aux)
    return aux, grad.detach()


def _tensor(value: Any) -> Any:
    if isinstance(value, (np.ndarray, np.generic)) and value.dtype.kind in "biuf":
        return keras.ops.convert_to_tensor(value)
    return value


def compile(  # noqa: A001
    fn: Callable[..., Any], variables: Sequence[Any] = (), input_signature: Any = None
) -> Callable[..., Any]:
    del variables, input_signature  # eager: variables are read directly

    def call(*args):
        args = keras.tree.map_structure(_tensor, args)
        with torch.no_grad():
            return fn(*args)

    return call


def fuse(fn: Callable[..., Any], rows: Sequence[int] = ()) -> Callable[..., Any]:
    del rows
    return fn  # eager: nothing to fuse


def fresh_randomness(model: Any, v: Any) -> Any:
    """A forward pass with its own draw of the model's randomness: here the model's
    `SeedGenerator`s advance by themselves, inside compiled code too."""
    del model, v
    return contextlib.nullcontext()
