"""The adversarial search space: which hyperparameters a search declares, and their ranges.

Hyperparameter names are `AdvConfig` field names, except `adv_multiplier` (NSL's
`multiplier`, prefixed like the other adversarial fields in a search with the model's own
hyperparameters).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import keras_tuner as kt

from keras_advreg.training.config import ADV_LOSSES, ADV_METHODS, DEFAULT_FREE_REPLAYS, AdvConfig
from keras_advreg.utils import is_number, normalize_norm

#: The allowed values of the categorical hyperparameters other than norms.
_CATEGORIES = {"adv_loss": ADV_LOSSES, "adv_method": ADV_METHODS}

# Default search space. The tutorial's hand-picked values (0.2, 0.2, l-inf) are the
# hyperparameters' defaults (used where keras-tuner does not tune a value).
_FLOAT_SPACES = {
    "adv_multiplier": dict(min_value=0.01, max_value=1.0, sampling="log", default=0.2),
    "adv_step_size": dict(min_value=0.01, max_value=0.5, sampling="log", default=0.2),
    "pgd_epsilon": dict(min_value=0.01, max_value=0.5, sampling="log", default=0.2),
}


class SearchDimension:
    """One searched (or fixed) hyperparameter, validated at construction."""

    def __init__(self, name: str, spec: Any, kind: str):
        self.name, self.spec, self.kind = name, spec, kind
        self.method, self.kwargs = self._parse(spec)
        # Dry run: keras-tuner's own checks (e.g. log sampling needs min > 0).
        try:
            self.declare(kt.HyperParameters())
        except ValueError as e:
            raise ValueError(
                f"`{name}` is not a valid search space: {e} Received: {name}={spec!r}"
            ) from None

    def _value(self, value: Any) -> Any:
        """A categorical value, checked: a norm, or one of the name's categories."""
        allowed = _CATEGORIES.get(self.name)
        if allowed is None:
            return normalize_norm(value, self.name)
        if value not in allowed:
            raise self._error(f"one of {', '.join(map(repr, allowed))} or a list of them")
        return value

    def _error(self, expected: str) -> ValueError:
        return ValueError(f"`{self.name}` must be {expected}. Received: {self.name}={self.spec!r}")

    def _parse(self, spec: Any) -> tuple[str, dict]:
        name, kind = self.name, self.kind
        if isinstance(spec, Mapping):
            kwargs = dict(spec)
            if kind == "choice":
                values = kwargs.get("values")
                if not values:
                    raise self._error(f"a non-empty list of {self._what()}")
                kwargs["values"] = [self._value(v) for v in values]
                if "default" in kwargs:
                    kwargs["default"] = self._value(kwargs["default"])
                return "Choice", kwargs
            if "min_value" not in kwargs or "max_value" not in kwargs:
                raise self._error("a dict with `min_value` and `max_value`")
            self._check_range(kwargs["min_value"], kwargs["max_value"])
            return ("Int" if kind == "int" else "Float"), kwargs
        if kind == "choice":
            expected = f"a {self._what()[:-1]} or a non-empty list of {self._what()}"
            if isinstance(spec, str) or hasattr(spec, "value"):
                return "Fixed", {"value": self._value(spec)}
            if isinstance(spec, Sequence):
                if not spec:
                    raise self._error(expected)
                values = list(dict.fromkeys(self._value(v) for v in spec))
                return "Choice", {"values": values}
            raise self._error(expected)
        if is_number(spec):
            if kind == "int" and (not float(spec).is_integer() or spec < 1):
                raise self._error("an integer >= 1")
            if kind == "float" and (not math.isfinite(spec) or spec < 0):
                raise self._error("a finite number >= 0")
            return "Fixed", {"value": int(spec) if kind == "int" else float(spec)}
        if isinstance(spec, Sequence) and not isinstance(spec, str):
            if len(spec) != 2 or not all(is_number(v) for v in spec):
                raise self._error("a number or a `(min_value, max_value)` pair")
            low, high = spec
            self._check_range(low, high)
            if kind == "int":
                return "Int", {"min_value": int(low), "max_value": int(high)}
            kwargs = dict(_FLOAT_SPACES.get(name, {}), min_value=float(low), max_value=float(high))
            if not low <= kwargs.get("default", low) <= high:
                kwargs["default"] = float(low)
            if low <= 0:  # log sampling needs a positive minimum
                kwargs["sampling"] = "linear"
            return "Float", kwargs
        raise self._error("a number, a `(min_value, max_value)` pair or a dict of hp kwargs")

    def _what(self) -> str:
        return "values" if self.name in _CATEGORIES else "norms"

    def values(self) -> list:
        """The values a trial may draw (categorical dimensions)."""
        return self.kwargs["values"] if self.method == "Choice" else [self.kwargs["value"]]

    def _check_range(self, low: Any, high: Any) -> None:
        if not (is_number(low) and is_number(high)):
            raise self._error("a range of numbers")
        if low > high:
            raise ValueError(
                f"`{self.name}` is an empty range: min_value={low!r} is greater than "
                f"max_value={high!r}. Received: {self.name}={self.spec!r}"
            )
        if self.kind == "int" and low < 1:
            raise self._error("a range of integers >= 1")
        if self.kind == "float" and low < 0:
            raise self._error("a range of numbers >= 0")

    def declare(self, hp: Any) -> Any:
        return getattr(hp, self.method)(self.name, **self.kwargs)


def with_method(config: Any, method: str | None, free_replays: int | None = None) -> Any:
    """`config` (an `AdvConfig`) trained by `method`, the `adv_method` hyperparameter.

    `AdvConfig.from_hyperparameters` with only `adv_method` (and `free_replays`): `"nsl"`
    (NSL's neighbours as configured), `"fast"` (`AdvConfig.fast`'s recipe) or `"free"`
    (`AdvConfig.free`'s, `DEFAULT_FREE_REPLAYS` replays unless given), in the ball of
    `pgd_epsilon` (or `adv_step_size` when no `pgd_epsilon`).
    """
    if method is None:
        return config
    values = {"adv_method": method, "free_replays": free_replays}
    return AdvConfig.from_hyperparameters(values, base=config)


__all__ = [
    "ADV_METHODS",
    "DEFAULT_FREE_REPLAYS",
    "SearchDimension",
    "with_method",
]
