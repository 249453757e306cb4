"""Keras 3 private names keras_advreg relies on, each behind one small function.

Everything else in keras_advreg uses Keras' public API only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Keras >= 3.8: the compiled-loss container of `Model.compile`, and the division of a
# loss by the number of replicas (Keras' own train steps use both).
from keras.src.losses.loss import unscale_loss_for_distribution  # noqa: F401
from keras.src.trainers.compile_utils import CompileLoss  # noqa: F401

from keras_advreg.utils import tensorflow_if_imported


def loss_tracker(model: Any) -> Any:
    """The `Mean` metric behind the `loss` log entry of a compiled model."""
    return model._loss_tracker


def output_layer(model: Any) -> tuple[Any, Any]:
    """The layer producing a functional/Sequential model's single output, and its input.

    Returns `(None, None)` for subclassed models, several outputs, or a graph that cannot
    be read (it uses Keras' node history: `_keras_history`, `_inbound_nodes`).
    """
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        return None, None
    if not outputs or len(outputs) != 1:
        return None, None
    history = getattr(outputs[0], "_keras_history", None)
    if history is None:
        return None, None
    layer, node_index = history[0], history[1]
    nodes = getattr(layer, "_inbound_nodes", [])
    inputs = nodes[node_index].input_tensors if node_index < len(nodes) else []
    return layer, (inputs[0] if len(inputs) == 1 else None)


def built_input_shapes(model: Any) -> Any:
    """The input shape a built subclassed model was built with (one `build` argument), or None."""
    shapes = getattr(model, "_build_shapes_dict", None)
    if not isinstance(shapes, Mapping) or len(shapes) != 1:
        return None
    return next(iter(shapes.values()))


def is_keras2_model(obj: Any) -> bool:
    """Whether `obj` is a Keras 2 (tf_keras) model: its classes live in `keras.src.engine`."""
    return "tf_keras" in type(obj).__module__ or "keras.src.engine" in str(type(obj).__mro__)


def multi_worker(strategy: Any) -> bool:
    """Whether `strategy` is a `MultiWorkerMirroredStrategy` spanning more than one worker."""
    tf = tensorflow_if_imported()  # no TensorFlow imported: no TensorFlow strategy either
    return (
        tf is not None
        and isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        and strategy.num_replicas_in_sync > len(strategy.extended.worker_devices)
    )


class MultiWorkerStepsMixin:
    """Works around Keras 3's `fit`/`evaluate` under a multi-worker strategy.

    A model class mixing this in returns its step logs through `_step_logs`. It overrides
    Keras' private `Trainer._maybe_symbolic_build` (Keras 3.10-3.15).
    """

    # Two Keras 3 (3.10-3.15) steps fail for every model under a MultiWorkerMirroredStrategy
    # of several workers; this model works around both (single-worker strategies unchanged).
    def _step_logs(self, logs):
        """Keras reduces a step's logs across workers with `strategy.reduce("MEAN", v,
        axis=0)`, which fails on scalars; given `v[None]` it returns the replicas' mean."""
        if not multi_worker(self.distribute_strategy):
            return logs
        import tensorflow as tf

        return tf.nest.map_structure(lambda v: tf.expand_dims(v, 0), logs)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Keras takes the shapes to build from `strategy.reduce("MEAN", first_batch)`, which
        TensorFlow cannot do across workers for a tuple; this worker's own batch has them."""
        strategy = self.distribute_strategy
        if iterator is not None and multi_worker(strategy):
            import tensorflow as tf

            for _, _, it in iterator:
                data_batch = tf.nest.map_structure(
                    lambda v: (
                        strategy.experimental_local_results(v)[0]
                        if isinstance(v, tf.distribute.DistributedValues)
                        else v
                    ),
                    next(it),
                )
                break
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)


def all_layers(model: Any) -> list:
    """Every layer inside `model`, nested layers and models included (Keras'
    `_flatten_layers`), without `model` itself."""
    return list(model._flatten_layers(include_self=False, recursive=True))


def is_functional(model: Any) -> bool:
    """Whether `model` is a functional model (`keras.Model(inputs, outputs)`), whose graph of
    operations can be read, unlike a subclassed model's `call`."""
    from keras.src.models.functional import Functional

    return isinstance(model, Functional)


def inbound_tensors(layer: Any) -> list | None:
    """The input tensors of every call of `layer` in a functional graph (flattened), or None
    when the graph cannot be read (it uses Keras' node history: `_inbound_nodes`)."""
    nodes = getattr(layer, "_inbound_nodes", None)
    if not nodes:
        return None
    tensors = []
    for node in nodes:
        tensors.extend(getattr(node, "input_tensors", None) or [])
    return tensors


def compute_selected_metrics(model: Any, y: Any, y_pred: Any, selection: Any, sample_weight: Any):
    """`model.compute_metrics` over a selection of the batch: every compiled metric (those of
    `compile(metrics=...)`, which Keras updates without weights, and `weighted_metrics=`)
    counts only the examples whose `selection` is 1; the weighted ones also weigh them by
    `sample_weight`. Returns the metrics' results (Keras' `get_metrics_result`)."""
    container = getattr(model, "_compile_metrics", None)
    if container is not None:
        if not container.built:
            container.build(y, y_pred)
        ys, preds = container._flatten_y(y), container._flatten_y(y_pred)
        for metrics, weight in (
            (container._flat_metrics, selection),
            (container._flat_weighted_metrics, sample_weight),
        ):
            for metric, y_t, y_p in zip(metrics, ys, preds):
                if metric:
                    metric.update_state(y_t, y_p, sample_weight=weight)
    return model.get_metrics_result()
