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

Importing this package imports keras-tuner (`pip install "keras-advreg[tuner]"`).
"""

from keras_advreg.tuning.hypermodel import AdversarialHyperModel
from keras_advreg.tuning.search import ADV_ACCURACY, CLEAN_ADV_ACCURACY, objective, search

__all__ = [
    "ADV_ACCURACY",
    "CLEAN_ADV_ACCURACY",
    "AdversarialHyperModel",
    "objective",
    "search",
]
