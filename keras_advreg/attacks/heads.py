"""The head an attack differentiates: the model's logits, and the loss on them.

A model ending in a softmax (or a 1-unit sigmoid) is attacked through the logits before
it, never through saturated probabilities; `make_head` finds them. The attack losses
(cross-entropy in a saturation-proof form, DLR, targeted DLR) are functions of
`(labels, scores)`.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_advreg.backend.keras_internals import output_layer

_SOFTMAX_NAMES = ("softmax",)
_SIGMOID_NAMES = ("sigmoid",)


def _activation_name(fn: Any) -> str | None:
    name = getattr(fn, "__name__", None)
    return name.lower() if isinstance(name, str) else None


@dataclasses.dataclass
class Head:
    """How to attack a classifier: `scores(x)` and the loss on them."""

    model: Any
    scores: Callable  # x -> logits (pre-softmax/sigmoid) or the model output
    output: str  # "logits" | "probabilities"
    binary: bool
    num_classes: int
    description: str


def _pre_activation(model: Any):
    """Returns `(fn, kind)` computing the pre-softmax/sigmoid tensor, or `(None, None)`."""
    layer, layer_input = output_layer(model)
    if layer is None or layer_input is None:
        return None, None
    if isinstance(layer, keras.layers.Softmax):
        kind = "softmax"
    elif isinstance(layer, keras.layers.Activation):
        name = _activation_name(layer.activation)
        kind = name if name in _SOFTMAX_NAMES + _SIGMOID_NAMES else None
    else:
        name = _activation_name(getattr(layer, "activation", None))
        kind = f"{name}_activation" if name in _SOFTMAX_NAMES + _SIGMOID_NAMES else None
    if kind is None:
        return None, None
    trunk = keras.Model(model.inputs, layer_input)
    if not kind.endswith("_activation"):  # a Softmax/Activation layer: its input is the logits
        return trunk, kind

    def linear(x):  # the last layer without its activation, sharing its (live) weights
        activation = layer.activation
        layer.activation = keras.activations.linear
        try:
            return layer(trunk(x, training=False), training=False)
        finally:
            layer.activation = activation

    return linear, kind.split("_")[0]


def _looks_like_probabilities(out: np.ndarray) -> bool:
    if out.shape[-1] == 1:
        return False
    return bool(np.all(out >= 0) and np.all(out <= 1) and np.allclose(out.sum(-1), 1.0, atol=1e-3))


def attack_target(model: Any) -> Any:
    base = getattr(model, "base_model", None)
    return base if isinstance(base, keras.Model) else model


def make_head(model: Any, probe_x: Any, custom_loss: bool) -> Head:
    target = attack_target(model)
    if not callable(target):
        raise TypeError(f"`model` must be a Keras model. Received: model={model!r}")
    out = target(probe_x, training=False)  # also builds an unbuilt model
    if isinstance(out, (list, tuple, dict)) or not hasattr(out, "shape") or len(out.shape) != 2:
        shape = getattr(out, "shape", type(out).__name__)
        raise ValueError(
            "evaluate_robustness needs a classifier with one output of shape "
            f"(batch_size, num_classes). Received a model output of {shape}"
        )
    out = keras.ops.convert_to_numpy(out)
    num_classes = int(out.shape[-1])
    name = type(target).__name__
    if custom_loss:
        return Head(
            target,
            lambda x: target(x, training=False),
            "model_output",
            num_classes == 1,
            num_classes,
            f"{name} output with the given loss",
        )
    fn, kind = _pre_activation(target)
    if fn is not None:
        binary = kind == "sigmoid"
        if binary and num_classes != 1:
            raise ValueError(
                "evaluate_robustness supports single-label classifiers: a sigmoid output must "
                f"have 1 unit (binary). Received an output of shape {out.shape} with sigmoid"
            )
        return Head(
            target, fn, "logits", binary, num_classes, f"{name}: logits before the final {kind}"
        )
    if _looks_like_probabilities(out):
        warnings.warn(
            f"The model ({name}) outputs probabilities, but its final softmax could not be "
            "located to attack the logits before it (a subclassed model, or a softmax outside "
            "the last layer). The attack uses cross-entropy on the probabilities, whose "
            "gradient vanishes where the softmax saturates: robust accuracy may be "
            "overestimated (gradient masking). Attack a model that outputs logits, or pass "
            "`loss=`.",
            stacklevel=3,
        )
        return Head(
            target,
            lambda x: target(x, training=False),
            "probabilities",
            False,
            num_classes,
            f"{name}: probabilities (softmax not located)",
        )
    if num_classes == 1 and np.all(out >= 0) and np.all(out <= 1):
        warnings.warn(
            f"The model ({name}) has 1 output unit with values in [0, 1] but no sigmoid "
            "layer was found; it is attacked as binary logits. Pass `loss=` if it outputs "
            "probabilities.",
            stacklevel=3,
        )
    return Head(
        target,
        lambda x: target(x, training=False),
        "logits",
        num_classes == 1,
        num_classes,
        f"{name}: logits",
    )


def class_mask(z: Any, ids: Any) -> Any:
    """`(batch, C)` bool: True at each example's class (`ids`: int32 `(batch,)`)."""
    classes = z.shape[-1]
    classes = ops.shape(z)[-1] if classes is None else classes
    return ops.equal(ops.arange(classes, dtype="int32")[None, :], ids[:, None])


