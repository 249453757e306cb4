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
from keras_advreg.training.labeled_pass import labeled_batch, separates_labeled
from keras_advreg.training.logs import compute_metrics
from keras_advreg.training.neighbor import Neighbors, finite
from keras_advreg.training.routing import call_base, dense_features, require_loss, unpack
from keras_advreg.training.strategies import check_backend_support, check_target, strategy_for
from keras_advreg.training.strategy import batch_statistics, supervised_loss
from keras_advreg.training.targets import target_for


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
    require_loss(model, "`perturb_on_batch` needs")
    features = keras.tree.map_structure(keras.ops.convert_to_tensor, features)
    dense_features(features)
    key = ("jax", repr(sorted(config.get_config().items())))
    cache = model.step_cache.functions
    if key not in cache:

        def neighbour(trainable, non_trainable, features, labels, sample_weight, extras, seed):
            neighbors = Neighbors(features, config)
            grads = None
            call = lambda inputs: call_base(model, inputs, extras, training=False)  # noqa: E731
            objective = lambda pred: model.adv_compile_loss(labels, pred, sample_weight)  # noqa: E731
            if not config.random_init:

                def loss_of(dense):
                    def fn():
                        return objective(call(neighbors.features_of(dense)))

                    loss, non_trainable_after, _ = _run(model, fn, trainable, non_trainable)
                    return loss, non_trainable_after

                (_, non_trainable), grads = jax.value_and_grad(loss_of, has_aux=True)(
                    neighbors.dense
                )
            perturbed, _ = _neighbour(
                model, neighbors, grads, call, objective, trainable, non_trainable, _seeds(seed)
            )
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
    require_loss(model, "Training and evaluation need")
    strategy = strategy_for(model.adv_config)
    features, labels, sample_weight, extras = unpack(model, data)
    features = keras.tree.map_structure(keras.ops.convert_to_tensor, features)

    def shapes_only(fn):  # a model call whose only use is its shapes (XLA drops it)
        _run(model, fn, trainable, non_trainable)

    target = target_for(model, features, extras, training, run=shapes_only)
    check_target(strategy, target.at_layers)
    config = target.config(strategy.neighbor_config(model.adv_config))
    neighbors = Neighbors(target.origin, config)
    supervised = strategy.supervised(labels, sample_weight)
    scaled_loss = _loss_scaler(model, optimizer_values) if training else None

    # With unlabeled examples and batch normalization, the supervised loss runs on a batch
    # of labeled examples only (`training/labeled_pass.py`).
    separate = separates_labeled(strategy, model, training)
    if separate:
        labeled = labeled_batch(model, features, extras, supervised)
        before = non_trainable

    # 1. The clean pass: the supervised loss, its weight gradient and its input gradient.
    def clean(trainable, dense, non_trainable, metrics):
        def fn():
            if separate:
                y_pred = call_base(model, *labeled, training=training)
            else:
                y_pred = target.call(neighbors.features_of(dense))
            loss = supervised_loss(model, features, supervised, y_pred, training)
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

    sup_pred = y_pred
    if separate:  # the strategy's clean pass on the whole batch; its statistics are kept
        non_trainable = _with_statistics(model, non_trainable, before)  # not the labeled pass's
        whole = lambda: target.call(neighbors.features_of(neighbors.dense))  # noqa: E731
        y_pred, non_trainable, _ = _run(model, whole, trainable, non_trainable)
        y_pred = jax.lax.stop_gradient(y_pred)

    # 2. The neighbour (its gradient is stopped).
    after_clean = non_trainable
    objective = strategy.objective(model, labels, jax.lax.stop_gradient(y_pred), sample_weight)
    random = config.random_init or strategy.search in ("random", "power")
    seeds = _seeds(_seed_key(model, counter)) if random else None
    if strategy.search == "power":
        perturbed, non_trainable = _power_neighbour(
            model, neighbors, target.call, objective, trainable, non_trainable, seeds
        )
    else:
        first = None if config.random_init or strategy.search == "random" else input_grads
        perturbed, non_trainable = _neighbour(
            model, neighbors, first, target.call, objective, trainable, non_trainable, seeds
        )
    adv_inputs = neighbors.features_of(keras.tree.map_structure(jax.lax.stop_gradient, perturbed))

    # 3. The adversarial term (with the clean pass again where it trains through it).
    through_clean = strategy.trains_through_clean(model.adv_config)
    clean_inputs = neighbors.features_of(neighbors.dense)

    def adversarial(trainable, non_trainable):
        def fn():
            adv_pred = target.call(adv_inputs)
            clean_pred = target.call(clean_inputs) if through_clean else y_pred
            term = strategy.term(model, labels, clean_pred, adv_pred, sample_weight)
            return model.adv_config.multiplier * term

        scaled_adv_loss, non_trainable, _ = _run(model, fn, trainable, non_trainable)
        objective = scaled_loss(scaled_adv_loss) if training else scaled_adv_loss
        return objective, (scaled_adv_loss, non_trainable)

    if training:
        (_, (scaled_adv_loss, non_trainable)), adv_grads = jax.value_and_grad(
            adversarial, has_aux=True
        )(trainable, non_trainable)
        # 4. One update on the gradient of `loss + multiplier * adversarial term`.
        total_grads = [a + b for a, b in zip(clean_grads, adv_grads)]
        trainable, optimizer_values = model.optimizer.stateless_apply(
            optimizer_values, total_grads, trainable
        )
    else:
        _, (scaled_adv_loss, non_trainable) = adversarial(trainable, non_trainable)
    if strategy.keeps_batch_statistics and training:  # the clean pass's statistics
        non_trainable = _with_statistics(model, non_trainable, after_clean)
    total = loss + scaled_adv_loss
    logs, metrics = _record(model, metrics, features, supervised, sup_pred, total, scaled_adv_loss)
    return logs, trainable, non_trainable, metrics, optimizer_values


