"""`InputRange`: the valid range of a model's inputs, declared inside the model.

The first layer of a model. It states the box `[min_value, max_value]` that the values fed
to the model live in, in the units the user feeds (pixels in [0, 255], say), and with
`mean`/`std` it folds the input normalisation into the model, so that attacks, their
epsilon and their box all speak those units. Every entry point of keras_advreg that needs
bounds (the attacks, `evaluate_robustness`, `generate_adversarial_examples`, the
callbacks, `AdversarialRegularization`'s clipping, the tuner, `keras-advreg evaluate`)
reads them from the model when the call gives none (`resolve_bounds`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_advreg.backend.keras_internals import inbound_tensors


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"`{name}` must be a finite number. Received: {name}={value!r}")
    return float(value)


def _per_channel(name: str, value: Any, positive: bool = False) -> Any:
    """None, a float, or a tuple of floats (one per channel of the last axis)."""
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        value = value.tolist()
    scalar = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if scalar:
        values = [value]
    elif isinstance(value, Sequence) and not isinstance(value, (str, bytes)) and value:
        values = list(value)
    else:
        raise ValueError(
            f"`{name}` must be a number, a non-empty sequence of numbers (one per channel of the "
            f"last axis) or None. Received: {name}={value!r}"
        )
    checked = [_number(name, v) for v in values]
    if positive and any(v <= 0 for v in checked):
        raise ValueError(f"`{name}` must be > 0. Received: {name}={value!r}")
    return checked[0] if scalar else tuple(checked)


@keras.saving.register_keras_serializable(package="keras_advreg")
class InputRange(keras.layers.Layer):
    """Declares the valid range of a model's inputs; optionally folds normalisation in.

    Place it first, directly on a model input. It declares that every value
    fed to the model lies in `[min_value, max_value]`, in the units the user
    feeds (e.g. `InputRange(0, 255)` for raw pixels). keras_advreg's attacks,
    `evaluate_robustness`, `generate_adversarial_examples`, the callbacks,
    `AdversarialRegularization` (its `clip_value_min`/`clip_value_max`), the
    tuner and `keras-advreg evaluate` then read the box from the model when
    they are given no clip values: adversarial points stay in it, an l-inf
    epsilon larger than the box is refused, and data outside the box (0-255
    images fed to a model declaring [0, 1]) is an error before any work. Clip
    values given to a call that contradict the layer are a `ValueError`.

    With `mean` and/or `std` the layer outputs `(x - mean) / std` (scalars,
    or one value per channel of the last axis), so that the normalisation
    lives in the model and attacks perturb the user's units, not the
    normalised ones; without them it is the identity and costs nothing at
    inference.

    The layer does not clip: it declares. Clipping would silently turn
    out-of-range data (the usual 0-255 vs [0, 1] mistake) into saturated
    inputs instead of the clear error raised by the entry points above.

    A model may hold one `InputRange` per input, applied directly to that
    input (also inside a nested model applied to the input); two on one input,
    or one anywhere else, is an error when the bounds are read. In a
    subclassed model, call it first in `call()`: its placement cannot be
    checked there.

    Args:
        min_value: float. The smallest valid input value.
        max_value: float. The largest valid input value (> `min_value`).
        mean: float or sequence of floats (one per channel of the last axis).
            Subtracted from the inputs. Defaults to `None` (no shift).
        std: float or sequence of floats > 0. The inputs are divided by it
            (after subtracting `mean`). Defaults to `None` (no scaling).
        **kwargs: Base layer arguments (`name`, `dtype`, ...).

    Example:

    >>> import keras, numpy as np
    >>> from keras_advreg.layers import InputRange
    >>> model = keras.Sequential([
    ...     keras.Input((2,)),
    ...     InputRange(0.0, 255.0, mean=127.5, std=127.5),
    ...     keras.layers.Dense(2),
    ... ])
    >>> keras.ops.convert_to_numpy(model.layers[0](np.array([[0.0, 255.0]], "float32"))).tolist()
    [[-1.0, 1.0]]
    >>> model.layers[0].bounds
    (0.0, 255.0)
    """

    def __init__(
        self,
        min_value: float,
        max_value: float,
        mean: Any = None,
        std: Any = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.min_value = _number("min_value", min_value)
        self.max_value = _number("max_value", max_value)
        if not self.min_value < self.max_value:
            raise ValueError(
                "`min_value` must be < `max_value`. "
                f"Received: min_value={min_value!r}, max_value={max_value!r}"
            )
        self.mean = _per_channel("mean", mean)
        self.std = _per_channel("std", std, positive=True)
        self.supports_masking = True

    @property
    def bounds(self) -> tuple[float, float]:
        """`(min_value, max_value)`."""
        return self.min_value, self.max_value

    @property
    def normalizes(self) -> bool:
        """Whether the layer computes `(x - mean) / std` (else it is the identity)."""
        return self.mean is not None or self.std is not None

    def build(self, input_shape: Any) -> None:
        channels = input_shape[-1] if input_shape else None
        for name in ("mean", "std"):
            value = getattr(self, name)
            if isinstance(value, tuple) and len(value) > 1 and channels is not None:
                if len(value) != channels:
                    raise ValueError(
                        f"`{name}` has {len(value)} values, one per channel of the last axis, "
                        f"but the inputs have {channels} channels (shape {tuple(input_shape)}). "
                        f"Received: {name}={list(value)!r}"
                    )
        self.built = True

    def call(self, inputs: Any) -> Any:
        if not self.normalizes:
            return inputs
        dtype = self.compute_dtype
        x = ops.cast(inputs, dtype)
        if self.mean is not None:
            x = x - ops.convert_to_tensor(np.asarray(self.mean, dtype), dtype)
        if self.std is not None:
            x = x / ops.convert_to_tensor(np.asarray(self.std, dtype), dtype)
        return x

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def compute_output_spec(self, inputs: Any) -> Any:
        dtype = self.compute_dtype if self.normalizes else inputs.dtype
        return keras.KerasTensor(inputs.shape, dtype=dtype)

    def get_config(self) -> dict:
        config = super().get_config()
        listed = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731
        config.update(
            min_value=self.min_value,
            max_value=self.max_value,
            mean=listed(self.mean),
            std=listed(self.std),
        )
        return config


# ---------------------------------------------------------------------- finding it in a model
_UNKNOWN = object()  # the graph cannot be read (a subclassed model): placement not checked
_SEQUENTIAL_INPUT = object()  # the first layer of a Sequential model


def _children(model: Any) -> list:
    try:
        return list(getattr(model, "layers", None) or [])
    except (AttributeError, ValueError, TypeError):
        return []


def _not_on_input(layer: Any, model: Any) -> ValueError:
    return ValueError(
        f"`InputRange` must be applied directly to a model input (first, before any other "
        f"layer): it declares the range of the values fed to the model. Received: layer "
        f"{layer.name!r} applied to another layer's output in model {model.name!r}"
    )


def _entry(layer: Any, model: Any) -> Any:
    """The input of `model` that `layer` is applied to directly (raises if it is not)."""
    if isinstance(model, keras.Sequential):
        children = _children(model)
        if children and children[0] is layer:
            return _SEQUENTIAL_INPUT
        raise _not_on_input(layer, model)
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return _UNKNOWN
    if not inputs:
        return _UNKNOWN
    tensors = inbound_tensors(layer)
    if tensors is None:
        return _UNKNOWN
    known = {id(t) for t in inputs}
    hit = [t for t in tensors if id(t) in known]
    if not hit:
        raise _not_on_input(layer, model)
    return hit[0]


def _search(model: Any) -> list[tuple[InputRange, Any]]:
    """Every `InputRange` of `model` (nested models included), with the input of `model`
    it is applied to."""
    found = []
    for child in _children(model):
        if isinstance(child, InputRange):
            found.append((child, _entry(child, model)))
        elif isinstance(child, keras.Model):
            inner = _search(child)
            if inner:
                entry = _entry(child, model)
                found.extend((layer, entry) for layer, _ in inner)
    return found


def _every_range(model: Any) -> list:
    found = []
    for child in _children(model):
        if isinstance(child, InputRange):
            found.append(child)
        elif isinstance(child, keras.Model):
            found.extend(_every_range(child))
    return found


def _input_count(model: Any) -> int:
    try:
        return len(model.inputs or [])
    except (AttributeError, ValueError, TypeError):
        return 0


def _input_key(model: Any, tensor: Any) -> str | None:
    """None for a model with one input, else the name of the input `tensor`."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return None
    if tensor is _UNKNOWN or tensor is _SEQUENTIAL_INPUT or not inputs or len(inputs) == 1:
        return None
    struct = getattr(model, "input", None)
    if isinstance(struct, Mapping):
        for key, value in struct.items():
            if value is tensor:
                return key
    return tensor.name


