"""The README's quick start and the guides' MNIST examples run as written, on tiny random
data in place of MNIST."""

import re
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import require

import keras_advreg

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# The README, then the guides' examples written for real data (their runnable examples on
# random data, marked `<!-- test -->`, are run by tests/test_docs_site.py).
TEXTS = [README] + sorted((ROOT / "docs" / "guides").glob("*.md"))
BLOCKS = [
    block
    for path in TEXTS
    for block in re.findall(r"(?<!-->\n)```python\n(.*?)```", path.read_text(), re.S)
]


def _tiny_mnist(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 28, 28, 1), dtype="float32"), rng.integers(0, 10, n)


@pytest.fixture
def namespace(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # the snippets write model files and tuner folders
    x_train, y_train = _tiny_mnist()
    x_val, y_val = _tiny_mnist(32, seed=1)

    def fake_load_tfds(name="mnist", split="train", **kwargs):
        def one(_):
            return tf.data.Dataset.from_tensor_slices((x_val, y_val)).batch(16)

        return [one(s) for s in split] if isinstance(split, list) else one(split)

    monkeypatch.setattr(keras_advreg, "load_tfds", fake_load_tfds)
    model = keras.Sequential(
        [keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10)]
    )
    model.compile(
        "adam",
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return {
        "x_train": x_train,
        "y_train": y_train,
        "x_val": x_val,
        "y_val": y_val,
        "model": model,
    }


def _block(start: str) -> str:
    matches = [b for b in BLOCKS if b.lstrip().startswith(start)]
    assert len(matches) == 1, f"expected one README block starting with {start!r}"
    # Tiny runs: one epoch and few trials instead of the README's real settings.
    code = re.sub(r"epochs=\d+", "epochs=1", matches[0])
    return re.sub(r"max_trials=\d+", "max_trials=2", code)


@pytest.mark.slow  # AutoAttack (with Square-5000) and the callback's AutoAttack-fast
def test_readme_quick_start(namespace):
    exec(_block("import keras\nimport keras_advreg\n\ntrain, test ="), namespace)
    report = namespace["report"]
    assert set(report.accuracy) == {0.1, 0.2}
    assert "AutoAttack" in report.description
    assert "val_adv_accuracy" in namespace["model"].history.history
    assert Path("model.keras").exists()


def test_callback_quick_start(namespace):
    exec(_block("import keras\nimport keras_advreg\n\nrobustness ="), namespace)
    history = namespace["model"].history.history
    assert "val_adv_accuracy" in history and "val_accuracy" in history


def test_wrapper_quick_start(namespace):
    exec(_block("import keras\nimport keras_advreg\n\nbase_model ="), namespace)
    report = namespace["report"]
    assert set(report.accuracy) == {0.05, 0.1, 0.2}
    assert Path("model.keras").exists()


def test_tuner_quick_start(namespace):
    require("keras_tuner")
    exec(_block("import keras\nimport keras_tuner as kt"), namespace)
    assert isinstance(namespace["best_config"], keras_advreg.AdvConfig)
    assert len(namespace["tuner"].oracle.trials) == 2
