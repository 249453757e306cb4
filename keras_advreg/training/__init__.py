"""Adversarial training: the `AdversarialRegularization` model and its `AdvConfig`."""

from keras_advreg.training.config import AdvConfig, make_adv_reg_config
from keras_advreg.training.functional import adversarial_loss
from keras_advreg.training.model import AdversarialRegularization
from keras_advreg.training.schedule import EpsilonSchedule

__all__ = [
    "AdvConfig",
    "AdversarialRegularization",
    "EpsilonSchedule",
    "adversarial_loss",
    "make_adv_reg_config",
]
