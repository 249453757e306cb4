"""Dataset adapter: `(x, y[, w])` tuples <-> feature dicts such as `{'image': x, 'label': y}`.

NSL-style models take one dict per batch (`{'image': x, 'label': y}`); Keras users have
`(x, y[, sample_weight])` tuples, numpy arrays, `tf.data` pipelines and tfds datasets
(which yield dicts). `to_dict` and `to_tuple` convert one way or the other in one call, and
`load_tfds` is the tutorial's input pipeline in one call.

The conversion of one element (or batch) is pure structure manipulation: the same function
serves numpy/tensor input directly and runs inside `tf.data.Dataset.map` for datasets, so a
dataset stays lazy (never iterated) and keeps its cardinality and batching.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import tensorflow as tf

_TENSOR_SPECS = (tf.TensorSpec, tf.RaggedTensorSpec, tf.SparseTensorSpec)
_MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def _as_key_tuple(keys: Any, name: str) -> tuple[str, ...]:
    if isinstance(keys, str):
        return (keys,)
    if isinstance(keys, Sequence) and keys and all(isinstance(k, str) for k in keys):
        return tuple(keys)
    raise ValueError(
        f"`{name}` must be a string or a non-empty sequence of strings. Received: {name}={keys!r}"
    )


def _describe(data: Any) -> str:
    """A short repr of a structure: arrays/tensors shown as shape and dtype only."""

    def leaf(x):
        if isinstance(x, _TENSOR_SPECS):
            return x
        if hasattr(x, "shape") and hasattr(x, "dtype"):
            return _Repr(f"{type(x).__name__}(shape={tuple(x.shape)}, dtype={x.dtype})")
        return _Repr(f"{type(x).__name__}({x!r})"[:80])

    if isinstance(data, (Mapping, list, tuple)):
        try:
            return repr(tf.nest.map_structure(leaf, data))
        except (TypeError, ValueError):  # pragma: no cover - exotic structures
            pass
    return repr(leaf(data))


class _Repr(str):
    def __repr__(self):
        return str(self)


def unpack_batch(
    data: Any,
    label_keys: Any = ("label",),
    sample_weight_key: str | None = None,
) -> tuple[Any, Any, Any]:
    """Splits one batch (or element) into `(features, labels, sample_weight)`.

    Pure structure manipulation: works on numpy arrays, tensors and symbolic
    Keras tensors alike, and adds no ops.

    - A dict holding the label keys (NSL's format) gives the dict without the
      label and sample-weight keys, the label (a list in `label_keys` order when
      there are several), and the sample weight (or `None`).
    - A tuple/list `(x,)`, `(x, y)` or `(x, y, sample_weight)` gives its parts,
      as `keras.utils.unpack_x_y_sample_weight` does; `(dict, None, None)`
      (how Keras passes `train_on_batch(dict)`) is read as the dict.
    - Anything else (a tensor, a dict without labels) is features only:
      `(data, None, None)`.

    Args:
        data: One batch.
        label_keys: str or sequence of str. Label keys of a feature dict.
            Defaults to `("label",)`.
        sample_weight_key: str. Sample-weight key of a feature dict. Defaults
            to `None`.

    Returns:
        `(features, labels, sample_weight)`; missing parts are `None`.

    Example:

    >>> import numpy as np
    >>> x, y, w = unpack_batch({"image": np.zeros((2, 3)), "label": np.ones(2)})
    >>> sorted(x), y.tolist(), w
    (['image'], [1.0, 1.0], None)
    """
    label_keys = _as_key_tuple(label_keys, "label_keys")
    if isinstance(data, Mapping):
        present = [k for k in label_keys if k in data]
        if not present:
            return data, None, None
        if len(present) != len(label_keys):
            missing = [k for k in label_keys if k not in data]
            raise ValueError(
                f"Label key(s) {missing} of `label_keys={list(label_keys)}` are missing from "
                f"the features. Received keys: {sorted(data)}"
            )
        non_features = set(label_keys) | {sample_weight_key}
        features = {k: v for k, v in data.items() if k not in non_features}
        labels = [data[k] for k in label_keys]
        weights = data.get(sample_weight_key) if sample_weight_key is not None else None
        return features, labels[0] if len(labels) == 1 else labels, weights
    if isinstance(data, list):
        data = tuple(data)
    if isinstance(data, tuple):
        if (
            1 <= len(data) <= 3
            and isinstance(data[0], Mapping)
            and all(part is None for part in data[1:])
        ):  # Keras hands `train_on_batch(dict)` over as `(dict, None, None)`
            return unpack_batch(data[0], label_keys, sample_weight_key)
        if len(data) == 1:
            return data[0], None, None
        if len(data) == 2:
            return data[0], data[1], None
        if len(data) == 3:
            return data
        raise ValueError(
            "Data must be `x`, `(x,)`, `(x, y)` or `(x, y, sample_weight)`, or a dict of "
            f"features and labels. Received a tuple of {len(data)} elements: {_describe(data)}"
        )
    return data, None, None


# --------------------------------------------------------------------------- keys
def _keys_arg(value: Any, name: str, allow_none: bool) -> str | tuple[str, ...] | None:
    """A key argument: `None` (when allowed), one str, or a tuple of str (several)."""
    if value is None and allow_none:
        return None
    if isinstance(value, str):
        return value
    if (
        isinstance(value, (tuple, list))
        and value
        and all(isinstance(k, str) for k in value)
        and len(set(value)) == len(value)
    ):
        return tuple(value)
    expected = "a string, a non-empty sequence of distinct strings" + (
        " or None" if allow_none else ""
    )
    raise ValueError(f"`{name}` must be {expected}. Received: {name}={value!r}")


def _key_list(keys: str | tuple[str, ...] | None) -> list[str]:
    if keys is None:
        return []
    return [keys] if isinstance(keys, str) else list(keys)


def _get(element: Mapping, key: str, arg: str, received: str) -> Any:
    if key not in element:
        raise ValueError(
            f"Key {key!r} of `{arg}` is not in the data. Available keys: "
            f"{sorted(element)}. Received: {received}"
        )
    return element[key]


def _split_tuple(element: Any, received: str) -> tuple[Any, Any, Any]:
    """`x`, `(x,)`, `(x, y)`, `(x, y, w)` -> `(x, y, w)`; `None` entries count as absent."""
    if isinstance(element, list):
        element = tuple(element)
    if not isinstance(element, tuple):
        return element, None, None
    if not 1 <= len(element) <= 3:
        raise ValueError(
            "Each element must be `x`, `(x,)`, `(x, y)` or `(x, y, sample_weight)`, or a dict. "
            f"Received a tuple of {len(element)} elements: {received}"
        )
    x, y, w = (*element, None, None)[:3]
    return x, y, w


# --------------------------------------------------------------------------- element level
def _element_to_dict(element, feature_key, label_key, sample_weight_key, received) -> dict:
    """One element or batch (arrays, tensors or TensorSpecs) -> a flat dict."""
    reserved = _key_list(label_key) + _key_list(sample_weight_key)
    if isinstance(element, Mapping):
        for key in _key_list(label_key):
            _get(element, key, "label_key", received)
        if sample_weight_key is not None:
            _get(element, sample_weight_key, "sample_weight_key", received)
        return dict(element)

    x, y, w = _split_tuple(element, received)
    if isinstance(x, Mapping):  # already named inputs: keep their names
        clash = sorted(set(x) & set(reserved))
        if clash:
            raise ValueError(
                f"Feature dict key(s) {clash} clash with `label_key`/`sample_weight_key`. "
                f"Received: {received}"
            )
        out = dict(x)
    elif isinstance(feature_key, tuple):
        if not isinstance(x, (tuple, list)) or len(x) != len(feature_key):
            raise ValueError(
                f"`feature_key={feature_key!r}` names {len(feature_key)} inputs, so the features "
                f"must be a tuple/list of {len(feature_key)} arrays. Received: {received}"
            )
        out = dict(zip(feature_key, x, strict=True))
    else:
        if isinstance(x, (tuple, list)):
            raise ValueError(
                f"The features are a {type(x).__name__} of {len(x)} inputs; pass `feature_key` "
                f"as a tuple of {len(x)} keys (one per input). Received: "
                f"feature_key={feature_key!r}, {received}"
            )
        out = {feature_key: x}

    if y is not None:
        if label_key is None:
            raise ValueError(f"The data has labels but `label_key=None`. Received: {received}")
        if isinstance(label_key, tuple):
            if isinstance(y, Mapping) and set(y) == set(label_key):
                y = tuple(y[k] for k in label_key)
            if not isinstance(y, (tuple, list)) or len(y) != len(label_key):
                raise ValueError(
                    f"`label_key={label_key!r}` names {len(label_key)} outputs, so the labels "
                    f"must be a tuple/list of {len(label_key)} arrays (or a dict with these "
                    f"keys). Received: {received}"
                )
            labels = dict(zip(label_key, y, strict=True))
        else:
            if isinstance(y, (Mapping, tuple, list)):
                raise ValueError(
                    f"The labels are a {type(y).__name__}; pass `label_key` as a tuple of keys "
                    f"(one per output). Received: label_key={label_key!r}, {received}"
                )
            labels = {label_key: y}
        clash = sorted(set(out) & set(labels))
        if clash:
            raise ValueError(f"Label key(s) {clash} are also feature keys. Received: {received}")
        out.update(labels)
    if w is not None:
        if sample_weight_key is None:
            raise ValueError(
                "The data has sample weights but `sample_weight_key=None`; pass e.g. "
                f"sample_weight_key='sample_weight' to keep them. Received: {received}"
            )
        if sample_weight_key in out:
            raise ValueError(
                f"`sample_weight_key={sample_weight_key!r}` is also a feature or label key. "
                f"Received: {received}"
            )
        out[sample_weight_key] = w
    return out


def _element_to_tuple(element, feature_key, label_key, sample_weight_key, received) -> tuple:
    """One element or batch (arrays, tensors or TensorSpecs) -> `(x,)`, `(x, y)` or `(x, y, w)`."""
    if not isinstance(element, Mapping):
        x, y, w = _split_tuple(element, received)
        return tuple(part for part in (x, y, w) if part is not None)
    if feature_key is None:
        reserved = set(_key_list(label_key)) | {sample_weight_key}
        x = {k: v for k, v in element.items() if k not in reserved}
        if not x:
            raise ValueError(f"No feature keys are left in the data. Received: {received}")
    elif isinstance(feature_key, tuple):
        x = tuple(_get(element, k, "feature_key", received) for k in feature_key)
    else:
        x = _get(element, feature_key, "feature_key", received)
    if label_key is None:
        y = None
    elif isinstance(label_key, tuple):
        y = tuple(_get(element, k, "label_key", received) for k in label_key)
    else:
        y = _get(element, label_key, "label_key", received)
    if sample_weight_key is None:
        return (x,) if y is None else (x, y)
    w = _get(element, sample_weight_key, "sample_weight_key", received)
    if y is None:
        raise ValueError(
            f"Sample weights need labels, but `label_key=None`. Received: sample_weight_key="
            f"{sample_weight_key!r}, {received}"
        )
    return x, y, w


# --------------------------------------------------------------------------- data level
def _convert(data: Any, element_fn: Callable, fn_name: str, keys: tuple) -> Any:
    if isinstance(data, tf.data.Dataset):
        spec = data.element_spec
        received = f"element_spec={spec!r}"
        leaves = tf.nest.flatten(spec)
        if not leaves or not all(isinstance(s, _TENSOR_SPECS) for s in leaves):
            raise TypeError(
                f"`{fn_name}` needs a dataset whose elements are tensors or (nested) tuples/dicts "
                f"of tensors. Received: {received}"
            )
        # Run on the spec first: validates the structure with a clean error, without tracing.
        element_fn(spec, *keys, received)
        if isinstance(spec, Mapping if element_fn is _element_to_dict else tuple):
            return data  # already in the requested form

        is_tuple = isinstance(spec, tuple)

        @tf.autograph.experimental.do_not_convert
        def fn(*args):
            return element_fn(args if is_tuple else args[0], *keys, received)

        return data.map(fn)

    received = _describe(data)
    leaves = tf.nest.flatten(data)
    bad = [leaf for leaf in leaves if leaf is not None and not _is_array(leaf)]
    if not leaves or bad:
        raise TypeError(
            f"`{fn_name}` expects a `tf.data.Dataset`, or numpy arrays/tensors in a tuple "
            f"`(x, y[, sample_weight])` or a dict. Received: {received}"
        )
    return element_fn(data, *keys, received)


def _is_array(x: Any) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype")


def to_dict(
    data: Any,
    feature_key: str | Sequence[str] = "image",
    label_key: str | Sequence[str] | None = "label",
    sample_weight_key: str | None = None,
) -> Any:
    """Converts `(x, y[, sample_weight])` data to feature dicts such as `{'image': x, 'label': y}`.

    The result is the same kind as `data`: numpy/tensors in give a dict of them;
    a `tf.data.Dataset` (batched or not) gives a dataset of dicts with the same
    cardinality and batching, converted lazily through `Dataset.map` (nothing is
    iterated). Data that is already a dict (e.g. a tfds dataset) is returned as
    it is after checking that its label and sample-weight keys are present.

    Several inputs: `x` a tuple/list of arrays with `feature_key` a tuple of as
    many keys, or `x` already a dict of named inputs (its keys are kept and
    `feature_key` is not used). Several outputs: `label_key` a tuple of keys and
    `y` a tuple/list (or a dict with these keys).

    Args:
        data: `x`, `(x,)`, `(x, y)` or `(x, y, sample_weight)` of numpy arrays or
            tensors, a dict, or a `tf.data.Dataset` of any of these.
        feature_key: str or sequence of str. Key(s) for the features. Defaults
            to `"image"`.
        label_key: str, sequence of str or `None`. Key(s) for the labels; `None`
            for features-only data. Defaults to `"label"`.
        sample_weight_key: str. Key for the sample weights; required when the
            data has them. Defaults to `None`.

    Returns:
        A dict, or a `tf.data.Dataset` of dicts.

    Raises:
        ValueError: the structure does not match the keys (the message shows
            the structure or `element_spec` that was received).
        TypeError: `data` is not arrays/tensors or a dataset of tensors.

    Example:

    >>> import numpy as np
    >>> d = to_dict((np.zeros((2, 3)), np.array([0, 1])))
    >>> sorted(d), d["image"].shape
    (['image', 'label'], (2, 3))
    """
    keys = (
        _keys_arg(feature_key, "feature_key", allow_none=False),
        _keys_arg(label_key, "label_key", allow_none=True),
        _sample_weight_key_arg(sample_weight_key),
    )
    return _convert(data, _element_to_dict, "to_dict", keys)


def to_tuple(
    data: Any,
    feature_key: str | Sequence[str] | None = "image",
    label_key: str | Sequence[str] | None = "label",
    sample_weight_key: str | None = None,
) -> Any:
    """Converts feature dicts such as `{'image': x, 'label': y}` to `(x, y[, sample_weight])`.

    The inverse of `to_dict`, and the same kind out as in: a dict of arrays
    gives a tuple of them; a `tf.data.Dataset` of dicts (e.g. from tfds) gives a
    lazily mapped dataset of tuples with the same cardinality and batching.
    Tuple data is returned as it is (after checking its length).

    Args:
        data: A dict of numpy arrays or tensors, a tuple, or a
            `tf.data.Dataset` of either.
        feature_key: str, sequence of str or `None`. Key(s) of the features:
            one key gives `x` itself, a sequence gives a tuple `x` (several
            inputs), `None` gives a dict `x` of all keys that are neither labels
            nor sample weights (named inputs). Defaults to `"image"`.
        label_key: str, sequence of str or `None`. Key(s) of the labels (a
            sequence gives a tuple `y`); `None` gives features only, `(x,)`.
            Defaults to `"label"`.
        sample_weight_key: str. Key of the sample weights, if any. Other keys
            of the dict are dropped. Defaults to `None`.

    Returns:
        `(x,)`, `(x, y)` or `(x, y, sample_weight)`, or a dataset of them.

    Raises:
        ValueError: a key is missing (the message names it and shows the
            structure or `element_spec` that was received).
        TypeError: `data` is not arrays/tensors or a dataset of tensors.

    Example:

    >>> import numpy as np
    >>> x, y = to_tuple({"image": np.zeros((2, 3)), "label": np.array([0, 1])})
    >>> x.shape, y.tolist()
    ((2, 3), [0, 1])
    """
    keys = (
        _keys_arg(feature_key, "feature_key", allow_none=True),
        _keys_arg(label_key, "label_key", allow_none=True),
        _sample_weight_key_arg(sample_weight_key),
    )
    return _convert(data, _element_to_tuple, "to_tuple", keys)


def _sample_weight_key_arg(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ValueError(
        f"`sample_weight_key` must be a string or None. Received: sample_weight_key={value!r}"
    )


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


def _normalize_images(x: tf.Tensor) -> tf.Tensor:
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
        _keys_arg(feature_key, "feature_key", allow_none=False)
        _keys_arg(label_key, "label_key", allow_none=False)
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
        if name == "mnist":
            missing = [f for f in _MNIST_FILES if not os.path.isfile(os.path.join(manual_dir, f))]
            if missing:
                raise ValueError(
                    f"`manual_dir` lacks the MNIST file(s) {missing}. Received: "
                    f"manual_dir={manual_dir!r}"
                )

    tfds = _import_tfds()
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
            ds = ds.map(_normalize_pair, num_parallel_calls=tf.data.AUTOTUNE)
        if as_dict:
            ds = to_dict(ds, feature_key=feature_key, label_key=label_key)
        if prefetch:
            ds = ds.prefetch(tf.data.AUTOTUNE)
        datasets.append(ds)
    return datasets[0] if isinstance(split, str) else datasets


@tf.autograph.experimental.do_not_convert
def _normalize_pair(x, y):
    return _normalize_images(x), y
