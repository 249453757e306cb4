"""The adversarial loss terms beside NSL's labeled loss: TRADES' KL term (Zhang et al. 2019).

`AdvConfig(adv_loss="trades")` trains on `loss(y, f(x)) + multiplier * KL(f(x) || f(x'))`,
with `x'` found by maximising that KL (from a random start in the ball: the KL's gradient
is zero at `x' = x`). The KL is NSL's (`nsl.lib.kl_divergence`). TRADES runs on the
TensorFlow backend only, so TensorFlow and NSL are imported when its term is computed.
"""

from __future__ import annotations

from typing import Any

import keras

ADV_LOSSES = ("labeled", "trades")
_CLASSIFICATION_LOSSES = (
    "sparse_categorical_crossentropy",
    "categorical_crossentropy",
    "binary_crossentropy",
)


def classification_from_logits(loss: Any) -> bool:
    """Whether a compiled classification loss takes logits; raises for other losses.

    TRADES compares the model's class distributions, so it needs a cross-entropy loss.
    """
    name = loss if isinstance(loss, str) else getattr(loss, "name", None)
    name = name or getattr(loss, "__name__", "")
    fn = getattr(loss, "fn", None)
    names = {str(name).lower(), str(getattr(fn, "__name__", "")).lower()}
    if not names & set(_CLASSIFICATION_LOSSES):
        raise ValueError(
            "adv_loss='trades' needs a classification loss (sparse_categorical_crossentropy, "
            "categorical_crossentropy or binary_crossentropy): its term compares the model's "
            f"class distributions on clean and adversarial inputs. Received: loss={loss!r}"
        )
    if isinstance(loss, keras.losses.Loss):
        return bool(getattr(loss, "from_logits", False) or loss.get_config().get("from_logits"))
    return False


def probabilities(y_pred: Any, from_logits: bool) -> Any:
    """Class probabilities of a model output (softmax of logits; a 1-unit output: sigmoid)."""
    import tensorflow as tf

    y_pred = tf.cast(y_pred, tf.float32)
    if y_pred.shape[-1] == 1:
        p = tf.sigmoid(y_pred) if from_logits else y_pred
        return tf.concat([1.0 - p, p], axis=-1)
    return tf.nn.softmax(y_pred, axis=-1) if from_logits else y_pred


def trades_kl(clean: Any, adversarial: Any, sample_weight: Any = None) -> Any:
    """Mean over the batch of KL(clean || adversarial), NSL's KL, weighted per example."""
    import tensorflow as tf

    from keras_advreg.backend.nsl import nsl

    weights = (
        1.0 if sample_weight is None else tf.reshape(tf.cast(sample_weight, tf.float32), [-1, 1])
    )
    return nsl.lib.kl_divergence(
        clean,
        adversarial,
        axis=-1,
        weights=weights,
        reduction=tf.compat.v1.losses.Reduction.SUM_BY_NONZERO_WEIGHTS,
    )


__all__ = ["ADV_LOSSES", "classification_from_logits", "probabilities", "trades_kl"]
