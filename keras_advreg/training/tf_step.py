"""The TensorFlow steps of `AdversarialRegularization`, for any strategy
(`training/strategy.py`).

1. the clean forward pass and the supervised loss (`compute_loss`), its input gradient
   recorded on a tape watching the target (the features, or a zero offset at each
   `AdversarialPerturbation` layer: `training/targets.py`);
2. the neighbour (its gradient stopped): NSL's `gen_adv_neighbor` (`search="gradient"`),
   NSL's steps from a random start (`"random"`), or VAT's power iteration (`"power"`);
3. the strategy's term at the neighbour, times `multiplier`;
4. one optimizer update on `loss + multiplier * term`, and the metrics (`loss`,
   `labeled_loss`, `scaled_adversarial_loss` and the compiled ones).

TensorFlow and NSL are imported inside the functions, when a step is traced.
"""

from __future__ import annotations

import contextlib
from typing import Any

from keras_advreg.training.labeled_pass import labeled_batch, separates_labeled
from keras_advreg.training.logs import record
from keras_advreg.training.routing import call_base, require_loss
from keras_advreg.training.strategies import check_target, strategy_for
from keras_advreg.training.strategy import batch_statistics, supervised_loss
from keras_advreg.training.targets import target_for


def train_step(model: Any, data: Any) -> dict:
    """One training step of `model` (an `AdversarialRegularization`): returns the logs."""
    import tensorflow as tf

    from keras_advreg.training.routing import unpack

    features, labels, sample_weight, extras = unpack(model, data)
    strategy = strategy_for(model.adv_config)
    logs = strategy.tf_train_step(model, features, labels, sample_weight, extras)
    if logs is not None:
        return logs
    with tf.GradientTape() as tape:
        y_pred, loss, scaled_adv_loss, supervised = forward(
            model, strategy, features, labels, sample_weight, extras, True, tape
        )
        total = loss + scaled_adv_loss
        scaled_total = model.optimizer.scale_loss(total)
    trainable = model.trainable_weights
    gradients = tape.gradient(scaled_total, trainable)
    model.optimizer.apply_gradients(zip(gradients, trainable))
    return record(model, features, supervised, y_pred, total, scaled_adv_loss)


def test_step(model: Any, data: Any) -> dict:
    """One evaluation step (the training objective, no update): returns the logs."""
    from keras_advreg.training.routing import unpack

    features, labels, sample_weight, extras = unpack(model, data)
    strategy = strategy_for(model.adv_config)
    y_pred, loss, scaled_adv_loss, supervised = forward(
        model, strategy, features, labels, sample_weight, extras, False
    )
    total = loss + scaled_adv_loss
    return record(model, features, supervised, y_pred, total, scaled_adv_loss)


def forward(model, strategy, features, labels, sample_weight, extras, training, outer_tape=None):
    """Returns the prediction the metrics see, the supervised loss, the scaled adversarial
    term and what the supervised loss and the metrics see of the batch (a `Supervised`)."""
    import tensorflow as tf

    require_loss(model, "Training and evaluation need")
    features = tf.nest.map_structure(tf.convert_to_tensor, features)
    target = target_for(model, features, extras, training)
    check_target(strategy, target.at_layers)
    supervised = strategy.supervised(labels, sample_weight)
    # The perturbation is a constant for the weights' gradient (NSL stops its gradient), so
    # the outer tape need not record how it is found.
    quiet = outer_tape.stop_recording if outer_tape is not None else contextlib.nullcontext
    if separates_labeled(strategy, model, training):
        loss, sup_pred = labeled_pass(model, features, extras, supervised)
        input_tape = None  # the strategy's search needs no input gradient of this loss
        # The strategy's clean prediction: the search holds it constant; the term may train
        # through it (VAT's entropy and class-balance terms).
        y_pred = target.call(target.origin)
    else:
        with tf.GradientTape(watch_accessed_variables=False) as input_tape:
            input_tape.watch(target.dense)
            y_pred = sup_pred = target.call(target.origin)
            loss = supervised_loss(model, features, supervised, y_pred, training)
    config = target.config(strategy.neighbor_config(model.adv_config))
    objective = strategy.objective(model, labels, y_pred, sample_weight)
    kept = kept_statistics(model, strategy, training)
    with quiet():
        adv = neighbour(strategy, target, config, objective, labels, loss, input_tape)
    adv = tf.nest.map_structure(tf.stop_gradient, adv)
    adv_pred = target.call(adv)
    for variable, value in kept:  # the clean pass's statistics (see `keeps_batch_statistics`)
        variable.assign(value)
    term = strategy.term(model, labels, y_pred, adv_pred, sample_weight)
    scaled_adv_loss = model.adv_config.multiplier * term
    return sup_pred, loss, scaled_adv_loss, supervised


