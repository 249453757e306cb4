"""Checks of the model and the data, before training or attacking spends time on them.

A NaN or Inf in the features makes every gradient NaN: an attack then "breaks" nothing
(or everything) and training diverges, usually many minutes in and with no pointer to
the example. These checks name the batch, the feature and the example instead. Every
entry point that runs them takes `check_finite=False` to leave the data to Keras.

Inputs that would otherwise give a wrong number quietly are refused here too: features
and labels of different lengths (`check_example_counts`), and a model that is not a
classifier (`check_classifier`).
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


# Keras' regression losses, by function name and by class name (lower case, no "_").
_REGRESSION_LOSSES = {
    "mse",
    "mae",
    "mape",
    "msle",
    "meansquarederror",
    "meanabsoluteerror",
    "meanabsolutepercentageerror",
    "meansquaredlogarithmicerror",
    "huber",
    "huberloss",
    "logcosh",
    "cosinesimilarity",
    "poisson",
}

NOT_A_CLASSIFIER = "{caller} needs a classifier with class logits or probabilities"


def _type_name(value: Any) -> str:
    kind = type(value)
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


def _regression_loss_name(loss: Any) -> str | None:
    """The name of `loss` when it is one of Keras' regression losses, else None."""
    if loss is None:
        return None
    if isinstance(loss, str):
        candidates = [loss]
    else:
        kind = loss if isinstance(loss, type) else type(loss)
        fn = getattr(loss, "fn", None)  # keras.losses.LossFunctionWrapper
        candidates = [kind.__name__, getattr(loss, "__name__", None), getattr(fn, "__name__", None)]
    for name in candidates:
        if isinstance(name, str) and name.lower().replace("_", "") in _REGRESSION_LOSSES:
            return name
    return None


def check_classifier(model: Any, caller: str = "evaluate_robustness") -> None:
    """Refuses, before any work, a `model` whose accuracy under attack would mean nothing.

    - Not a Keras model (an array, a path, ...): a `TypeError` naming the type (the value
      itself is not printed: it may be a large array).
    - Compiled with a regression loss (`"mse"`, `keras.losses.Huber()`, ...): a
      `ValueError` saying a classifier is needed.
    - Several outputs: a `ValueError` saying how to attack one of them.

    Args:
        model: What the caller received as the model.
        caller: The entry point, for the message.
    """
    import keras

    if not isinstance(model, keras.Layer) and not callable(model):
        hint = ""
        if isinstance(model, (str, bytes)) or type(model).__name__.endswith("Path"):
            hint = " (a file path: load it first with `keras.models.load_model(path)`)"
        raise TypeError(
            f"{caller} needs a Keras classifier (a `keras.Model`). Received: model of type "
            f"{_type_name(model)}{hint}."
        )
    for candidate in (model, getattr(model, "base_model", None)):
        name = _regression_loss_name(getattr(candidate, "loss", None))
        if name is not None:
            raise ValueError(
                NOT_A_CLASSIFIER.format(caller=caller) + ": accuracy under attack is "
                f"defined for classifiers only. Received a model compiled with the regression "
                f"loss {name!r}."
            )
    target = getattr(model, "base_model", None)
    target = target if isinstance(target, keras.Model) else model
    try:
        outputs = target.outputs
    except (AttributeError, ValueError):
        outputs = None
    if outputs is not None and len(outputs) > 1:
        raise ValueError(
            f"{caller} needs a classifier with one output of shape (batch_size, "
            f"num_classes). Received a model with {len(outputs)} outputs. Attack one of them "
            "through a model of that output alone, e.g. "
            "`keras.Model(model.inputs, model.outputs[0])`."
        )


def check_example_counts(features: Any, labels: Any, *, where: str = "`data`") -> None:
    """Raises `ValueError` when the features and the labels hold different numbers of
    examples (every feature array, and the labels, must share their first dimension).

    Without this check, slicing stops at the shorter one and the rest of the data is
    silently left out.

    Args:
        features: An array, a tensor, or a nest of them; batch-major.
        labels: The same for the labels.
        where: How to name the data in the message.
    """
    import keras

    def sizes(nest):
        leaves = keras.tree.flatten(nest) if nest is not None else []
        out = []
        for leaf in leaves:
            shape = getattr(leaf, "shape", None)
            if shape is None:
                shape = np.shape(leaf)
            if len(shape) and shape[0] is not None:
                out.append(int(shape[0]))
        return out

    x_sizes, y_sizes = sizes(features), sizes(labels)
    counts = set(x_sizes + y_sizes)
    if len(counts) <= 1:
        return
    x_text = x_sizes[0] if len(set(x_sizes)) == 1 else " / ".join(map(str, x_sizes))
    y_text = y_sizes[0] if len(set(y_sizes)) == 1 else " / ".join(map(str, y_sizes))
    raise ValueError(
        f"{where} holds {x_text} examples but {y_text} labels: every example needs exactly one "
        "label (features and labels must have the same first dimension)."
    )


__all__ = ["check_classifier", "check_example_counts", "check_finite", "check_fit_data"]
