"""The logs of a TensorFlow training step: the loss trackers and the compiled metrics."""

from __future__ import annotations

from keras_advreg.backend.keras_internals import loss_tracker, unscale_loss_for_distribution


def record(model, features, labels, sample_weight, y_pred, total, scaled_adv_loss):
    """Updates the loss trackers and the compiled metrics; returns the logs."""
    import tensorflow as tf

    batch_size = tf.shape(tf.nest.flatten(features)[0])[0]
    loss_tracker(model).update_state(unscale_loss_for_distribution(total), sample_weight=batch_size)
    model.labeled_loss_tracker.update_state(
        unscale_loss_for_distribution(total - scaled_adv_loss), sample_weight=batch_size
    )
    model.scaled_adversarial_loss_tracker.update_state(
        unscale_loss_for_distribution(scaled_adv_loss), sample_weight=batch_size
    )
    return model.compute_metrics(features, labels, y_pred, sample_weight=sample_weight)


__all__ = ["record"]
