"""Where the adversarial neighbour lives: at the model's inputs, or at its
`AdversarialPerturbation` layers.

A target gives the training step the tensors to perturb (`origin`: the features, or a
zero offset per `AdversarialPerturbation` layer, keyed by the layer's name), the model as a
function of them (`call`), and the perturbation settings that apply there (clip values and
feature masks are about inputs: at the layers they are left out).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras

from keras_advreg.training.config import AdvConfig
from keras_advreg.training.routing import call_base, dense_features


class InputTarget:
    """The neighbour of the input features (NSL's)."""

    at_layers = False

    def __init__(self, model: Any, features: Any, extras: Any, training: Any):
        self.model, self.features, self.extras, self.training = model, features, extras, training
        self.origin = features
        self.dense = dense_features(features)  # a clear error when nothing can be perturbed

    def call(self, perturbed: Any) -> Any:
        """The base model's prediction at `perturbed` (structured like `origin`)."""
        return call_base(self.model, perturbed, self.extras, training=self.training)

    def config(self, config: AdvConfig) -> AdvConfig:
        return config


class LayerTarget(InputTarget):
    """The neighbour at the base model's `AdversarialPerturbation` layers: `origin` is a
    zero offset per layer (a dict keyed by layer name)."""

    at_layers = True

    def __init__(
        self,
        model: Any,
        features: Any,
        extras: Any,
        training: Any,
        run: Callable[[Callable[[], Any]], Any] | None = None,
    ):
        from keras_advreg.layers.perturbation import perturbation_scope

        self.model, self.features, self.extras, self.training = model, features, extras, training
        recorded: dict = {}

        def record():  # shapes only: in inference mode, so that no layer state moves
            with perturbation_scope(record=recorded):
                call_base(model, features, extras, training=False)

        (run or (lambda fn: fn()))(record)
        if not recorded:
            raise ValueError(
                "The base model has `AdversarialPerturbation` layers, but none was called on "
                "these features."
            )
        self.origin = {
            name: keras.ops.zeros(tuple(value.shape), value.dtype)
            if all(d is not None for d in value.shape)
            else keras.ops.zeros_like(value)
            for name, value in recorded.items()
        }
        self.dense = list(self.origin.values())

    def call(self, perturbed: Any) -> Any:
        from keras_advreg.layers.perturbation import perturbation_scope

        with perturbation_scope(offsets=perturbed):
            return call_base(self.model, self.features, self.extras, training=self.training)

    def config(self, config: AdvConfig) -> AdvConfig:
        return config.replace(clip_value_min=None, clip_value_max=None, feature_mask=None)


def target_for(
    model: Any,
    features: Any,
    extras: Any,
    training: Any,
    run: Callable[[Callable[[], Any]], Any] | None = None,
) -> InputTarget:
    """The target of `model`'s base model: its `AdversarialPerturbation` layers if it has
    any, else its inputs. `run(fn)` runs a model call that only records shapes (on JAX,
    with the state's values)."""
    from keras_advreg.layers.perturbation import perturbation_layers

    if perturbation_layers(model.base_model):
        return LayerTarget(model, features, extras, training, run)
    return InputTarget(model, features, extras, training)


__all__ = ["InputTarget", "LayerTarget", "target_for"]
