"""What the applications print and write: markdown tables, JSON values, versions, progress.

No TensorFlow at import time: the `keras-advreg` command imports it only to run a command.
"""

from __future__ import annotations

import math
import platform
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import numpy as np

from keras_advreg.version import __version__


def versions() -> dict[str, str]:
    """Versions of Python, TensorFlow, Keras, NSL and keras_advreg."""
    import keras
    import tensorflow as tf

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


# --------------------------------------------------------------------------- attack settings
def _format_bound(value: Any, default: str) -> str:
    if value is None:
        return default
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)  # per-feature bounds (a dict)


def clip_range(clip_value_min: Any, clip_value_max: Any) -> str:
    """`"clipped to [0, 1]"`, or `"no clipping"` when neither bound is set."""
    if clip_value_min is None and clip_value_max is None:
        return "no clipping"
    low = _format_bound(clip_value_min, "-inf")
    high = _format_bound(clip_value_max, "inf")
    return f"clipped to [{low}, {high}]"


def attack_settings(attack: Any) -> str:
    """One line with an attack's settings: name and budget, norm, epsilons, steps, clipping.

    `attack` is a `keras_advreg.attacks.Attack` (its budget in its own words,
    `Attack.details`), e.g. `"PGD-10, norm infinity, epsilons 0.1, 0.3, 10 steps of size
    2.5 * epsilon / 10, random start, no clipping"`.
    """
    parts = [
        attack.describe(),
        f"norm {attack.norm}",
        "epsilons " + ", ".join(f"{e:g}" for e in attack.epsilons),
        *attack.details(),
    ]
    parts.append(clip_range(attack.clip_value_min, attack.clip_value_max))
    return ", ".join(parts)


# --------------------------------------------------------------------------- progress
def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class ProgressBar:
    """A progress bar on stderr: redrawn in place on a terminal, plain lines otherwise.

    On a terminal the bar is one line rewritten with a carriage return. When
    the stream is not a terminal (a log file, a pipe, a test's capture) it
    writes a plain line (no carriage returns, no ANSI escapes) at every tenth
    of the work and at the end, so logs stay short and readable.

    `update` takes fractions of a step too (an evaluation reports each stage
    of an attack within a batch); the elapsed time counts from the first
    update (`update(0)` at the start), and the estimate of the rest assumes
    the remaining work goes at the pace so far.

    Args:
        total: int. Number of steps (at least 1).
        unit: str. Name of the steps, plural. Defaults to `"batches"`.
        title: str or None. A line written before the first update.
            Defaults to `None`.
        stream: text stream or None. Defaults to `None` (`sys.stderr` as it
            is when the bar is created).
        width: int. Width of the bar on a terminal. Defaults to `30`.
        clock: callable returning seconds. Defaults to `time.monotonic`.
    """

    def __init__(
        self,
        total: int,
        unit: str = "batches",
        title: str | None = None,
        stream: TextIO | None = None,
        width: int = 30,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.total = max(1, int(total))
        self.unit = unit
        self.title = title
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.clock = clock
        self.dynamic = _is_terminal(self.stream)
        self._start: float | None = None
        self._tenths_shown = -1

    def update(self, done: float) -> None:
        """Shows that `done` of `total` steps are finished (a float: parts of a step count)."""
        now = self.clock()
        if self._start is None:
            self._start = now
            if self.title:
                self._write(self.title + "\n")
        done = min(max(float(done), 0.0), float(self.total))
        elapsed = now - self._start
        shown = f"{done:.1f}".rstrip("0").rstrip(".")
        counts = f"{shown}/{self.total} {self.unit}"
        eta = ""
        if 0 < done < self.total:
            eta = f", eta {elapsed * (self.total - done) / done:.0f}s"
        if self.dynamic:
            filled = int(self.width * done // self.total)
            bar = "=" * filled + (">" if filled < self.width else "")
            line = f"\r[{bar:<{self.width}}] {counts} {elapsed:.0f}s{eta}"
            self._write(line + ("\n" if done == self.total else " " * 4))
            return
        tenths = math.floor(10 * done / self.total)
        if tenths > self._tenths_shown:
            self._tenths_shown = tenths
            percent = int(100 * done // self.total)
            self._write(f"  {counts} ({percent}%), {elapsed:.0f}s{eta}\n")

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


def fit_verbosity(verbose: int) -> int:
    """Keras' `fit(verbose=...)` for an application's `verbose`: the redrawn bar (1) on a
    terminal, one plain line per epoch (2, no ANSI codes) when stdout is a file or a pipe."""
    if not verbose:
        return 0
    isatty = getattr(sys.stdout, "isatty", None)
    return 1 if isatty is not None and isatty() else 2


def certified_table(report: Any, certified: Any) -> str:
    """Attacked beside certified accuracy per epsilon (`keras-advreg evaluate --certify`)."""
    from keras_advreg.utils import format_eps

    rows = [["0 (clean)", f"{report.clean_accuracy:.4f}", f"{certified.clean_accuracy:.4f}"]]
    for eps, accuracy in report.accuracy.items():
        rows.append([format_eps(eps), f"{accuracy:.4f}", f"{certified.accuracy[eps]:.4f}"])
    header = ["epsilon", f"{report.description} accuracy", "certified accuracy"]
    return f"Certified: {certified.description}\n" + markdown_table(header, rows)


def progress_bar(examples: int, batch_size: int, title: str | None) -> Callable | None:
    """The `progress` callback of `evaluate_robustness` drawing a bar titled `title` on
    stderr (batches of `batch_size`, advanced per stage of the attack), or None (no bar)
    when `title` is None."""
    if not title:
        return None
    return ProgressBar(max(1, -(-examples // batch_size)), title=title.strip()).update
