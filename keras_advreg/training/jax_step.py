"""The stateless JAX steps of `AdversarialRegularization` (Keras' JAX trainer pattern).

Keras' JAX trainer calls `train_step(state, data)` inside `jax.jit` with the model's state
as arrays, `(trainable, non_trainable, optimizer, metrics)` values, and expects
`(logs, new_state)` back. This step computes what the TensorFlow step computes, in the
order it does:

1. the clean forward pass and the labeled loss (`compute_loss`: the compiled loss with
   sample weights, plus the base model's own losses), differentiated with respect to the
   weights and to the perturbable features at once (`jax.value_and_grad`);
2. NSL's neighbour from that input gradient (`training/neighbor.py`): one step of
   `adv_step_size` along the unit-norm direction, then `pgd_iterations - 1` steps on the
   gradient of the adversarial loss (a `jax.lax.fori_loop`), each projected onto the
   `pgd_epsilon` ball and clipped; with `random_init`, from a random point of the ball
   instead (`keras.random`, keyed by the optimizer's step count: its draws cannot be
   TensorFlow's);
3. the adversarial loss at the neighbour, held constant (NSL stops its gradient), times
   `multiplier`, differentiated with respect to the weights;
4. one optimizer update on the sum of both weight gradients
   (`optimizer.stateless_apply`), and the metrics (`loss`, `labeled_loss`,
   `scaled_adversarial_loss` and the compiled ones) updated statelessly.

Non-trainable variables (BatchNorm statistics, dropout seeds) are threaded through every
model call in that order, as TensorFlow's graph updates them. Model code runs with the
state's values through `keras.StatelessScope`, as Keras' `stateless_call` does.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import keras
import numpy as np

from keras_advreg.backend.keras_internals import loss_tracker
from keras_advreg.training.config import AdvConfig
from keras_advreg.training.model import check_backend_support
from keras_advreg.training.neighbor import Neighbors


def train_step(model: Any, state: Sequence, data: Any) -> tuple[dict, tuple]:
    """Keras' JAX `train_step`: one update of `model` (an `AdversarialRegularization`).

    Args:
        model: The `AdversarialRegularization` model.
        state: `(trainable, non_trainable, optimizer, metrics)` variable values.
        data: One batch, as `fit` gives it.

    Returns:
        `(logs, new_state)`.
    """
    trainable, non_trainable, optimizer_values, metrics = state
    counter = _value_of(model.optimizer.iterations, model.optimizer.variables, optimizer_values)
    logs, trainable, non_trainable, metrics, optimizer_values = _step(
        model, data, trainable, non_trainable, metrics, optimizer_values, True, counter
    )
    return logs, (trainable, non_trainable, optimizer_values, metrics)


def test_step(model: Any, state: Sequence, data: Any) -> tuple[dict, tuple]:
    """Keras' JAX `test_step`: the training objective on one batch, no update.

    Args:
        model: The `AdversarialRegularization` model.
        state: `(trainable, non_trainable, metrics)` variable values.
        data: One batch, as `evaluate` gives it.

    Returns:
        `(logs, new_state)`.
    """
    trainable, non_trainable, metrics = state
    tracker = model.labeled_loss_tracker  # its example count keys the random starts
    counter = _value_of(tracker.variables[-1], model.metrics_variables, metrics)
    logs, trainable, non_trainable, metrics, _ = _step(
        model, data, trainable, non_trainable, metrics, None, False, counter
    )
    return logs, (trainable, non_trainable, metrics)


def perturb(
    model: Any, config: AdvConfig, features: Any, labels: Any, sample_weight: Any, extras: Any
) -> Any:
    """`perturb_on_batch` on JAX: NSL's neighbour of one batch (inference mode), as NumPy.

    The function is jitted once per perturbation config (cached until `compile`).
    """
    check_backend_support(config)
    model._require_loss("`perturb_on_batch` needs")
    features = keras.tree.map_structure(keras.ops.convert_to_tensor, features)
    model._dense_features(features)
    key = ("jax", repr(sorted(config.get_config().items())))
    cache = model._perturb_cache.functions
    if key not in cache:

        def neighbour(trainable, non_trainable, features, labels, sample_weight, extras, seed):
            neighbors = Neighbors(features, config)
            grads = None
            if not config.random_init:

                def loss_of(dense):
                    def fn():
                        inputs = neighbors.features_of(dense)
                        y_pred = model._call_base(inputs, extras, training=False)
                        return model._adv_compile_loss(labels, y_pred, sample_weight)

                    loss, non_trainable_after, _ = _run(model, fn, trainable, non_trainable)
                    return loss, non_trainable_after

                (_, non_trainable), grads = jax.value_and_grad(loss_of, has_aux=True)(
                    neighbors.dense
                )
            perturbed, _ = _neighbour(
                model, neighbors, grads, labels, sample_weight, extras, False,
                trainable, non_trainable, _seeds(seed),
            )  # fmt: skip
            return neighbors.features_of(perturbed)

        cache[key] = jax.jit(neighbour)
    seed = jax.random.PRNGKey(np.random.randint(0, 2**31 - 1))
    adv = cache[key](
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        features,
        labels,
        sample_weight,
        extras,
        seed,
    )
    return keras.tree.map_structure(np.asarray, adv)


# ---------------------------------------------------------------------- the step
def _step(model, data, trainable, non_trainable, metrics, optimizer_values, training, counter):
    check_backend_support(model.adv_config)
    model._require_loss("Training and evaluation need")
    config = model.adv_config
    features, labels, sample_weight, extras = model._unpack(data)
    features = keras.tree.map_structure(keras.ops.convert_to_tensor, features)
    model._dense_features(features)  # a clear error when nothing can be perturbed
    neighbors = Neighbors(features, config)
    scaled_loss = _loss_scaler(model, optimizer_values) if training else None

    # 1. The clean pass: the labeled loss, its weight gradient and its input gradient.
    def clean(trainable, dense, non_trainable, metrics):
        def fn():
            inputs = neighbors.features_of(dense)
            y_pred = model._call_base(inputs, extras, training=training)
            loss = model.compute_loss(
                x=inputs, y=labels, y_pred=y_pred, sample_weight=sample_weight, training=training
            )
            return loss, y_pred

        (loss, y_pred), non_trainable, metrics = _run(model, fn, trainable, non_trainable, metrics)
        objective = scaled_loss(loss) if training else loss
        return objective, (loss, y_pred, non_trainable, metrics)

    argnums = (0, 1) if training else (1,)
    (_, (loss, y_pred, non_trainable, metrics)), grads = jax.value_and_grad(
        clean, argnums=argnums, has_aux=True
    )(trainable, neighbors.dense, non_trainable, metrics)
    clean_grads = grads[0] if training else None
    input_grads = grads[-1]
    if training:
        input_grads = _unscaled(model, input_grads, optimizer_values)

    # 2. NSL's neighbour (its gradient is stopped).
    seeds = _seeds(_seed_key(model, counter)) if config.random_init else None
    first = None if config.random_init else input_grads
    perturbed, non_trainable = _neighbour(
        model, neighbors, first, labels, sample_weight, extras, training,
        trainable, non_trainable, seeds,
    )  # fmt: skip
    adv_inputs = neighbors.features_of(keras.tree.map_structure(jax.lax.stop_gradient, perturbed))

    # 3. The adversarial term.
    def adversarial(trainable, non_trainable):
        def fn():
            adv_pred = model._call_base(adv_inputs, extras, training=training)
            return config.multiplier * model._adv_compile_loss(labels, adv_pred, sample_weight)

        scaled_adv_loss, non_trainable, _ = _run(model, fn, trainable, non_trainable)
        objective = scaled_loss(scaled_adv_loss) if training else scaled_adv_loss
        return objective, (scaled_adv_loss, non_trainable)

    if training:
        (_, (scaled_adv_loss, non_trainable)), adv_grads = jax.value_and_grad(
            adversarial, has_aux=True
        )(trainable, non_trainable)
        # 4. One update on the gradient of `loss + multiplier * adversarial loss`.
        total_grads = [a + b for a, b in zip(clean_grads, adv_grads)]
        trainable, optimizer_values = model.optimizer.stateless_apply(
            optimizer_values, total_grads, trainable
        )
    else:
        _, (scaled_adv_loss, non_trainable) = adversarial(trainable, non_trainable)
    total = loss + scaled_adv_loss
    logs, metrics = _record(
        model, metrics, features, labels, sample_weight, y_pred, total, scaled_adv_loss
    )
    return logs, trainable, non_trainable, metrics, optimizer_values


def _neighbour(
    model: Any,
    neighbors: Neighbors,
    first_grads: Any,
    labels: Any,
    sample_weight: Any,
    extras: Any,
    training: bool,
    trainable: Sequence,
    non_trainable: Sequence,
    seeds: Callable[[], Any],
) -> tuple[dict, list]:
    """NSL's `gen_neighbor`: the perturbed dense features and the non-trainable values after
    the PGD steps' model calls. `first_grads` is the input gradient of the labeled loss
    (the first step), or None for a random start."""
    config = neighbors.config
    if first_grads is None:
        perturbed = neighbors.random_start(seeds)
        remaining = config.pgd_iterations
    else:
        perturbed = neighbors.step(neighbors.dense, first_grads)
        remaining = config.pgd_iterations - 1
    if remaining < 1:
        return perturbed, list(non_trainable)

    def pgd_step(_, carry):
        at, non_trainable = carry

        def loss_of(at):
            def fn():
                y_pred = model._call_base(neighbors.features_of(at), extras, training=training)
                return model._adv_compile_loss(labels, y_pred, sample_weight)

            loss, non_trainable_after, _ = _run(model, fn, trainable, non_trainable)
            return loss, non_trainable_after

        (_, non_trainable), grads = jax.value_and_grad(loss_of, has_aux=True)(at)
        return neighbors.step(at, grads), non_trainable

    return jax.lax.fori_loop(0, remaining, pgd_step, (perturbed, list(non_trainable)))


def _record(model, metrics, features, labels, sample_weight, y_pred, total, scaled_adv_loss):
    """The TensorFlow step's `_record`, statelessly: logs and the new metrics values."""
    batch_size = keras.tree.flatten(features)[0].shape[0]
    mapping = list(zip(model.metrics_variables, metrics))
    with keras.StatelessScope(state_mapping=mapping) as scope:
        loss_tracker(model).update_state(total, sample_weight=batch_size)
        model.labeled_loss_tracker.update_state(total - scaled_adv_loss, sample_weight=batch_size)
        model.scaled_adversarial_loss_tracker.update_state(
            scaled_adv_loss, sample_weight=batch_size
        )
        logs = model.compute_metrics(features, labels, y_pred, sample_weight=sample_weight)
    return logs, _current(scope, model.metrics_variables)


