"""`AdversarialHyperModel`: a keras-tuner `HyperModel` over adversarial regularization.

Each trial wraps the user's base model in `AdversarialRegularization` with the trial's
`AdvConfig`, and measures robustness with `AdversarialRobustnessCallback` on the
validation data (see `keras_advreg.tuning`).
"""

from __future__ import annotations

import copy
import importlib
import inspect
import numbers
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

from keras_advreg.attacks.base import resolve
from keras_advreg.callbacks.robustness import AdversarialRobustnessCallback
from keras_advreg.data.adapters import unpack_batch
from keras_advreg.log_keys import CLEAN_ACCURACY
from keras_advreg.training.config import AdvConfig
from keras_advreg.training.model import AdversarialRegularization
from keras_advreg.tuning.search import ADV_ACCURACY, CLEAN_ADV_ACCURACY, objective
from keras_advreg.tuning.search_space import SearchDimension
from keras_advreg.tuning.trial import (
    CleanAdvAccuracy,
    callable_name,
    evaluate_keys,
    first_batch,
    map_list,
    objective_names,
    trial_objective,
)
from keras_advreg.utils import is_number, require_tensorflow_backend

#: Where the clean accuracy comes from, first found: the robustness callback's (same
#: examples as the robust accuracy), else Keras' validation accuracy.
CLEAN_ACCURACY_KEYS = (
    CLEAN_ACCURACY,
    "val_accuracy",
    "val_sparse_categorical_accuracy",
    "val_acc",
)


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
            or a callable `hp -> optimizer`. Defaults to `"adam"`. When
            `build_base_model` returns a compiled model (keras-tuner's
            getting-started style, e.g. `Adam(hp.Choice("learning_rate",
            ...))`), its optimizer, loss and metrics are used instead of
            `optimizer`, `loss` and `metrics`.
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
        adv_loss: The adversarial loss(es) to try: `"labeled"` (NSL's),
            `"trades"`, or a list of both. Defaults to `None` (not searched:
            `adv_config.adv_loss`).
        adv_method: The training method(s) to try: `"nsl"` (NSL's FGSM/PGD
            neighbours as configured), `"fast"` (FGSM from a random start,
            step 1.25 eps) or `"free"` (free training), or a list of them;
            eps is `pgd_epsilon` or else `adv_step_size` (see
            `AdvConfig.from_hyperparameters`). A "free" trial makes
            `free_replays` optimizer updates per batch. Defaults to
            `None` (not searched: as `adv_config` says).
        free_replays: Search space of "free" training's replays per batch.
            Defaults to `None` (not searched: `adv_config.free_replays`, or 8).
        epsilons: float or tuple of float. Attack radii of the robustness
            evaluation; the first gives `val_adv_accuracy`, each also logs
            `val_adv_accuracy_eps_{epsilon}`. Defaults to `(0.1,)`.
        attack: str, config dict or `keras_advreg.attacks.Attack`. Attack of
            the evaluation that the objective is measured by (resolved once,
            here). Where it has no clip range, `adv_config`'s is used (and where that has
            none either, the base model's `keras_advreg.layers.InputRange`).
            Defaults to `"autoattack-fast"` (APGD-CE + APGD-T, l-inf): a
            single-step attack would let the search select gradient-masked
            configurations.
        attack_norm: Deprecated: set the norm on `attack` (e.g.
            `attacks.AutoAttack(version="fast", norm="l2")`).
        clip_value_min: Deprecated: set the clip range on `attack`.
        clip_value_max: Deprecated: set the clip range on `attack`.
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
        adv_loss: Any = None,
        adv_method: Any = None,
        free_replays: Any = None,
        epsilons: Any = (0.1,),
        attack: Any = "autoattack-fast",
        attack_norm: str | None = None,
        clip_value_min: Any = None,
        clip_value_max: Any = None,
        max_eval_examples: int | None = None,
        robust_weight: float = 0.5,
        callback_kwargs: Mapping[str, Any] | None = None,
        name: str | None = None,
        tunable: bool = True,
    ):
        super().__init__(name=name, tunable=tunable)
        require_tensorflow_backend("keras_advreg.tuning.AdversarialHyperModel")
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
        self.adv_loss = adv_loss
        self.adv_method = adv_method
        self.free_replays = free_replays
        self.epsilons = epsilons
        # The evaluation's attack, resolved once; the training's box where it has none.
        self.attack = resolve(
            attack,
            epsilons,
            caller="AdversarialHyperModel",
            norm=attack_norm,
            clip_value_min=clip_value_min,
            clip_value_max=clip_value_max,
        )
        box = {
            field: getattr(self.adv_config, field)
            for field in ("clip_value_min", "clip_value_max")
            if getattr(self.attack, field) is None
        }
        self.attack = self.attack.replace(**box) if box else self.attack
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
        if not is_number(robust_weight) or not 0.0 <= robust_weight <= 1.0:
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
        specs = {
            "adv_multiplier": (adv_multiplier, "float"),
            "adv_step_size": (adv_step_size, "float"),
            "adv_grad_norm": (adv_grad_norm, "choice"),
            "pgd_iterations": (pgd_iterations, "int"),
            "pgd_epsilon": (pgd_epsilon, "float"),
            "adv_loss": (adv_loss, "choice"),
            "adv_method": (adv_method, "choice"),
            "free_replays": (free_replays, "int"),
        }
        self._dimensions = [
            SearchDimension(key, spec, kind)
            for key, (spec, kind) in specs.items()
            if spec is not None
        ]
        self._check_l1_projection()
        # Fail now on an invalid combination of the defaults, with each method searched.
        defaults = self.declare_hyperparameters(kt.HyperParameters()).values
        for method in self._dimension_values("adv_method") or [None]:
            self.get_adv_config({**defaults, "adv_method": method})
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

    def declare_hyperparameters(self, hp: Any) -> Any:
        """Declares the adversarial hyperparameters in `hp` and returns it.

        keras-tuner calls this hook when the tuner is created, so the search
        space is known before the first trial.
        """
        for dimension in self._dimensions:
            dimension.declare(hp)
        return hp

    def get_adv_config(self, hp: Any) -> AdvConfig:
        """Returns the `AdvConfig` of a trial's hyperparameters (or a dict of values).

        `AdvConfig.from_hyperparameters(hp, base=adv_config)`: fields that are
        not hyperparameters come from `adv_config`; the `adv_method`
        hyperparameter, when searched, then applies the method's recipe.
        """
        values = hp if isinstance(hp, Mapping) else hp.values
        try:
            return AdvConfig.from_hyperparameters(values, base=self.adv_config)
        except ValueError as error:
            raise ValueError(
                f"Invalid adversarial hyperparameters {dict(values)}: {error}"
            ) from None

    def _dimension_values(self, name: str) -> list:
        return next((d.values() for d in self._dimensions if d.name == name), [])

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
        config = self.get_adv_config(self.declare_hyperparameters(hp))
        base = self._call_build_base_model(hp)
        model = AdversarialRegularization(
            base,
            label_keys=self.label_keys,
            sample_weight_key=self.sample_weight_key,
            adv_config=config,
        )
        optimizer, loss, metrics = None, self.loss, self._copy_metrics()
        if getattr(base, "compiled", False):  # keras-tuner's style: the builder compiles
            compiled = keras.saving.deserialize_keras_object(base.get_compile_config())
            optimizer = base.optimizer
            loss = compiled.get("loss") or loss
            metrics = compiled.get("metrics") or metrics
        if optimizer is None:
            optimizer = self._make_optimizer(hp)
        model.compile(optimizer=optimizer, loss=loss, metrics=metrics)
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
        tuner_objective = trial_objective(callbacks)
        if tuner_objective is not None:
            self._check_objective(tuner_objective, model, validation_data, robustness)
        callbacks[:0] = [robustness, CleanAdvAccuracy(self.robust_weight, self._clean_keys())]
        return model.fit(*args, callbacks=callbacks, validation_data=validation_data, **kwargs)

    def make_callback(self, validation_data: Any) -> AdversarialRobustnessCallback:
        """Returns the `AdversarialRobustnessCallback` a trial uses."""
        kwargs = dict(
            attack=self.attack,
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
                f"(of type {type(base).__name__}) from build_base_model={callable_name(fn)}"
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
            first_batch(validation_data), self.label_keys, self.sample_weight_key
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
            return {k: map_list(copy_one, v) for k, v in metrics.items()}
        return map_list(copy_one, metrics)

    def _clean_keys(self) -> tuple[str, ...]:
        return CLEAN_ACCURACY_KEYS

    def _check_objective(self, tuner_objective, model, validation_data, robustness) -> None:
        names = objective_names(tuner_objective)
        if not names or set(names) <= self._checked_objectives:
            return
        produced = set(evaluate_keys(model, validation_data))
        produced |= {"val_" + k for k in produced}
        produced |= set(robustness.log_keys)
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


__all__ = ["AdversarialHyperModel"]
