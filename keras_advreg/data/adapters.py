"""Dataset adapter: `(x, y[, w])` tuples <-> feature dicts such as `{'image': x, 'label': y}`.

NSL-style models take one dict per batch (`{'image': x, 'label': y}`); Keras users have
`(x, y[, sample_weight])` tuples, numpy arrays, `tf.data` pipelines and tfds datasets
(which yield dicts). `to_dict` and `to_tuple` convert one way or the other in one call
(`keras_advreg.datasets.load_tfds` is the tutorial's input pipeline in one call).

The conversion of one element (or batch) is pure structure manipulation: the same function
serves numpy/tensor input directly and runs inside `tf.data.Dataset.map` for datasets, so a
dataset stays lazy (never iterated) and keeps its cardinality and batching.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras

from keras_advreg.utils import is_tf_dataset, tensorflow_if_imported


def _tensor_specs() -> tuple[type, ...]:
    """TensorFlow's spec classes (none when TensorFlow was not imported)."""
    tf = tensorflow_if_imported()
    return () if tf is None else (tf.TensorSpec, tf.RaggedTensorSpec, tf.SparseTensorSpec)


def as_key_tuple(keys: Any, name: str) -> tuple[str, ...]:
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
        if isinstance(x, _tensor_specs()):
            return x
        if hasattr(x, "shape") and hasattr(x, "dtype"):
            return _Repr(f"{type(x).__name__}(shape={tuple(x.shape)}, dtype={x.dtype})")
        return _Repr(f"{type(x).__name__}({x!r})"[:80])

    if isinstance(data, (Mapping, list, tuple)):
        try:
            return repr(keras.tree.map_structure(leaf, data))
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
    label_keys = as_key_tuple(label_keys, "label_keys")
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
def keys_arg(value: Any, name: str, allow_none: bool) -> str | tuple[str, ...] | None:
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
    if is_tf_dataset(data):
        import tensorflow as tf

        spec = data.element_spec
        received = f"element_spec={spec!r}"
        leaves = tf.nest.flatten(spec)
        if not leaves or not all(isinstance(s, _tensor_specs()) for s in leaves):
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
    leaves = keras.tree.flatten(data)
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
        keys_arg(feature_key, "feature_key", allow_none=False),
        keys_arg(label_key, "label_key", allow_none=True),
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
        keys_arg(feature_key, "feature_key", allow_none=True),
        keys_arg(label_key, "label_key", allow_none=True),
        _sample_weight_key_arg(sample_weight_key),
    )
    return _convert(data, _element_to_tuple, "to_tuple", keys)


def _sample_weight_key_arg(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ValueError(
        f"`sample_weight_key` must be a string or None. Received: sample_weight_key={value!r}"
    )
