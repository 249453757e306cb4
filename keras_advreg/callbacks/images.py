"""`AdversarialExamplesCallback`: clean and adversarial examples as TensorBoard images."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from keras_advreg.attacks.bounds import with_model_bounds
from keras_advreg.attacks.generate import generate_adversarial_examples
from keras_advreg.attacks.heads import attack_target
from keras_advreg.callbacks.base import AttackCallback
from keras_advreg.data.batching import batches
from keras_advreg.utils import check_positive_int, format_eps


class AdversarialExamplesCallback(AttackCallback):
    """Writes image summaries of clean examples, their adversarial versions and the
    perturbations to `log_dir` at the end of epochs (`every_n_epochs`).

    Args:
        data: `(x, y)` arrays, a dict of features with the label key(s), or a
            `tf.data.Dataset`; its first `num_images` image examples are used.
        log_dir: str. TensorBoard log directory.
        attack: str, config dict or `keras_advreg.attacks.Attack` (one
            epsilon). Defaults to `"pgd"`.
        epsilon: float. Radius, if not the attack's. Defaults to `None`.
        num_images: int. Number of examples shown. Defaults to `8`.
        loss: Loss to attack. Defaults to `None` (cross-entropy on logits).
        label_keys: str or sequence of str. Label keys of dict data.
        every_n_epochs: int. Write at the end of epochs n, 2n, ... and the
            last. Defaults to `1`.

    Example:

    >>> callback = AdversarialExamplesCallback(
    ...     (x_val, y_val), "logs", attack=keras_advreg.attacks.PGD(
    ...         epsilon=0.2, clip_value_min=0.0, clip_value_max=1.0))  # doctest: +SKIP
    """

    backends = ("tensorflow",)  # tf.summary writes the images

    def __init__(
        self,
        data: Any,
        log_dir: str,
        attack: Any = "pgd",
        epsilon: float | None = None,
        num_images: int = 8,
        loss: Any = None,
        label_keys: Any = ("label",),
        every_n_epochs: int = 1,
    ):
        super().__init__(
            data, attack, {"epsilon": epsilon}, num_images, loss, label_keys, every_n_epochs
        )
        self.log_dir = str(log_dir)
        self.epsilon = epsilon
        self.num_images = check_positive_int("num_images", num_images)
        if len(self._attack.epsilons) != 1:
            raise ValueError(
                "`AdversarialExamplesCallback` shows one epsilon. Received: "
                f"epsilon={self._attack.epsilon!r}"
            )
        self.reset_state()

    def reset_state(self) -> None:
        self._examples: tuple[Any, Any] | None = None
        self._writer = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.reset_state()
        self._examples = self._first_examples()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self._examples is not None and (self.is_due(epoch) or epoch == 0):
            self._write(epoch)

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _first_examples(self) -> tuple[Any, Any] | None:
        stream = batches(
            self.data,
            self.num_images,
            self.label_keys,
            None,
            self.num_images,
            attack_target(self.model),
        )
        batch = next(stream, None)
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
                "AdversarialExamplesCallback: image summaries need image features "
                f"of shape (batch, height, width[, 1|3|4]); received {x.shape}. None written.",
                stacklevel=3,
            )
            return None
        return x, np.asarray(y)

    def _write(self, epoch: int) -> None:
        import tensorflow as tf  # tf.summary: TensorBoard's writer

        x, y = self._examples
        attack, _ = with_model_bounds(self.model, self._attack)  # the model's InputRange
        eps = attack.epsilons[0]
        x_adv, _, _ = generate_adversarial_examples(
            self.model, x, y, attack=attack, loss=self.loss, warn=epoch == 0
        )
        lo = attack.clip_value_min if isinstance(attack.clip_value_min, float) else float(x.min())
        hi = attack.clip_value_max if isinstance(attack.clip_value_max, float) else float(x.max())
        scale = lambda a: np.clip((a - lo) / max(hi - lo, 1e-12), 0.0, 1.0)  # noqa: E731
        delta = x_adv - x
        span = max(float(np.abs(delta).max()), 1e-12)
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        with self._writer.as_default():
            tf.summary.image("clean_examples", scale(x), step=epoch, max_outputs=len(x))
            name = format_eps(eps)
            tf.summary.image(
                f"adversarial_examples_eps_{name}", scale(x_adv), step=epoch, max_outputs=len(x)
            )
            tf.summary.image(
                f"perturbations_eps_{name}",
                0.5 + 0.5 * delta / span,
                step=epoch,
                max_outputs=len(x),
            )
        self._writer.flush()


__all__ = ["AdversarialExamplesCallback"]
