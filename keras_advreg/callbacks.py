"""`AdversarialRobustnessCallback`: white-box robust accuracy as a Keras metric during `fit`."""

from __future__ import annotations

import copy
import re
import warnings
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_advreg.attacks import (
    AttackSpec,
    _attack_target,
    _batches,
    _check_positive_int,
    _format_eps,
    generate_adversarial_examples,
)
from keras_advreg.robustness import RobustnessReport, evaluate_robustness

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class AdversarialRobustnessCallback(keras.callbacks.Callback):
    """Logs white-box adversarial accuracy at the end of training epochs.

    At the end of every `every_n_epochs`-th epoch (epochs `n`, `2n`, ...
    counting from 1, as Keras' `validation_freq=n`), of the last epoch, and
    of the first epoch (so that every epoch has values), it runs
    `keras_advreg.evaluate_robustness` on `data` against the model being
    trained (the `base_model` of an `AdversarialRegularization`) and writes
    into `logs`:

    - `metric_name` (default `"val_adv_accuracy"`): accuracy at the first
      epsilon;
    - `f"{metric_name}_eps_{epsilon:g}"`: accuracy at each epsilon, e.g.
      `val_adv_accuracy_eps_0.1`;
    - `"val_clean_accuracy"`: accuracy on the unperturbed `data`.

    On the epochs in between, the last measured values are written again, so
    that every epoch has the keys (EarlyStopping and ModelCheckpoint warn about
    missing keys, and CSVLogger fixes its columns at the first epoch); those
    values are then one or more epochs old.

    Place it FIRST in `callbacks=[...]`: Keras calls callbacks in list order
    with one shared `logs` dict, so EarlyStopping, ModelCheckpoint, CSVLogger,
    TensorBoard and keras-tuner only see the keys of callbacks before them.

    The configuration is checked at construction, and the model is run on one
    batch of `data` in `on_train_begin` (labels present and in range, output a
    classifier), so a bad setting fails before the first epoch. The callback
    can be deep-copied (keras-tuner copies callbacks per trial): the copy
    shares `data`, which tf.data datasets allow (they are immutable).

    Args:
        data: `(x, y)` arrays, a dict of features with the label key(s), or a
            `tf.data.Dataset` of either (batches, or single examples as
            `evaluate_robustness` recognizes them). Held-out data to attack.
        epsilons: float or sequence of floats >= 0. Attack radii; the first
            is logged as `metric_name`. Defaults to `(0.1,)`.
        attack: str. `"fgsm"` or `"pgd"`. Defaults to `"fgsm"`.
        norm: str. `"infinity"`, `"l2"` or `"l1"` (FGSM only). Defaults to
            `"infinity"`.
        pgd_steps: int. PGD iterations. Defaults to `10`.
        pgd_step_size: float. PGD step size. Defaults to `None`
            (`2.5 * epsilon / pgd_steps`).
        random_start: bool. Start PGD at a random point of the ball.
            Defaults to `True`.
        clip_value_min: float or dict per feature. Lower bound of perturbed
            features (`0.0` for images in [0, 1]). Defaults to `None`.
        clip_value_max: float or dict per feature. Upper bound. Defaults to
            `None`.
        batch_size: int. Batch size for array data. Defaults to `256`.
        loss: str, callable or `keras.losses.Loss`. Loss to attack. Defaults
            to `None` (cross-entropy on the logits).
        label_keys: str or sequence of str. Label key(s) of feature dicts.
            Defaults to `("label",)`.
        every_n_epochs: int. Evaluate at the end of epochs `n`, `2n`, ...
            (counting from 1, like Keras' `validation_freq`), the first and
            the last. Defaults to `1`.
        max_examples: int. Evaluate at most this many examples of `data`.
            Defaults to `None` (all).
        metric_name: str. Log key of the accuracy at the first epsilon.
            Defaults to `"val_adv_accuracy"`.
        log_dir: str. If given, image summaries of clean and perturbed
            examples (first epsilon) are written there for TensorBoard.
            Defaults to `None`.
        num_images: int. Number of examples in those summaries. Defaults to
            `8`.
        verbose: int. `1` prints the accuracies after each evaluation.
            Defaults to `0`.

    Example:

    >>> callback = AdversarialRobustnessCallback(
    ...     (x_val, y_val), epsilons=(0.1, 0.2), clip_value_min=0.0, clip_value_max=1.0
    ... )  # doctest: +SKIP
    >>> model.fit(x, y, epochs=10, callbacks=[
    ...     callback,  # first: the callbacks after it see `val_adv_accuracy`
    ...     keras.callbacks.EarlyStopping(monitor="val_adv_accuracy", mode="max"),
    ...     keras.callbacks.CSVLogger("log.csv"),
    ... ])  # doctest: +SKIP
    """

    def __init__(
        self,
        data: Any,
        epsilons: Any = (0.1,),
        attack: str = "fgsm",
        norm: str = "infinity",
        pgd_steps: int = 10,
        pgd_step_size: float | None = None,
        random_start: bool = True,
        clip_value_min: Any = None,
        clip_value_max: Any = None,
        batch_size: int = 256,
        loss: Any = None,
        label_keys: Any = ("label",),
        every_n_epochs: int = 1,
        max_examples: int | None = None,
        metric_name: str = "val_adv_accuracy",
        log_dir: str | None = None,
        num_images: int = 8,
        verbose: int = 0,
    ):
        super().__init__()
        if not isinstance(data, (tf.data.Dataset, tuple, list, Mapping)):
            raise TypeError(
                "`data` must be `(x, y)` arrays, a dict of features and labels, or a "
                f"tf.data.Dataset. Received: data of type {type(data).__name__}"
            )
        self.data = data
        self.epsilons = epsilons
        self.attack = attack
        self.norm = norm
        self.pgd_steps = pgd_steps
        self.pgd_step_size = pgd_step_size
        self.random_start = random_start
        self.clip_value_min = clip_value_min
        self.clip_value_max = clip_value_max
        self.batch_size = _check_positive_int("batch_size", batch_size)
        self.loss = loss
        self.label_keys = label_keys
        self.every_n_epochs = _check_positive_int("every_n_epochs", every_n_epochs)
        self.max_examples = _check_positive_int("max_examples", max_examples, allow_none=True)
        if not isinstance(metric_name, str) or not _NAME.match(metric_name):
            raise ValueError(
                "`metric_name` must be a non-empty string of letters, digits, '_', '.' or '-' "
                f"(a valid TensorBoard/CSV name). Received: metric_name={metric_name!r}"
            )
        self.metric_name = metric_name
        self.log_dir = None if log_dir is None else str(log_dir)
        self.num_images = _check_positive_int("num_images", num_images)
        self.verbose = verbose
        # Validates epsilons, attack, norm, PGD and clip settings now, not at the first epoch.
        self._spec = AttackSpec(
            epsilons,
            attack,
            norm,
            pgd_steps,
            pgd_step_size,
            random_start,
            clip_value_min,
            clip_value_max,
        )
        self._reset_state()

    # ------------------------------------------------------------------ state
    def _reset_state(self) -> None:
        self.last_report: RobustnessReport | None = None
        self.reports: dict[int, RobustnessReport] = {}
        self._last_values: dict[str, float] | None = None
        self._warned: set[str] = set()
        self._images: tuple[Any, Any] | None = None
        self._writer = None

    @property
    def log_keys(self) -> list[str]:
        """The keys this callback writes into `logs`."""
        per_eps = [f"{self.metric_name}_eps_{_format_eps(e)}" for e in self._spec.epsilons]
        return [self.metric_name, *per_eps, "val_clean_accuracy"]

    def __deepcopy__(self, memo: dict) -> AdversarialRobustnessCallback:
        """Copies the configuration; shares `data` (a tf.data.Dataset cannot be copied)."""
        cls = type(self)
        new = cls.__new__(cls)
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            if key == "data":
                new.__dict__[key] = value
            elif key in ("_model", "params", "_writer"):
                new.__dict__[key] = None
            else:
                new.__dict__[key] = copy.deepcopy(value, memo)
        new._reset_state()
        return new

    def _evaluate(self, max_examples: int | None) -> RobustnessReport:
        spec = self._spec
        return evaluate_robustness(
            self.model,
            self.data,
            epsilons=spec.epsilons,
            attack=spec.attack,
            norm=spec.norm,
            pgd_steps=spec.pgd_steps,
            pgd_step_size=spec.pgd_step_size,
            random_start=spec.random_start,
            clip_value_min=spec.clip_value_min,
            clip_value_max=spec.clip_value_max,
            batch_size=self.batch_size,
            loss=self.loss,
            label_keys=self.label_keys,
            max_examples=max_examples,
            warn=False,
        )

    # ------------------------------------------------------------------ Keras hooks
    def on_train_begin(self, logs: dict | None = None) -> None:
        self._reset_state()
        probe = min(self.batch_size, self.max_examples or self.batch_size)
        try:  # one batch: labels, output shape and the attack itself, before epoch 1
            self._evaluate(max_examples=probe)
        except (ValueError, TypeError) as error:
            raise type(error)(
                f"AdversarialRobustnessCallback cannot attack the model on the first batch of "
                f"`data`: {error}"
            ) from error
        if self.log_dir is not None:
            self._images = self._first_examples()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is None:
            return
        last_epoch = (self.params or {}).get("epochs")
        # Keras' `validation_freq` schedule: epochs n, 2n, ... (counting from 1) and the last.
        due = (epoch + 1) % self.every_n_epochs == 0 or epoch + 1 == last_epoch
        if due or self._last_values is None:
            report = self._evaluate(self.max_examples)
            self.last_report = report
            self.reports[epoch] = report
            keys = self.log_keys
            values = [report.robust_accuracy, *report.accuracy.values(), report.clean_accuracy]
            self._last_values = dict(zip(keys, values, strict=True))
            self._warn(report)
            if self._images is not None:
                self._write_images(epoch)
            if self.verbose:
                shown = ", ".join(f"{k}={v:.4f}" for k, v in self._last_values.items())
                print(f"\nEpoch {epoch + 1}: {shown}")
        logs.update(self._last_values)

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # ------------------------------------------------------------------ helpers
    def _warn(self, report: RobustnessReport) -> None:
        for message in report.warnings:
            kind = re.sub(r"[0-9.%]+", "#", message)  # once per kind of finding, not per epoch
            if kind not in self._warned:
                self._warned.add(kind)
                warnings.warn(f"AdversarialRobustnessCallback: {message}", stacklevel=2)

    def _first_examples(self) -> tuple[Any, Any] | None:
        batches = _batches(
            self.data,
            self.num_images,
            self.label_keys,
            None,
            self.num_images,
            _attack_target(self.model),
        )
        batch = next(batches, None)
        if batch is None:
            return None
        x, y = batch
        if isinstance(x, Mapping):
            x = next(iter(x.values())) if len(x) == 1 else None
        x = np.asarray(x) if x is not None else np.zeros(())
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4 or x.shape[-1] not in (1, 3, 4):
            warnings.warn(
                "AdversarialRobustnessCallback: `log_dir` image summaries need image features "
                f"of shape (batch, height, width[, 1|3|4]); received {x.shape}. None written.",
                stacklevel=3,
            )
            return None
        return x, np.asarray(y)

    def _write_images(self, epoch: int) -> None:
        x, y = self._images
        spec = self._spec
        eps = spec.epsilons[0]
        x_adv, _, _ = generate_adversarial_examples(
            self.model,
            x,
            y,
            eps,
            spec.attack,
            spec.norm,
            spec.pgd_steps,
            spec.pgd_step_size,
            spec.random_start,
            spec.clip_value_min,
            spec.clip_value_max,
            self.loss,
        )
        lo = spec.clip_value_min if isinstance(spec.clip_value_min, float) else float(x.min())
        hi = spec.clip_value_max if isinstance(spec.clip_value_max, float) else float(x.max())
        scale = lambda a: np.clip((a - lo) / max(hi - lo, 1e-12), 0.0, 1.0)  # noqa: E731
        delta = x_adv - x
        span = max(float(np.abs(delta).max()), 1e-12)
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        with self._writer.as_default():
            tf.summary.image("clean_examples", scale(x), step=epoch, max_outputs=len(x))
            tf.summary.image(
                f"adversarial_examples_eps_{_format_eps(eps)}",
                scale(x_adv),
                step=epoch,
                max_outputs=len(x),
            )
            tf.summary.image(
                f"perturbations_eps_{_format_eps(eps)}",
                0.5 + 0.5 * delta / span,
                step=epoch,
                max_outputs=len(x),
            )
        self._writer.flush()


__all__ = ["AdversarialRobustnessCallback"]
