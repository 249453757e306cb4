"""AdversarialRobustnessCallback (placeholder until issue 3 lands)."""

import keras


class AdversarialRobustnessCallback(keras.callbacks.Callback):  # placeholder
    pass
