"""keras-tuner search over the adversarial hyperparameters: `AdversarialHyperModel`.

keras-tuner has no plugin registry; a `keras_tuner.HyperModel` subclass (like
`keras_tuner.applications.HyperResNet`) is its extension point, so the search
is a plain keras-tuner job:

```python
import keras_tuner as kt
from keras_advreg.tuning import AdversarialHyperModel, search

hypermodel = AdversarialHyperModel(build_base_model, loss=loss, metrics=["accuracy"])
tuner = kt.RandomSearch(hypermodel, objective=hypermodel.objective(), max_trials=10)
search(tuner, x_train, y_train, epochs=2, validation_data=(x_val, y_val))
config = hypermodel.get_adv_config(tuner.get_best_hyperparameters()[0])
```

A string objective naming one of keras_advreg's accuracies (`"val_adv_accuracy"`,
`"val_clean_adv_accuracy"`, `"val_adv_accuracy_eps_0.1"`) is maximised, as keras-tuner does
for `"val_accuracy"`.

Importing this package imports keras-tuner (`pip install "keras-advreg[tuner]"`).
"""

from keras_advreg.backend import keras_tuner_directions
from keras_advreg.tuning.hypermodel import AdversarialHyperModel
from keras_advreg.tuning.search import ADV_ACCURACY, CLEAN_ADV_ACCURACY, objective, search

# `objective="val_adv_accuracy"` (a string) works like `hypermodel.objective()`.
keras_tuner_directions.install()

__all__ = [
    "ADV_ACCURACY",
    "CLEAN_ADV_ACCURACY",
    "AdversarialHyperModel",
    "objective",
    "search",
]
