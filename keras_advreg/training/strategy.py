"""The training step's adversarial term as a strategy object.

`AdversarialRegularization` trains on `loss(y, f(x)) + multiplier * term`. What the term
is, and how its neighbour is found, is one `AdversarialLoss` subclass per `AdvConfig`
setting (`adv_loss`, or "free" training when `free_replays` is set), listed in
`training/strategies.py`:

- `objective(...)`: the function of a prediction the neighbour search maximises;
- `term(...)`: the term at the neighbour (before `multiplier`);
- `search`: how the neighbour is found: `"gradient"` (NSL's: a step along the input
  gradient of the labeled loss, then PGD steps on `objective`, or from a random start with
  `random_init`), `"random"` (a random start, then PGD steps), or `"power"` (virtual
  adversarial training's power iteration);
- `supervised(labels, sample_weight)`: the labels and weights of the supervised term, and
  the examples the metrics count (VAT drops unlabeled examples from both);
- `check_loss(loss)`, called by `compile`: errors before training;
- `keeps_batch_statistics`: the neighbour's passes run in training mode but leave the
  moving statistics of batch normalization to the clean pass (`batch_statistics()`).

The TensorFlow step (`training/tf_step.py`) and the JAX step (`training/jax_step.py`)
run any strategy: each implements the three searches for its backend. A strategy that
replaces the whole step (free training) overrides `tf_train_step`. A new loss is one
subclass plus its name in `AdvConfig`'s `adv_loss` choices.
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple


class Supervised(NamedTuple):
    """What the supervised loss and the compiled metrics see of a batch."""

    #: The labels of the supervised loss and the metrics.
    labels: Any
    #: The sample weights of the supervised loss.
    loss_weight: Any
    #: None when the metrics count every example, else `(batch,)` 1 for the examples
    #: they count and 0 for the others (all compiled metrics, weighted or not).
    selection: Any
    #: The sample weights of the weighted metrics (`compile(weighted_metrics=...)`).
    metric_weight: Any


def supervised_loss(
    model: Any, features: Any, supervised: Supervised, y_pred: Any, training: bool
) -> Any:
    """The compiled loss of `y_pred` on what the supervised loss sees of the batch."""
    return model.compute_loss(
        x=features,
        y=supervised.labels,
        y_pred=y_pred,
        sample_weight=supervised.loss_weight,
        training=training,
    )


class AdversarialLoss:
    """Base class of the adversarial terms (see the module docstring)."""

    #: The `adv_loss` name of the strategy.
    name: ClassVar[str] = ""
    #: `"gradient"`, `"random"` or `"power"`.
    search: ClassVar[str] = "gradient"
    #: The Keras backends the strategy runs on.
    backends: ClassVar[tuple[str, ...]] = ("tensorflow", "jax")
    #: Whether the strategy runs at `AdversarialPerturbation` layers.
    at_layers: ClassVar[bool] = True
    #: Whether the neighbour's passes leave the moving statistics of batch normalization
    #: as the clean pass left them (VAT, as Miyato et al.: the statistics describe the data).
    keeps_batch_statistics: ClassVar[bool] = False
    #: Whether batches may hold unlabeled examples (label `-1`): the supervised loss then
    #: runs on the labeled examples alone (`training/labeled_pass.py`).
    takes_unlabeled: ClassVar[bool] = False

    def check_loss(self, loss: Any) -> None:
        """Raises when the compiled `loss` does not suit the term (called by `compile`)."""

    def trains_through_clean(self, config: Any) -> bool:
        """Whether `term` has a gradient through the clean prediction (TRADES; VAT with an
        entropy or class-balance term), which a step must then compute where the term's
        gradient is taken."""
        return False

    def supervised(self, labels: Any, sample_weight: Any) -> Supervised:
        """The labels and weights of the supervised (labeled) loss and of the metrics."""
        return Supervised(labels, sample_weight, None, sample_weight)

    def objective(self, model: Any, labels: Any, clean_pred: Any, sample_weight: Any):
        """`pred -> scalar`: what the neighbour search maximises."""
        raise NotImplementedError

    def term(
        self, model: Any, labels: Any, clean_pred: Any, adv_pred: Any, sample_weight: Any
    ) -> Any:
        """The adversarial term at the neighbour's prediction `adv_pred` (before `multiplier`)."""
        return self.objective(model, labels, clean_pred, sample_weight)(adv_pred)

    def neighbor_config(self, config: Any) -> Any:
        """The perturbation settings of the search (TRADES always starts at random)."""
        return config

    def tf_train_step(self, model: Any, features: Any, labels: Any, sample_weight: Any, extras):
        """A whole TensorFlow training step, or `None` for the shared one."""
        return None


#: The names of the moving statistics of Keras' `BatchNormalization` (and its synchronized
#: variant): the non-trainable variables a strategy with `keeps_batch_statistics` restores.
BATCH_STATISTICS = ("moving_mean", "moving_variance")


def batch_statistics(model: Any) -> list[int]:
    """Indices, in `model.non_trainable_variables`, of the moving statistics of batch
    normalization (variables named "moving_mean" or "moving_variance")."""
    return [
        i
        for i, v in enumerate(model.non_trainable_variables)
        if v.name.split("/")[-1].split(":")[0] in BATCH_STATISTICS
    ]


__all__ = [
    "BATCH_STATISTICS",
    "AdversarialLoss",
    "Supervised",
    "batch_statistics",
    "supervised_loss",
]
