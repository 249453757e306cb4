"""The adversarial terms beside the training loss, as strategies (`training/strategy.py`).

- `LabeledLoss` (`adv_loss="labeled"`, NSL's): the compiled loss at the neighbour that
  maximises it.
- `TradesLoss` (`adv_loss="trades"`, Zhang et al. 2019): `KL(f(x) || f(x'))`, with `x'`
  found by maximising that KL from a random start in the ball (the KL's gradient is zero at
  `x' = x`); NSL's KL (`nsl.lib.kl_divergence`); TensorFlow only.
- `VatLoss` (`adv_loss="vat"`, virtual adversarial training, Miyato et al. 2018):
  `KL(p(x) || p(x + r))` with the clean prediction held constant and `r` of length
  `adv_step_size` along the direction found by `pgd_iterations` power iterations from a
  random start (finite differences of size `vat_xi`). No labels needed: examples whose
  label is `-1` enter the KL but not the supervised loss or the metrics. With
  `vat_entropy`, plus that weight times the entropy of the clean predictions (trained
  through them: "VAT+EntMin"); with `vat_balance`, plus that weight times the KL of the
  batch's mean clean prediction from the uniform distribution, `log(classes) - H(mean)`
  (a class-balance term: IMSAT's marginal entropy, made >= 0).
"""

from __future__ import annotations

import math
from typing import Any

import keras

from keras_advreg.training.config import ADV_LOSSES
from keras_advreg.training.strategy import AdversarialLoss, Supervised

_CLASSIFICATION_LOSSES = (
    "sparse_categorical_crossentropy",
    "categorical_crossentropy",
    "binary_crossentropy",
)