def labeled_pass(model, features, extras, supervised):
    """The supervised loss of a training batch mixing labeled and unlabeled examples, for a
    model with batch normalization, on a batch of its labeled examples alone
    (`training/labeled_pass.py`); the moving statistics are left as they were, to the
    whole batch's clean pass. Returns the loss and the labeled pass's prediction."""
    before = statistics(model)
    sup_pred = call_base(model, *labeled_batch(model, features, extras, supervised), training=True)
    loss = supervised_loss(model, features, supervised, sup_pred, True)
    for variable, value in before:
        variable.assign(value)
    return loss, sup_pred


def statistics(model) -> list:
    """`(variable, current value)` of the model's batch-normalization moving statistics."""
    import tensorflow as tf

    variables = model.non_trainable_variables
    return [(variables[i], tf.identity(variables[i].value)) for i in batch_statistics(model)]


def kept_statistics(model, strategy, training) -> list:
    """`(variable, value after the clean pass)` of the batch-normalization statistics the
    strategy keeps from the neighbour's passes (none when not training)."""
    return statistics(model) if strategy.keeps_batch_statistics and training else []


def neighbour(strategy, target, config, objective, labels, labeled_loss, tape):
    """The neighbour of `target.origin` found by `strategy.search`."""
    from keras_advreg.backend.nsl_private import neighbor, random_start_neighbor
    from keras_advreg.ball import random_in_norm_ball

    loss_fn = lambda _labels, pred: objective(pred)  # noqa: E731
    if strategy.search == "power":
        return power_neighbour(target, config, objective)
    nsl_config = config.to_nsl_neighbor_config()
    if strategy.search == "random":
        return random_start_neighbor(
            target.origin, labels, nsl_config, target.call, loss_fn, random_in_norm_ball
        )
    adv, _ = neighbor(
        target.origin, labels, labeled_loss, nsl_config, tape, target.call, loss_fn,
        random_in_norm_ball,
    )  # fmt: skip
    return adv


def power_neighbour(target, config, objective):
    """VAT's neighbour: `adv_step_size` along the power-iteration direction (in
    `adv_grad_norm`), from a normal random start, clipped to the config's bounds."""
    import tensorflow as tf

    from keras_advreg.ball import unit_direction
    from keras_advreg.training.losses import power_direction
    from keras_advreg.training.neighbor import Neighbors, finite

    neighbors = Neighbors(target.origin, config)
    dense = neighbors.dense

    def grad_of(offsets):
        at = {k: dense[k] + offsets[k] for k in dense}
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(at)
            value = objective(target.call(neighbors.features_of(at)))
        return finite(tape.gradient(value, at))

    start = {k: tf.random.normal(tf.shape(v), dtype=v.dtype) for k, v in dense.items()}
    direction = power_direction(grad_of, start, config.vat_xi, config.pgd_iterations)
    step = unit_direction(neighbors_masked(neighbors, direction), config.adv_grad_norm)
    offsets = {k: config.adv_step_size * v for k, v in step.items()}
    return neighbors.features_of(neighbors.apply(offsets))


def neighbors_masked(neighbors, grads):
    """The gradients times the config's `feature_mask` (NSL's masking)."""
    return {k: neighbors.masked(k, g) for k, g in grads.items()}


__all__ = ["forward", "kept_statistics", "neighbour", "test_step", "train_step"]
