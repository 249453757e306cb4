"""Adversarial training: the `AdversarialRegularization` model and its `AdvConfig`."""

from keras_advreg.training.config import AdvConfig, make_adv_reg_config
from keras_advreg.training.model import AdversarialRegularization

__all__ = ["AdvConfig", "AdversarialRegularization", "make_adv_reg_config"]
