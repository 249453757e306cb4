"""`AttackCallback`: what the callbacks that attack held-out data during `fit` share.

The data, the attack (resolved once, at construction, from an object, a name or a config
dict), batching, the loss, the label keys and the every-n-epochs schedule live here
once, as Keras' `MonitorCallback` holds what its monitoring callbacks share.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import keras

from keras_advreg.attacks.base import resolve
from keras_advreg.utils import check_positive_int, is_tf_dataset, require_backend


class AttackCallback(keras.callbacks.Callback):
    """Base class of the callbacks that attack `data` at the end of some epochs.

    Args:
        data: `(x, y)` arrays, a dict of features with the label key(s), or a
            `tf.data.Dataset` of either.
        attack: str, config dict or `keras_advreg.attacks.Attack`.
        attack_arguments: dict. `epsilons` (or `epsilon`: the radii, when not
            the attack's) and the deprecated keyword arguments (`norm`,
            `pgd_steps`, ...), as the subclass received them; see
            `keras_advreg.attacks.base.resolve`.
        batch_size: int. Batch size for array data.
        loss: Loss to attack, or None (cross-entropy on the logits).
        label_keys: str or sequence of str. Label key(s) of feature dicts.
        every_n_epochs: int. Run at the end of epochs n, 2n, ... (counting from
            1, like Keras' `validation_freq`), and of the last epoch.
    """

    #: The Keras backends this callback runs on.
    backends: tuple[str, ...] = ("tensorflow", "jax", "torch")

    def __init__(
        self, data, attack, attack_arguments, batch_size, loss, label_keys, every_n_epochs
    ):
        super().__init__()
        require_backend(f"keras_advreg.{type(self).__name__}", self.backends)
        if not (isinstance(data, (tuple, list, Mapping)) or is_tf_dataset(data)):
            raise TypeError(
                "`data` must be `(x, y)` arrays, a dict of features and labels, or a "
                f"tf.data.Dataset. Received: data of type {type(data).__name__}"
            )
        self.data = data
        self.attack = attack
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.loss = loss
        self.label_keys = label_keys
        self.every_n_epochs = check_positive_int("every_n_epochs", every_n_epochs)
        # Resolved and validated once, now, not at the first epoch.
        arguments = dict(attack_arguments)
        name = "epsilons" if "epsilons" in arguments else "epsilon"
        self._attack = resolve(
            attack,
            arguments.pop(name, None),
            epsilons_name=name,
            caller=type(self).__name__,
            stacklevel=4,
            **arguments,
        )

    def is_due(self, epoch: int) -> bool:
        """Keras' `validation_freq` schedule: epochs n, 2n, ... (counting from 1) and the last."""
        last_epoch = (self.params or {}).get("epochs")
        return (epoch + 1) % self.every_n_epochs == 0 or epoch + 1 == last_epoch

    def reset_state(self) -> None:
        """Clears what a previous `fit` left (called from `on_train_begin` and on copies)."""

    def __deepcopy__(self, memo: dict):
        """Copies the configuration; shares `data` (a tf.data.Dataset cannot be copied).

        keras-tuner deep-copies callbacks for every trial.
        """
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
        new.reset_state()
        return new
