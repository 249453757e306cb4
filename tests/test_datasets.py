"""Tests of load_tfds: the pipeline on tfds mock data, argument checks, real MNIST offline."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import assert_same, elements, require

from keras_advreg.data.adapters import to_tuple
from keras_advreg.data.tfds import load_tfds

tfds = require("tensorflow_datasets")


def test_tfds_mock_dataset_converts():
    with tfds.testing.mock_data(num_examples=6):
        x, y = next(iter(to_tuple(tfds.load("mnist", split="train"))))
    assert x.shape == (28, 28, 1) and x.dtype == tf.uint8 and y.dtype == tf.int64


# --------------------------------------------------------------------------- load_tfds (mocked)
def test_load_tfds_pipeline_on_mock_data():
    with tfds.testing.mock_data(num_examples=10):
        ds = load_tfds("mnist", split="train", batch_size=4, seed=0)
        raw = tfds.load("mnist", split="train", as_supervised=True)
        raw_labels = sorted(int(y) for _, y in raw)
    assert ds.cardinality() == 3
    batches = elements(ds)
    assert [b[0].shape for b in batches] == [(4, 28, 28, 1)] * 2 + [(2, 28, 28, 1)]
    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    assert x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.5
    assert y.dtype == np.int64 and sorted(y.tolist()) == raw_labels


def test_load_tfds_normalize_scales_by_255_and_keeps_order_without_shuffle():
    with tfds.testing.mock_data(num_examples=8):
        scaled = load_tfds(split="test", batch_size=None)  # test splits are not shuffled
        raw = load_tfds(split="test", batch_size=None, normalize=False)
        again = load_tfds(split="test", batch_size=None, normalize=False, shuffle=False)
    (xs, ys), (xr, yr) = (
        [np.stack(parts) for parts in zip(*elements(d), strict=True)] for d in (scaled, raw)
    )
    assert xr.dtype == np.uint8 and xs.dtype == np.float32
    np.testing.assert_array_equal(xs, xr.astype("float32") / 255.0)
    np.testing.assert_array_equal(ys, yr)
    assert_same(elements(again), elements(raw))


def test_load_tfds_shuffles_training_splits_reproducibly():
    with tfds.testing.mock_data(num_examples=64):
        order = lambda **kw: [int(y) for _, y in load_tfds(batch_size=None, **kw)]  # noqa: E731
        unshuffled = order(shuffle=False)
        first, second, other = order(seed=1), order(seed=1), order(seed=2)
        no_buffer = order(shuffle_buffer=0)
    assert first == second and first != other
    assert sorted(first) == sorted(unshuffled) and first != unshuffled
    assert no_buffer == unshuffled


def test_load_tfds_as_dict_splits_take_and_drop_remainder():
    with tfds.testing.mock_data(num_examples=10):
        train, test = load_tfds(
            split=["train", "test"],
            batch_size=4,
            take=9,
            as_dict=True,
            feature_key="pixels",
            label_key="digit",
            drop_remainder=True,
            prefetch=False,
        )
    for ds in (train, test):
        assert ds.element_spec == {
            "pixels": tf.TensorSpec((4, 28, 28, 1), tf.float32),
            "digit": tf.TensorSpec((4,), tf.int64),
        }
        assert ds.cardinality() == 2


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"batch_size": 0}, "batch_size=0"),
        ({"batch_size": 2.5}, "batch_size=2.5"),
        ({"shuffle_buffer": -1}, "shuffle_buffer=-1"),
        ({"take": 0}, "take=0"),
        ({"split": []}, "split=[]"),
        ({"name": ""}, "name=''"),
        ({"shuffle": "yes"}, "shuffle='yes'"),
        ({"as_dict": True, "feature_key": ("a", "b")}, "feature_key=('a', 'b')"),
        ({"manual_dir": "/nonexistent/mnist"}, "manual_dir='/nonexistent/mnist'"),
    ],
)
def test_load_tfds_validates_arguments_before_loading(kwargs, fragment, monkeypatch):
    monkeypatch.setattr(tfds, "load", lambda *a, **k: pytest.fail("tfds.load was called"))
    with pytest.raises(ValueError) as info:
        load_tfds(**kwargs)
    assert fragment in str(info.value)


def test_load_tfds_names_missing_mnist_files(tmp_path):
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"")
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.gz") as info:
        load_tfds(manual_dir=tmp_path)
    assert "train-images-idx3-ubyte.gz" not in str(info.value).split("Received")[0]


def test_load_tfds_without_tensorflow_datasets_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with pytest.raises(ImportError, match=r'pip install "keras-advreg\[datasets\]"'):
        load_tfds()


# --------------------------------------------------------------------------- real MNIST
@pytest.mark.slow
def test_load_tfds_builds_real_mnist_offline(mnist_manual_dir, tfds_data_dir, mnist_arrays):
    train, test = load_tfds(
        "mnist",
        split=["train", "test"],
        batch_size=1000,
        data_dir=tfds_data_dir,
        manual_dir=mnist_manual_dir,
        seed=0,
    )
    assert train.cardinality() == 60 and test.cardinality() == 10
    x, y = next(iter(train))
    assert x.shape == (1000, 28, 28, 1) and x.dtype == tf.float32 and y.dtype == tf.int64
    assert float(tf.reduce_min(x)) == 0.0 and float(tf.reduce_max(x)) == 1.0
    assert set(np.unique(y)) == set(range(10))
    # The whole test split: the same 10000 images and labels as the original files.
    _, _, x_test, y_test = mnist_arrays
    batches = elements(test)
    labels = np.concatenate([b[1] for b in batches])
    assert labels.shape == (10000,)
    np.testing.assert_array_equal(np.bincount(labels), np.bincount(y_test))
    pixel_sum = sum(b[0].astype("float64").sum() for b in batches)
    np.testing.assert_allclose(pixel_sum, x_test.astype("float64").sum(), rtol=1e-9)
    # Reuses the prepared data: dicts, a subset, unbatched.
    subset = load_tfds(split="test", batch_size=None, take=5, as_dict=True, data_dir=tfds_data_dir)
    assert subset.cardinality() == 5
    assert subset.element_spec["image"] == tf.TensorSpec((28, 28, 1), tf.float32)
