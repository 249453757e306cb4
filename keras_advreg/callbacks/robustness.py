"""`AdversarialRobustnessCallback`: robust accuracy as a Keras metric during `fit`."""

from __future__ import annotations

import re
import warnings
from typing import Any

from keras_advreg.callbacks.base import AttackCallback
from keras_advreg.callbacks.images import AdversarialExamplesCallback
from keras_advreg.certification.lipschitz import LipschitzCertifier, certify
from keras_advreg.evaluation.checks import UPPER_BOUND, WEAK_STRENGTHS
from keras_advreg.evaluation.evaluate import evaluate_robustness
from keras_advreg.evaluation.report import RobustnessReport
from keras_advreg.log_keys import ADV_ACCURACY, CERTIFIED_ACCURACY, CLEAN_ACCURACY, per_epsilon
from keras_advreg.utils import check_positive_int, format_eps

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class AdversarialRobustnessCallback(AttackCallback):
    """Logs adversarial accuracy at the end of training epochs.

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
    - `"val_clean_accuracy"`: accuracy on the unperturbed examples that were
      attacked. With `max_examples` these are the first `max_examples`
      examples of `data`, so the value can differ from Keras' `val_accuracy`
      (all of `validation_data`).

    The logs hold numbers only, as Keras' callbacks (EarlyStopping,
    CSVLogger, TensorBoard) and keras-tuner expect. What produced each key
    (the attack, its norm, epsilon and clip range, and the examples) is in
    `callback.descriptions` (a dict, key -> sentence), printed when training
    starts with `verbose=1`; each evaluation's `RobustnessReport` is in
    `callback.reports[epoch]`. To see the attack in the key itself, name it:
    `metric_name="val_autoattack_accuracy"`.

    The default attack is `"autoattack-fast"` (APGD-CE + APGD-T with 3
    targets, 100 iterations each): a number EarlyStopping or a tuner can
    trust. `"fgsm"` and `"pgd"` cost less but only bound robustness from
    above; the callback says so once when they are chosen. Measured on the
    tutorial CNN (MNIST, 2 CPU cores): about 0.35 s per 100 validation
    examples for FGSM, 3 s for PGD-10, and 15-40 s for autoattack-fast,
    depending on how many examples stay robust; use `max_examples` and
    `every_n_epochs` to bound the cost.

    On the epochs in between, the last measured values are written again, so
    that every epoch has the keys (EarlyStopping and ModelCheckpoint warn about
    missing keys, and CSVLogger fixes its columns at the first epoch); those
    values are then one or more epochs old.

    A `fit` that starts past epoch 0 (restored by
    `keras.callbacks.BackupAndRestore`, or given `initial_epoch`) first
    measures the weights it starts from, as the end of the epoch before,
    when its first epoch is not due or `stop_on_collapse` is set: the values
    logged until the next due epoch, and the best robust accuracy a collapse
    is measured from, are then those of the restored weights (the best value
    from before an interruption is not kept: it is that of the backup).

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
            is logged as `metric_name`. Defaults to `None` (the attack's;
            `0.1` for a name).
        attack: str, config dict or `keras_advreg.attacks.Attack` (with its
            norm, clip range and budget). Resolved once, here. Defaults to
            `"autoattack-fast"`.
        norm: Deprecated, as in `evaluate_robustness`: set it on `attack`.
        pgd_steps: Deprecated, as in `evaluate_robustness`.
        pgd_step_size: Deprecated, as in `evaluate_robustness`.
        random_start: Deprecated, as in `evaluate_robustness`.
        clip_value_min: Deprecated, as in `evaluate_robustness`.
        clip_value_max: Deprecated, as in `evaluate_robustness`.
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
            examples are written there for TensorBoard (an
            `AdversarialExamplesCallback` run alongside). Defaults to `None`.
        num_images: int. Number of examples in those summaries. Defaults to
            `8`.
        verbose: int. `1` prints the accuracies after each evaluation.
            Defaults to `0`.
        stop_on_collapse: float in (0, 1]. Stop training when the robust
            accuracy at the first epsilon falls this far below its best value
            so far: catastrophic overfitting, the known failure of "fast"
            FGSM training (Wong et al. 2020), shows as multi-step accuracy
            collapsing within an epoch while FGSM accuracy rises. Needs a
            multi-step attack (FGSM accuracy does not fall). Defaults to
            `None` (never stop).
        restore_best_weights: bool. With `stop_on_collapse`, put back the
            weights of the evaluation with the best robust accuracy when
            training stops on a collapse (as Wong et al.'s early stopping
            does). Defaults to `True`.
        check_finite: bool. Refuse NaN or Inf in `data` (checked batch by
            batch, the first one in `on_train_begin`), as `evaluate_robustness`
            does. Defaults to `True`.
        certify: bool. Also log the certified accuracy of a model built from
            `keras_advreg.layers` (`keras_advreg.certify`, the Lipschitz-margin
            certificate, at the same epsilons, which must be l2):
            `"val_certified_accuracy"` at the first epsilon and
            `f"val_certified_accuracy_eps_{epsilon:g}"` at each. Defaults to
            `False`.

    Example:

    >>> callback = AdversarialRobustnessCallback(
    ...     (x_val, y_val),
    ...     attack=keras_advreg.attacks.AutoAttack(
    ...         version="fast", clip_value_min=0.0, clip_value_max=1.0),
    ...     epsilons=(0.1, 0.2),
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
        epsilons: Any = None,
        attack: Any = "autoattack-fast",
        norm: str | None = None,
        pgd_steps: int | None = None,
        pgd_step_size: float | None = None,
        random_start: bool | None = None,
        clip_value_min: Any = None,
        clip_value_max: Any = None,
        batch_size: int = 256,
        loss: Any = None,
        label_keys: Any = ("label",),
        every_n_epochs: int = 1,
        max_examples: int | None = None,
        metric_name: str = ADV_ACCURACY,
        log_dir: str | None = None,
        num_images: int = 8,
        verbose: int = 0,
        stop_on_collapse: float | None = None,
        restore_best_weights: bool = True,
        check_finite: bool = True,
        certify: bool = False,
    ):
        arguments = dict(
            epsilons=epsilons,
            norm=norm,
            clip_value_min=clip_value_min,
            clip_value_max=clip_value_max,
            pgd_steps=pgd_steps,
            pgd_step_size=pgd_step_size,
            random_start=random_start,
        )
        super().__init__(data, attack, arguments, batch_size, loss, label_keys, every_n_epochs)
        self.max_examples = check_positive_int("max_examples", max_examples, allow_none=True)
        if not isinstance(metric_name, str) or not _NAME.match(metric_name):
            raise ValueError(
                "`metric_name` must be a non-empty string of letters, digits, '_', '.' or '-' "
                f"(a valid TensorBoard/CSV name). Received: metric_name={metric_name!r}"
            )
        self.metric_name = metric_name
        self.log_dir = None if log_dir is None else str(log_dir)
        self.num_images = check_positive_int("num_images", num_images)
        self.verbose = verbose
        if stop_on_collapse is not None:
            ok = isinstance(stop_on_collapse, (int, float)) and not isinstance(
                stop_on_collapse, bool
            )
            if not ok or not 0.0 < stop_on_collapse <= 1.0:
                raise ValueError(
                    "`stop_on_collapse` must be a drop in accuracy in (0, 1], or None. "
                    f"Received: stop_on_collapse={stop_on_collapse!r}"
                )
            if self._attack.strength == "single-step":
                raise ValueError(
                    "`stop_on_collapse` needs a multi-step attack: under catastrophic "
                    "overfitting FGSM accuracy rises while multi-step accuracy collapses. "
                    f"Received: attack={self._attack.describe()!r}"
                )
        self.stop_on_collapse = stop_on_collapse
        self.restore_best_weights = bool(restore_best_weights)
        self.check_finite = bool(check_finite)
        self.certify = bool(certify)
        if self.certify and self._attack.norm != "l2":
            raise ValueError(
                "`certify=True` certifies l2 radii (the Lipschitz-margin certificate): the "
                f"attack's norm must be 'l2'. Received: norm={self._attack.norm!r}"
            )
        self._images = None
        if self.log_dir is not None:
            self._images = AdversarialExamplesCallback(
                data,
                self.log_dir,
                attack=self._attack.replace(epsilon=self._attack.epsilons[0]),
                num_images=num_images,
                loss=loss,
                label_keys=label_keys,
                every_n_epochs=every_n_epochs,
            )
        self.reset_state()

    # ------------------------------------------------------------------ state
    def reset_state(self) -> None:
        self.last_report: RobustnessReport | None = None
        self.reports: dict[int, RobustnessReport] = {}
        self._last_values: dict[str, float] | None = None
        self._warned: set[str] = set()
        self.best_robust_accuracy: float | None = None
        self.best_epoch: int | None = None
        self.collapsed_epoch: int | None = None
        self._best_weights: list | None = None
        self._started = False

    @property
    def log_keys(self) -> list[str]:
        """The keys this callback writes into `logs`."""
        per_eps = [per_epsilon(self.metric_name, e) for e in self._attack.epsilons]
        keys = [self.metric_name, *per_eps, CLEAN_ACCURACY]
        if self.certify:
            keys += [CERTIFIED_ACCURACY]
            keys += [per_epsilon(CERTIFIED_ACCURACY, e) for e in self._attack.epsilons]
        return keys

    @property
    def descriptions(self) -> dict[str, str]:
        """What each key of `log_keys` measures: the attack, its budget and the examples.

        Example:

        >>> import numpy as np
        >>> callback = AdversarialRobustnessCallback(
        ...     (np.zeros((4, 2), "float32"), np.zeros(4)), epsilons=0.1, attack="fgsm",
        ...     clip_value_min=0.0, clip_value_max=1.0, max_examples=1000)
        >>> callback.descriptions["val_adv_accuracy"]
        'accuracy under FGSM (infinity norm, epsilon 0.1, clipped to [0.0, 1.0]) on the first 1000 examples of `data`'
        >>> callback.descriptions["val_clean_accuracy"]
        'accuracy without attack on the first 1000 examples of `data` (the examples attacked)'
        """
        attack = self._attack
        examples = (
            "all of `data`"
            if self.max_examples is None
            else f"the first {self.max_examples} examples of `data`"
        )
        clip = ""
        if attack.clip_value_min is not None or attack.clip_value_max is not None:
            clip = f", clipped to [{attack.clip_value_min}, {attack.clip_value_max}]"

        def under(eps):
            return (
                f"accuracy under {attack.describe()} ({attack.norm} norm, epsilon "
                f"{format_eps(eps)}{clip}) on {examples}"
            )

        keys = self.log_keys
        values = [under(attack.epsilons[0])] + [under(e) for e in attack.epsilons]
        values.append(f"accuracy without attack on {examples} (the examples attacked)")
        if self.certify:

            def proved(eps):
                return (
                    f"certified accuracy (Lipschitz-margin certificate, l2 radius "
                    f"{format_eps(eps)}) on {examples}"
                )

            values += [proved(attack.epsilons[0])] + [proved(e) for e in attack.epsilons]
        return dict(zip(keys, values, strict=True))

    def _evaluate(self, max_examples: int | None) -> RobustnessReport:
        return evaluate_robustness(
            self.model,
            self.data,
            attack=self._attack,
            batch_size=self.batch_size,
            loss=self.loss,
            label_keys=self.label_keys,
            max_examples=max_examples,
            warn=False,
            check_finite=self.check_finite,
        )

    # ------------------------------------------------------------------ Keras hooks
    def set_model(self, model: Any) -> None:
        super().set_model(model)
        if self._images is not None:
            self._images.set_model(model)

    def set_params(self, params: Any) -> None:
        super().set_params(params)
        if self._images is not None:
            self._images.set_params(params)

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.reset_state()
        probe = min(self.batch_size, self.max_examples or self.batch_size)
        try:  # one batch: labels, output shape and the attack itself, before epoch 1
            self._evaluate(max_examples=probe)
        except (ValueError, TypeError) as error:
            raise type(error)(
                f"AdversarialRobustnessCallback cannot attack the model on the first batch of "
                f"`data`: {error}"
            ) from error
        if self.certify:  # a model without a proved bound fails here, naming the layer
            LipschitzCertifier(self.model)
        if self._attack.strength in WEAK_STRENGTHS:
            warnings.warn(
                "AdversarialRobustnessCallback: "
                + UPPER_BOUND.format(attack=self._attack.describe()),
                stacklevel=2,
            )
        if self.verbose:
            for key, description in self.descriptions.items():
                print(f"{key}: {description}")
        if self._images is not None:
            self._images.on_train_begin(logs)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self._started:
            return
        self._started = True
        # Resumed (BackupAndRestore restores the weights in its on_train_begin) or
        # continued: measure the weights as the end of the epoch before, which an
        # uninterrupted run measured (or carried) and collapse is measured from.
        if epoch > 0 and (self.stop_on_collapse is not None or not self.is_due(epoch)):
            self._record(epoch - 1)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is None:
            return
        if self.is_due(epoch) or self._last_values is None:
            self._record(epoch)
        logs.update(self._last_values)
        if self._images is not None:
            self._images.on_epoch_end(epoch, logs)

    def _record(self, epoch: int) -> None:
        report = self._evaluate(self.max_examples)
        self.last_report = report
        self.reports[epoch] = report
        keys = self.log_keys
        values = [report.robust_accuracy, *report.accuracy.values(), report.clean_accuracy]
        if self.certify:
            certified = certify(
                self.model,
                self.data,
                epsilons=list(self._attack.epsilons),
                batch_size=self.batch_size,
                max_examples=self.max_examples,
                label_keys=self.label_keys,
            )
            values += [certified.certified_accuracy, *certified.accuracy.values()]
        self._last_values = dict(zip(keys, values, strict=True))
        self._warn(report)
        self._check_collapse(epoch, report.robust_accuracy)
        if self.verbose:
            shown = ", ".join(f"{k}={v:.4f}" for k, v in self._last_values.items())
            print(f"\nEpoch {epoch + 1} ({report.description}): {shown}")

    def _check_collapse(self, epoch: int, accuracy: float) -> None:
        if self.stop_on_collapse is None:
            return
        if self.best_robust_accuracy is None or accuracy > self.best_robust_accuracy:
            self.best_robust_accuracy, self.best_epoch = accuracy, epoch
            if self.restore_best_weights:
                self._best_weights = self.model.get_weights()
            return
        if self.best_robust_accuracy - accuracy < self.stop_on_collapse:
            return
        self.collapsed_epoch = epoch
        self.model.stop_training = True
        restored = ""
        if self.restore_best_weights and self._best_weights is not None:
            self.model.set_weights(self._best_weights)
            restored = f" Restored the weights of epoch {self.best_epoch + 1}."
        warnings.warn(
            f"AdversarialRobustnessCallback: robust accuracy ({self._attack.describe()}) "
            f"collapsed from {self.best_robust_accuracy:.4f} (epoch {self.best_epoch + 1}) to "
            f"{accuracy:.4f} (epoch {epoch + 1}), a drop of at least "
            f"stop_on_collapse={self.stop_on_collapse}: catastrophic overfitting. Training "
            f"stops.{restored}",
            stacklevel=2,
        )

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._images is not None:
            self._images.on_train_end(logs)

    def _warn(self, report: RobustnessReport) -> None:
        for message in report.warnings:
            if "is an upper bound on robust accuracy" in message:
                continue  # said once in on_train_begin
            kind = re.sub(r"[0-9.%]+", "#", message)  # once per kind of finding, not per epoch
            if kind not in self._warned:
                self._warned.add(kind)
                warnings.warn(f"AdversarialRobustnessCallback: {message}", stacklevel=2)


__all__ = ["AdversarialRobustnessCallback"]
