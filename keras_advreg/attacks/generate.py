"""`generate_adversarial_examples`: one batch in, its adversarial examples out."""

from __future__ import annotations

import warnings
from typing import Any

import keras
import numpy as np

from keras_advreg.attacks.base import resolve
from keras_advreg.attacks.bounds import UNBOUNDED, check_in_box, is_unbounded, with_model_bounds
from keras_advreg.attacks.heads import attack_target
from keras_advreg.attacks.problem import check_labels
from keras_advreg.attacks.runner import attack_batch, prepare
from keras_advreg.data.batching import as_floatx, model_inputs
from keras_advreg.utils import require_backend


def generate_adversarial_examples(
    model: keras.Model,
    x: Any,
    y: Any,
    epsilon: float | None = None,
    attack: Any = "pgd",
    norm: str | None = None,
    pgd_steps: int | None = None,
    pgd_step_size: float | None = None,
    random_start: bool | None = None,
    clip_value_min: Any = None,
    clip_value_max: Any = None,
    loss: Any = None,
    warn: bool = True,
) -> tuple[Any, np.ndarray, np.ndarray]:
    """Perturbs one batch with an attack (`evaluate_robustness`'s, on one radius).

    Args:
        model: keras.Model. The classifier to attack (white-box).
        x: array or dict of arrays. One batch of features.
        y: array. Its labels (class ids or one-hot).
        epsilon: float. Attack radius. Defaults to the attack's (`0.1`).
        attack: str, config dict or `keras_advreg.attacks.Attack`. Defaults to
            `"pgd"`.
        norm: Deprecated, as in `evaluate_robustness`: set it on `attack`.
        pgd_steps: Deprecated, as in `evaluate_robustness`.
        pgd_step_size: Deprecated, as in `evaluate_robustness`.
        random_start: Deprecated, as in `evaluate_robustness`.
        clip_value_min: Deprecated, as in `evaluate_robustness` (an attack
            without clip values takes the model's
            `keras_advreg.layers.InputRange`, if any).
        clip_value_max: Deprecated, as in `evaluate_robustness`.
        loss: As in `evaluate_robustness`.
        warn: bool. Warn when the attack is unbounded (no clip values and no
            `InputRange`), or `x` lies outside clip values given here (outside
            the model's `InputRange` it is an error). Defaults to `True`.

    Returns:
        `(x_adv, clean_predictions, adversarial_predictions)` as numpy values.

    Example:

    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    >>> model.set_weights([np.array([[1.0, -1.0], [0.0, 0.0]], "float32"), np.zeros(2, "float32")])
    >>> x_adv, clean, adv = generate_adversarial_examples(
    ...     model, np.array([[0.3, 0.5]], "float32"), np.array([0]), epsilon=0.5, attack="fgsm")
    >>> [round(float(v), 2) for v in x_adv[0]], clean.tolist(), adv.tolist()
    ([-0.2, 0.5], [0], [1])
    """
    require_backend("keras_advreg.generate_adversarial_examples")
    attack = resolve(
        attack,
        epsilon,
        epsilons_name="epsilon",
        caller="generate_adversarial_examples",
        norm=norm,
        clip_value_min=clip_value_min,
        clip_value_max=clip_value_max,
        pgd_steps=pgd_steps,
        pgd_step_size=pgd_step_size,
        random_start=random_start,
    )
    if len(attack.epsilons) != 1:
        raise ValueError(f"`epsilon` must be one number here. Received: epsilon={attack.epsilon!r}")
    attack, declared = with_model_bounds(model, attack)
    target = attack_target(model)
    x, y = model_inputs(target, as_floatx(x)), keras.ops.convert_to_numpy(y)
    problem, seed = prepare(model, attack, x, y, loss)
    check_labels(y, problem)
    outside = check_in_box(problem, x, "`x`", declared)
    if warn and outside is not None:
        warnings.warn(outside, stacklevel=2)
    if warn and is_unbounded(attack):
        warnings.warn(UNBOUNDED, stacklevel=2)
    result = attack_batch(model, attack, problem, x, y, attack.epsilons, seed, 0)
    x_adv = problem.unflatten(
        keras.tree.map_structure(keras.ops.convert_to_tensor, x), result.adversarial[0]
    )
    x_adv = keras.tree.map_structure(keras.ops.convert_to_numpy, x_adv)
    return x_adv, result.clean_predictions, result.adversarial_predictions[0]
