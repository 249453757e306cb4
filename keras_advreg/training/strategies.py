"""The strategy of an `AdvConfig`, and the check that the backend runs it."""

from __future__ import annotations

import keras

from keras_advreg.training.config import AdvConfig
from keras_advreg.training.free import FreeTraining
from keras_advreg.training.losses import STRATEGIES
from keras_advreg.training.strategy import AdversarialLoss


def strategy_for(config: AdvConfig) -> AdversarialLoss:
    """The training step's strategy for `config`: free training when `free_replays` is
    set, else the one named by `adv_loss`."""
    if config.free_replays is not None:
        return FreeTraining()
    return STRATEGIES[config.adv_loss]()


def check_backend_support(config: AdvConfig) -> None:
    """Raises before any work when `config` asks for a method the backend does not run.

    TRADES (`adv_loss="trades"`) and "free" training (`free_replays`) are TensorFlow code
    (NSL's KL and step pieces); NSL's labeled loss and VAT run on TensorFlow and JAX.
    """
    backend = keras.backend.backend()
    strategy = strategy_for(config)
    if backend in strategy.backends:
        return
    if config.free_replays is not None:
        raise ValueError(
            '"Free" adversarial training (`free_replays`) runs on the TensorFlow backend only. '
            f"Received: free_replays={config.free_replays!r} on backend={backend!r}"
        )
    raise ValueError(
        f"adv_loss={config.adv_loss!r} runs on the TensorFlow backend only. "
        f"Received: adv_loss={config.adv_loss!r} on backend={backend!r}"
    )


def check_target(strategy: AdversarialLoss, at_layers: bool) -> None:
    """Raises when the strategy cannot perturb at `AdversarialPerturbation` layers."""
    if at_layers and not strategy.at_layers:
        raise ValueError(
            f"{type(strategy).__name__} perturbs the model's inputs only; the base model has "
            "`AdversarialPerturbation` layers. Use adv_loss='labeled' or 'vat' there. "
            f"Received: {strategy.name or 'free_replays'!r} with AdversarialPerturbation layers"
        )


__all__ = ["check_backend_support", "check_target", "strategy_for"]
