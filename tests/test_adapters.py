"""Tests of the dataset adapter: to_dict / to_tuple round trips, laziness, errors."""

from __future__ import annotations

import time

import numpy as np
import pytest
import tensorflow as tf
from conftest import MODEL_KINDS, assert_same, elements, make_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keras_advreg.data.adapters import to_dict, to_tuple, unpack_batch

PROPERTY_SETTINGS = settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
DTYPES = ("float32", "float64", "int32", "int64", "uint8", "bool")


@st.composite
def tuple_data(draw):
    """`(x, y[, w])` numpy data and matching keys: 1-3 inputs, 1-2 outputs, any dtypes."""
    n = draw(st.integers(1, 5))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))

    def array():
        shape = (n, *draw(st.lists(st.integers(1, 3), max_size=3)))
        return rng.integers(0, 100, size=shape).astype(draw(st.sampled_from(DTYPES)))

    n_in, n_out = draw(st.integers(1, 3)), draw(st.integers(1, 2))
    xs = tuple(array() for _ in range(n_in))
    ys = tuple(array() for _ in range(n_out))
    feature_key = "image" if n_in == 1 else tuple(f"in{i}" for i in range(n_in))
    label_key = "label" if n_out == 1 else tuple(f"out{i}" for i in range(n_out))
    data = (xs[0] if n_in == 1 else xs, ys[0] if n_out == 1 else ys)
    weight_key = None
    if draw(st.booleans()):
        data, weight_key = (*data, rng.random(n).astype("float32")), "sample_weight"
    keys = dict(feature_key=feature_key, label_key=label_key, sample_weight_key=weight_key)
    return data, keys


# --------------------------------------------------------------------------- numpy round trips
@PROPERTY_SETTINGS
@given(tuple_data())
def test_numpy_round_trip_tuple_dict_tuple(case):
    data, keys = case
    as_dict = to_dict(data, **keys)
    expected_keys = [k for v in keys.values() if v for k in ([v] if isinstance(v, str) else v)]
    assert sorted(as_dict) == sorted(expected_keys)
    assert_same(to_tuple(as_dict, **keys), data)


@PROPERTY_SETTINGS
@given(tuple_data())
def test_numpy_round_trip_dict_tuple_dict(case):
    data, keys = case
    as_dict = to_dict(data, **keys)
    assert_same(to_dict(to_tuple(as_dict, **keys), **keys), as_dict)


def test_hand_written_conversions():
    x, y, w = np.arange(6.0).reshape(3, 2), np.array([0, 1, 2]), np.array([1.0, 0.5, 2.0])
    d = to_dict((x, y, w), feature_key="pixels", label_key="digit", sample_weight_key="w")
    assert list(d) == ["pixels", "digit", "w"]
    assert d["pixels"] is x and d["digit"] is y and d["w"] is w  # pure structure, no copies
    assert to_tuple(d, "pixels", "digit", "w") == (x, y, w)
    # Features only, both ways; a bare array counts as `(x,)`.
    assert to_dict(x, label_key=None) == {"image": x}
    assert to_dict((x,)) == {"image": x}
    assert to_tuple({"image": x, "extra": y}, label_key=None) == (x,)
    # A dict without `sample_weight_key` drops the weights and other keys.
    assert to_tuple({"image": x, "label": y, "id": w}) == (x, y)
    # Tuples stay tuples, dicts stay dicts (validated, unchanged).
    assert to_tuple((x, y)) == (x, y)
    assert to_dict({"image": x, "label": y}) == {"image": x, "label": y}


def test_named_inputs_dict_merges_and_comes_back_with_feature_key_none():
    x = {"pixels": np.zeros((2, 3)), "meta": np.ones((2, 1))}
    y = np.array([1, 0])
    d = to_dict((x, y))
    assert sorted(d) == ["label", "meta", "pixels"]
    assert_same(to_tuple(d, feature_key=None), (x, y))
    # Multi-output labels given as a dict keyed like `label_key`.
    d = to_dict((x["pixels"], {"b": y, "a": y + 1}), label_key=("a", "b"))
    assert_same(to_tuple(d, label_key=("a", "b")), (x["pixels"], (y + 1, y)))


def test_unpack_batch_agrees_with_to_dict():
    x, y, w = np.zeros((2, 3)), np.ones(2), np.full(2, 3.0)
    features, labels, weights = unpack_batch(
        to_dict((x, y, w), sample_weight_key="sw"), label_keys="label", sample_weight_key="sw"
    )
    assert features == {"image": x} and labels is y and weights is w


# --------------------------------------------------------------------------- tf.data round trips
@PROPERTY_SETTINGS
@given(tuple_data(), st.sampled_from([None, 1, 2, 4]))
def test_dataset_round_trip(case, batch_size):
    data, keys = case
    ds = tf.data.Dataset.from_tensor_slices(data)
    if batch_size:
        ds = ds.batch(batch_size)
    as_dicts = to_dict(ds, **keys)
    assert isinstance(as_dicts.element_spec, dict)
    assert as_dicts.cardinality() == ds.cardinality()
    back = to_tuple(as_dicts, **keys)
    assert back.element_spec == ds.element_spec
    assert back.cardinality() == ds.cardinality()
    for got, want in zip(elements(back), elements(ds), strict=True):
        assert_same(got, want)
    # The numpy and the dataset paths agree element by element.
    for got, want in zip(elements(as_dicts), elements(ds), strict=True):
        assert_same(got, to_dict(want, **keys))


