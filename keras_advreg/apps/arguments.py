"""The `keras-advreg` argument types: epsilons, integers, numbers, norms, attack names.

No TensorFlow here: parsing and `--help` stay fast.
"""

from __future__ import annotations

import argparse
import math

#: The names `--attack` takes (`keras_advreg.attacks.names()`, without importing TensorFlow).
ATTACKS = (
    "autoattack",
    "autoattack-fast",
    "apgd-ce",
    "apgd-dlr",
    "apgd-t",
    "fab",
    "fab-t",
    "square",
    "pgd",
    "fgsm",
)

#: `keras-advreg demo --epsilons`' default (`keras_advreg.apps.demo.CURVE_EPSILONS`).
DEMO_EPSILONS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
#: `keras-advreg evaluate --batch-size`' default (`keras_advreg.apps.tutorial.EVAL_BATCH_SIZE`).
EVAL_BATCH_SIZE = 256


# --------------------------------------------------------------------------- argument types
def parse_epsilons(text: str) -> tuple[float, ...]:
    """Parses `"0.05,0.1,0.2"` into `(0.05, 0.1, 0.2)`.

    Raises:
        argparse.ArgumentTypeError: For an empty list, a non-numeric,
            non-finite, negative or repeated value (values equal to 6
            significant digits count as repeated).
    """
    parts = [p.strip() for p in str(text).split(",")]
    if not parts or any(not p for p in parts):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers such as 0.05,0.1,0.2. Received: {text!r}"
        )
    values = []
    for part in parts:
        try:
            value = float(part)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated numbers such as 0.05,0.1,0.2; {part!r} is not a "
                f"number. Received: {text!r}"
            ) from None
        if not math.isfinite(value) or value < 0:
            raise argparse.ArgumentTypeError(
                f"epsilons must be finite numbers >= 0; got {part!r}. Received: {text!r}"
            )
        values.append(value)
    # Epsilons are named f"{eps:g}" in reports and JSON: equal names would collide.
    if len({f"{v:g}" for v in values}) != len(values):
        raise argparse.ArgumentTypeError(
            "epsilons must not repeat (nor agree in their first 6 significant digits). "
            f"Received: {text!r}"
        )
    return tuple(values)


def int_at_least(minimum: int):
    """An argparse type: an integer >= `minimum`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(
                f"expected an integer >= {minimum}. Received: {text!r}"
            )
        return value

    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a number. Received: {text!r}")
    return value


def norm(text: str) -> str:
    from keras_advreg.utils import normalize_norm

    try:
        return normalize_norm(text, "norm")
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected one of 'infinity', 'l2', 'l1'. Received: {text!r}"
        ) from None
