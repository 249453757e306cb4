"""`AdversarialPerturbation`: where in a model adversarial regularization perturbs.

Placed after an `Embedding` (or on any floating-point tensor inside a model), the layer is
the identity, except while `AdversarialRegularization` computes its adversarial term:
then the training step opens a `perturbation_scope` holding an offset for each such layer
(keyed by the layer's name), and the layer adds it. The offset is zero on padded positions
(the Keras mask, e.g. of `Embedding(mask_zero=True)`) and, with `relative=True`, is
measured in units of the example's root-mean-square embedding norm (Miyato et al. 2017
normalise their embeddings for the same reason: a radius means the same at any
embedding scale). Outside a scope (inference, `predict`, a plain `fit`) nothing is added.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import keras

_STATE = threading.local()


class _Scope:
    def __init__(self, offsets: Mapping | None, record: dict | None):
        self.offsets = dict(offsets or {})
        self.record = record


@contextlib.contextmanager
def perturbation_scope(offsets: Mapping | None = None, record: dict | None = None) -> Iterator:
    """Model calls inside this scope add `offsets[layer.name]` at each `AdversarialPerturbation`.

    Args:
        offsets: dict from layer name to an offset of that layer's input shape (before
            masking and scaling). Layers not named are the identity.
        record: dict, or None. When given, each `AdversarialPerturbation` called in the
            scope stores its input tensor in it under its name.
    """
    previous = getattr(_STATE, "scope", None)
    _STATE.scope = _Scope(offsets, record)
    try:
        yield _STATE.scope
    finally:
        _STATE.scope = previous


def _current() -> _Scope | None:
    return getattr(_STATE, "scope", None)


@keras.saving.register_keras_serializable(package="keras_advreg")
class AdversarialPerturbation(keras.layers.Layer):
    """Marks the tensor adversarial regularization perturbs (e.g. word embeddings).

    An identity layer. `keras_advreg.AdversarialRegularization` finds every
    `AdversarialPerturbation` in its base model and generates the adversarial (or, with
    `AdvConfig(adv_loss="vat")`, the virtual adversarial) neighbour at these tensors
    instead of at the model's inputs, as Miyato et al. (2017) do for text: the inputs may
    then be token ids. The perturbation is found jointly over all such layers, per example
    (`adv_grad_norm`, `adv_step_size`, `pgd_epsilon` and `pgd_iterations` apply;
    `clip_value_min/max` and `feature_mask` are about inputs and do not). Masked positions
    (the Keras mask of the previous layer, e.g. `Embedding(mask_zero=True)`) are never
    perturbed. The layer passes its input's mask on.

    With `relative=True` the perturbation of an example is multiplied by the
    root-mean-square l2 norm of its (unmasked) embedding vectors (vectors along the last
    axis), held constant: `adv_step_size=0.5` with `adv_grad_norm="l2"` moves each
    sequence by half the length of a typical one of its token embeddings in total. With
    `relative=False` the radius is in the tensor's own units.

    At inference and in any call outside `AdversarialRegularization`'s step the layer
    returns its input unchanged (no weights, no cost). It is an error to place it on an
    integer tensor (token ids): place it after the `Embedding`.

    Args:
        relative: bool. Measure the perturbation in units of the example's RMS embedding
            norm. Defaults to `True`.
        **kwargs: `keras.layers.Layer` arguments (e.g. `name`).

    Example:

    ```python
    import keras, numpy as np, keras_advreg
    from keras_advreg.layers import AdversarialPerturbation

    base = keras.Sequential([
        keras.Input((6,), dtype="int32"),
        keras.layers.Embedding(20, 4, mask_zero=True),
        AdversarialPerturbation(),
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(2),
    ])
    model = keras_advreg.AdversarialRegularization(
        base, adv_config=keras_advreg.AdvConfig(multiplier=1.0, adv_step_size=0.5))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.randint(1, 20, (32, 6)); y = (x[:, 0] > 10).astype("int32")
    model.fit(x, y, epochs=1, verbose=0)
    ```
    """

    def __init__(self, relative: bool = True, **kwargs: Any):
        super().__init__(**kwargs)
        if not isinstance(relative, bool):
            raise ValueError(f"`relative` must be True or False. Received: relative={relative!r}")
        self.relative = relative
        self.supports_masking = True

    def call(self, inputs: Any, mask: Any = None) -> Any:
        dtype = keras.backend.standardize_dtype(inputs.dtype)
        if not keras.backend.is_float_dtype(dtype):
            raise ValueError(
                f"`AdversarialPerturbation` perturbs floating-point tensors; layer {self.name!r} "
                f"received an input of dtype {dtype}. Place it after the `Embedding` (token ids "
                "cannot be perturbed). Received: inputs.dtype="
                f"{dtype!r}"
            )
        scope = _current()
        if scope is None:
            return inputs
        if scope.record is not None:
            scope.record[self.name] = inputs
        offset = scope.offsets.get(self.name)
        if offset is None:
            return inputs
        return inputs + self.scaled(inputs, offset, mask)

    def scaled(self, inputs: Any, offset: Any, mask: Any = None) -> Any:
        """The offset added to `inputs`: zero on masked positions and, with `relative`,
        times the example's RMS embedding norm (held constant)."""
        ops = keras.ops
        offset = ops.cast(offset, inputs.dtype)
        rank = len(inputs.shape)
        weights = None
        if mask is not None:
            weights = ops.cast(mask, inputs.dtype)
            while len(weights.shape) < rank:
                weights = ops.expand_dims(weights, -1)
            offset = offset * weights
        if self.relative:
            squared = ops.sum(ops.square(ops.stop_gradient(inputs)), axis=-1, keepdims=True)
            axes = tuple(range(1, rank))
            if weights is not None:
                count = ops.maximum(ops.sum(weights * ops.ones_like(squared), axis=axes), 1.0)
                mean = ops.sum(squared * weights, axis=axes) / count
            else:
                mean = ops.mean(squared, axis=axes) if axes else squared
            scale = ops.reshape(ops.sqrt(mean), (-1,) + (1,) * (rank - 1))
            offset = offset * scale
        return offset

    def compute_mask(self, inputs: Any, mask: Any = None) -> Any:
        return mask

    def get_config(self) -> dict:
        return {**super().get_config(), "relative": self.relative}


def perturbation_layers(model: Any) -> list[AdversarialPerturbation]:
    """The `AdversarialPerturbation` layers of `model` (nested models included), in order."""
    from keras_advreg.backend.keras_internals import all_layers

    return [layer for layer in all_layers(model) if isinstance(layer, AdversarialPerturbation)]


__all__ = ["AdversarialPerturbation", "perturbation_layers", "perturbation_scope"]