def _neighbour(
    model: Any,
    neighbors: Neighbors,
    first_grads: Any,
    call: Callable[[Any], Any],
    objective: Callable[[Any], Any],
    trainable: Sequence,
    non_trainable: Sequence,
    seeds: Callable[[], Any],
) -> tuple[dict, list]:
    """NSL's `gen_neighbor`: the perturbed dense values and the non-trainable values after
    the PGD steps' model calls (`call` maps the target's values to a prediction,
    `objective` a prediction to what the steps maximise). `first_grads` is the input
    gradient of the labeled loss (the first step), or None for a random start."""
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
                return objective(call(neighbors.features_of(at)))

            loss, non_trainable_after, _ = _run(model, fn, trainable, non_trainable)
            return loss, non_trainable_after

        (_, non_trainable), grads = jax.value_and_grad(loss_of, has_aux=True)(at)
        return neighbors.step(at, grads), non_trainable

    return jax.lax.fori_loop(0, remaining, pgd_step, (perturbed, list(non_trainable)))


def _power_neighbour(model, neighbors, call, objective, trainable, non_trainable, seeds):
    """VAT's neighbour: `adv_step_size` along the power-iteration direction (in
    `adv_grad_norm`) from a normal random start, clipped to the config's bounds."""
    from keras_advreg.ball import unit_direction
    from keras_advreg.training.losses import power_direction

    config = neighbors.config
    dense = neighbors.dense
    state = {"non_trainable": list(non_trainable)}

    def grad_of(offsets):
        def loss_of(offsets):
            def fn():
                at = {k: dense[k] + offsets[k] for k in dense}
                return objective(call(neighbors.features_of(at)))

            loss, non_trainable_after, _ = _run(model, fn, trainable, state["non_trainable"])
            return loss, non_trainable_after

        (_, state["non_trainable"]), grads = jax.value_and_grad(loss_of, has_aux=True)(offsets)
        return finite(grads)

    start = {k: keras.random.normal(v.shape, dtype=v.dtype, seed=seeds()) for k, v in dense.items()}
    direction = power_direction(grad_of, start, config.vat_xi, config.pgd_iterations)
    masked = {k: neighbors.masked(k, g) for k, g in direction.items()}
    step = unit_direction(masked, config.adv_grad_norm)
    offsets = {k: config.adv_step_size * v for k, v in step.items()}
    return neighbors.apply(offsets), state["non_trainable"]


def _with_statistics(model: Any, non_trainable: Sequence, source: Sequence) -> list:
    """`non_trainable` with the batch-normalization moving statistics taken from `source`."""
    out = list(non_trainable)
    for i in batch_statistics(model):
        out[i] = source[i]
    return out


def _record(model, metrics, features, supervised, y_pred, total, scaled_adv_loss):
    """The TensorFlow step's `_record`, statelessly: logs and the new metrics values."""
    batch_size = keras.tree.flatten(features)[0].shape[0]
    mapping = list(zip(model.metrics_variables, metrics))
    with keras.StatelessScope(state_mapping=mapping) as scope:
        loss_tracker(model).update_state(total, sample_weight=batch_size)
        model.labeled_loss_tracker.update_state(total - scaled_adv_loss, sample_weight=batch_size)
        model.scaled_adversarial_loss_tracker.update_state(
            scaled_adv_loss, sample_weight=batch_size
        )
        logs = compute_metrics(model, features, supervised, y_pred)
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
    cache = model.step_cache
    if cache.seed is None:
        cache.seed = int(np.random.randint(0, 2**31 - 1))
    counter = keras.ops.cast(counter, "uint32")
    return jax.random.fold_in(jax.random.PRNGKey(cache.seed), counter)


def _seeds(key) -> Callable[[], Any]:
    """A new `keras.random` seed (a JAX key) at each call."""
    count = itertools.count()
    return lambda: jax.random.fold_in(key, next(count))


__all__ = ["perturb", "test_step", "train_step"]
