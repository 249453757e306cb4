"""Data sets by name, as the applications (and users) load them: the one place for it.

- `load_mnist_train` / `load_mnist_test`: MNIST through `load_tfds` (tfds builds it from
  the four original files offline with `manual_dir`).
- `load_npz`: arrays `x` and `y` of a `.npz` file, images scaled to `[0, 1]`.
- `load_test_set`: a test set by name (`"mnist"`) or path (`PATH.npz`), as arrays.

A new named data set goes here (a loader, and its name in `load_test_set`); what tfds
needs to build it offline goes in `keras_advreg.data.tfds.MANUAL_FILES`. TensorFlow and
tensorflow-datasets are imported only when a loader runs.
"""

from __future__ import annotations

import os
import zipfile
from typing import Any

import numpy as np

from keras_advreg.data.tfds import load_tfds

#: The names `load_test_set` takes besides a `.npz` path.
NAMED_TEST_SETS = ("mnist",)


def load_mnist_train(
    *,
    batch_size: int = 32,
    take: int | None = None,
    seed: int | None = 0,
    data_dir: str | None = None,
    manual_dir: str | None = None,
) -> Any:
    """The shuffled, batched MNIST training set of `(image, label)` (images in `[0, 1]`),
    a `tf.data.Dataset`."""
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


def load_npz(path: str, take: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Arrays `x` (float32; unsigned-integer images scaled to `[0, 1]`) and `y` of a `.npz`.

    Raises:
        ValueError: For a missing or unreadable file, missing arrays, arrays of different
            lengths, no examples, or `x` that is not numbers.
    """
    if not os.path.isfile(path):
        raise ValueError(f"dataset file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            files = sorted(npz.files)
            x = npz["x"] if "x" in files else None
            y = npz["y"] if "y" in files else None
    except (ValueError, OSError, zipfile.BadZipFile) as e:
        raise ValueError(f"could not read {path}: {e}") from None
    missing = [k for k, v in (("x", x), ("y", y)) if v is None]
    if missing:
        raise ValueError(f"{path} must hold arrays 'x' and 'y'; missing {missing}. Found: {files}")
    if len(x) != len(y):
        raise ValueError(
            f"{path}: x and y must have as many examples; x has {len(x)}, y has {len(y)}"
        )
    if len(y) == 0:
        raise ValueError(f"{path} holds no examples")
    if np.issubdtype(x.dtype, np.unsignedinteger):  # images stored as bytes, as tfds does
        x = x.astype("float32") / float(np.iinfo(x.dtype).max)
    elif np.issubdtype(x.dtype, np.floating):
        x = x.astype("float32")
    else:
        raise ValueError(
            f"{path}: x must hold floating-point numbers (or unsigned-integer images, "
            f"scaled to [0, 1]). Received x of dtype {x.dtype}"
        )
    if take is not None:
        x, y = x[:take], y[:take]
    return x, y


def load_test_set(
    dataset: str,
    *,
    take: int | None = None,
    data_dir: str | None = None,
    manual_dir: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A test set as arrays `(x, y)`: `"mnist"` (tfds' test split) or a `.npz` path.

    Raises:
        ValueError: For another name, or what `load_npz` or `load_tfds` refuse.
        ImportError: For `"mnist"` without tensorflow-datasets.
    """
    if dataset == "mnist":
        return load_mnist_test(take=take, data_dir=data_dir, manual_dir=manual_dir)
    if not str(dataset).endswith(".npz"):
        raise ValueError(
            "`--dataset` must be 'mnist' or the path of a .npz file with arrays x and y. "
            f"Received: --dataset {dataset}"
        )
    return load_npz(dataset, take)


__all__ = ["NAMED_TEST_SETS", "load_mnist_test", "load_mnist_train", "load_npz", "load_test_set"]
