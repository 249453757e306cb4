"""Finite-value checks of the data, before training or attacking spends time on it.

A NaN or Inf in the features makes every gradient NaN: an attack then "breaks" nothing
(or everything) and training diverges, usually many minutes in and with no pointer to
the example. These checks name the batch, the feature and the example instead. Every
entry point that runs them takes `check_finite=False` to leave the data to Keras.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from keras_advreg.utils import is_tensor, is_tf_dataset

OPT_OUT = "pass check_finite=False to hand such data to the model anyway"


def _named_arrays(value: Any, name: str) -> list[tuple[str, np.ndarray]]:
    """`(name, array)` for each floating-point array of a nest (non-float ones are skipped)."""
    if value is None:
        return []
    if isinstance(value, Mapping):
        return [p for k, v in value.items() for p in _named_arrays(v, f"{name}[{k!r}]")]
    if isinstance(value, (list, tuple)):
        return [p for i, v in enumerate(value) for p in _named_arrays(v, f"{name}[{i}]")]
    if is_tensor(value):
        value = _numpy(value)
    array = np.asarray(value) if not isinstance(value, np.ndarray) else value
    if array.dtype.kind not in "fc":
        return []
    return [(name, array)]


def _numpy(value: Any) -> np.ndarray:
    import keras

    return keras.ops.convert_to_numpy(value)


def check_finite(
    features: Any, labels: Any = None, *, where: str = "`data`", offset: int = 0
) -> None:
    """Raises `ValueError` naming the first non-finite feature or label value.

    Args:
        features: An array, a tensor, or a nest (dict/list) of them; batch-major.
        labels: The same for the labels (integer labels are always finite).
        where: How to name the data in the message (e.g. "batch 3 of `data`").
        offset: Index of the batch's first example in the data (for the message).
    """
    for name, array in _named_arrays(features, "features") + _named_arrays(labels, "labels"):
        finite = np.isfinite(array)
        if finite.all():
            continue
        bad = np.argwhere(~finite)[0]
        value = array[tuple(bad)]
        example = int(bad[0]) + offset if array.ndim else offset
        raise ValueError(
            f"{where} holds a non-finite value ({value}) in {name}, example {example} (array "
            f"index {tuple(int(i) for i in bad)}): gradients and attacks on it are "
            f"meaningless. Clean the data, or {OPT_OUT}."
        )


def check_fit_data(
    x: Any, y: Any = None, *, name: str = "`x`", model: Any = None, unlabeled: bool = False
) -> None:
    """Checks what `fit` receives: all of it for arrays, the first batch of a
    `tf.data.Dataset` (an empty one is an error), nothing for generators or `PyDataset`s.

    NaN/Inf (`check_finite`), and with a single-input, single-output `model` whose shapes are
    known: the features' shape against the input's, class-id labels against the outputs
    (with `unlabeled`, `-1` marks an unlabeled example and is accepted).
    """
    features, labels, where = x, y, name
    if is_tf_dataset(x):
        element = next(iter(x.take(1)), None)
        if element is None:
            raise ValueError(f"{name} is an empty dataset: there is nothing to train on.")
        features, labels, where = element, None, f"the first batch of the dataset {name}"
        if isinstance(element, (tuple, list)) and len(element) in (2, 3):
            features, labels = element[0], element[1]
    elif not (isinstance(x, (np.ndarray, Mapping, list, tuple)) or is_tensor(x)):
        return
    check_finite(features, labels, where=where)
    if model is not None:
        _check_against_model(features, labels, model, where, unlabeled)


def _check_against_model(
    features: Any, labels: Any, model: Any, where: str, unlabeled: bool = False
) -> None:
    try:
        input_shape, output_shape = model.input_shape, model.output_shape
    except (AttributeError, ValueError):
        return
    if not isinstance(input_shape, tuple) or not isinstance(output_shape, tuple):
        return  # several inputs or outputs
    shape = getattr(features, "shape", None)
    if shape is not None and not isinstance(features, Mapping):
        got, expected = tuple(shape)[1:], input_shape[1:]
        if len(got) != len(expected) or any(
            e is not None and g is not None and int(g) != e for g, e in zip(got, expected)
        ):
            raise ValueError(
                f"{where}: the features do not fit the base model's input. Expected examples "
                f"of shape {expected}, received {got} (batch shape {tuple(shape)})."
            )
    classes = output_shape[-1] if len(output_shape) >= 2 else None
    if labels is None or isinstance(labels, Mapping) or not classes or classes < 2:
        return
    y = _numpy(labels) if is_tensor(labels) else np.asarray(labels)
    if unlabeled and y.dtype.kind in "iu":
        y = y[y != -1]
    if y.dtype.kind in "iu" and y.size and (y.min() < 0 or y.max() >= classes):
        raise ValueError(
            f"{where}: labels must be class ids in [0, {classes}) for a base model with "
            f"{classes} outputs. Received labels from {y.min()} to {y.max()}."
        )


__all__ = ["check_finite", "check_fit_data"]
