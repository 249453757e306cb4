"""MNIST for the applications: the tfds training pipeline and the test set as arrays."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_advreg.data.tfds import load_tfds


def load_mnist_train(
    *,
    batch_size: int = 32,
    take: int | None = None,
    seed: int | None = 0,
    data_dir: str | None = None,
    manual_dir: str | None = None,
) -> tf.data.Dataset:
    """The shuffled, batched MNIST training set of `(image, label)` (images in `[0, 1]`)."""
    return load_tfds(
        "mnist",
        split="train",
        batch_size=batch_size,
        take=take,
        seed=seed,
        data_dir=data_dir,
        manual_dir=manual_dir,
    )


def load_mnist_test(
    *,
    take: int | None = None,
    data_dir: str | None = None,
    manual_dir: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The MNIST test set in tfds' order (not the original files' order), as float32 images
    in `[0, 1]` and labels."""
    ds = load_tfds(
        "mnist",
        split="test",
        batch_size=1000,
        take=take,
        shuffle=False,
        data_dir=data_dir,
        manual_dir=manual_dir,
    )
    xs, ys = zip(*((x.numpy(), y.numpy()) for x, y in ds), strict=True)
    return np.concatenate(xs).astype("float32"), np.concatenate(ys).astype("int64")
