"""Shared fixtures: seeds, tiny models of the three Keras kinds, and real MNIST from ../shared."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
MNIST_DIR = Path(
    os.environ.get("KERAS_ADVREG_MNIST_DIR", REPO_ROOT.parent / "shared" / "data" / "mnist")
)
MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)
    yield


def _require_mnist() -> Path:
    if all((MNIST_DIR / f).exists() for f in MNIST_FILES):
        return MNIST_DIR
    message = f"real MNIST files not found in {MNIST_DIR} (set KERAS_ADVREG_MNIST_DIR)"
    if os.environ.get("CI"):
        pytest.fail(message + ": CI must run the real-data tests, not skip them")
    pytest.skip(message)


@pytest.fixture(scope="session")
def mnist_manual_dir() -> Path:
    """The folder with the four original MNIST .gz files (tfds `manual_dir`)."""
    return _require_mnist()


@pytest.fixture(scope="session")
def tfds_data_dir(tmp_path_factory) -> Path:
    """A tfds `data_dir` shared by the tests of one session (MNIST is prepared once)."""
    return tmp_path_factory.mktemp("tfds")


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[:4], "big")
    if magic == 2051:
        n, rows, cols = (int.from_bytes(data[i : i + 4], "big") for i in (4, 8, 12))
        return np.frombuffer(data, np.uint8, offset=16).reshape(n, rows, cols)
    n = int.from_bytes(data[4:8], "big")
    return np.frombuffer(data, np.uint8, offset=8).reshape(n)


@pytest.fixture(scope="session")
def mnist_arrays():
    """Real MNIST as float32 images in [0, 1] of shape (n, 28, 28, 1) and int labels.

    Read straight from the original IDX files (fast); tests of the tfds path use
    `mnist_manual_dir` with `keras_advreg.load_tfds` instead.
    """
    root = _require_mnist()
    arrays = [_read_idx(root / f) for f in MNIST_FILES]
    x_train, y_train, x_test, y_test = arrays
    to_float = lambda x: (x.astype("float32") / 255.0)[..., None]  # noqa: E731
    return to_float(x_train), y_train.astype("int64"), to_float(x_test), y_test.astype("int64")


# --------------------------------------------------------------------------- tiny models
@keras.saving.register_keras_serializable(package="keras_advreg_tests")
class SubclassedClassifier(keras.Model):
    """A subclassed model: Flatten -> Dense(hidden, relu) -> Dense(num_classes)."""

    def __init__(self, num_classes=3, hidden=8, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.hidden = hidden
        self.flatten = keras.layers.Flatten()
        self.hidden_layer = keras.layers.Dense(hidden, activation="relu") if hidden else None
        self.logits = keras.layers.Dense(num_classes)

    def call(self, inputs, training=None):
        if isinstance(inputs, dict):
            inputs = inputs["feature"]
        x = self.flatten(inputs)
        if self.hidden_layer is not None:
            x = self.hidden_layer(x)
        return self.logits(x)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "hidden": self.hidden}


def make_model(kind: str, input_shape=(4,), num_classes=3, hidden=8, input_name="feature"):
    """A tiny logits classifier of the given kind: 'sequential', 'functional' or 'subclassed'."""
    layers = [keras.layers.Flatten()]
    if hidden:
        layers.append(keras.layers.Dense(hidden, activation="relu"))
    layers.append(keras.layers.Dense(num_classes))
    if kind == "sequential":
        return keras.Sequential([keras.Input(input_shape, name=input_name), *layers])
    if kind == "functional":
        inputs = keras.Input(input_shape, name=input_name)
        x = inputs
        for layer in layers:
            x = layer(x)
        return keras.Model(inputs, x)
    if kind == "subclassed":
        model = SubclassedClassifier(num_classes=num_classes, hidden=hidden)
        model(np.zeros((1, *input_shape), "float32"))
        return model
    raise ValueError(kind)


MODEL_KINDS = ("sequential", "functional", "subclassed")
