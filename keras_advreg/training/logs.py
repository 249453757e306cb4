"""The logs of a TensorFlow training step: the loss trackers and the compiled metrics."""

from __future__ import annotations

from keras_advreg.backend.keras_internals import (
    compute_selected_metrics,
    loss_tracker,
    unscale_loss_for_distribution,
)


def compute_metrics(model, features, supervised, y_pred):
    """Updates the compiled metrics on the examples `supervised` (a `Supervised`) selects;
    returns the logs."""
    if supervised.selection is None:
        return model.compute_metrics(
            features, supervised.labels, y_pred, sample_weight=supervised.metric_weight
        )
    return compute_selected_metrics(
        model, supervised.labels, y_pred, supervised.selection, supervised.metric_weight
    )


def record(model, features, supervised, y_pred, total, scaled_adv_loss):
    """Updates the loss trackers and the compiled metrics (`supervised`: a `Supervised`);
    returns the logs."""
    import tensorflow as tf

    batch_size = tf.shape(tf.nest.flatten(features)[0])[0]
    loss_tracker(model).update_state(unscale_loss_for_distribution(total), sample_weight=batch_size)
    model.labeled_loss_tracker.update_state(
        unscale_loss_for_distribution(total - scaled_adv_loss), sample_weight=batch_size
    )
    model.scaled_adversarial_loss_tracker.update_state(
        unscale_loss_for_distribution(scaled_adv_loss), sample_weight=batch_size
    )
    return compute_metrics(model, features, supervised, y_pred)


__all__ = ["compute_metrics", "record"]
