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


_BACKEND_NAMES = {"tensorflow": "TensorFlow", "jax": "JAX", "torch": "PyTorch"}


def require_backend(what: str, backends: tuple[str, ...] = ("tensorflow", "jax", "torch")) -> None:
    """Raises at once when Keras runs on a backend that `what` does not support.

    Without this check, code on an unsupported backend fails deep inside a trace with a
    message about symbolic tensors.

    Args:
        what: str. The public name, for the message.
        backends: The Keras backends that work.
    """
    import keras

    backend = keras.backend.backend()
    if backend in backends:
        return
    names = [_BACKEND_NAMES.get(b, b) for b in backends]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
    raise RuntimeError(
        f"{what} needs the {listed} backend of Keras 3. Set KERAS_BACKEND="
        f"{backends[0]} before importing Keras. Received: backend={backend!r}"
    )


def require_tensorflow_backend(what: str) -> None:
    """Raises at once when Keras runs on another backend than TensorFlow (for the
    TensorFlow-only features: NSL's training step, tf.data pipelines)."""
    require_backend(what, ("tensorflow",))


def tensorflow_if_imported() -> Any:
    """The `tensorflow` module if something already imported it, else None (a TensorFlow
    object cannot exist without it, so type checks need not import it)."""
    import sys

    return sys.modules.get("tensorflow")


def is_tf_dataset(value: Any) -> bool:
    """Whether `value` is a `tf.data.Dataset` (without importing TensorFlow)."""
    tf = tensorflow_if_imported()
    return tf is not None and isinstance(value, tf.data.Dataset)


def is_tensor(value: Any) -> bool:
    """Whether `value` is a tensor of a framework (TensorFlow, JAX, PyTorch) or of Keras'
    backend, rather than a NumPy array or a Python value."""
    import keras
    import numpy as np

    if isinstance(value, np.ndarray) or value is None:
        return False
    return keras.ops.is_tensor(value) or type(value).__module__.split(".")[0] in (
        "tensorflow",
        "jax",
        "jaxlib",
        "torch",
    )
