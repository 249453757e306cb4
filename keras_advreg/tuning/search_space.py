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

from keras_advreg.utils import is_number, normalize_norm

#: keras-tuner hyperparameter name -> the `AdvConfig` field it sets.
HYPERPARAMETER_FIELDS = {
    "adv_multiplier": "multiplier",
    "adv_step_size": "adv_step_size",
    "adv_grad_norm": "adv_grad_norm",
    "pgd_iterations": "pgd_iterations",
    "pgd_epsilon": "pgd_epsilon",
    "adv_loss": "adv_loss",
    "free_replays": "free_replays",
}

#: The training methods `adv_method` chooses between (see `with_method`).
ADV_METHODS = ("nsl", "fast", "free")
#: Replays of "free" training when `free_replays` is neither searched nor set.
DEFAULT_FREE_REPLAYS = 4
#: The allowed values of the categorical hyperparameters other than norms.
_CATEGORIES = {"adv_loss": ("labeled", "trades"), "adv_method": ADV_METHODS}

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


def adv_config_values(hp: Any) -> dict:
    """The `AdvConfig` fields set by a trial's hyperparameters (or a dict of values)."""
    values = hp if isinstance(hp, Mapping) else getattr(hp, "values", None)
    if not isinstance(values, Mapping):
        raise TypeError(
            f"`hp` must be keras_tuner.HyperParameters or a dict of values. Received: hp={hp!r}"
        )
    return {field: values[name] for name, field in HYPERPARAMETER_FIELDS.items() if name in values}


def with_method(config: Any, method: str | None, free_replays: int | None = None) -> Any:
    """`config` (an `AdvConfig`) trained by `method`, the `adv_method` hyperparameter.

    - `"nsl"`: NSL's neighbours as configured (FGSM, or PGD with `pgd_iterations`);
      `free_replays` is cleared.
    - `"fast"`: Wong et al.'s FGSM from a random start, step 1.25 eps, in the ball of
      eps = `pgd_epsilon` (or `adv_step_size` when no `pgd_epsilon`).
    - `"free"`: Shafahi et al.'s free training in that ball, step eps, `free_replays`
      replays (`DEFAULT_FREE_REPLAYS` if None), the labeled loss.
    """
    if method is None:
        return config
    if method == "nsl":
        return config.replace(free_replays=None)
    eps = config.pgd_epsilon if config.pgd_epsilon is not None else config.adv_step_size
    if method == "fast":
        return config.replace(
            random_init=True, pgd_iterations=1, pgd_epsilon=eps, adv_step_size=1.25 * eps,
            free_replays=None,
        )  # fmt: skip
    if method == "free":
        return config.replace(
            free_replays=free_replays or DEFAULT_FREE_REPLAYS, adv_loss="labeled",
            pgd_iterations=1, pgd_epsilon=eps, adv_step_size=eps,
        )  # fmt: skip
    raise ValueError(
        f"`adv_method` must be one of {', '.join(map(repr, ADV_METHODS))}. "
        f"Received: adv_method={method!r}"
    )


__all__ = [
    "ADV_METHODS",
    "HYPERPARAMETER_FIELDS",
    "SearchDimension",
    "adv_config_values",
    "with_method",
]
