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


# ---------------------------------------------------------------------- the model's batches
def unpack(model: Any, data: Any, require_labels: bool = True):
    """Returns `(features, labels, sample_weight, extras)` for one batch of `model` (an
    `AdversarialRegularization`).

    `extras` holds the label and weight entries of dict data, given back to a subclassed
    base model when `base_with_labels_in_features` is set.
    """
    from keras_advreg.data.adapters import unpack_batch

    features, labels, weights = unpack_batch(data, model.label_keys, model.sample_weight_key)
    extras = {}
    if isinstance(features, Mapping) and labels is not None:
        extras = {k: v for k, v in as_mapping(data).items() if k not in features}
        outputs = num_outputs(model.base_model)
        if outputs is not None and outputs != len(model.label_keys):
            raise ValueError(
                "`label_keys` must name one label per output of `base_model`: it has "
                f"{outputs} outputs ({model.base_model.output_names}) and "
                f"{len(model.label_keys)} label key(s). Received: "
                f"label_keys={list(model.label_keys)}"
            )
    if require_labels and labels is None:
        received = sorted(data) if isinstance(data, Mapping) else type(data).__name__
        raise ValueError(
            "Training and evaluation need labels: pass `(x, y)` or `(x, y, sample_weight)`, "
            f"or dicts holding the label key(s) `label_keys={list(model.label_keys)}`. "
            f"Received features only: {received}"
        )
    return features, labels, weights, extras


def call_base(model: Any, features: Any, extras: Mapping | None = None, training=None):
    """Calls `model.base_model` on `features` (a dict routed by the base model's input names)."""
    base = model.base_model
    if isinstance(features, Mapping):
        names = input_names(base)
        if names:
            if all(name in features for name in names):
                features = {name: features[name] for name in names}
                if len(names) == 1:
                    features = features[names[0]]
            elif len(names) == 1 and len(features) == 1:
                features = next(iter(features.values()))
            else:
                missing = [name for name in names if name not in features]
                raise ValueError(
                    f"The base model's input(s) {missing} are missing from the features. "
                    f"Name the features after the model's `Input` names {names}. "
                    f"Received feature keys: {sorted(features)}"
                )
        elif model.base_with_labels_in_features and extras:
            features = {**features, **extras}
    return base(features, training=training)


def dense_features(features: Any) -> list:
    """The perturbable tensors of `features`; raises when there is none."""
    flat = keras.tree.flatten(features)
    dense = [t for t in flat if is_perturbable(t)]
    if not dense:
        specs = keras.tree.map_structure(
            lambda t: f"{getattr(t, 'dtype', type(t).__name__)!s}", features
        )
        raise ValueError(
            "Adversarial regularization needs floating-point features to perturb, but none "
            f"of the features is a float tensor. Received feature dtypes: {specs}. "
            "Cast images to float32 (e.g. `x / 255.0`; `keras_advreg.load_tfds` does this), "
            "or perturb embeddings: place a `keras_advreg.layers.AdversarialPerturbation` "
            "after the `Embedding`."
        )
    return dense


def require_loss(model: Any, what: str) -> None:
    """Raises unless `model` was compiled with a loss."""
    if model.adv_compile_loss is None:
        raise ValueError(
            f"{what} the loss: call `model.compile(optimizer, loss=...)` first. "
            "Received: a model compiled without `loss`, or not compiled"
        )