def test_tfds_style_uint8_dicts_become_tuples():
    images = np.random.default_rng(0).integers(0, 256, (10, 28, 28, 1)).astype("uint8")
    labels = np.arange(10, dtype="int64")
    ds = tf.data.Dataset.from_tensor_slices({"image": images, "label": labels, "id": labels})
    out = to_tuple(ds.batch(4))
    assert out.element_spec == (
        tf.TensorSpec((None, 28, 28, 1), tf.uint8),
        tf.TensorSpec((None,), tf.int64),
    )
    assert out.cardinality() == 3
    x, y = (np.concatenate(parts) for parts in zip(*elements(out), strict=True))
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)
    # Already-converted datasets are returned as they are.
    assert to_dict(ds) is ds and to_tuple(out) is out


def test_dataset_stays_lazy_and_keeps_cardinality():
    huge = tf.data.Dataset.range(10**12).map(lambda i: (tf.fill([3], tf.cast(i, tf.float32)), i))
    as_dicts = to_dict(huge, feature_key="x", label_key="y")
    back = to_tuple(as_dicts, feature_key="x", label_key="y")
    assert as_dicts.cardinality() == back.cardinality() == 10**12
    first = next(iter(as_dicts.skip(7)))
    np.testing.assert_array_equal(first["x"], [7.0, 7.0, 7.0])
    assert int(first["y"]) == 7
    x, y = next(iter(back))
    np.testing.assert_array_equal(x, [0.0, 0.0, 0.0])
    assert int(y) == 0


def test_conversion_never_runs_the_input_pipeline():
    calls = []

    def slow(i):
        calls.append(int(i))
        if int(i) >= 10:  # iterating the whole dataset would take over an hour
            time.sleep(5)
        return np.float32(i)

    ds = tf.data.Dataset.range(1000).map(
        lambda i: (tf.reshape(tf.py_function(slow, [i], tf.float32), [1]), i)
    )
    converted = to_tuple(to_dict(ds.batch(1), sample_weight_key=None))
    assert calls == []
    x, y = next(iter(converted))
    assert calls[0] == 0 and len(calls) < 10  # tf.data may prefetch an element or two
    assert x.numpy().tolist() == [[0.0]] and y.numpy().tolist() == [0]


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_fit_accepts_converted_training_and_validation_data(kind):
    rng = np.random.default_rng(0)
    x, y = rng.random((12, 4)).astype("float32"), rng.integers(0, 3, 12)
    train = to_dict(tf.data.Dataset.from_tensor_slices((x, y)).batch(4), feature_key="feature")
    model = make_model(kind)
    model.compile("sgd", "sparse_categorical_crossentropy")
    history = model.fit(
        to_tuple(train, feature_key="feature"),
        validation_data=to_tuple(to_dict((x, y), feature_key="f"), feature_key="f"),
        epochs=1,
        verbose=0,
    )
    assert np.isfinite(history.history["val_loss"][0])


# --------------------------------------------------------------------------- errors
NUMPY_X, NUMPY_Y = np.zeros((2, 3)), np.zeros(2)
DS = tf.data.Dataset.from_tensor_slices({"image": NUMPY_X, "label": NUMPY_Y})


@pytest.mark.parametrize(
    "call, error, fragments",
    [
        (lambda: to_tuple(DS, feature_key="pixels"), ValueError, ["'pixels'", "element_spec="]),
        (lambda: to_tuple(DS, label_key="digit"), ValueError, ["'digit'", "element_spec="]),
        (lambda: to_tuple(DS, sample_weight_key="w"), ValueError, ["'w'", "element_spec="]),
        (lambda: to_dict(DS, label_key="y"), ValueError, ["'y'", "label_key", "element_spec="]),
        (
            lambda: to_tuple({"image": NUMPY_X}, label_key="label"),
            ValueError,
            ["'label'", "['image']", "shape=(2, 3)"],
        ),
        (lambda: to_dict((NUMPY_X,) * 4), ValueError, ["4 elements", "shape=(2, 3)"]),
        (
            lambda: to_dict(tf.data.Dataset.from_tensor_slices((NUMPY_X,) * 4)),
            ValueError,
            ["4 elements", "element_spec="],
        ),
        (
            lambda: to_dict(tf.data.Dataset.range(4).window(2)),
            TypeError,
            ["tensors", "element_spec=DatasetSpec"],
        ),
        (lambda: to_dict(["a", "b"]), TypeError, ["arrays/tensors", "str"]),
        (lambda: to_dict(x for x in range(3)), TypeError, ["generator"]),
        (
            lambda: to_dict((NUMPY_X, NUMPY_Y, NUMPY_Y)),
            ValueError,
            ["sample_weight_key=None"],
        ),
        (
            lambda: to_dict(((NUMPY_X, NUMPY_X), NUMPY_Y)),
            ValueError,
            ["feature_key", "tuple of 2"],
        ),
        (
            lambda: to_dict(((NUMPY_X, NUMPY_X), NUMPY_Y), feature_key=("a", "b", "c")),
            ValueError,
            ["feature_key=('a', 'b', 'c')"],
        ),
        (
            lambda: to_dict(({"label": NUMPY_X}, NUMPY_Y)),
            ValueError,
            ["['label']", "clash"],
        ),
        (lambda: to_dict((NUMPY_X, NUMPY_Y), feature_key=3), ValueError, ["feature_key=3"]),
        (lambda: to_dict((NUMPY_X, NUMPY_Y), label_key=None), ValueError, ["label_key=None"]),
        (lambda: to_tuple(DS, label_key=("a", "a")), ValueError, ["label_key=('a', 'a')"]),
    ],
)
def test_errors_name_the_key_and_show_what_was_received(call, error, fragments):
    with pytest.raises(error) as info:
        call()
    for fragment in fragments:
        assert fragment in str(info.value)
