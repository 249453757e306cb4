"""What one trial needs besides the model: the clean+robust metric and the objective checks."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras
import keras_tuner as kt
import numpy as np
from keras_tuner import errors as kt_errors

from keras_advreg.tuning.search import ADV_ACCURACY, CLEAN_ADV_ACCURACY


class CleanAdvAccuracy(keras.callbacks.Callback):
    """Writes `val_clean_adv_accuracy`: robust and clean accuracy, weighted."""

    def __init__(self, robust_weight: float, clean_keys: Sequence[str]):
        super().__init__()
        self.robust_weight = robust_weight
        self.clean_keys = tuple(clean_keys)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or ADV_ACCURACY not in logs:
            return
        clean = next((logs[k] for k in self.clean_keys if k in logs), None)
        if clean is None:
            return
        w = self.robust_weight
        logs[CLEAN_ADV_ACCURACY] = float(w * logs[ADV_ACCURACY] + (1.0 - w) * clean)


def callable_name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


def map_list(fn: Callable, value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return type(value)(map_list(fn, v) for v in value)
    return fn(value)


def trial_objective(callbacks: Sequence[Any]) -> Any:
    """The objective of the tuner running this trial, via its `TunerCallback`."""
    for callback in callbacks:
        tuner = getattr(callback, "tuner", None)
        oracle = getattr(tuner, "oracle", None)
        if oracle is not None and hasattr(callback, "trial"):
            return oracle.objective
    return None


def objective_names(tuner_objective: Any) -> dict[str, str]:
    objectives = getattr(tuner_objective, "objectives", None) or [tuner_objective]
    names = {}
    for obj in objectives:
        if isinstance(obj, kt.Objective) and obj.name == "default_objective":
            raise kt_errors.FatalValueError(
                "The tuner has no objective. Pass `objective=hypermodel.objective()` "
                f'(keras_tuner.Objective("{ADV_ACCURACY}", "max")) to the tuner.'
            )
        names[obj.name] = obj.direction
    return names


def head_of(data: Any, n: int = 8) -> Any:
    return keras.tree.map_structure(lambda a: a[:n], data)


def first_batch(data: Any, n: int = 8) -> Any:
    """A few examples of numpy/tensor data, or the first batch of a dataset."""
    if isinstance(data, (tuple, list, Mapping)):
        return head_of(tuple(data) if isinstance(data, list) else data, n)
    return next(iter(data))


def evaluate_keys(model: keras.Model, validation_data: Any) -> list[str]:
    """Log keys of `model.evaluate` (the `val_` metrics of `fit`), on a few examples."""
    data = validation_data
    if isinstance(data, (tuple, list)) and all(
        isinstance(a, (np.ndarray, Mapping)) or hasattr(a, "shape") or a is None for a in data
    ):
        parts = [head_of(a) if a is not None else None for a in data]
        x, y, w = (list(parts) + [None, None])[:3]
        logs = model.evaluate(x, y, sample_weight=w, verbose=0, return_dict=True)
    elif isinstance(data, Mapping):
        logs = model.evaluate(head_of(data), verbose=0, return_dict=True)
    else:
        logs = model.evaluate(data, steps=1, verbose=0, return_dict=True)
    return list(logs)