# ---------------------------------------------------------------------- state plumbing
def _run(model, fn, trainable, non_trainable, metrics=None):
    """Runs `fn()` with the model's variables holding the given values (a
    `keras.StatelessScope` collecting the layers' losses, as `stateless_call`).

    Returns `(fn(), new non-trainable values, new metrics values or None)`.
    """
    mapping = list(zip(model.trainable_variables, trainable))
    mapping += list(zip(model.non_trainable_variables, non_trainable))
    if metrics is not None:
        mapping += list(zip(model.metrics_variables, metrics))
    with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
        out = fn()
    new_metrics = _current(scope, model.metrics_variables) if metrics is not None else None
    return out, _current(scope, model.non_trainable_variables), new_metrics


def _current(scope, variables) -> list:
    values = []
    for variable in variables:
        value = scope.get_current_value(variable)
        values.append(variable.value if value is None else value)
    return values


def _value_of(variable, variables, values):
    """The value in `values` of `variable`, one of `variables` (matched by identity)."""
    for candidate, value in zip(variables, values):
        if candidate is variable:
            return value
    raise ValueError(f"{variable.path} is not among the variables of the state.")


def _loss_scaler(model, optimizer_values) -> Callable[[Any], Any]:
    """`optimizer.scale_loss` with the state's optimizer values (a `LossScaleOptimizer`'s
    scale is one of them)."""
    optimizer = model.optimizer

    def scale(loss):
        mapping = list(zip(optimizer.variables, optimizer_values))
        with keras.StatelessScope(state_mapping=mapping):
            return optimizer.scale_loss(loss)

    return scale


def _unscaled(model, grads, optimizer_values):
    """The input gradient of the unscaled labeled loss (TensorFlow's input tape records the
    loss before `optimizer.scale_loss`)."""
    if not isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer):
        return grads
    scale = _loss_scaler(model, optimizer_values)(keras.ops.ones((), "float32"))
    return keras.tree.map_structure(lambda g: g / keras.ops.cast(scale, g.dtype), grads)


def _seed_key(model, counter):
    """A JAX key for this step's random start: the model's base seed (drawn once from
    NumPy's global generator, so `keras.utils.set_random_seed` fixes it) and `counter`."""
    cache = model._perturb_cache
    if cache.seed is None:
        cache.seed = int(np.random.randint(0, 2**31 - 1))
    counter = keras.ops.cast(counter, "uint32")
    return jax.random.fold_in(jax.random.PRNGKey(cache.seed), counter)


def _seeds(key) -> Callable[[], Any]:
    """A new `keras.random` seed (a JAX key) at each call."""
    count = itertools.count()
    return lambda: jax.random.fold_in(key, next(count))


__all__ = ["perturb", "test_step", "train_step"]
