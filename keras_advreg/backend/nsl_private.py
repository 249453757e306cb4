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


def neighbor(
    features: Any,
    labels: Any,
    labeled_loss: Any,
    config: Any,
    gradient_tape: Any,
    model_fn: Callable,
    loss_fn: Callable,
    random_in_ball: Callable,
) -> tuple[Any, Any]:
    """NSL's adversarial neighbour: `gen_adv_neighbor` from the gradient of `labeled_loss`
    (taken on `gradient_tape`), or `random_start_neighbor` when `config.random_init` is set
    (`labeled_loss` is then not used). Returns the neighbour and NSL's neighbour weights
    (`None` for the random start)."""
    if config.random_init:
        adv = random_start_neighbor(features, labels, config, model_fn, loss_fn, random_in_ball)
        return adv, None
    return adversarial_neighbor.gen_adv_neighbor(
        features,
        labeled_loss,
        config=config,
        gradient_tape=gradient_tape,
        pgd_model_fn=model_fn,
        pgd_loss_fn=loss_fn,
        pgd_labels=labels,
        use_while_loop=True,
    )


class NeighborSteps:
    """NSL's per-step perturbation math, one step at a time, for "free" training.

    Free adversarial training takes the input gradient from the same backward pass as the
    weights' gradient, so it cannot call `gen_adv_neighbor` (which runs its own passes);
    this exposes the pieces of NSL's `_GenAdvNeighbor` it needs: splitting the features
    into perturbable and other ones, the masked, normalised step projected onto the
    `pgd_epsilon` ball, and clipping.
    """

    def __init__(self, features: Any, config: Any):
        self._generator = adversarial_neighbor._GenAdvNeighbor(
            labeled_loss=None, adv_config=config, pgd_model_fn=lambda f: f, pgd_loss_fn=_unused
        )
        self._features = features
        keyed = self._generator._compose_as_dict(features)
        self.dense, self.sparse = self._generator._split_dict(
            keyed, adversarial_neighbor.is_differentiable_tensor
        )

    def apply(self, perturbations: dict) -> dict:
        """`dense + perturbations`, clipped to the config's bounds (NSL's)."""
        return self._generator._apply_perturbations(self.dense, perturbations)

    def step(self, perturbed: dict, grads: list) -> dict:
        """The next perturbation: NSL's masked, normalised step from `perturbed`, projected."""
        keyed = {
            key: tf.where(tf.math.is_finite(g), g, tf.zeros_like(g))
            for key, g in zip(perturbed, grads)
        }
        return self._generator._compute_perturbations(perturbed, keyed, self.dense)

    def features_of(self, perturbed: dict) -> Any:
        """The perturbed dense features put back into the features' structure."""
        return self._generator._decompose_as(self._features, dict(perturbed, **self.sparse))


def _unused(*args: Any) -> None:  # NSL requires a loss function when random_init is set
    raise AssertionError("not called")
