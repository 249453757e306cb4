"""Loading the model `keras-advreg evaluate` measures, and checking the data fits it."""

from __future__ import annotations

import os
import zipfile
from typing import Any

from keras_advreg.apps.process import UserError


def load_model(path: str):
    """`keras.models.load_model(path, safe_mode=True)`, with one-line errors."""
    if not os.path.exists(path):
        raise UserError(f"model file not found: {path}")
    if os.path.isdir(path):
        raise UserError(
            f"{path} is a folder; expected a .keras model file (a SavedModel folder cannot "
            "be loaded by keras.models.load_model in Keras 3)"
        )
    _check_keras_archive(path)
    import keras

    # Registers keras_advreg's serializable classes (AdversarialRegularization, its
    # schedules, the attacks) for loading: the command imports the package lazily.
    import keras_advreg.attacks  # noqa: F401
    import keras_advreg.training  # noqa: F401

    try:
        return keras.models.load_model(path, safe_mode=True)
    except (ValueError, OSError, zipfile.BadZipFile, KeyError, TypeError) as e:
        kind = "corrupt or not a Keras model file" if _is_bad_zip(e, path) else "could not load"
        raise UserError(f"{kind}: {path}: {e}") from None


def _check_keras_archive(path: str) -> None:
    """Raises `UserError` when a `.keras` file is not a zip archive (what Keras 3 saves)."""
    if not str(path).lower().endswith(".keras") or zipfile.is_zipfile(path):
        return
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        damaged = f.read(4) == b"PK\x03\x04"  # a zip's first bytes, without its end
    if damaged:
        raise UserError(
            f"`model` is a damaged Keras model file (a truncated or corrupt zip archive): "
            f"{path}. Received: a {size}-byte file without a zip archive's central directory"
        )
    raise UserError(
        f"`model` is not a Keras model file (.keras is a zip archive): {path}. "
        f"Received: a {size}-byte file that is not a zip archive"
    )


def _is_bad_zip(error: Exception, path: str) -> bool:
    if isinstance(error, zipfile.BadZipFile):
        return True
    return path.endswith(".keras") and not zipfile.is_zipfile(path)


def check_input_shape(model: Any, x: Any) -> None:
    """Raises `UserError` when the examples do not fit the model's input."""
    expected = _input_shape(model)
    received = tuple(x.shape[1:])
    if expected is not None:
        fits = len(expected) == len(received) and all(
            e is None or e == r for e, r in zip(expected, received, strict=True)
        )
        if fits:
            return
    else:  # a subclassed model: only a call can tell
        try:
            model(x[:1], training=False)
            return
        except Exception:  # noqa: BLE001 - any failure here means the data does not fit
            pass
    shown = "unknown" if expected is None else str((None, *expected))
    raise UserError(
        f"the model's input shape {shown} does not match the data: examples of shape "
        f"{received} (data shape {tuple(x.shape)})"
    )


def _input_shape(model: Any) -> tuple | None:
    target = getattr(model, "base_model", model)
    try:
        inputs = target.inputs
    except (AttributeError, ValueError):
        return None
    if not inputs or len(inputs) != 1:
        return None
    return tuple(inputs[0].shape[1:])
