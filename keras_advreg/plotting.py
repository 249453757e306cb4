"""PNG figures: perturbed examples with their labels, and accuracy against epsilon.

matplotlib is an optional dependency (`pip install "keras-advreg[plot]"`),
imported when a function is called. Figures are drawn on their own Agg canvas:
pyplot and the global backend are left alone.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def _figure(width: float, height: float):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            'Plotting needs matplotlib. Install it with: pip install "keras-advreg[plot]"'
        ) from error
    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: str | os.PathLike) -> str:
    path = os.fspath(path)
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    figure.savefig(path, format="png", bbox_inches="tight")
    return path


def _name(label: Any, class_names: Sequence[str] | None) -> str:
    label = int(label)
    if class_names is not None and 0 <= label < len(class_names):
        return str(class_names[label])
    return str(label)


def plot_perturbed_examples(
    images: Any,
    labels: Any,
    predictions: Any,
    path: str | os.PathLike,
    class_names: Sequence[str] | None = None,
    max_examples: int = 25,
    columns: int = 5,
    title: str | None = None,
) -> str:
    """Saves a grid of (perturbed) images titled with true and predicted labels.

    The NSL tutorial's figure: each image is titled `"true: 7"` followed by one
    line per model, e.g. `"base: 7"` and `"adv-regularized: 3"`; a wrong
    prediction is marked with `*`.

    Args:
        images: array of shape `(n, height, width)` or `(n, height, width, 1|3|4)`.
            Pixel values in [0, 1] or [0, 255].
        labels: array of `n` class ids, or `(n, num_classes)` one-hot.
        predictions: array of `n` predicted class ids (or scores), or a dict
            `{model name: predictions}` for several models.
        path: str or path. Where to write the PNG.
        class_names: sequence of str. Names of the class ids. Defaults to
            `None` (the ids).
        max_examples: int. At most this many images. Defaults to `25`.
        columns: int. Images per row. Defaults to `5`.
        title: str. Figure title. Defaults to `None`.

    Returns:
        The path written, as a str.

    Example:

    >>> plot_perturbed_examples(x_adv[:10], y[:10], {"base": p_base, "adv": p_adv},
    ...                         "examples.png")  # doctest: +SKIP
    'examples.png'
    """
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (3, 4)):
        raise ValueError(
            "`images` must have shape (n, height, width) or (n, height, width, 1|3|4). "
            f"Received: images of shape {images.shape}"
        )
    if not isinstance(predictions, Mapping):
        predictions = {"prediction": predictions}

    def ids(values, name):
        values = np.asarray(values)
        if values.ndim == 2 and values.shape[-1] > 1:
            values = values.argmax(-1)
        values = values.reshape(-1)
        if len(values) != len(images):
            raise ValueError(
                f"`{name}` must have one entry per image ({len(images)}). Received {len(values)}"
            )
        return values

    true = ids(labels, "labels")
    predicted = {name: ids(p, f"predictions[{name!r}]") for name, p in predictions.items()}
    if not isinstance(columns, int) or columns < 1:
        raise ValueError(f"`columns` must be an integer >= 1. Received: columns={columns!r}")
    n = min(len(images), max_examples)
    if n == 0:
        raise ValueError("`images` is empty: there is nothing to plot.")
    if images.max() > 1.0:
        images = images / 255.0
    columns = min(columns, n)
    rows = -(-n // columns)
    line_height = 0.22 * (1 + len(predicted))
    figure = _figure(2.0 * columns, (2.0 + line_height) * rows)
    for i in range(n):
        axis = figure.add_subplot(rows, columns, i + 1)
        axis.imshow(np.clip(images[i], 0.0, 1.0), cmap="gray", vmin=0.0, vmax=1.0)
        lines = [f"true: {_name(true[i], class_names)}"]
        for name, values in predicted.items():
            mark = "" if values[i] == true[i] else " *"
            lines.append(f"{name}: {_name(values[i], class_names)}{mark}")
        axis.set_title("\n".join(lines), fontsize=8)
        axis.axis("off")
    if title:
        figure.suptitle(title)
    return _save(figure, path)


def _curves(reports: Any) -> dict[str, dict[float, float]]:
    """`{name: {epsilon: accuracy}}` with the clean accuracy at epsilon 0."""
    if hasattr(reports, "accuracy"):
        reports = {f"{reports.attack} ({reports.norm})": reports}
    elif isinstance(reports, Sequence) and not isinstance(reports, str):
        reports = {f"{r.attack} ({r.norm}) #{i + 1}": r for i, r in enumerate(reports)}
    if not isinstance(reports, Mapping) or not reports:
        raise ValueError(
            "`reports` must be a RobustnessReport, a list of them, or a non-empty dict "
            "{name: RobustnessReport or {epsilon: accuracy}}. "
            f"Received: reports={reports!r}"
        )
    curves = {}
    for name, report in reports.items():
        if hasattr(report, "accuracy"):
            points = {0.0: report.clean_accuracy, **report.accuracy}
        elif isinstance(report, Mapping):
            points = {float(k): float(v) for k, v in report.items()}
        else:
            raise ValueError(
                f"`reports[{name!r}]` must be a RobustnessReport or a dict "
                f"{{epsilon: accuracy}}. Received: {report!r}"
            )
        curves[str(name)] = dict(sorted(points.items()))
    return curves


def plot_accuracy_vs_epsilon(
    reports: Any, path: str | os.PathLike, title: str | None = None
) -> str:
    """Saves accuracy-against-epsilon curves (epsilon 0 is the clean accuracy).

    Args:
        reports: a `RobustnessReport`, a list of them, or a dict
            `{name: RobustnessReport or {epsilon: accuracy}}` (e.g. base and
            adversarially regularized models).
        path: str or path. Where to write the PNG.
        title: str. Figure title. Defaults to `"Accuracy under attack"`.

    Returns:
        The path written, as a str.

    Example:

    >>> plot_accuracy_vs_epsilon({"base": base_report, "adv": adv_report},
    ...                          "accuracy.png")  # doctest: +SKIP
    'accuracy.png'
    """
    curves = _curves(reports)
    figure = _figure(5.0, 3.5)
    axis = figure.add_subplot(1, 1, 1)
    for name, points in curves.items():
        axis.plot(list(points), list(points.values()), marker="o", label=name)
    axis.set_xlabel("epsilon")
    axis.set_ylabel("accuracy")
    axis.set_ylim(-0.02, 1.02)
    axis.grid(True, alpha=0.3)
    axis.legend()
    axis.set_title(title or "Accuracy under attack")
    return _save(figure, path)


__all__ = ["plot_accuracy_vs_epsilon", "plot_perturbed_examples"]
