"""How `AdversarialRegularization` reads batches and finds its base model's inputs/outputs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras


def is_perturbable(value: Any) -> bool:
    """Whether a feature is perturbed: a floating-point tensor of the backend.

    On TensorFlow this is NSL's own test (`is_differentiable_tensor`: a `tf.Tensor` of a
    floating-point, complex, resource or variant dtype); on the other backends a backend
    tensor of a floating-point dtype. Integer, string and NumPy values are left as they are.
    """
    if keras.backend.backend() == "tensorflow":
        from keras_advreg.backend.nsl import adversarial_neighbor

        return adversarial_neighbor.is_differentiable_tensor(value)
    if not keras.ops.is_tensor(value):
        return False
    return keras.backend.is_float_dtype(keras.backend.standardize_dtype(value.dtype))


def input_names(model: keras.Model) -> list[str] | None:
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return None
    if not inputs:
        return None
    return [getattr(t, "name", None) for t in inputs]


def num_outputs(model: keras.Model) -> int | None:
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        return None
    return len(outputs) if outputs else None


def looks_like_metrics(value: Any) -> bool:
    items = value.values() if isinstance(value, Mapping) else value
    if not isinstance(items, (list, tuple)) and not isinstance(value, Mapping):
        items = [items]
    return any(isinstance(v, (str, keras.metrics.Metric)) or callable(v) for v in items)


def as_mapping(data: Any) -> Mapping:
    """The feature dict of dict data (also when Keras wrapped it as `(dict, None, None)`)."""
    if isinstance(data, Mapping):
        return data
    if isinstance(data, (tuple, list)) and data and isinstance(data[0], Mapping):
        return data[0]
    return {}
