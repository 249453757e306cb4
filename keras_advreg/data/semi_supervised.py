"""Batches of labeled and unlabeled examples for virtual adversarial training.

`AdvConfig(adv_loss="vat")` reads the label `-1` as "unlabeled": such an example enters
the VAT term but neither the supervised loss nor the metrics. `semi_supervised_batches`
mixes a (small) labeled set and an unlabeled one into such batches.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

#: The label of an unlabeled example (every entry of its label, for one-hot labels).
UNLABELED = -1


def labeled_slots(labeled: int, size: int) -> np.ndarray:
    """The positions of `labeled` examples spread evenly through a batch of `size`:
    `floor(i * size / labeled)`, so that every contiguous part of the batch (a replica's
    share under `tf.distribute`) gets its share of them."""
    return np.arange(labeled) * size // labeled


class SemiSupervisedBatches(keras.utils.PyDataset):
    """A `keras.utils.PyDataset` of `(x, y)` batches: labeled examples spread evenly
    among unlabeled ones whose label is `-1`. See `semi_supervised_batches`."""

    def __init__(
        self,
        x_labeled: Any,
        y_labeled: Any,
        x_unlabeled: Any,
        batch_size: int,
        labeled_batch_size: int,
        seed: int,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.x_labeled = np.asarray(x_labeled)
        self.y_labeled = np.asarray(y_labeled)
        self.x_unlabeled = np.asarray(x_unlabeled)
        self.labeled_batch_size = labeled_batch_size
        self.unlabeled_batch_size = batch_size - labeled_batch_size
        self.seed = seed
        self.epoch = 0
        self.y_unlabeled = np.full(
            (self.unlabeled_batch_size,) + self.y_labeled.shape[1:], UNLABELED,
            dtype=self.y_labeled.dtype,
        )  # fmt: skip
        self._shuffle()

    def _shuffle(self) -> None:
        rng = np.random.default_rng([self.seed, self.epoch])
        self.unlabeled_order = rng.permutation(len(self.x_unlabeled))
        needed = len(self) * self.labeled_batch_size
        rounds = -(-needed // len(self.x_labeled))
        self.labeled_order = np.concatenate(
            [rng.permutation(len(self.x_labeled)) for _ in range(rounds)]
        )

    def __len__(self) -> int:
        return -(-len(self.x_unlabeled) // self.unlabeled_batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        lab = self.labeled_order[
            index * self.labeled_batch_size : (index + 1) * self.labeled_batch_size
        ]
        unl = self.unlabeled_order[
            index * self.unlabeled_batch_size : (index + 1) * self.unlabeled_batch_size
        ]
        slots = labeled_slots(len(lab), len(lab) + len(unl))
        rest = np.setdiff1d(np.arange(len(lab) + len(unl)), slots)
        dtype = np.result_type(self.x_labeled, self.x_unlabeled)
        x = np.empty((len(lab) + len(unl),) + self.x_labeled.shape[1:], dtype)
        y = np.empty((len(x),) + self.y_labeled.shape[1:], self.y_labeled.dtype)
        x[slots], x[rest] = self.x_labeled[lab], self.x_unlabeled[unl]
        y[slots], y[rest] = self.y_labeled[lab], self.y_unlabeled[: len(unl)]
        return x, y

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self._shuffle()


def semi_supervised_batches(
    x_labeled: Any,
    y_labeled: Any,
    x_unlabeled: Any,
    batch_size: int = 128,
    labeled_batch_size: int | None = None,
    seed: int = 0,
    **kwargs: Any,
) -> SemiSupervisedBatches:
    """Mixes a labeled and an unlabeled data set into batches for `adv_loss="vat"`.

    Each batch holds `labeled_batch_size` labeled examples (drawn without replacement,
    cycling through the labeled set as often as needed) and
    `batch_size - labeled_batch_size` unlabeled ones, labeled `-1`; the labeled examples are
    spread evenly through the batch (at positions `floor(i * batch / labeled)`), so that a
    batch split across replicas (`tf.distribute`) gives each replica its share. An epoch is
    one pass over the unlabeled set. The order is reshuffled each epoch from `seed`.

    Args:
        x_labeled: array. Labeled inputs.
        y_labeled: array. Their labels (class ids, or one-hot rows).
        x_unlabeled: array. Unlabeled inputs (same shape per example as `x_labeled`).
        batch_size: int. Examples per batch. Defaults to `128`.
        labeled_batch_size: int. Labeled examples per batch. Defaults to
            `batch_size // 5` (Miyato et al. 2018 use 64 labeled and 256 unlabeled
            examples per step on MNIST), at least 1.
        seed: int. Seed of the shuffles. Defaults to `0`.
        **kwargs: `keras.utils.PyDataset` arguments (`workers`, ...).

    Returns:
        A `keras.utils.PyDataset` of `(x, y)` batches, for `fit`.

    Example:

    >>> import numpy as np
    >>> batches = semi_supervised_batches(
    ...     np.zeros((10, 3)), np.arange(10), np.ones((40, 3)), batch_size=8, labeled_batch_size=2)
    >>> x, y = batches[0]
    >>> len(batches), x.shape, y.tolist()
    (7, (8, 3), [..., -1, -1, -1, ..., -1, -1, -1])
    """
    for name, value in (("x_labeled", x_labeled), ("x_unlabeled", x_unlabeled)):
        if len(value) == 0:
            raise ValueError(f"`{name}` must hold at least one example. Received: empty {name}")
    if len(x_labeled) != len(y_labeled):
        raise ValueError(
            "`x_labeled` and `y_labeled` must hold as many examples. Received: "
            f"{len(x_labeled)} inputs and {len(y_labeled)} labels"
        )
    if np.shape(x_labeled)[1:] != np.shape(x_unlabeled)[1:]:
        raise ValueError(
            "`x_labeled` and `x_unlabeled` must have the same shape per example. Received: "
            f"{np.shape(x_labeled)[1:]} and {np.shape(x_unlabeled)[1:]}"
        )
    if labeled_batch_size is None:
        labeled_batch_size = max(1, batch_size // 5)
    if not isinstance(batch_size, int) or batch_size < 2:
        raise ValueError(
            f"`batch_size` must be an integer >= 2. Received: batch_size={batch_size!r}"
        )
    if not isinstance(labeled_batch_size, int) or not 1 <= labeled_batch_size < batch_size:
        raise ValueError(
            "`labeled_batch_size` must be an integer in [1, batch_size). Received: "
            f"labeled_batch_size={labeled_batch_size!r}, batch_size={batch_size!r}"
        )
    return SemiSupervisedBatches(
        x_labeled, y_labeled, x_unlabeled, batch_size, labeled_batch_size, seed, **kwargs
    )


__all__ = ["UNLABELED", "SemiSupervisedBatches", "semi_supervised_batches"]