def find_input_ranges(model: Any) -> dict[str | None, InputRange]:
    """The `InputRange` layers of a model, by input.

    Looks through Sequential, functional and subclassed models, models nested in
    them, and the `base_model` of a wrapper such as `AdversarialRegularization`.

    Returns:
        `{}` when the model has none; `{None: layer}` for the input of a model with
        one input; `{input name: layer}` for a model with several.

    Raises:
        ValueError: two `InputRange` layers on one input, or one that is not
            applied directly to a model input.
    """
    base = getattr(model, "base_model", None)
    if isinstance(base, keras.Model):
        model = base
    every = _every_range(model)
    if len(every) > 1 and _input_count(model) <= 1:
        raise ValueError(
            "A model may declare its input range once per input; this model has one input and "
            f"{len(every)} `InputRange` layers: {', '.join(repr(x.name) for x in every)}. "
            "Keep one, first."
        )
    found: dict = {}
    for layer, tensor in _search(model):
        key = _input_key(model, tensor)
        if key in found:
            where = "the model's input" if key is None else f"the model's input {key!r}"
            raise ValueError(
                f"A model may declare its input range once per input; {where} has two "
                f"`InputRange` layers: {found[key].name!r} and {layer.name!r}. Keep one."
            )
        found[key] = layer
    return found


