"""What the applications print and write: markdown tables, JSON values, versions."""

from __future__ import annotations

import platform
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_advreg.version import __version__


def versions() -> dict[str, str]:
    """Versions of Python, TensorFlow, Keras, NSL and keras_advreg."""
    from keras_advreg.backend.nsl import nsl

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "neural_structured_learning": getattr(nsl, "__version__", "unknown"),
        "keras_advreg": __version__,
        "platform": platform.platform(),
    }


def json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells):
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in rows)])
