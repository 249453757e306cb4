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

Importing this module imports keras-tuner (`pip install "keras-advreg[tuner]"`).
"""

from __future__ import annotations

import copy
import importlib
import inspect
import math
import numbers
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

try:
    import keras_tuner as kt
    from keras_tuner import errors as kt_errors
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        'keras_advreg.tuning needs keras-tuner: pip install "keras-advreg[tuner]"'
    ) from e

import keras
import numpy as np

from keras_advreg.adapters import unpack_batch
from keras_advreg.callbacks import AdversarialRobustnessCallback
from keras_advreg.config import AdvConfig, normalize_norm
from keras_advreg.wrappers import AdversarialRegularization

#: Log key of the robust accuracy (first attack epsilon), written by the robustness callback.
ADV_ACCURACY = "val_adv_accuracy"
#: Log key of `robust_weight * val_adv_accuracy + (1 - robust_weight) * clean accuracy`.
CLEAN_ADV_ACCURACY = "val_clean_adv_accuracy"
#: Where the clean accuracy comes from, first found: the robustness callback's (same
#: examples as the robust accuracy), else Keras' validation accuracy.
CLEAN_ACCURACY_KEYS = (
    "val_clean_accuracy",
    "val_accuracy",
    "val_sparse_categorical_accuracy",
    "val_acc",
)

# Default search space. The tutorial's hand-picked values (0.2, 0.2, l-inf) are the
# hyperparameters' defaults (used where keras-tuner does not tune a value).
_FLOAT_SPACES = {
    "adv_multiplier": dict(min_value=0.01, max_value=1.0, sampling="log", default=0.2),
    "adv_step_size": dict(min_value=0.01, max_value=0.5, sampling="log", default=0.2),
    "pgd_epsilon": dict(min_value=0.01, max_value=0.5, sampling="log", default=0.2),
}


def _require_tensorboard() -> None:
    """keras-tuner imports tensorboard in every trial on the TF backend.

    Without it each trial is marked invalid while `search()` returns normally,
    so fail at construction instead.
    """
    if keras.backend.backend() != "tensorflow":
        return
    try:
        importlib.import_module("tensorboard")
    except ImportError as e:
        raise ImportError(
            "keras-tuner imports `tensorboard` in every trial on the TensorFlow backend; "
            "without it every trial fails. Install it with: "
            'pip install "keras-advreg[tuner]" (or pip install tensorboard)'
        ) from e


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


class _SearchDimension:
    """One searched (or fixed) hyperparameter, validated at construction."""

    def __init__(self, name: str, spec: Any, kind: str):
        self.name, self.spec, self.kind = name, spec, kind
        self.method, self.kwargs = self._parse(spec)
        # Dry run: keras-tuner's own checks (e.g. log sampling needs min > 0).
        try:
            self.declare(kt.HyperParameters())
        except ValueError as e:
            raise ValueError(
                f"`{name}` is not a valid search space: {e} Received: {name}={spec!r}"
            ) from None

    def _error(self, expected: str) -> ValueError:
        return ValueError(f"`{self.name}` must be {expected}. Received: {self.name}={self.spec!r}")

    def _parse(self, spec: Any) -> tuple[str, dict]:
        name, kind = self.name, self.kind
        if isinstance(spec, Mapping):
            kwargs = dict(spec)
            if kind == "choice":
                values = kwargs.get("values")
                if not values:
                    raise self._error("a non-empty list of norms")
                kwargs["values"] = [normalize_norm(v, name) for v in values]
                if "default" in kwargs:
                    kwargs["default"] = normalize_norm(kwargs["default"], name)
                return "Choice", kwargs
            if "min_value" not in kwargs or "max_value" not in kwargs:
                raise self._error("a dict with `min_value` and `max_value`")
            self._check_range(kwargs["min_value"], kwargs["max_value"])
            return ("Int" if kind == "int" else "Float"), kwargs
        if kind == "choice":
            if isinstance(spec, str) or hasattr(spec, "value"):
                return "Fixed", {"value": normalize_norm(spec, name)}
            if isinstance(spec, Sequence):
                if not spec:
                    raise self._error(
                        "a norm or a non-empty list of norms, e.g. ['infinity', 'l2']"
                    )
                values = list(dict.fromkeys(normalize_norm(v, name) for v in spec))
                return "Choice", {"values": values}
            raise self._error("a norm or a non-empty list of norms, e.g. ['infinity', 'l2']")
        if _is_number(spec):
            if kind == "int" and (not float(spec).is_integer() or spec < 1):
                raise self._error("an integer >= 1")
            if kind == "float" and (not math.isfinite(spec) or spec < 0):
                raise self._error("a finite number >= 0")
            return "Fixed", {"value": int(spec) if kind == "int" else float(spec)}
        if isinstance(spec, Sequence) and not isinstance(spec, str):
            if len(spec) != 2 or not all(_is_number(v) for v in spec):
                raise self._error("a number or a `(min_value, max_value)` pair")
            low, high = spec
            self._check_range(low, high)
            if kind == "int":
                return "Int", {"min_value": int(low), "max_value": int(high)}
            kwargs = dict(_FLOAT_SPACES.get(name, {}), min_value=float(low), max_value=float(high))
            if not low <= kwargs.get("default", low) <= high:
                kwargs["default"] = float(low)
            if low <= 0:  # log sampling needs a positive minimum
                kwargs["sampling"] = "linear"
            return "Float", kwargs
        raise self._error("a number, a `(min_value, max_value)` pair or a dict of hp kwargs")

    def _check_range(self, low: Any, high: Any) -> None:
        if not (_is_number(low) and _is_number(high)):
            raise self._error("a range of numbers")
        if low > high:
            raise ValueError(
                f"`{self.name}` is an empty range: min_value={low!r} is greater than "
                f"max_value={high!r}. Received: {self.name}={self.spec!r}"
            )
        if self.kind == "int" and low < 1:
            raise self._error("a range of integers >= 1")
        if self.kind == "float" and low < 0:
            raise self._error("a range of numbers >= 0")

    def declare(self, hp: Any) -> Any:
        return getattr(hp, self.method)(self.name, **self.kwargs)


class _CleanAdvAccuracy(keras.callbacks.Callback):
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


class AdversarialHyperModel(kt.HyperModel):
    """A keras-tuner `HyperModel` searching adversarial-regularization hyperparameters.

    `build(hp)` wraps `build_base_model(hp)` (or `build_base_model()`) in
    `keras_advreg.AdversarialRegularization`, with an `AdvConfig` read from the
    hyperparameters `adv_multiplier`, `adv_step_size`, `adv_grad_norm` and,
    when searched, `pgd_iterations` and `pgd_epsilon`; the model is compiled
    with `loss`, `optimizer` and `metrics`. `fit` adds an
    `AdversarialRobustnessCallback` on `validation_data` in front of the
    tuner's callbacks, so that the logs hold `val_adv_accuracy` (accuracy under
    the attack with the first of `epsilons`) and `val_clean_adv_accuracy`
    (`robust_weight * val_adv_accuracy + (1 - robust_weight) * clean
    accuracy`). Use `objective()` for the matching `keras_tuner.Objective`.

    Each search-space argument takes a number or norm (fixed: `hp.Fixed`), a
    `(min_value, max_value)` pair (`hp.Float`, log sampling for positive
    ranges; `hp.Int` for `pgd_iterations`), a list of norms (`hp.Choice`), a
    dict of keyword arguments for `hp.Float`/`hp.Int`/`hp.Choice` (e.g.
    `{"min_value": 0.05, "max_value": 0.3, "sampling": "linear",
    "default": 0.1}`), or `None` (not a hyperparameter: the value of
    `adv_config` is used). Values fixed beforehand in the tuner's
    `hyperparameters` (`hp.Fixed("adv_grad_norm", "l2")`) take precedence.

    Args:
        build_base_model: Callable. Returns the (uncompiled) base
            `keras.Model`; called with the `HyperParameters` if it takes an
            argument, so it can define its own hyperparameters.
        loss: Loss of the base model (as for `Model.compile`).
        optimizer: str, `keras.optimizers.Optimizer` (copied for every trial)
            or a callable `hp -> optimizer`. Defaults to `"adam"`.
        metrics: Metrics (as for `Model.compile`). Defaults to `None`.
        label_keys: str or tuple of str. Label keys of dict data. Defaults to
            `("label",)`.
        sample_weight_key: str. Sample-weight key of dict data. Defaults to
            `None`.
        adv_config: `AdvConfig`. Values of the fields not searched (clip
            values, `random_init`, `feature_mask`, ...). Defaults to
            `AdvConfig()`.
        adv_multiplier: Search space of the adversarial-loss weight. Defaults
            to `(0.01, 1.0)`, log sampling, default `0.2`.
        adv_step_size: Search space of the perturbation step size. Defaults
            to `(0.01, 0.5)`, log sampling, default `0.2`.
        adv_grad_norm: Norms to try. Defaults to `("infinity", "l2")`.
        pgd_iterations: Search space of the PGD steps (`1` is FGSM). Defaults
            to `None` (not searched: FGSM).
        pgd_epsilon: Search space of the PGD projection radius. Defaults to
            `None` (not searched).
        epsilons: float or tuple of float. Attack radii of the robustness
            evaluation; the first gives `val_adv_accuracy`, each also logs
            `val_adv_accuracy_eps_{epsilon}`. Defaults to `(0.1,)`.
        attack: str. Attack of the evaluation, `"fgsm"` or `"pgd"`. Defaults
            to `"fgsm"`.
        attack_norm: str. Norm of the evaluation attack. Defaults to
            `"infinity"`.
        clip_value_min: float. Lower clip of the evaluation's adversarial
            examples. Defaults to `adv_config.clip_value_min`.
        clip_value_max: float. Upper clip of the evaluation's adversarial
            examples. Defaults to `adv_config.clip_value_max`.
        max_eval_examples: int. Evaluate robustness on at most this many
            validation examples (faster trials). Defaults to `None` (all).
        robust_weight: float in [0, 1]. Weight of the robust accuracy in
            `val_clean_adv_accuracy`. Defaults to `0.5`.
        callback_kwargs: dict. More arguments for
            `AdversarialRobustnessCallback`. Defaults to `None`.
        name: str. Name of the hypermodel. Defaults to `None`.
        tunable: bool. As for `keras_tuner.HyperModel`. Defaults to `True`.

    Example:

    ```python
    import keras, keras_tuner as kt
    import keras_advreg
    from keras_advreg.tuning import AdversarialHyperModel, search

    def build_base_model(hp):
        return keras.Sequential([
            keras.Input((28, 28, 1)), keras.layers.Flatten(),
            keras.layers.Dense(hp.Int("units", 32, 128, step=32), activation="relu"),
            keras.layers.Dense(10)])

    hypermodel = AdversarialHyperModel(
        build_base_model,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        adv_config=keras_advreg.AdvConfig(clip_value_min=0.0, clip_value_max=1.0))
    tuner = kt.RandomSearch(hypermodel, objective=hypermodel.objective(), max_trials=10,
                            directory="tuning", project_name="mnist_adv")
    search(tuner, x_train, y_train, epochs=2, validation_data=(x_val, y_val))
    best_config = hypermodel.get_adv_config(tuner.get_best_hyperparameters()[0])
    ```
    """

    def __init__(
        self,
        build_base_model: Callable[..., keras.Model],
        *,
        loss: Any,
        optimizer: Any = "adam",
        metrics: Any = None,
        label_keys: str | Sequence[str] = ("label",),
        sample_weight_key: str | None = None,
        adv_config: AdvConfig | None = None,
        adv_multiplier: Any = (0.01, 1.0),
        adv_step_size: Any = (0.01, 0.5),
        adv_grad_norm: Any = ("infinity", "l2"),
        pgd_iterations: Any = None,
        pgd_epsilon: Any = None,
        epsilons: Sequence[float] = (0.1,),
        attack: str = "fgsm",
        attack_norm: str = "infinity",
        clip_value_min: Any = None,
        clip_value_max: Any = None,
        max_eval_examples: int | None = None,
        robust_weight: float = 0.5,
        callback_kwargs: Mapping[str, Any] | None = None,
        name: str | None = None,
        tunable: bool = True,
    ):
        super().__init__(name=name, tunable=tunable)
        _require_tensorboard()
        if not callable(build_base_model):
            raise TypeError(
                "`build_base_model` must be a callable returning a keras.Model. "
                f"Received: build_base_model={build_base_model!r}"
            )
        if loss is None:
            raise ValueError("`loss` is required (the loss of the base model). Received: loss=None")
        self.build_base_model = build_base_model
        self.loss = loss
        self.optimizer = optimizer
        self.metrics = metrics
        self.label_keys = label_keys
        self.sample_weight_key = sample_weight_key
        self.adv_config = AdvConfig.coerce(adv_config)
        self.adv_multiplier = adv_multiplier
        self.adv_step_size = adv_step_size
        self.adv_grad_norm = adv_grad_norm
        self.pgd_iterations = pgd_iterations
        self.pgd_epsilon = pgd_epsilon
        self.epsilons = epsilons
        self.attack = attack
        self.attack_norm = normalize_norm(attack_norm, "attack_norm")
        self.clip_value_min = (
            self.adv_config.clip_value_min if clip_value_min is None else clip_value_min
        )
        self.clip_value_max = (
            self.adv_config.clip_value_max if clip_value_max is None else clip_value_max
        )
        if max_eval_examples is not None and (
            isinstance(max_eval_examples, bool)
            or not isinstance(max_eval_examples, numbers.Integral)
            or max_eval_examples < 1
        ):
            raise ValueError(
                "`max_eval_examples` must be a positive integer or None. "
                f"Received: max_eval_examples={max_eval_examples!r}"
            )
        self.max_eval_examples = max_eval_examples
        if not _is_number(robust_weight) or not 0.0 <= robust_weight <= 1.0:
            raise ValueError(
                f"`robust_weight` must be a number in [0, 1]. Received: robust_weight={robust_weight!r}"
            )
        self.robust_weight = float(robust_weight)
        self.callback_kwargs = dict(callback_kwargs or {})
        reserved = sorted({"data", "metric_name"} & set(self.callback_kwargs))
        if reserved:
            raise ValueError(
                f"`callback_kwargs` cannot set {reserved}: the hypermodel passes the validation "
                f"data and logs {ADV_ACCURACY!r}. Received: callback_kwargs={callback_kwargs!r}"
            )
        # The callback checks its settings (epsilons, attack, norm, clip values) on creation.
        self.make_callback((np.zeros((1, 1), "float32"), np.zeros((1,), "int64")))
        specs = {
            "adv_multiplier": (adv_multiplier, "float"),
            "adv_step_size": (adv_step_size, "float"),
            "adv_grad_norm": (adv_grad_norm, "choice"),
            "pgd_iterations": (pgd_iterations, "int"),
            "pgd_epsilon": (pgd_epsilon, "float"),
        }
        self._dimensions = [
            _SearchDimension(key, spec, kind)
            for key, (spec, kind) in specs.items()
            if spec is not None
        ]
        self._check_l1_projection()
        # Fail now on an invalid combination of the defaults.
        self.get_adv_config(self.declare_search_space(kt.HyperParameters()))
        self._checked_objectives: set[str] = set()

    # ------------------------------------------------------------------ search space
    def _check_l1_projection(self) -> None:
        """NSL cannot project onto an l1 ball: no trial may pair 'l1' with a `pgd_epsilon`."""
        dims = {d.name: d for d in self._dimensions}
        norm = dims.get("adv_grad_norm")
        if norm is None:
            norms = [self.adv_config.adv_grad_norm]
        else:
            norms = norm.kwargs["values"] if norm.method == "Choice" else [norm.kwargs["value"]]
        if "l1" in norms and ("pgd_epsilon" in dims or self.adv_config.pgd_epsilon is not None):
            raise ValueError(
                "`adv_grad_norm` may not include 'l1' when `pgd_epsilon` is searched or set: NSL "
                "can only project perturbations onto an 'infinity' or 'l2' ball, so every trial "
                "drawing 'l1' would fail. Received: "
                f"adv_grad_norm={self.adv_grad_norm!r}, pgd_epsilon={self.pgd_epsilon!r}, "
                f"adv_config.pgd_epsilon={self.adv_config.pgd_epsilon!r}"
            )

    def declare_search_space(self, hp: Any) -> Any:
        """Declares the adversarial hyperparameters in `hp` and returns it."""
        for dimension in self._dimensions:
            dimension.declare(hp)
        return hp

    def get_adv_config(self, hp: Any) -> AdvConfig:
        """Returns the `AdvConfig` of a trial's hyperparameters (or a dict of values).

        Fields that are not hyperparameters come from `adv_config`.
        """
        return AdvConfig.from_hyperparameters(hp, base=self.adv_config)

    def objective(self, kind: str = "robust") -> Any:
        """Returns the `keras_tuner.Objective` to maximise.

        Args:
            kind: str. `"robust"`: `val_adv_accuracy`, the accuracy under the
                attack with the first of `epsilons`. `"clean_adv"`:
                `val_clean_adv_accuracy`, `robust_weight * robust + (1 -
                robust_weight) * clean` accuracy. Defaults to `"robust"`.
        """
        return objective(kind)

    # ------------------------------------------------------------------ keras-tuner hooks
    def build(self, hp: Any) -> AdversarialRegularization:
        config = self.get_adv_config(self.declare_search_space(hp))
        base = self._call_build_base_model(hp)
        model = AdversarialRegularization(
            base,
            label_keys=self.label_keys,
            sample_weight_key=self.sample_weight_key,
            adv_config=config,
        )
        model.compile(
            optimizer=self._make_optimizer(hp), loss=self.loss, metrics=self._copy_metrics()
        )
        return model

    def fit(
        self,
        hp: Any,
        model: keras.Model,
        *args: Any,
        callbacks=None,
        validation_data=None,
        **kwargs: Any,
    ):
        """Trains `model` with the robustness callback first among `callbacks`."""
        if validation_data is None:
            split = " (validation_split is not supported)" if "validation_split" in kwargs else ""
            raise kt_errors.FatalValueError(
                "AdversarialHyperModel measures robustness on the validation data: pass "
                "`validation_data=(x_val, y_val)` (or a dataset) to `tuner.search(...)`. "
                f"Received: validation_data=None{split}"
            )
        callbacks = list(callbacks or [])
        self._ensure_built(model, validation_data)
        robustness = self.make_callback(validation_data)
        tuner_objective = _tuner_objective(callbacks)
        if tuner_objective is not None:
            self._check_objective(tuner_objective, model, validation_data, robustness)
        callbacks[:0] = [robustness, _CleanAdvAccuracy(self.robust_weight, self._clean_keys())]
        return model.fit(*args, callbacks=callbacks, validation_data=validation_data, **kwargs)

    def make_callback(self, validation_data: Any) -> AdversarialRobustnessCallback:
        """Returns the `AdversarialRobustnessCallback` a trial uses."""
        kwargs = dict(
            epsilons=self.epsilons,
            attack=self.attack,
            norm=self.attack_norm,
            clip_value_min=self.clip_value_min,
            clip_value_max=self.clip_value_max,
            max_examples=self.max_eval_examples,
            label_keys=self.label_keys,
        )
        kwargs.update(self.callback_kwargs)
        return AdversarialRobustnessCallback(validation_data, **kwargs)

    # ------------------------------------------------------------------ helpers
    def _call_build_base_model(self, hp: Any) -> keras.Model:
        fn = self.build_base_model
        try:
            params = inspect.signature(fn).parameters.values()
            takes_hp = any(
                p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
                for p in params
            )
        except (TypeError, ValueError):  # builtins without a signature
            takes_hp = True
        base = fn(hp) if takes_hp else fn()
        if isinstance(base, AdversarialRegularization):
            raise kt_errors.FatalTypeError(
                "`build_base_model` must return the base model; AdversarialHyperModel wraps it "
                "in AdversarialRegularization itself. Received: an AdversarialRegularization"
            )
        if not isinstance(base, keras.Model):
            raise kt_errors.FatalTypeError(
                f"`build_base_model` must return a keras.Model. Received: {base!r} "
                f"(of type {type(base).__name__}) from build_base_model={_name(fn)}"
            )
        return base

    def _ensure_built(self, model: keras.Model, validation_data: Any) -> None:
        """Builds the wrapper on a few validation examples if `build` could not.

        keras-tuner saves the best epoch's weights (`save_weights`) and reloads
        them into `build(hp)`'s model, both of which need a built model.
        """
        if model.built:
            return
        features, _, _ = unpack_batch(
            _first_batch(validation_data), self.label_keys, self.sample_weight_key
        )
        model(features)

    def _make_optimizer(self, hp: Any) -> Any:
        optimizer = self.optimizer
        if isinstance(optimizer, keras.optimizers.Optimizer):
            return optimizer.__class__.from_config(optimizer.get_config())
        if callable(optimizer) and not isinstance(optimizer, type):
            return optimizer(hp)
        return copy.deepcopy(optimizer)

    def _copy_metrics(self) -> Any:
        def copy_one(metric):
            if isinstance(metric, keras.metrics.Metric):
                return metric.__class__.from_config(metric.get_config())
            return metric

        metrics = self.metrics
        if metrics is None:
            return None
        if isinstance(metrics, Mapping):
            return {k: _map_list(copy_one, v) for k, v in metrics.items()}
        return _map_list(copy_one, metrics)

    def _clean_keys(self) -> tuple[str, ...]:
        return CLEAN_ACCURACY_KEYS

    def _check_objective(self, tuner_objective, model, validation_data, robustness) -> None:
        names = _objective_names(tuner_objective)
        if not names or set(names) <= self._checked_objectives:
            return
        produced = set(_evaluate_keys(model, validation_data))
        produced |= {"val_" + k for k in produced}
        produced |= set(_callback_keys(robustness, self.epsilons))
        produced.add(ADV_ACCURACY)
        if produced & set(self._clean_keys()):
            produced.add(CLEAN_ADV_ACCURACY)
        for name, direction in names.items():
            if name not in produced:
                raise kt_errors.FatalValueError(
                    f"The tuner's objective {name!r} is not a metric the trials produce. "
                    f"Expected one of {sorted(produced)}; use "
                    f"`objective=hypermodel.objective()` for {ADV_ACCURACY!r}. "
                    f"Received: objective={tuner_objective}"
                )
            if name in (ADV_ACCURACY, CLEAN_ADV_ACCURACY) and direction != "max":
                raise kt_errors.FatalValueError(
                    f"{name!r} is an accuracy and must be maximised: use "
                    f'keras_tuner.Objective("{name}", "max"). Received: direction={direction!r}'
                )
        self._checked_objectives |= set(names)


# ---------------------------------------------------------------------- module helpers
def objective(kind: str = "robust") -> Any:
    """Returns the `keras_tuner.Objective` for the robustness metrics.

    Args:
        kind: str. `"robust"` (`val_adv_accuracy`) or `"clean_adv"`
            (`val_clean_adv_accuracy`). Defaults to `"robust"`.

    Example:

    >>> spec = objective("robust")
    >>> spec.name, spec.direction
    ('val_adv_accuracy', 'max')
    """
    names = {"robust": ADV_ACCURACY, "clean_adv": CLEAN_ADV_ACCURACY}
    if kind not in names:
        raise ValueError(f"`kind` must be one of {sorted(names)}. Received: kind={kind!r}")
    return kt.Objective(names[kind], "max")


def search(tuner: Any, *fit_args: Any, **fit_kwargs: Any) -> list:
    """Runs `tuner.search(...)` and makes failed trials visible.

    keras-tuner marks a trial that raises as failed/invalid and goes on, so a
    search where every trial failed returns normally with no scores. This
    raises instead, with the first failed trial's error, and warns when only
    some trials failed. On a distributed worker (`KERASTUNER_TUNER_ID` not a
    chief) the chief holds the trials, and nothing is checked.

    Args:
        tuner: A keras-tuner tuner (`RandomSearch`, `BayesianOptimization`,
            `Hyperband`, ...).
        *fit_args: Passed to `tuner.search` (e.g. `x, y`).
        **fit_kwargs: Passed to `tuner.search` (e.g. `epochs`,
            `validation_data`).

    Returns:
        The completed trials (`keras_tuner.engine.trial.Trial`), in trial order.

    Raises:
        RuntimeError: If trials ran and none completed.
    """
    try:
        tuner.search(*fit_args, **fit_kwargs)
    except RuntimeError as e:
        # keras-tuner stops after `max_consecutive_failed_trials` failures with the
        # last trial's traceback; report the first one, like a search that ran out.
        failed, completed = _failed_and_completed(tuner)
        if failed and not completed:
            raise RuntimeError(_all_failed_message(failed)) from e
        raise
    failed, completed = _failed_and_completed(tuner)
    if failed and not completed:
        raise RuntimeError(_all_failed_message(failed))
    if failed:
        warnings.warn(
            f"{len(failed)} of {len(failed) + len(completed)} trials failed; the first "
            f"(trial {failed[0].trial_id}) with {_last_line(failed[0].message)}\n"
            f"{failed[0].message}",
            RuntimeWarning,
            stacklevel=2,
        )
    return completed


def _failed_and_completed(tuner: Any) -> tuple[list, list]:
    trials = getattr(tuner.oracle, "trials", None)
    if not isinstance(trials, Mapping):  # OracleClient on a distributed worker
        return [], []
    ordered = sorted(trials.values(), key=lambda t: _trial_order(t.trial_id))
    completed = [t for t in ordered if t.status == "COMPLETED"]
    failed = [t for t in ordered if t.status in ("FAILED", "INVALID")]
    return failed, completed


def _all_failed_message(failed: list) -> str:
    first = failed[0]
    return (
        f"All {len(failed)} trial(s) of the search failed. The first trial's error "
        f"(trial {first.trial_id}, status {first.status}): {_last_line(first.message)}\n"
        f"{first.message}"
    )


def _last_line(message: str | None) -> str:
    lines = [line for line in (message or "").splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(no message)"


def _trial_order(trial_id: str) -> tuple:
    return (0, int(trial_id), "") if str(trial_id).isdigit() else (1, 0, str(trial_id))


def _name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


def _map_list(fn: Callable, value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return type(value)(_map_list(fn, v) for v in value)
    return fn(value)


def _tuner_objective(callbacks: Sequence[Any]) -> Any:
    """The objective of the tuner running this trial, via its `TunerCallback`."""
    for callback in callbacks:
        tuner = getattr(callback, "tuner", None)
        oracle = getattr(tuner, "oracle", None)
        if oracle is not None and hasattr(callback, "trial"):
            return oracle.objective
    return None


def _objective_names(tuner_objective: Any) -> dict[str, str]:
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


def _head(data: Any, n: int = 8) -> Any:
    return keras.tree.map_structure(lambda a: a[:n], data)


def _first_batch(data: Any, n: int = 8) -> Any:
    """A few examples of numpy/tensor data, or the first batch of a dataset."""
    if isinstance(data, (tuple, list, Mapping)):
        return _head(tuple(data) if isinstance(data, list) else data, n)
    return next(iter(data))


def _evaluate_keys(model: keras.Model, validation_data: Any) -> list[str]:
    """Log keys of `model.evaluate` (the `val_` metrics of `fit`), on a few examples."""
    data = validation_data
    if isinstance(data, (tuple, list)) and all(
        isinstance(a, (np.ndarray, Mapping)) or hasattr(a, "shape") or a is None for a in data
    ):
        parts = [_head(a) if a is not None else None for a in data]
        x, y, w = (list(parts) + [None, None])[:3]
        logs = model.evaluate(x, y, sample_weight=w, verbose=0, return_dict=True)
    elif isinstance(data, Mapping):
        logs = model.evaluate(_head(data), verbose=0, return_dict=True)
    else:
        logs = model.evaluate(data, steps=1, verbose=0, return_dict=True)
    return list(logs)


def _callback_keys(callback: Any, epsilons: Sequence[float]) -> list[str]:
    for attr in ("log_keys", "metric_names", "keys"):
        value = getattr(callback, attr, None)
        if callable(value):
            try:
                value = value()
            except TypeError:
                value = None
        if isinstance(value, (list, tuple, set)):
            return [str(v) for v in value]
    return [ADV_ACCURACY]


__all__ = [
    "ADV_ACCURACY",
    "CLEAN_ADV_ACCURACY",
    "AdversarialHyperModel",
    "objective",
    "search",
]