def model_bounds(model: Any) -> tuple[Any, Any]:
    """`(min, max)` declared by the model's `InputRange` layers (floats, or dicts per input
    name for a model with several inputs), or `(None, None)`."""
    found = find_input_ranges(model)
    if not found:
        return None, None
    if None in found:
        return found[None].bounds
    return (
        {k: layer.min_value for k, layer in found.items()},
        {k: layer.max_value for k, layer in found.items()},
    )


def _same(a: Any, b: float) -> bool:
    try:
        return bool(np.allclose(np.asarray(a, "float64"), float(b), rtol=1e-6, atol=1e-12))
    except (TypeError, ValueError):
        return False


def _merge(name: str, given: Any, declared: Any, layer_name: str) -> Any:
    def conflict(value: Any, key: Any = None) -> ValueError:
        where = "" if key is None else f" for input {key!r}"
        return ValueError(
            f"`{name}` contradicts the model's `InputRange` ({layer_name}), which declares "
            f"{declared!r}{where}. Leave `{name}` out (the model's range is used) or give the "
            f"same value. Received: {name}={value!r}"
        )

    if declared is None or given is None:
        return declared if given is None else given
    if not isinstance(declared, Mapping):  # one input
        values = list(given.values()) if isinstance(given, Mapping) else [given]
        for value in values:
            if value is not None and not _same(value, declared):
                raise conflict(given)
        return declared
    if not isinstance(given, Mapping):  # one value for every input
        for key, value in declared.items():
            if not _same(given, value):
                raise conflict(given, key)
        return given
    merged = dict(given)
    for key, value in declared.items():
        if merged.get(key) is not None and not _same(merged[key], value):
            raise conflict(given, key)
        merged[key] = value
    return merged


def resolve_bounds(model: Any, clip_value_min: Any, clip_value_max: Any) -> tuple[Any, Any, bool]:
    """The clip range of an entry point: the call's, else the model's `InputRange`.

    Args:
        model: keras.Model (or a wrapper with a `base_model`).
        clip_value_min, clip_value_max: float, dict of floats per feature, or
            None: the call's own.

    Returns:
        `(clip_value_min, clip_value_max, declared)`: `declared` tells whether the
        model has an `InputRange`.

    Raises:
        ValueError: clip values that contradict the layer (before any work), or a
            misplaced `InputRange`.
    """
    found = find_input_ranges(model)
    if not found:
        return clip_value_min, clip_value_max, False
    lo, hi = model_bounds(model)
    names = ", ".join(
        f"InputRange({layer.min_value:g}, {layer.max_value:g})" for layer in found.values()
    )
    return (
        _merge("clip_value_min", clip_value_min, lo, names),
        _merge("clip_value_max", clip_value_max, hi, names),
        True,
    )


__all__ = ["InputRange", "find_input_ranges", "model_bounds", "resolve_bounds"]
