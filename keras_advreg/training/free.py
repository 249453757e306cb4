""" "Free" adversarial training (Shafahi et al. 2019, "Adversarial Training for Free!").

Each minibatch is replayed `free_replays` (the paper's m) times. Every replay is one
forward and one backward pass at `x + delta`: that backward pass gives both the weights'
gradient (applied at once by the optimizer) and the input gradient, from which NSL's step
(`adv_step_size` along the gradient's sign for l-inf, projected onto the `pgd_epsilon`
ball and clipped to the feature bounds) gives the perturbation of the next replay. So an
optimizer update costs about one plain step, and the perturbation grows stronger over the
replays at no extra cost. The perturbation starts each minibatch at 0 (`random_init=False`)
or at a random point of the ball (`random_init=True`, as in Wong et al. 2020's variant);
the paper carries it over from the previous minibatch, whose examples are different.

The weights are trained on the perturbed points only (the paper's objective), so
`multiplier` does not apply; `loss`, `scaled_adversarial_loss` and the compiled metrics
of `fit` are those of the perturbed batches the weights were trained on, averaged over the
replays, and `labeled_loss` (the clean term) is 0. One Keras step makes `free_replays` optimizer updates: to match the compute of
`E` plain epochs, train for `E / free_replays` epochs.

Free training runs on the TensorFlow backend only (it imports TensorFlow and NSL when a
step is traced).
"""

from __future__ import annotations

from typing import Any

from keras_advreg.training.routing import call_base, dense_features, require_loss
from keras_advreg.training.strategy import AdversarialLoss


class FreeTraining(AdversarialLoss):
    """The training step of `AdversarialRegularization` when `free_replays` is set."""

    name = ""
    backends = ("tensorflow",)
    at_layers = False

    def tf_train_step(self, model: Any, features: Any, labels: Any, sample_weight: Any, extras):
        import tensorflow as tf

        from keras_advreg.backend.nsl_private import NeighborSteps
        from keras_advreg.ball import random_in_norm_ball
        from keras_advreg.training.logs import record
        from keras_advreg.training.strategy import Supervised

        require_loss(model, "Training needs")
        config = model.adv_config
        features = tf.nest.map_structure(tf.convert_to_tensor, features)
        dense_features(features)  # a clear error when nothing can be perturbed
        steps = NeighborSteps(features, config.to_nsl_neighbor_config())
        if config.random_init:
            delta = random_in_norm_ball(steps.dense, config.pgd_epsilon, config.adv_grad_norm)
        else:
            delta = {key: tf.zeros_like(value) for key, value in steps.dense.items()}
        trainable = model.trainable_weights
        metrics = None
        for _ in range(config.free_replays):
            perturbed = steps.apply(delta)
            watched = list(perturbed.values())
            with tf.GradientTape() as tape:
                tape.watch(watched)
                inputs = steps.features_of(perturbed)
                y_pred = call_base(model, inputs, extras, training=True)
                loss = model.compute_loss(
                    x=inputs, y=labels, y_pred=y_pred, sample_weight=sample_weight, training=True
                )
                scaled = model.optimizer.scale_loss(loss)
            grads = tape.gradient(scaled, trainable + watched)  # one backward pass for both
            model.optimizer.apply_gradients(zip(grads[: len(trainable)], trainable))
            delta = steps.step(perturbed, grads[len(trainable) :])
            supervised = Supervised(labels, sample_weight, None, sample_weight)
            metrics = record(model, inputs, supervised, y_pred, loss, loss)
        return metrics
