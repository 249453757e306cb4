"""`certify`: certified l2 accuracy of a model built from 1-Lipschitz layers.

The model is read as a chain of layers, each with a proved l2 Lipschitz constant (the
layers of `keras_advreg.layers`: 1 by construction; `Flatten`, non-overlapping max
pooling, ReLU, ...: 1; `Rescaling`: its scale). Anything else (a plain `Dense`, a merge, a
subclassed model whose `call` cannot be read) is refused with a `ValueError` that names it:
never a number without a proof.

The certificate. Let `L` be the product of the constants of every layer before the last
(the "trunk", `h = g(x)`, `||g(x) - g(x')|| <= L ||x - x'||`). When the last layer is a
`LipschitzDense` without activation, the logits are `z = h W + b` with `W` the rescaled
kernel, and the margin `z_y - z_j` is Lipschitz with constant `L ||w_y - w_j||_2` (`w_k`
the k-th column of `W`); so no perturbation of l2 norm below

    r(x) = min_{j != y} (z_y - z_j) / (L ||w_y - w_j||_2)

changes the prediction `y`. Otherwise the textbook bound `(z_y - z_2nd) / (sqrt(2) L)` is
used, with `L` the constant of the whole model (`||w_y - w_j|| <= sqrt(2) ||W||_2`, so the
per-pair bound is never looser). An example is certified at `epsilon` when it is classified
correctly and `r(x) > epsilon`. Rounding (float32) is below 1e-5 relative.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from keras_advreg.backend.keras_internals import is_functional
from keras_advreg.certification.report import CertificationReport
from keras_advreg.data.batching import batches, model_inputs
from keras_advreg.layers.activations import GroupSort, lipschitz_constant_of_activation
from keras_advreg.layers.lipschitz import (
    L2NormPooling2D,
    LipschitzConv2D,
    LipschitzDense,
    ScaledAveragePooling2D,
)
from keras_advreg.utils import is_number

#: Layers that are the identity at inference or only move values around: constant 1.
_ONE_LIPSCHITZ = (
    keras.layers.InputLayer,
    keras.layers.Flatten,
    keras.layers.Reshape,
    keras.layers.Permute,
    keras.layers.Dropout,
    keras.layers.SpatialDropout1D,
    keras.layers.SpatialDropout2D,
    keras.layers.SpatialDropout3D,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.AlphaDropout,
    keras.layers.ActivityRegularization,
    keras.layers.Identity,
    keras.layers.ZeroPadding1D,
    keras.layers.ZeroPadding2D,
    keras.layers.ZeroPadding3D,
    keras.layers.Cropping1D,
    keras.layers.Cropping2D,
    keras.layers.Cropping3D,
    GroupSort,
    L2NormPooling2D,
    ScaledAveragePooling2D,
)

_HOW = (
    "`certify` needs a Sequential or functional model that is a chain of layers with a proved "
    "l2 Lipschitz bound: the layers of `keras_advreg.layers` (LipschitzDense, LipschitzConv2D, "
    "GroupSort, L2NormPooling2D, ScaledAveragePooling2D), Flatten/Reshape, Dropout and noise "
    "layers, ReLU, non-overlapping MaxPooling, Rescaling, and a final softmax."
)


def _describe(layer: Any) -> str:
    return f"layer {layer.name!r} ({type(layer).__name__})"


def _refuse(layer: Any, why: str) -> ValueError:
    return ValueError(f"{_HOW} Received: {_describe(layer)}, {why}.")


def _is_softmax(layer: Any) -> bool:
    if isinstance(layer, keras.layers.Softmax):
        return True
    if isinstance(layer, keras.layers.Activation):
        return getattr(layer.activation, "__name__", "") == "softmax"
    return False


def layer_lipschitz_constant(layer: Any) -> float:
    """The proved l2 Lipschitz constant of one layer at inference, or a `ValueError`."""
    if isinstance(layer, (LipschitzDense, LipschitzConv2D)):
        return lipschitz_constant_of_activation(layer.activation)
    if isinstance(layer, _ONE_LIPSCHITZ):
        return 1.0
    if isinstance(layer, keras.layers.Activation):
        constant = lipschitz_constant_of_activation(layer.activation)
        if constant is None:
            raise _refuse(layer, f"whose activation {layer.activation!r} has no known bound")
        return constant
    if isinstance(layer, keras.layers.ReLU):
        return max(1.0, abs(float(layer.negative_slope)))
    if isinstance(layer, keras.layers.LeakyReLU):
        return max(1.0, abs(float(layer.negative_slope)))
    if isinstance(
        layer, (keras.layers.MaxPooling1D, keras.layers.MaxPooling2D, keras.layers.MaxPooling3D)
    ):
        pool, strides = tuple(layer.pool_size), tuple(layer.strides)
        if any(s < p for s, p in zip(strides, pool)):
            raise _refuse(layer, f"with overlapping windows (pool_size={pool}, strides={strides})")
        return 1.0
    if isinstance(layer, keras.layers.Rescaling):
        return float(np.max(np.abs(np.asarray(layer.scale, dtype="float64"))))
    if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D)):
        replacement = (
            "LipschitzDense" if isinstance(layer, keras.layers.Dense) else "LipschitzConv2D"
        )
        raise _refuse(
            layer,
            f"whose Lipschitz constant is not bounded (use `keras_advreg.layers.{replacement}`)",
        )
    raise _refuse(layer, "which has no proved Lipschitz bound")


def _chain(model: Any) -> list:
    """The layers of `model`, in order, with nested models flattened; a `ValueError` for
    anything that is not a chain of layers."""
    if isinstance(model, keras.Sequential):
        children = list(model.layers)
    elif is_functional(model):
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise ValueError(
                f"{_HOW} Received: model {model.name!r} with {len(model.inputs)} inputs and "
                f"{len(model.outputs)} outputs."
            )
        children = []
        previous = model.inputs[0]
        for op in model.operations:
            if isinstance(op, keras.layers.InputLayer):
                continue
            if not isinstance(op, keras.layers.Layer):
                raise _refuse(op, "an operation that is not a layer")
            try:
                op_input, op_output = op.input, op.output
            except (AttributeError, ValueError) as error:
                raise _refuse(op, "which is called more than once in the model") from error
            if op_input is not previous:
                raise _refuse(
                    op, "which is not in a single chain from the input (a branch or merge)"
                )
            previous = op_output
            children.append(op)
    elif isinstance(model, keras.Model):
        raise ValueError(
            f"{_HOW} Received: the subclassed model {model.name!r} ({type(model).__name__}), "
            "whose `call` cannot be checked."
        )
    else:
        raise TypeError(
            f"`model` must be a Keras model. Received: model of type {type(model).__name__}"
        )
    layers = []
    for child in children:
        layers.extend(_chain(child) if isinstance(child, keras.Model) else [child])
    return layers


class LipschitzCertifier:
    """The Lipschitz structure of a model, read and checked once: which layers make the
    trunk, its bound, and the last layer when it allows the per-pair bound."""

    def __init__(self, model: Any):
        layers = _chain(model)
        if layers and _is_softmax(layers[-1]):  # margins are taken on the logits
            layers = layers[:-1]
        body = [layer for layer in layers if not isinstance(layer, keras.layers.InputLayer)]
        if not body:
            raise ValueError(f"{_HOW} Received: a model without layers.")
        for layer in body:
            if _is_softmax(layer):
                raise _refuse(layer, "a softmax before the last layer")
        constants = [layer_lipschitz_constant(layer) for layer in body]
        last = body[-1]
        self.per_pair = isinstance(last, LipschitzDense) and (
            getattr(last.activation, "__name__", "linear") == "linear"
        )
        self.model = model
        self.trunk_layers = body[:-1] if self.per_pair else body
        self.last = last if self.per_pair else None
        self.trunk_constant = float(np.prod(constants[:-1] if self.per_pair else constants))
        self.lipschitz_constant = float(np.prod(constants))
        self._trunk = keras.Sequential(self.trunk_layers) if self.trunk_layers else None

    @property
    def description(self) -> str:
        if self.per_pair:
            return (
                "Lipschitz-margin certificate: min over classes j of (z_y - z_j) / "
                f"(L ||w_y - w_j||_2), trunk bound L = {self.trunk_constant:g}"
            )
        return f"Lipschitz-margin certificate: (z_top - z_2nd) / (sqrt(2) L), L = {self.lipschitz_constant:g}"

    def radii(self, x: Any, y: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """`(predictions, certified radii)`; the radius is 0 where the prediction is wrong."""
        h = x if self._trunk is None else self._trunk.predict(x, batch_size=batch_size, verbose=0)
        h = np.asarray(keras.ops.convert_to_numpy(h), dtype=np.float64)
        y = np.asarray(y).astype(np.int64).reshape(-1)
        rows = np.arange(len(y))
        if self.per_pair:
            w = np.asarray(keras.ops.convert_to_numpy(self.last.lipschitz_kernel), dtype=np.float64)
            z = h @ w
            if self.last.bias is not None:
                z = z + np.asarray(keras.ops.convert_to_numpy(self.last.bias), dtype=np.float64)
            norms = np.linalg.norm(w[:, :, None] - w[:, None, :], axis=0) * self.trunk_constant
        else:
            z = h.reshape(len(y), -1)
            k = z.shape[1]
            norms = np.full((k, k), math.sqrt(2.0) * self.lipschitz_constant)
        if z.shape[1] < 2:
            raise ValueError(
                f"`certify` needs a classifier with 2 or more logits. Received: output shape {z.shape}"
            )
        if len(y) and (y.min() < 0 or y.max() >= z.shape[1]):
            raise ValueError(
                f"Labels must be class ids in [0, {z.shape[1]}) for a model with {z.shape[1]} "
                f"logits. Received: labels from {y.min()} to {y.max()}"
            )
        predictions = z.argmax(axis=1)
        margins = z[rows, y][:, None] - z
        with np.errstate(divide="ignore", invalid="ignore"):
            pair_radii = np.where(
                norms[y] > 0, margins / norms[y], np.where(margins > 0, np.inf, 0.0)
            )
        pair_radii[rows, y] = np.inf
        radius = np.where(predictions == y, pair_radii.min(axis=1), 0.0)
        return predictions, np.maximum(radius, 0.0)


def _check_epsilons(epsilons: Any) -> tuple[float, ...]:
    values = (
        (epsilons,)
        if is_number(epsilons)
        else tuple(epsilons)
        if isinstance(epsilons, Sequence)
        else None
    )
    if not values or not all(is_number(e) and 0 <= e < math.inf for e in values):
        raise ValueError(
            f"`epsilons` must be a number >= 0 or a non-empty sequence of them. Received: epsilons={epsilons!r}"
        )
    return tuple(float(e) for e in values)


def _check_norm(norm: Any) -> None:
    key = norm.strip().lower() if isinstance(norm, str) else norm
    if key not in ("l2", "2", 2):
        raise ValueError(
            "`norm` must be 'l2': the layers are 1-Lipschitz in the l2 norm, and a bound in "
            f"another norm would lose a dimension-dependent factor. Received: norm={norm!r}"
        )


def _labels(y: Any, num_classes: int | None) -> np.ndarray:
    y = np.asarray(keras.ops.convert_to_numpy(y))
    if y.ndim == 2 and y.shape[1] > 1:
        return y.argmax(axis=1)
    return y.reshape(-1).astype(np.int64)


def certify(
    model: Any,
    data: Any,
    epsilons: Any = (0.5,),
    norm: str = "l2",
    batch_size: int = 256,
    max_examples: int | None = None,
    label_keys: Any = ("label",),
    **smoothing_kwargs: Any,
) -> CertificationReport:
    """Certified l2 accuracy of a classifier: proved, not attacked.

    For a Keras model built from 1-Lipschitz layers (`keras_advreg.layers`), the
    Lipschitz-margin certificate (see the module docstring): an example counts at `epsilon`
    when it is classified correctly and no l2 perturbation of norm `epsilon` can change its
    class. For a `keras_advreg.RandomizedSmoothing`, its Monte-Carlo certificate
    (`RandomizedSmoothing.certified_accuracy`, taking `n0`, `n`, `alpha`, `seed`).

    Args:
        model: A Sequential or functional Keras model that is a chain of layers with a
            proved l2 bound (its logits, or logits followed by a softmax), or a
            `RandomizedSmoothing`.
        data: `(x, y)` arrays (labels as class ids or one-hot), a dict of features with the
            label key, or a `tf.data.Dataset` of such batches.
        epsilons: float or sequence of floats >= 0. l2 radii.
        norm: str. Only `"l2"`.
        batch_size: int. Batch size of the forward passes.
        max_examples: int. Certify at most this many examples. Defaults to all.
        label_keys: The label key(s) of feature dicts.
        **smoothing_kwargs: For a `RandomizedSmoothing` only: `n0`, `n`, `alpha`, `seed`.

    Returns:
        A `CertificationReport`: `.accuracy[eps]`, `.clean_accuracy`, `.radii` per example.

    Raises:
        ValueError: before any forward pass, for a norm other than l2 or a layer without a
            proved bound (the error names it).

    Example:

    >>> import numpy as np
    >>> from keras_advreg.certification import certify
    >>> from keras_advreg.layers import LipschitzDense
    >>> model = keras.Sequential([keras.Input((2,)), LipschitzDense(2, use_bias=False)])
    >>> model.set_weights([np.eye(2, dtype="float32")])
    >>> x, y = np.array([[1.0, 0.0], [0.2, 0.0]], "float32"), np.array([0, 0])
    >>> report = certify(model, (x, y), epsilons=[0.5])
    >>> report.accuracy  # radii 1/sqrt(2) = 0.707 and 0.2/sqrt(2) = 0.141
    {0.5: 0.5}
    """
    start = time.time()
    _check_norm(norm)
    eps = _check_epsilons(epsilons)
    from keras_advreg.certification.smoothing import RandomizedSmoothing

    if isinstance(model, RandomizedSmoothing):
        return model.certified_accuracy(
            data,
            radii=eps,
            batch_size=batch_size,
            max_examples=max_examples,
            label_keys=label_keys,
            **smoothing_kwargs,
        )
    if smoothing_kwargs:
        raise TypeError(
            f"`certify` of a Keras model takes no {sorted(smoothing_kwargs)} (randomized smoothing only)."
        )
    certifier = LipschitzCertifier(model)
    predictions, radii, labels = [], [], []
    for x, y in batches(data, batch_size, label_keys, None, max_examples, model):
        y = _labels(y, None)
        p, r = certifier.radii(model_inputs(model, x), y, batch_size)
        predictions.append(p)
        radii.append(r)
        labels.append(y)
    if not labels:
        raise ValueError("`data` is empty.")
    predictions, radii, labels = (np.concatenate(a) for a in (predictions, radii, labels))
    correct = predictions == labels
    return CertificationReport(
        clean_accuracy=float(correct.mean()),
        accuracy={e: float(np.mean(correct & (radii > e))) for e in eps},
        num_examples=int(len(labels)),
        certificate="lipschitz-margin",
        norm="l2",
        description=certifier.description,
        config={
            "lipschitz_constant": certifier.lipschitz_constant,
            "trunk_lipschitz_constant": certifier.trunk_constant,
            "per_pair_last_layer": certifier.per_pair,
        },
        seconds=time.time() - start,
        radii=radii,
    )


__all__ = ["LipschitzCertifier", "certify", "layer_lipschitz_constant"]
