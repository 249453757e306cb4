"""`EpsilonSchedule`: warm the adversarial radius up from 0 to its target during `fit`.

The MNIST eps-0.3 recipes need it: a model attacked at full strength from the first step
often never learns. The callback rewrites the model's `adv_config` (its `pgd_epsilon` and
`adv_step_size`, in proportion) at the start of each epoch and retraces the train step,
so a `.keras` file saved mid-warm-up holds the radius of that moment. It runs wherever
`AdversarialRegularization` does (TensorFlow and JAX: both retrace their step).
"""

from __future__ import annotations

import numbers

import keras

from keras_advreg.training.model import BACKENDS
from keras_advreg.utils import check_positive_int, require_backend


@keras.saving.register_keras_serializable(package="keras_advreg")
class EpsilonSchedule(keras.callbacks.Callback):
    """Linear epsilon warm-up for an `AdversarialRegularization` model.

    In epoch `e` (counting from 0) the radius is
    `epsilon * min(1, (e + 1) / warmup_epochs)`: it reaches `epsilon` in epoch
    `warmup_epochs - 1` and stays there. `adv_step_size` scales with it (its
    ratio to the radius is kept), `pgd_epsilon` is set to it.

    Args:
        epsilon: float > 0. The target radius. Defaults to the model's
            `pgd_epsilon` (or `adv_step_size`) at `on_train_begin`.
        warmup_epochs: int >= 1. Epochs to reach it. Defaults to `5`.

    Example:

    >>> schedule = EpsilonSchedule(epsilon=0.3, warmup_epochs=3)
    >>> [round(schedule.epsilon_at(e), 2) for e in range(4)]
    [0.1, 0.2, 0.3, 0.3]
    """

    def __init__(self, epsilon: float | None = None, warmup_epochs: int = 5):
        super().__init__()
        require_backend("keras_advreg.EpsilonSchedule", BACKENDS)
        if epsilon is not None and (
            isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real) or not epsilon > 0
        ):
            raise ValueError(f"`epsilon` must be a number > 0. Received: epsilon={epsilon!r}")
        self.epsilon = None if epsilon is None else float(epsilon)
        self.warmup_epochs = check_positive_int("warmup_epochs", warmup_epochs)
        self._target = None

    def get_config(self) -> dict:
        return {"epsilon": self.epsilon, "warmup_epochs": self.warmup_epochs}

    def epsilon_at(self, epoch: int) -> float:
        target = self._target if self._target is not None else self.epsilon
        return target * min(1.0, (epoch + 1) / self.warmup_epochs)

    def on_train_begin(self, logs: dict | None = None) -> None:
        config = getattr(self.model, "adv_config", None)
        if config is None:
            raise TypeError(
                "EpsilonSchedule needs an keras_advreg.AdversarialRegularization model "
                f"(it changes `adv_config`). Received: a {type(self.model).__name__}"
            )
        epochs = (self.params or {}).get("epochs")
        if epochs is not None and self.warmup_epochs > epochs:
            raise ValueError(
                f"`warmup_epochs` must be at most the number of epochs ({epochs}): the "
                "radius would never reach its target. "
                f"Received: warmup_epochs={self.warmup_epochs}"
            )
        self._target = self.epsilon or config.pgd_epsilon or config.adv_step_size
        self._ratio = config.adv_step_size / (config.pgd_epsilon or config.adv_step_size)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        eps = self.epsilon_at(epoch)
        config = self.model.adv_config
        if config.pgd_epsilon == eps and config.adv_step_size == eps * self._ratio:
            return
        self.model.adv_config = config.replace(pgd_epsilon=eps, adv_step_size=eps * self._ratio)
        self.model.make_train_function(force=True)  # the radius is traced into the step

    def on_train_end(self, logs: dict | None = None) -> None:
        self._target = None


__all__ = ["EpsilonSchedule"]