def classification_from_logits(loss: Any, adv_loss: str = "trades") -> bool:
    """Whether a compiled classification loss takes logits; raises for other losses.

    TRADES and VAT compare the model's class distributions, so they need a cross-entropy loss.
    """
    name = loss if isinstance(loss, str) else getattr(loss, "name", None)
    name = name or getattr(loss, "__name__", "")
    fn = getattr(loss, "fn", None)
    names = {str(name).lower(), str(getattr(fn, "__name__", "")).lower()}
    if not names & set(_CLASSIFICATION_LOSSES):
        raise ValueError(
            f"adv_loss={adv_loss!r} needs a classification loss (sparse_categorical_crossentropy, "
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


# ---------------------------------------------------------------------- keras.ops KL (VAT)
def log_probabilities(y_pred: Any, from_logits: bool) -> Any:
    """Log class probabilities of a model output in `keras.ops` (a 1-unit output: two
    classes, sigmoid)."""
    ops = keras.ops
    y_pred = ops.cast(y_pred, "float32")
    if y_pred.shape[-1] == 1:
        if from_logits:
            return ops.concatenate([ops.log_sigmoid(-y_pred), ops.log_sigmoid(y_pred)], axis=-1)
        p = ops.clip(y_pred, 1e-7, 1.0 - 1e-7)
        return ops.log(ops.concatenate([1.0 - p, p], axis=-1))
    if from_logits:
        return ops.log_softmax(y_pred, axis=-1)
    return ops.log(ops.clip(y_pred, 1e-7, 1.0))


def _weighted_mean(values: Any, sample_weight: Any) -> Any:
    """The mean of per-example `values`, or `sum(w * v) / #(w != 0)` (NSL's reduction)."""
    ops = keras.ops
    if sample_weight is None:
        return ops.mean(values)
    w = ops.reshape(ops.cast(sample_weight, values.dtype), (-1,))
    count = ops.maximum(ops.sum(ops.cast(ops.not_equal(w, 0.0), values.dtype)), 1.0)
    return ops.sum(w * values) / count


def kl_divergence(clean_log: Any, log_q: Any, sample_weight: Any = None) -> Any:
    """Mean over the batch of `KL(p || q)` given `log p` and `log q` (weighted per example:
    `sum(w * kl) / #(w != 0)`, NSL's reduction)."""
    ops = keras.ops
    kl = ops.sum(ops.exp(clean_log) * (clean_log - log_q), axis=-1)
    return _weighted_mean(kl, sample_weight)


def mean_entropy(log_p: Any, sample_weight: Any = None) -> Any:
    """Mean over the batch of the entropy `-sum p log p` given `log p`, reduced as
    `kl_divergence`."""
    ops = keras.ops
    return _weighted_mean(-ops.sum(ops.exp(log_p) * log_p, axis=-1), sample_weight)


def marginal_entropy(log_p: Any, sample_weight: Any = None) -> Any:
    """The entropy of the batch's mean prediction, `-sum m log m` with `m = mean_i p_i`
    given `log p` (weighted per example: `m = sum(w p) / sum(w)`; 0 when every weight
    is 0). It is largest, `log(classes)`, when the batch's predictions spread evenly over
    the classes."""
    ops = keras.ops
    p = ops.exp(log_p)
    axes = tuple(range(len(p.shape) - 1))
    if sample_weight is None:
        mean = ops.mean(p, axis=axes)
    else:
        w = ops.reshape(ops.cast(sample_weight, p.dtype), (-1,) + (1,) * (len(p.shape) - 1))
        w = w * ops.ones_like(p[..., :1])
        total = ops.sum(w)
        mean = ops.sum(w * p, axis=axes) / ops.where(total > 0, total, 1.0)
    return -ops.sum(mean * ops.log(ops.maximum(mean, 1e-12)))


def labeled_mask(labels: Any) -> Any:
    """`(batch,)` float32: 1 for a labeled example, 0 for an unlabeled one (label all `-1`)."""
    ops = keras.ops
    y = ops.convert_to_tensor(labels)
    flat = ops.reshape(y, (ops.shape(y)[0], -1))
    unlabeled = ops.all(ops.equal(flat, ops.cast(-1, flat.dtype)), axis=-1)
    return ops.cast(ops.logical_not(unlabeled), "float32")


def mask_unlabeled(labels: Any, sample_weight: Any) -> Supervised:
    """Labels with every entry `-1` mark unlabeled examples: they get label 0 and weight 0;
    the labeled examples' loss weights are scaled by `batch / #labeled`, so that a loss
    averaged over the batch is the average over the labeled examples. The metrics count the
    labeled examples only (the weighted ones by their sample weights)."""
    ops = keras.ops
    y = ops.convert_to_tensor(labels)
    labeled = labeled_mask(y)
    weights = labeled
    if sample_weight is not None:
        weights = labeled * ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
    count = ops.sum(labeled)
    batch = ops.cast(ops.shape(labeled)[0], "float32")
    keep = ops.reshape(ops.cast(labeled, "bool"), (-1,) + (1,) * (len(y.shape) - 1))
    masked = ops.where(keep, y, ops.zeros_like(y))
    return Supervised(masked, weights * batch / ops.maximum(count, 1.0), labeled, weights)


def _per_example(values: list, reduce: Any) -> Any:
    """`reduce` (e.g. `keras.ops.max`) over all but the first axis, jointly over tensors."""
    parts = [
        reduce(v, axis=tuple(range(1, len(v.shape)))) if len(v.shape) > 1 else v for v in values
    ]
    out = parts[0]
    for part in parts[1:]:
        out = reduce(keras.ops.stack([out, part]), axis=0)
    return out


def normalized(direction: dict) -> dict:
    """Each example of a dict of batched tensors divided by its largest magnitude, then by
    its l2 norm (Miyato et al.'s `get_normalized_vector`: unit l2 at any gradient scale)."""
    ops = keras.ops
    keys = list(direction)
    values = [direction[k] for k in keys]
    peak = _per_example([ops.abs(v) for v in values], ops.max)
    values = [v / _expand(1e-12 + peak, len(v.shape)) for v in values]
    squared = sum(
        ops.sum(ops.square(v), axis=tuple(range(1, len(v.shape)))) if len(v.shape) > 1
        else ops.square(v)
        for v in values
    )  # fmt: skip
    values = [v / _expand(ops.sqrt(1e-6 + squared), len(v.shape)) for v in values]
    return dict(zip(keys, values))


def _expand(per_example: Any, rank: int) -> Any:
    return keras.ops.reshape(per_example, (-1,) + (1,) * (rank - 1))


def power_direction(grad_of: Any, start: dict, xi: float, iterations: int) -> dict:
    """VAT's power iteration: from `start` (a dict of random tensors), `iterations` times
    `d <- grad_r KL(p || p(x + r))` at `r = xi * d / ||d||_2` (per example, jointly over
    the dict). Returns the last direction, normalized (unit l2 per example)."""
    direction = start
    for _ in range(iterations):
        unit = normalized(direction)
        direction = grad_of({k: xi * v for k, v in unit.items()})
    return normalized(direction)


# ---------------------------------------------------------------------- the strategies
class LabeledLoss(AdversarialLoss):
    """NSL's term: the compiled loss at the neighbour that maximises it."""

    name = "labeled"
    search = "gradient"

    def objective(self, model, labels, clean_pred, sample_weight):
        return lambda pred: model.adv_compile_loss(labels, pred, sample_weight)


class TradesLoss(AdversarialLoss):
    """TRADES: `KL(f(x) || f(x'))` (NSL's KL), `x'` maximising it from a random start."""

    name = "trades"
    search = "random"
    backends = ("tensorflow",)
    at_layers = False

    def check_loss(self, loss):
        classification_from_logits(loss, self.name)

    def neighbor_config(self, config):
        return config.replace(random_init=True)  # the KL's gradient is 0 at x

    def trains_through_clean(self, config):
        return True

    def objective(self, model, labels, clean_pred, sample_weight):
        import tensorflow as tf

        from_logits = classification_from_logits(model.loss, self.name)
        target = tf.stop_gradient(probabilities(clean_pred, from_logits))
        return lambda pred: trades_kl(target, probabilities(pred, from_logits), sample_weight)

    def term(self, model, labels, clean_pred, adv_pred, sample_weight):
        from_logits = classification_from_logits(model.loss, self.name)
        clean = probabilities(clean_pred, from_logits)  # TRADES trains through f(x) too
        return trades_kl(clean, probabilities(adv_pred, from_logits), sample_weight)


class VatLoss(AdversarialLoss):
    """Virtual adversarial training: `KL(p(x) || p(x + r_vadv))`, no labels needed."""

    name = "vat"
    search = "power"
    keeps_batch_statistics = True
    takes_unlabeled = True

    def check_loss(self, loss):
        classification_from_logits(loss, self.name)

    def supervised(self, labels, sample_weight):
        return mask_unlabeled(labels, sample_weight)

    def objective(self, model, labels, clean_pred, sample_weight):
        from_logits = classification_from_logits(model.loss, self.name)
        clean_log = keras.ops.stop_gradient(log_probabilities(clean_pred, from_logits))
        return lambda pred: kl_divergence(
            clean_log, log_probabilities(pred, from_logits), sample_weight
        )

    def trains_through_clean(self, config):
        return bool(config.vat_entropy or config.vat_balance)

    def term(self, model, labels, clean_pred, adv_pred, sample_weight):
        total = super().term(model, labels, clean_pred, adv_pred, sample_weight)  # the KL
        config = model.adv_config
        if not (config.vat_entropy or config.vat_balance):
            return total
        log_p = log_probabilities(clean_pred, classification_from_logits(model.loss, self.name))
        if config.vat_entropy:
            total = total + config.vat_entropy * mean_entropy(log_p, sample_weight)
        if config.vat_balance:  # KL(mean prediction || uniform) = log(classes) - H(mean)
            classes = float(log_p.shape[-1])
            imbalance = math.log(classes) - marginal_entropy(log_p, sample_weight)
            total = total + config.vat_balance * imbalance
        return total


#: The strategy of each `adv_loss` name.
STRATEGIES = {cls.name: cls for cls in (LabeledLoss, TradesLoss, VatLoss)}
assert tuple(STRATEGIES) == ADV_LOSSES, "AdvConfig's adv_loss choices and the strategies differ"

__all__ = [
    "STRATEGIES",
    "LabeledLoss",
    "TradesLoss",
    "VatLoss",
    "classification_from_logits",
    "kl_divergence",
    "labeled_mask",
    "log_probabilities",
    "marginal_entropy",
    "mask_unlabeled",
    "mean_entropy",
    "normalized",
    "power_direction",
    "probabilities",
    "trades_kl",
]
