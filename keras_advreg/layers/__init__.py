"""Layers users place in their models."""

from keras_advreg.layers.perturbation import AdversarialPerturbation

__all__ = ["AdversarialPerturbation"]
