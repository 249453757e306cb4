"""`adversarial_loss`: NSL's functional API (`nsl.keras.adversarial_loss`) for Keras 3 models.

For custom training loops and subclassed models that compute their own loss. Same
signature and semantics as NSL's function: the adversarial neighbour is NSL's
(`gen_adv_neighbor`, FGSM/PGD from the gradient of the labeled loss), and the result is
the labeled loss on it, not multiplied by `multiplier`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from keras_advreg.training.config import AdvConfig
from keras_advreg.utils import require_tensorflow_backend


def adversarial_loss(
    features: Any,
    labels: Any,
    model: Callable,
    loss_fn: Callable,
    sample_weights: Any = None,
    adv_config: Any = None,
    predictions: Any = None,
    labeled_loss: Any = None,
    gradient_tape: Any = None,
    model_kwargs: Mapping[str, Any] | None = None,
) -> Any:
    """The labeled loss of `model` on adversarial neighbours of `features` (NSL's function).

    TensorFlow backend only: it takes NSL's `tf.GradientTape` (on JAX, train with
    `AdversarialRegularization`, whose step computes the same term).

    Args:
        features: A tensor or a nest of tensors (the batch's features).
        labels: The labels.
        model: A callable `features -> predictions`, e.g. a Keras 3 model.
        loss_fn: A callable `(labels, predictions, sample_weight) -> loss`, e.g.
            a `keras.losses.Loss`.
        sample_weights: A 1-D tensor of per-example weights. Defaults to `None`.
        adv_config: `keras_advreg.AdvConfig`, NSL's `AdvRegConfig`, or a dict of
            `AdvConfig` fields. Defaults to `AdvConfig()` (NSL's defaults).
        predictions: `model(features)`, if already computed. With
            `labeled_loss` or `predictions`, pass the `gradient_tape` that
            watched `features` while they were computed.
        labeled_loss: `loss_fn(labels, model(features))`, if already computed.
        gradient_tape: A `tf.GradientTape` watching `features`.
        model_kwargs: More keyword arguments for `model` (e.g. `training`).

    Returns:
        A scalar tensor: `loss_fn(labels, model(x_adv), sample_weights)`.

    Example:

    ```python
    import keras, numpy as np, tensorflow as tf, keras_advreg

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    loss_fn = keras.losses.MeanSquaredError()
    optimizer = keras.optimizers.SGD(0.1)
    config = keras_advreg.AdvConfig(multiplier=0.2, adv_step_size=0.05)
    x, y = tf.constant(np.random.rand(8, 2), tf.float32), tf.zeros((8, 1))
    with tf.GradientTape() as tape_w:
        with tf.GradientTape() as tape_x:
            tape_x.watch(x)
            labeled_loss = loss_fn(y, model(x))
        adv_loss = keras_advreg.adversarial_loss(
            x, y, model, loss_fn, adv_config=config,
            labeled_loss=labeled_loss, gradient_tape=tape_x)
        total_loss = labeled_loss + config.multiplier * adv_loss
    gradients = tape_w.gradient(total_loss, model.trainable_variables)
    optimizer.apply_gradients(zip(gradients, model.trainable_variables))
    ```
    """
    require_tensorflow_backend("keras_advreg.adversarial_loss")
    import tensorflow as tf

    from keras_advreg.backend.nsl_private import neighbor
    from keras_advreg.ball import random_in_norm_ball

    config = AdvConfig.coerce(adv_config)
    if config.adv_loss != "labeled" or config.free_replays is not None:
        raise ValueError(
            "`adversarial_loss` computes NSL's labeled loss on one neighbour: it needs "
            "adv_loss='labeled' and no free_replays. Received: "
            f"adv_loss={config.adv_loss!r}, free_replays={config.free_replays!r}"
        )
    if model_kwargs:
        model = functools.partial(model, **model_kwargs)
    neighbor_config = config.to_nsl_neighbor_config()
    pgd_loss_fn = functools.partial(loss_fn, sample_weight=sample_weights)
    # A random start does not use the gradient at `features` (nor `labeled_loss`).
    if labeled_loss is None and not config.random_init:
        gradient_tape = gradient_tape or tf.GradientTape()
        with gradient_tape:
            gradient_tape.watch(tf.nest.flatten(features))
            predictions = predictions if predictions is not None else model(features)
            labeled_loss = loss_fn(labels, predictions, sample_weights)
    adv_input, adv_weights = neighbor(
        features, labels, labeled_loss, neighbor_config, gradient_tape, model, pgd_loss_fn,
        random_in_norm_ball,
    )  # fmt: skip
    adv_output = model(adv_input)
    if sample_weights is not None and adv_weights is not None:
        adv_weights = tf.math.multiply(sample_weights, adv_weights)
    elif sample_weights is not None:
        adv_weights = sample_weights
    return loss_fn(labels, adv_output, adv_weights)


__all__ = ["adversarial_loss"]
