"""Shared fixtures and helpers: seeds, tiny models, a linear classifier and real MNIST.

Tiny models of the three Keras kinds, a hand-computable linear classifier (exact attack
values), dataset comparison helpers, and real MNIST from ../shared.
"""

from __future__ import annotations

import gzip
import importlib
import importlib.util
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


def require(module: str):
    """Imports an optional dependency: skips without it, but fails under CI, which installs
    every extra (a broken install must not turn into skipped tests)."""
    if os.environ.get("CI"):
        return importlib.import_module(module)
    return pytest.importorskip(module)


def cross_backend(test):
    """Marks a test that runs the three Keras backends in subprocesses and compares them:
    run once, from the TensorFlow session (CI's other sessions run the `backends` tests
    again on JAX and PyTorch), and slow (the floor job has no jax or torch)."""
    only_tf = pytest.mark.skipif(
        keras.backend.backend() != "tensorflow",
        reason="compares the backends once, from the TensorFlow run",
    )
    missing = [m for m in ("jax", "torch") if importlib.util.find_spec(m) is None]
    installed = pytest.mark.skipif(  # CI installs both: there a missing one fails the test
        bool(missing) and not os.environ.get("CI"),
        reason=f"needs {' and '.join(missing)} (pip install 'keras-advreg[jax,torch]')",
    )
    return pytest.mark.slow(only_tf(installed(test)))


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


def small_mnist_cnn():
    """A small logits CNN for 28x28x1 images, quick to train on a few thousand examples."""
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    )


# --------------------------------------------------------------------------- a linear classifier
# Linear model: z0 = 0, z1 = 2*x1 - x2, so d = w1 - w0 = (2, -1) and the margin of an
# example is |2*x1 - x2|. FGSM of radius eps moves every example against its margin by
# eps * ||d||_dual: ||d||_1 = 3 (l-inf), ||d||_2 = sqrt(5) (l2), ||d||_inf = 2 (l1).
KERNEL = np.array([[0.0, 2.0], [0.0, -1.0]], "float32")
X = np.array([[0.05, 0.0], [0.0, -0.25], [0.25, 0.0], [0.0, 0.7], [0.5, 0.0]], "float32")
Y = np.array([1, 1, 1, 0, 0])  # margins 0.1, 0.25, 0.5, 0.7; the last is misclassified
EPSILONS = (0.1, 0.24)
EXPECTED = {  # an example flips when its margin < eps * ||d||_dual
    "infinity": {0.1: 2 / 5, 0.24: 0 / 5},  # shifts 0.3, 0.72
    "l2": {0.1: 3 / 5, 0.24: 1 / 5},  # shifts 0.224, 0.537
    "l1": {0.1: 3 / 5, 0.24: 2 / 5},  # shifts 0.2, 0.48
}


def _dense(model):
    return [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)][-1]


def linear_model(kind="sequential", scale=1.0):
    model = make_model(kind, input_shape=(2,), num_classes=2, hidden=0)
    _dense(model).set_weights([KERNEL * scale, np.zeros(2, "float32")])
    return model


# --------------------------------------------------------------------------- dataset helpers
def assert_same(a, b):
    """Same nested structure (tuple/list/dict kinds included) and equal arrays of equal dtype."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b)
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (tuple, list)):
        assert type(a) is type(b) and len(a) == len(b), (a, b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    else:
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


def elements(ds):
    import tensorflow as tf

    return [tf.nest.map_structure(lambda t: t.numpy(), e) for e in ds]
