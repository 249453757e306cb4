"""PNG figures from plain arrays and reports."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from keras_advreg.evaluation import RobustnessReport
from keras_advreg.plotting import plot_accuracy_vs_epsilon, plot_perturbed_examples

PNG = b"\x89PNG\r\n\x1a\n"


def report(clean=0.9, accuracy=None, attack="fgsm"):
    accuracy = accuracy or {0.1: 0.5, 0.2: 0.2}
    return RobustnessReport(
        clean_accuracy=clean,
        accuracy=accuracy,
        attack_success_rate={e: 0.0 for e in accuracy},
        clean_per_class_accuracy={},
        per_class_accuracy={},
        num_examples=10,
        attack=attack,
        norm="infinity",
        zero_gradient_fraction=0.0,
        config={},
    )


def is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == PNG


@pytest.mark.parametrize("shape", [(6, 8, 8), (6, 8, 8, 1), (6, 8, 8, 3)])
def test_perturbed_examples_grid(tmp_path, shape):
    images = np.random.default_rng(0).random(shape).astype("float32")
    labels = np.array([0, 1, 2, 0, 1, 2])
    path = plot_perturbed_examples(
        images,
        labels,
        {"base": labels, "adv-regularized": np.eye(3)[[0, 0, 2, 0, 1, 1]]},
        tmp_path / "sub" / "grid.png",
        class_names=["zero", "one", "two"],
        columns=4,
        title="FGSM eps=0.1",
    )
    assert path == str(tmp_path / "sub" / "grid.png") and is_png(path)


def test_perturbed_examples_titles(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    titles = []
    original = Axes.set_title
    monkeypatch.setattr(
        Axes,
        "set_title",
        lambda self, text, **kw: titles.append(text) or original(self, text, **kw),
    )
    plot_perturbed_examples(
        np.zeros((2, 4, 4)) + 200, [3, 1], {"base": [3, 1], "adv": [3, 7]}, tmp_path / "t.png"
    )
    assert titles == ["true: 3\nbase: 3\nadv: 3", "true: 1\nbase: 1\nadv: 7 *"]


def test_perturbed_examples_bad_input(tmp_path):
    with pytest.raises(ValueError, match="`images` must have shape"):
        plot_perturbed_examples(np.zeros((2, 4)), [0, 1], [0, 1], tmp_path / "x.png")
    with pytest.raises(ValueError, match="one entry per image"):
        plot_perturbed_examples(np.zeros((2, 4, 4)), [0, 1, 2], [0, 1], tmp_path / "x.png")


def test_accuracy_vs_epsilon(tmp_path):
    for reports in (
        report(),
        [report(), report(attack="pgd")],
        {"base": report(), "adv-regularized": report(0.95, {0.1: 0.8, 0.2: 0.6})},
        {"from dict": {0.0: 0.9, 0.1: 0.4}},
    ):
        assert is_png(plot_accuracy_vs_epsilon(reports, tmp_path / "curve.png", title="MNIST"))
    with pytest.raises(ValueError, match="`reports` must be"):
        plot_accuracy_vs_epsilon({}, tmp_path / "curve.png")
    with pytest.raises(ValueError, match=r"`reports\['x'\]` must be"):
        plot_accuracy_vs_epsilon({"x": 0.5}, tmp_path / "curve.png")


def test_missing_matplotlib_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r'pip install "keras-advreg\[plot\]"'):
        plot_accuracy_vs_epsilon(report(), tmp_path / "curve.png")