def true_logit(z: Any, ids: Any) -> Any:
    """`z_y` per example. A masked sum (exact: the other terms are zeros) rather than a
    gather, whose gradient differs in form between backends."""
    return ops.sum(ops.where(class_mask(z, ids), z, ops.zeros_like(z)), axis=-1)


def max_other(z: Any, ids: Any) -> Any:
    """`max_{i != y} z_i` per example."""
    return ops.max(ops.where(class_mask(z, ids), ops.full_like(z, -np.inf), z), axis=-1)


def attack_loss(head: Head, label_mode: str, loss: Any) -> Callable:
    """The per-example loss `(y, scores) -> loss` an attack maximises (`keras.ops`).

    Args:
        head: `Head`. What the scores are (logits of a binary or multi-class model, or
            probabilities).
        label_mode: str. `"sparse"` or `"categorical"`.
        loss: The user's loss (a name, a config dict, a `keras.losses.Loss` or a callable
            of `(y, output)`), or None for cross-entropy in a saturation-proof form.

    Returns:
        A callable `(y, scores) -> (batch,)` or `(batch, ...)` losses.
    """
    if loss is not None:
        fn = keras.losses.get(loss) if isinstance(loss, (str, dict)) else loss
        if isinstance(fn, keras.losses.Loss):  # per-example values, not the reduced mean
            fn = fn.call
        return lambda y, out: fn(y, out)
    if head.binary:
        # softplus(-s * z), s = +-1: binary cross-entropy with a gradient that stays exact
        # for confident examples (TF's sigmoid cross-entropy rounds it to 0).
        def binary_cross_entropy(y, z):
            z = ops.convert_to_tensor(z)
            sign = 2.0 * ops.cast(ops.reshape(y, ops.shape(z)), z.dtype) - 1.0
            return ops.softplus(-sign * z)

        return binary_cross_entropy
    if head.output == "probabilities":
        if label_mode == "sparse":
            return keras.losses.sparse_categorical_crossentropy
        return keras.losses.categorical_crossentropy

    def cross_entropy(y, z):
        """Cross-entropy as softplus(logsumexp_{j != y}(z_j - z_y)): the same value, but its
        gradient stays exact where the softmax saturates (the usual `softmax - onehot`
        rounds to 0 once p_y rounds to 1 in float32, which looks like gradient masking)."""
        z = ops.convert_to_tensor(z)
        is_label = class_mask(z, true_ids(y, label_mode))
        z_y = ops.sum(ops.where(is_label, z, ops.zeros_like(z)), axis=-1, keepdims=True)
        others = ops.where(is_label, ops.full_like(z, -1e9), z - z_y)
        return ops.softplus(ops.logsumexp(others, axis=-1))

    return cross_entropy


def true_ids(y: Any, label_mode: str) -> Any:
    """Class ids of sparse or one-hot labels, as int32 of shape `(batch,)`."""
    if label_mode == "categorical":
        return ops.cast(ops.argmax(y, axis=-1), "int32")
    return ops.cast(ops.reshape(y, (-1,)), "int32")


def margin(z: Any, ids: Any) -> Any:
    """`z_y - max_{i != y} z_i` per example: negative once the example is misclassified."""
    z, ids = ops.convert_to_tensor(z), ops.cast(ids, "int32")
    return true_logit(z, ids) - max_other(z, ids)


__all__ = [
    "Head",
    "attack_loss",
    "attack_target",
    "class_mask",
    "make_head",
    "margin",
    "max_other",
    "true_ids",
    "true_logit",
]
