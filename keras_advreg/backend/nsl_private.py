"""NSL's private neighbour generator, used for random-start PGD in training.

NSL 1.4.0 (frozen, its last release) draws the random start of `gen_adv_neighbor` with
the static shape and so fails inside `model.fit`, where the batch size is unknown. This
follows NSL's algorithm step for step with NSL's own (underscored) gradient, projection
and clipping methods of `_GenAdvNeighbor`; only the random draw is given by the caller.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf

from keras_advreg.backend.nsl import adversarial_neighbor


def random_start_neighbor(
    features: Any,
    labels: Any,
    config: Any,
    model_fn: Callable,
    loss_fn: Callable,
    random_in_ball: Callable,
) -> Any:
    """NSL's `gen_neighbor` with `random_init`, for a batch size known only at run time.

    Args:
        features: The batch's features (a tensor or a nest).
        labels: Its labels, passed to `loss_fn`.
        config: NSL's `AdvNeighborConfig`.
        model_fn: features -> predictions.
        loss_fn: (labels, predictions) -> loss.
        random_in_ball: (nest, radius, norm name) -> a random nest in the ball.

    Returns:
        The adversarial features, structured like `features`.
    """
    generator = adversarial_neighbor._GenAdvNeighbor(
        labeled_loss=None,
        adv_config=config,
        pgd_model_fn=model_fn,
        pgd_loss_fn=loss_fn,
    )
    keyed = generator._compose_as_dict(features)
    dense, sparse = generator._split_dict(keyed, adversarial_neighbor.is_differentiable_tensor)
    radius = config.pgd_epsilon or config.adv_step_size
    perturbations = random_in_ball(dense, radius, config.adv_grad_norm.value)
    perturbed = generator._apply_perturbations(dense, perturbations)
    for _ in range(config.pgd_iterations):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(perturbed)
            inputs = generator._decompose_as(features, dict(perturbed, **sparse))
            loss = loss_fn(labels, model_fn(inputs))
        grads = generator._compute_gradient(loss, perturbed, tape)
        perturbations = generator._compute_perturbations(perturbed, grads, dense)
        perturbed = generator._apply_perturbations(dense, perturbations)
    return generator._decompose_as(features, dict(perturbed, **sparse))
