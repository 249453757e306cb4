"""Dataset adapter: `(x, y[, w])` tuples <-> feature dicts such as `{'image': x, 'label': y}`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def _as_key_tuple(keys: Any, name: str) -> tuple[str, ...]:
    if isinstance(keys, str):
        return (keys,)
    if isinstance(keys, Sequence) and keys and all(isinstance(k, str) for k in keys):
        return tuple(keys)
    raise ValueError(
        f"`{name}` must be a string or a non-empty sequence of strings. Received: {name}={keys!r}"
    )


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
      as `keras.utils.unpack_x_y_sample_weight` does.
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
        if len(data) == 1:
            return data[0], None, None
        if len(data) == 2:
            return data[0], data[1], None
        if len(data) == 3:
            return data
        raise ValueError(
            "Data must be `x`, `(x,)`, `(x, y)` or `(x, y, sample_weight)`, or a dict of "
            f"features and labels. Received a tuple of {len(data)} elements: {data!r}"
        )
    return data, None, None


def to_dict(*args, **kwargs):  # placeholder until issue 4 lands
    raise NotImplementedError


def to_tuple(*args, **kwargs):  # placeholder until issue 4 lands
    raise NotImplementedError


def load_tfds(*args, **kwargs):  # placeholder until issue 4 lands
    raise NotImplementedError
