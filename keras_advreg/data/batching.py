"""Batches for attacking: arrays or tf.data datasets -> `(features, labels)` batches.

Recognises datasets of single examples (and batches them), cuts at `max_examples`,
routes feature dicts to a model's named inputs, and checks labels against the output.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator, Mapping
from typing import Any

import keras
import numpy as np

from keras_advreg.backend.keras_internals import built_input_shapes
from keras_advreg.data.adapters import unpack_batch
from keras_advreg.data.validation import NOT_A_CLASSIFIER, check_example_counts
from keras_advreg.utils import is_tensor, is_tf_dataset


def label_mode(y: np.ndarray, num_classes: int) -> str:
    """'sparse' or 'categorical', after checking the labels fit the output."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[-1] == num_classes and num_classes > 1:
        if np.any(y < 0) or np.any(y > 1) or not np.allclose(y.sum(-1), 1.0, atol=1e-3):
            raise ValueError(
                "One-hot labels must be rows of 0/1 (or probabilities) summing to 1. "
                f"Received labels such as {y[:3].tolist()}"
            )
        return "categorical"
    if y.ndim > 2 or (y.ndim == 2 and y.shape[-1] != 1):
        raise ValueError(
            f"Labels must have shape (batch,) or (batch, 1) (class ids) or (batch, {num_classes}) "
            f"(one-hot) for a model with {num_classes} output(s). Received labels of shape "
            f"{y.shape}"
        )
    classes = max(num_classes, 2)
    integers = np.issubdtype(y.dtype, np.number) and not np.any(y != np.round(y))
    if num_classes == 1 and (not integers or np.any(y < 0) or np.any(y > 1)):
        raise ValueError(
            NOT_A_CLASSIFIER.format(caller="The attacks")
            + ": a model with 1 output unit is attacked as a binary classifier (one logit, "
            "or a sigmoid probability) with labels 0 or 1. Received labels such as "
            f"{y.reshape(-1)[:5]} (a regression model's targets?)"
        )
    if not integers:
        raise ValueError(f"Class-id labels must be integers. Received labels such as {y[:5]}")
    if np.any(y < 0) or np.any(y >= classes):
        raise ValueError(
            f"Labels must be class ids in [0, {classes}) for a model with {num_classes} "
            f"output(s). Received labels from {y.min()} to {y.max()}"
        )
    return "sparse"


def as_floatx(value: Any) -> Any:
    def convert(a):
        a = np.asarray(a) if not is_tensor(a) else a
        if isinstance(a, np.ndarray) and np.issubdtype(a.dtype, np.floating):
            return a.astype(keras.config.floatx(), copy=False)
        return a

    return keras.tree.map_structure(convert, value)


def _is_shape(value: Any) -> bool:
    return isinstance(value, (tuple, list)) and all(
        d is None or isinstance(d, numbers.Integral) for d in value
    )


def _model_input_ranks(model: Any) -> list[int] | None:
    """The ranks (batch dimension included) of the model's inputs, when known."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if inputs:
        return [len(t.shape) for t in inputs]
    shapes = built_input_shapes(model)  # a built subclassed model
    if shapes is None:
        return None
    ranks = [len(shape) for shape in _flatten_shapes(shapes)]
    return ranks or None


def _flatten_shapes(nest: Any) -> list[tuple]:
    if _is_shape(nest):
        return [tuple(nest)]
    if isinstance(nest, Mapping):
        return [s for k in sorted(nest) for s in _flatten_shapes(nest[k])]
    if isinstance(nest, (tuple, list)):
        return [s for v in nest for s in _flatten_shapes(v)]
    return []


def _is_unbatched(spec: Any, model: Any, label_keys: Any, sample_weight_key: Any) -> bool:
    """Whether a dataset's elements are single examples (`spec` is its element spec).

    Scalar labels mean single examples. Otherwise the feature ranks are compared with the
    ranks of the model's inputs (one less: single examples). Without a known input rank,
    elements whose features and labels have different static leading sizes (e.g. 2
    features and 3 one-hot classes) cannot be batches; anything else is taken as batched.
    """
    x_spec, y_spec, _ = unpack_batch(spec, label_keys, sample_weight_key)
    if y_spec is None:
        return False
    y_leaves = keras.tree.flatten(y_spec)
    if any(s.shape.rank == 0 for s in y_leaves):
        return True
    x_leaves = keras.tree.flatten(x_spec)
    ranks = _model_input_ranks(model) if model is not None else None
    if ranks is not None:
        x_model = keras.tree.flatten(model_inputs(model, x_spec))
        features = [s.shape.rank for s in x_model]
        if len(features) == len(ranks) and None not in features:
            if sorted(features) == sorted(r - 1 for r in ranks):
                return True
            if sorted(features) == sorted(ranks):
                return False
    leading = {s.shape[0] for s in x_leaves + y_leaves if s.shape.rank and s.shape[0] is not None}
    return len(leading) > 1


def batches(
    data: Any,
    batch_size: int,
    label_keys: Any,
    sample_weight_key: Any,
    max_examples: int | None,
    model: Any = None,
) -> Iterator[tuple[Any, Any]]:
    """Yields `(features, labels)` batches.

    A tf.data dataset of single examples (see `_is_unbatched`; `model` is the model to
    attack, whose input ranks tell) is batched by `batch_size`; others are used as batched.
    """
    remaining = max_examples

    def cut(x, y):
        nonlocal remaining
        if remaining is not None:
            n = int(keras.tree.flatten(y)[0].shape[0])
            if n > remaining:
                x, y = keras.tree.map_structure(lambda a: a[:remaining], (x, y))
                n = remaining
            remaining -= n
        return x, y

    if is_tf_dataset(data):
        if _is_unbatched(data.element_spec, model, label_keys, sample_weight_key):
            data = data.batch(batch_size)
        for element in data:
            if keras.backend.backend() != "tensorflow":  # the attacks take arrays there
                element = keras.tree.map_structure(np.asarray, element)
            x, y, _ = unpack_batch(element, label_keys, sample_weight_key)
            if y is None:
                raise ValueError(_NO_LABELS)
            check_example_counts(x, y, where="a batch of the dataset `data`")
            yield cut(x, y)
            if remaining == 0:
                return
        return
    if isinstance(data, (tuple, list, Mapping)):
        x, y, _ = unpack_batch(data, label_keys, sample_weight_key)
        if y is None:
            raise ValueError(_NO_LABELS)
        x, y = as_floatx(x), np.asarray(y)
        check_example_counts(x, y)
        n = len(y) if remaining is None else min(len(y), remaining)
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            yield keras.tree.map_structure(lambda a, s=start, e=stop: a[s:e], (x, y))
        return
    raise TypeError(
        "`data` must be `(x, y)` arrays, a dict of features and labels, or a tf.data.Dataset "
        f"of such batches. Received: data of type {type(data).__name__}"
    )


_NO_LABELS = (
    "`data` must include labels: `(x, y)` tuples, or feature dicts with the label key(s) "
    "(`label_keys`). Received data without labels."
)


def model_inputs(model: Any, x: Any) -> Any:
    """Feature dicts -> what the model takes: its named inputs (one input: the tensor)."""
    if not isinstance(x, Mapping):
        return x
    try:
        names = [getattr(t, "name", None) for t in (model.inputs or [])]
    except (AttributeError, ValueError):
        return x
    if names and all(name in x for name in names):
        return x[names[0]] if len(names) == 1 else {name: x[name] for name in names}
    if len(names) == 1 and len(x) == 1:
        return next(iter(x.values()))
    return x


__all__ = ["as_floatx", "batches", "label_mode", "model_inputs"]
