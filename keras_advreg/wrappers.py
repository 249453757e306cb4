"""Keras 3 AdversarialRegularization (being written)."""

import keras


class AdversarialRegularization(keras.Model):  # placeholder
    pass
