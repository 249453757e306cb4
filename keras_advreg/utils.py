"""Small validation and formatting helpers shared by the modules of keras_advreg."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any


def is_number(value: Any) -> bool:
    """A real number, not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_positive_int(name: str, value: Any, allow_none: bool = False) -> Any:
    """Returns `value` as an int >= 1 (or None when allowed), or raises a Keras-style error."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"`{name}` must be an integer >= 1. Received: {name}={value!r}")
    return int(value)


def check_clip(name: str, value: Any) -> Any:
    """A clip bound of an attack: a finite number, a dict of them per feature, or None."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        return {str(k): check_clip(f"{name}[{k!r}]", v) for k, v in value.items()}
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(
            f"`{name}` must be a finite number, a dict of numbers per feature, or None. "
            f"Received: {name}={value!r}"
        )
    return float(value)


def format_eps(eps: float) -> str:
    """How an epsilon is named in log keys, reports and JSON: `f"{eps:g}"` (6 digits)."""
    return f"{eps:g}"


NORMS = ("infinity", "l2", "l1")
# Spellings users type that mean one of NSL's norms.
_NORM_ALIASES = {"inf": "infinity", "linf": "infinity", "l-inf": "infinity", "l_inf": "infinity"}


def normalize_norm(value: Any, name: str = "adv_grad_norm") -> str:
    """NSL's spelling of a norm name (`"infinity"`, `"l2"`, `"l1"`), or a Keras-style error."""
    value = getattr(value, "value", value)  # nsl.configs.NormType
    if isinstance(value, str):
        key = value.strip().lower()
        key = _NORM_ALIASES.get(key, key)
        if key in NORMS:
            return key
    raise ValueError(f"`{name}` must be one of 'infinity', 'l2', 'l1'. Received: {name}={value!r}")


def require_tensorflow_backend(what: str) -> None:
    """Raises at once when Keras runs on another backend than TensorFlow.

    The attacks, the robustness evaluation and the training step are TensorFlow code
    (`tf.function`, `tf.GradientTape`); on JAX or PyTorch they would fail deep inside
    autograph with a message about symbolic tensors.
    """
    import keras

    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise RuntimeError(
            f"{what} needs the TensorFlow backend of Keras 3 (keras_advreg's attacks and "
            "training step are TensorFlow code). Set KERAS_BACKEND=tensorflow before "
            f"importing Keras. Received: backend={backend!r}"
        )
