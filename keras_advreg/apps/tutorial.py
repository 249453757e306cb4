"""The tutorial's pieces: its CNN, its two training runs and its measurements.

NSL's adversarial-regularization tutorial (MNIST): a CNN trained plainly and with
adversarial regularization (FGSM neighbours, step 0.2, l-inf, multiplier 0.2); FGSM
examples generated on the base model scored on both; attacks on each model itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras
import numpy as np

from keras_advreg.apps.reporting import fit_verbosity, progress_bar
from keras_advreg.attacks import FGSM, generate_adversarial_examples
from keras_advreg.attacks import get as get_attack
from keras_advreg.evaluation import RobustnessReport, evaluate_robustness
from keras_advreg.training import AdvConfig, AdversarialRegularization

#: The tutorial's adversarial-regularization hyperparameters.
TUTORIAL_ADV_CONFIG = AdvConfig(multiplier=0.2, adv_step_size=0.2, adv_grad_norm="infinity")

#: Epsilon of the tutorial's perturbed-accuracy measurement (FGSM, l-inf).
PERTURBED_EPSILON = 0.2

#: Batch size of the robustness evaluation (also `keras-advreg evaluate`'s default).
EVAL_BATCH_SIZE = 256

#: Names of the two models, as in the tutorial.
BASE, ADV = "base", "adv-regularized"


def build_base_cnn(
    input_shape: Sequence[int] = (28, 28, 1), num_classes: int = 10, input_name: str = "image"
) -> keras.Model:
    """The tutorial's CNN: three 3x3 convolutions with max-pooling, Dense(64), logits.

    Args:
        input_shape: tuple of int. Image shape. Defaults to `(28, 28, 1)`.
        num_classes: int. Number of classes. Defaults to `10`.
        input_name: str. Name of the `Input` (the tutorial's feature key).
            Defaults to `"image"`.

    Returns:
        An uncompiled functional `keras.Model` producing logits.

    Example:

    >>> build_base_cnn().output.shape
    (None, 10)
    """
    inputs = keras.Input(tuple(input_shape), name=input_name)
    x = keras.layers.Conv2D(32, (3, 3), activation="relu")(inputs)
    x = keras.layers.MaxPooling2D((2, 2))(x)
    x = keras.layers.Conv2D(64, (3, 3), activation="relu")(x)
    x = keras.layers.MaxPooling2D((2, 2))(x)
    x = keras.layers.Conv2D(64, (3, 3), activation="relu")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(64, activation="relu")(x)
    outputs = keras.layers.Dense(num_classes)(x)
    return keras.Model(inputs, outputs, name="base_cnn")


def compile_tutorial(model: keras.Model) -> keras.Model:
    """Compiles as the tutorial does: adam, sparse cross-entropy on logits, accuracy."""
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def train_models(
    make_train_data: Callable[[], Any],
    *,
    epochs: int = 5,
    adv_config: AdvConfig = TUTORIAL_ADV_CONFIG,
    seed: int = 0,
    verbose: int = 1,
) -> tuple[dict[str, keras.Model], dict[str, dict]]:
    """Trains the base CNN and the adversarially regularised one from the same initial weights.

    Args:
        make_train_data: Callable returning the training data (a fresh
            dataset per model, so that both see the same order).
        epochs: int. Epochs per model. Defaults to `5`.
        adv_config: AdvConfig. Defaults to the tutorial's.
        seed: int. Seed set before each model is built. Defaults to `0`.
        verbose: int. Keras `fit` verbosity. Defaults to `1`.

    Returns:
        `(models, training)`: `{"base": model, "adv-regularized": wrapper}`
        and, per model, the seconds taken and the last epoch's logs.
    """
    models: dict[str, keras.Model] = {}
    training: dict[str, dict] = {}
    for name in (BASE, ADV):
        keras.utils.set_random_seed(seed)
        model = build_base_cnn()
        if name == ADV:
            model = AdversarialRegularization(model, adv_config=adv_config)
        compile_tutorial(model)
        if verbose:
            print(f"\nTraining the {name} model ({epochs} epoch(s))")
        start = time.perf_counter()
        # The dataset is shuffled already (tf.data); `shuffle=False` only silences a warning.
        history = model.fit(
            make_train_data(), epochs=epochs, verbose=fit_verbosity(verbose), shuffle=False
        )
        seconds = time.perf_counter() - start
        last = {k: float(v[-1]) for k, v in history.history.items()}
        models[name] = model
        training[name] = {"seconds": seconds, "final_logs": last}
    return models, training


# --------------------------------------------------------------------------- measurements
def robustness(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    epsilons: Sequence[float] | None = None,
    *,
    attack: Any = "fgsm",
    clip_value_min: Any = 0.0,
    clip_value_max: Any = 1.0,
    batch_size: int = EVAL_BATCH_SIZE,
    title: str | None = None,
    **kwargs: Any,
) -> RobustnessReport:
    """`evaluate_robustness` on arrays, with an optional progress bar titled `title`."""
    if isinstance(attack, str):  # a name: in the box; an attack object carries its own
        attack = get_attack(attack, clip_value_min=clip_value_min, clip_value_max=clip_value_max)
    epsilons = None if epsilons is None else tuple(epsilons)
    return evaluate_robustness(
        model,
        (x, y),
        epsilons,
        attack=attack,
        batch_size=batch_size,
        progress=progress_bar(len(y), batch_size, title),
        **kwargs,
    )


def transfer_accuracy(
    source: keras.Model,
    models: Mapping[str, keras.Model],
    x: np.ndarray,
    y: np.ndarray,
    *,
    epsilon: float = PERTURBED_EPSILON,
    norm: str = "infinity",
    batch_size: int = EVAL_BATCH_SIZE,
    keep: int = 32,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Accuracy of `models` on FGSM examples generated on `source`, clipped to `[0, 1]`.

    The tutorial's measurement: the perturbation comes from the base model's
    gradient and every model is scored on the same perturbed images.

    Returns:
        `(accuracy, sample)`: `{name: accuracy}` and the first `keep`
        perturbed images with their labels (`"image"`, `"label"`) and each
        model's predictions (under the model's name), for the grid.
    """
    correct = dict.fromkeys(models, 0)
    sample: dict[str, np.ndarray] = {}
    for start in range(0, len(y), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        x_adv, _, _ = generate_adversarial_examples(
            source,
            xb,
            yb,
            attack=FGSM(epsilon, norm=norm, clip_value_min=0.0, clip_value_max=1.0),
        )
        predictions = {}
        for name, model in models.items():
            target = getattr(model, "base_model", model)
            logits = target(x_adv, training=False)
            predictions[name] = np.argmax(np.asarray(logits), axis=-1)
            correct[name] += int(np.sum(predictions[name] == yb))
        if not sample:
            sample = {"image": x_adv[:keep], "label": yb[:keep]}
            sample.update({name: p[:keep] for name, p in predictions.items()})
    accuracy = {name: c / len(y) for name, c in correct.items()}
    return accuracy, sample


# --------------------------------------------------------------------------- the whole flow
