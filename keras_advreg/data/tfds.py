"""tfds loading: `load_tfds`, the NSL tutorial's input pipeline in one call.

`tfds.load` as supervised `(image, label)` pairs, then take, shuffle, batch, pixel scaling
and, optionally, conversion to feature dicts with `keras_advreg.adapters.to_dict`.
tensorflow-datasets is imported only when `load_tfds` runs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from keras_advreg.data.adapters import keys_arg, to_dict

#: The original files tfds builds a data set from offline (`manual_dir`), per data set,
#: checked before tfds runs.
MANUAL_FILES = {
    "mnist": (
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ),
}


# --------------------------------------------------------------------------- tfds
def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError(
            "`load_tfds` requires tensorflow-datasets. Install it with "
            '`pip install "keras-advreg[datasets]"`.'
        ) from e
    return tfds


def _check_int(value: Any, name: str, minimum: int, allow_none: bool) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
    if not (ok or (allow_none and value is None)):
        expected = f"an integer >= {minimum}" + (" or None" if allow_none else "")
        raise ValueError(f"`{name}` must be {expected}. Received: {name}={value!r}")


def _normalize_images(x: Any) -> Any:
    import tensorflow as tf

    if x.dtype.is_integer and x.dtype.is_unsigned:
        return tf.cast(x, tf.float32) / float(x.dtype.max)
    return x


def load_tfds(
    name: str = "mnist",
    split: str | Sequence[str] = "train",
    *,
    batch_size: int | None = 32,
    normalize: bool = True,
    as_dict: bool = False,
    shuffle_buffer: int | None = 10_000,
    shuffle: bool | None = None,
    seed: int | None = None,
    feature_key: str = "image",
    label_key: str = "label",
    data_dir: str | os.PathLike | None = None,
    manual_dir: str | os.PathLike | None = None,
    take: int | None = None,
    drop_remainder: bool = False,
    prefetch: bool = True,
) -> Any:
    """Loads a supervised tfds dataset as a ready-to-train `tf.data` pipeline.

    The NSL tutorial's input pipeline in one call: `tfds.load` (as supervised
    `(image, label)` pairs), optional `take`, shuffle (training splits only, by
    default), batch, pixel scaling to `[0, 1]`, conversion to dicts and prefetch.

    Args:
        name: str. tfds dataset name. Defaults to `"mnist"`.
        split: str or sequence of str. tfds split(s), e.g. `"train"`,
            `"test[:10%]"`; a sequence gives a list of datasets. Defaults to
            `"train"`.
        batch_size: int or None. Batch size; `None` for unbatched examples.
            Defaults to `32`.
        normalize: bool. Scale unsigned-integer images to float32 in `[0, 1]`
            (divided by the dtype's maximum, 255 for uint8). Defaults to `True`.
        as_dict: bool. Yield `{feature_key: image, label_key: label}` dicts
            (NSL format) instead of `(image, label)` tuples. Defaults to
            `False`.
        shuffle_buffer: int or None. Shuffle buffer size; `0` or `None`
            disables shuffling. Defaults to `10_000`.
        shuffle: bool or None. Whether to shuffle; `None` shuffles the splits
            whose name starts with `"train"` only. Defaults to `None`.
        seed: int or None. Seed of the shuffle, for reproducible order.
            Defaults to `None`.
        feature_key: str. Dict key of the images when `as_dict`. Defaults to
            `"image"`.
        label_key: str. Dict key of the labels when `as_dict`. Defaults to
            `"label"`.
        data_dir: path or None. Where tfds stores prepared data. Defaults to
            `None` (tfds' default, `~/tensorflow_datasets`).
        manual_dir: path or None. Folder with the original files (e.g. the four
            MNIST `.gz` files) to build the dataset offline; without it tfds
            downloads as usual. Defaults to `None`.
        take: int or None. Use only the first `take` examples of each split
            (before shuffling and batching). Defaults to `None` (all).
        drop_remainder: bool. Drop the last, smaller batch. Defaults to `False`.
        prefetch: bool. Prefetch batches (`tf.data.AUTOTUNE`). Defaults to
            `True`.

    Returns:
        A `tf.data.Dataset`, or a list of them when `split` is a sequence.

    Example:

    ```python
    train, test = keras_advreg.load_tfds("mnist", split=["train", "test"], as_dict=True)
    adv_model.fit(train, validation_data=test, epochs=1)
    ```
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"`name` must be a non-empty tfds dataset name. Received: name={name!r}")
    splits = [split] if isinstance(split, str) else split
    if (
        not isinstance(splits, (list, tuple))
        or not splits
        or not all(isinstance(s, str) and s for s in splits)
    ):
        raise ValueError(
            "`split` must be a split name or a non-empty sequence of split names. "
            f"Received: split={split!r}"
        )
    _check_int(batch_size, "batch_size", 1, allow_none=True)
    _check_int(shuffle_buffer, "shuffle_buffer", 0, allow_none=True)
    _check_int(take, "take", 1, allow_none=True)
    _check_int(seed, "seed", 0, allow_none=True)
    if shuffle is not None and not isinstance(shuffle, bool):
        raise ValueError(f"`shuffle` must be True, False or None. Received: shuffle={shuffle!r}")
    if as_dict:
        keys_arg(feature_key, "feature_key", allow_none=False)
        keys_arg(label_key, "label_key", allow_none=False)
        if not isinstance(feature_key, str) or not isinstance(label_key, str):
            raise ValueError(
                "`feature_key` and `label_key` must be strings. Received: "
                f"feature_key={feature_key!r}, label_key={label_key!r}"
            )
    if manual_dir is not None:
        manual_dir = os.fspath(os.path.expanduser(manual_dir))
        if not os.path.isdir(manual_dir):
            raise ValueError(
                f"`manual_dir` must be an existing folder with the original files of {name!r}. "
                f"Received: manual_dir={manual_dir!r}, which does not exist"
            )
        required = MANUAL_FILES.get(name, ())
        missing = [f for f in required if not os.path.isfile(os.path.join(manual_dir, f))]
        if missing:
            raise ValueError(
                f"`manual_dir` lacks the {name.upper()} file(s) {missing}. Received: "
                f"manual_dir={manual_dir!r}"
            )

    tfds = _import_tfds()
    import tensorflow as tf

    load_kwargs: dict[str, Any] = {}
    if data_dir is not None:
        load_kwargs["data_dir"] = os.fspath(os.path.expanduser(data_dir))
    if manual_dir is not None:
        load_kwargs["download_and_prepare_kwargs"] = {
            "download_config": tfds.download.DownloadConfig(manual_dir=manual_dir)
        }

    datasets = []
    for one_split in splits:
        do_shuffle = bool(shuffle_buffer) and (
            shuffle if shuffle is not None else one_split.startswith("train")
        )
        ds = tfds.load(
            name,
            split=one_split,
            as_supervised=True,
            shuffle_files=do_shuffle,
            read_config=tfds.ReadConfig(shuffle_seed=seed) if do_shuffle else None,
            **load_kwargs,
        )
        if take is not None:
            ds = ds.take(take)
        if do_shuffle:
            ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        if batch_size is not None:
            ds = ds.batch(batch_size, drop_remainder=drop_remainder)
        if normalize:
            ds = ds.map(
                tf.autograph.experimental.do_not_convert(_normalize_pair),
                num_parallel_calls=tf.data.AUTOTUNE,
            )
        if as_dict:
            ds = to_dict(ds, feature_key=feature_key, label_key=label_key)
        if prefetch:
            ds = ds.prefetch(tf.data.AUTOTUNE)
        datasets.append(ds)
    return datasets[0] if isinstance(split, str) else datasets


def _normalize_pair(x, y):
    return _normalize_images(x), y
