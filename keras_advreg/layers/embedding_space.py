"""`EmbeddingSpace`: a model as a function of offsets at its `AdversarialPerturbation`
layers, so that an attack perturbs the same point adversarial regularization trains at.

The wrapper's inputs are a dict: `"inputs"`, the model's own inputs (token ids), held
fixed, and `"offsets"`, one floating-point offset per `AdversarialPerturbation` layer
(keyed by the layer's name), which every attack treats as the features to perturb. The
layer masks the offsets (padding is never perturbed) and, with `relative=True`, measures
them in units of the example's RMS embedding norm. Robustness measured this way is
embedding-space robustness, not input-space robustness: reports say so.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from keras_advreg.layers.perturbation import perturbation_layers, perturbation_scope


@keras.saving.register_keras_serializable(package="keras_advreg")
class EmbeddingSpace(keras.Model):
    """Wraps a model so that attacks perturb its `AdversarialPerturbation` tensors.

    Attacks and `evaluate_robustness` perturb a model's floating-point inputs. Wrapped,
    a model that reads token ids is attacked at its embeddings instead: the wrapper
    takes `{"inputs": token_ids, "offsets": {layer_name: offset}}` and adds each offset
    at its `AdversarialPerturbation` layer (masked positions excluded, scaled by the
    RMS embedding norm when the layer has `relative=True`). Feed it `features(x)`: the
    token ids and zero offsets. The radius is then in the layer's units, and the report
    states it (`report.units`, e.g. "offsets at AdversarialPerturbation 'perturbation'
    (relative to the RMS embedding norm)"). There is no box in embedding space, so no
    clip values apply.

    The model's own inputs must not be floating point (they would be attacked too).

    Args:
        model: A Keras model with at least one `AdversarialPerturbation` layer.
        **kwargs: `keras.Model` arguments (e.g. `name`).

    Example:

    ```python
    import keras, numpy as np, keras_advreg
    from keras_advreg.layers import AdversarialPerturbation, EmbeddingSpace

    base = keras.Sequential([
        keras.Input((6,), dtype="int32"),
        keras.layers.Embedding(20, 4, mask_zero=True),
        AdversarialPerturbation(),
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(2),
    ])
    x = np.random.randint(1, 20, (16, 6)); y = (x[:, 0] > 10).astype("int32")
    space = EmbeddingSpace(base)
    report = keras_advreg.evaluate_robustness(
        space, (space.features(x), y),
        attack=keras_advreg.attacks.PGD(0.5, norm="l2", steps=10), warn=False)
    print(report.units)  # offsets at AdversarialPerturbation 'adversarial_perturbation' ...
    ```
    """

    def __init__(self, model: keras.Model, **kwargs: Any):
        super().__init__(**kwargs)
        if not isinstance(model, keras.Model):
            raise ValueError(
                f"`model` must be a Keras model. Received: model of type {type(model).__name__}"
            )
        layers = perturbation_layers(model)
        if not layers:
            raise ValueError(
                "`EmbeddingSpace` needs a model with an `AdversarialPerturbation` layer (placed "
                f"after its `Embedding`). Received: model={model.name!r} with none."
            )
        inputs = getattr(model, "inputs", None) or []  # none known for a subclassed model
        floating = [t.name for t in inputs if keras.backend.is_float_dtype(t.dtype)]
        if floating:
            raise ValueError(
                "`EmbeddingSpace` attacks the offsets only, and a model's floating-point inputs "
                "would be attacked too: give it a model whose inputs are token ids (integers). "
                f"Received: a model with floating-point inputs {floating}"
            )
        self.model = model
        self.layer_names = [layer.name for layer in layers]
        self.relative = {layer.name: layer.relative for layer in layers}

    def call(self, inputs: dict, training: bool = False) -> Any:
        with perturbation_scope(offsets=inputs["offsets"]):
            return self.model(inputs["inputs"], training=training)

    def features(self, x: Any) -> dict:
        """The wrapper's input for the model input `x`: `{"inputs": x, "offsets": zeros}`,
        one zero offset of each `AdversarialPerturbation` tensor's shape."""
        recorded: dict = {}
        first = keras.tree.map_structure(lambda a: np.asarray(a)[:1], x)
        with perturbation_scope(record=recorded):
            self.model(first, training=False)
        count = len(keras.tree.flatten(x)[0])
        offsets = {
            name: np.zeros((count,) + tuple(recorded[name].shape[1:]), "float32")
            for name in self.layer_names
        }
        return {"inputs": x, "offsets": offsets}

    @property
    def units(self) -> str:
        """The units an attack's radius is in, as reports state them."""
        parts = []
        for name in self.layer_names:
            scale = "relative to the RMS embedding norm" if self.relative[name] else "own units"
            parts.append(f"AdversarialPerturbation {name!r} ({scale})")
        return "offsets at " + ", ".join(parts)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "model": keras.saving.serialize_keras_object(self.model),
        }

    @classmethod
    def from_config(cls, config: dict) -> EmbeddingSpace:
        config = dict(config)
        model = keras.saving.deserialize_keras_object(config.pop("model"))
        return cls(model, **config)


__all__ = ["EmbeddingSpace"]
