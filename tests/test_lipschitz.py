"""keras_advreg.layers' 1-Lipschitz layers and keras_advreg.losses: bounds measured exactly.

Each linear layer's operator norm is measured independently: the layer applied to every basis
input gives its matrix, whose largest singular value NumPy computes.
"""

import keras
import numpy as np
import pytest

from keras_advreg.layers import (
    GroupSort,
    L2NormPooling2D,
    LipschitzConv2D,
    LipschitzDense,
    ScaledAveragePooling2D,
)
from keras_advreg.losses import LipschitzMarginCrossEntropy

pytestmark = pytest.mark.backends


def operator_norm(layer, shape):
    """Largest singular value of a linear(+bias) layer on inputs of `shape`."""
    n = int(np.prod(shape))
    basis = np.eye(n, dtype="float32").reshape((n, *shape))
    zero = keras.ops.convert_to_numpy(layer(np.zeros((1, *shape), "float32")))
    matrix = (keras.ops.convert_to_numpy(layer(basis)) - zero).reshape(n, -1)
    return np.linalg.svd(matrix.astype("float64"), compute_uv=False)[0]


@pytest.mark.parametrize("units,inputs", [(5, 7), (7, 3), (16, 16)])
def test_dense_operator_norm_is_at_most_one(units, inputs):
    layer = LipschitzDense(units, kernel_initializer=keras.initializers.RandomNormal(seed=units))
    assert operator_norm(layer, (inputs,)) <= 1 + 1e-4


def test_dense_scale_is_aol_and_tight_on_orthogonal_rows():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    kernel = (q[:4] * np.array([[0.5], [2.0], [3.0], [0.1]])).astype("float32")  # (4 in, 6 out)
    layer = LipschitzDense(6, use_bias=False)
    layer.build((None, 4))
    layer.set_weights([kernel])
    # K K^T is diagonal here, so AOL divides each row by its norm: orthonormal rows, norm 1.
    expected = kernel / np.linalg.norm(kernel, axis=1, keepdims=True)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer.lipschitz_kernel), expected, atol=1e-6
    )
    assert abs(operator_norm(layer, (4,)) - 1.0) < 1e-5
    # A general kernel: d_i = (sum_j |K K^T|_ij)^(-1/2), from NumPy.
    general = rng.normal(size=(4, 3)).astype("float32")
    layer.build((None, 4)) if not layer.built else None
    other = LipschitzDense(3, use_bias=False)
    other.build((None, 4))
    other.set_weights([general])
    d = 1 / np.sqrt(np.abs(general @ general.T).sum(1))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(other.lipschitz_kernel), general * d[:, None], rtol=1e-5
    )


def _aol_conv_scale_numpy(kernel):
    """d_i = (sum over shifts s and channels j of |sum_{p,o} K[p,i,o] K[p+s,j,o]|)^(-1/2)."""
    kh, kw, cin, _ = kernel.shape
    total = np.zeros(cin)
    for dy in range(-kh + 1, kh):
        for dx in range(-kw + 1, kw):
            gram = np.zeros((cin, cin))
            for y in range(kh):
                for x in range(kw):
                    if 0 <= y + dy < kh and 0 <= x + dx < kw:
                        gram += kernel[y, x] @ kernel[y + dy, x + dx].T
            total += np.abs(gram).sum(1)
    return 1 / np.sqrt(total)


@pytest.mark.parametrize("padding,strides", [("same", 1), ("valid", 1), ("same", 2), ("valid", 2)])
def test_conv_operator_norm_is_at_most_one(padding, strides):
    layer = LipschitzConv2D(
        3,
        3,
        padding=padding,
        strides=strides,
        kernel_initializer=keras.initializers.RandomNormal(seed=1),
    )
    assert operator_norm(layer, (6, 6, 2)) <= 1 + 1e-4


def test_conv_scale_matches_numpy_and_is_tight_for_orthogonal_1x1():
    rng = np.random.default_rng(1)
    kernel = rng.normal(size=(3, 2, 2, 3)).astype("float32")
    layer = LipschitzConv2D(3, (3, 2), use_bias=False)
    layer.build((None, 5, 5, 2))
    layer.set_weights([kernel])
    expected = kernel * _aol_conv_scale_numpy(kernel.astype("float64"))[None, None, :, None]
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer.lipschitz_kernel), expected, rtol=1e-5
    )
    # A 1x1 convolution with orthogonal rows is an orthogonal map per pixel: norm exactly 1.
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    one = LipschitzConv2D(4, 1, use_bias=False)
    one.build((None, 3, 3, 3))
    one.set_weights([(3.0 * q[:3]).reshape(1, 1, 3, 4).astype("float32")])
    assert abs(operator_norm(one, (3, 3, 3)) - 1.0) < 1e-5


def test_groupsort_sorts_groups_and_is_1_lipschitz():
    x = np.array([[1.0, 3.0, 4.0, 2.0, 0.0, -1.0]], "float32")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(GroupSort(2)(x)), [[3, 1, 4, 2, 0, -1]]
    )
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(GroupSort(3)(x)), [[4, 3, 1, 2, 0, -1]]
    )
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(2, 50, 4, 4, 6)).astype("float32")
    fa, fb = (keras.ops.convert_to_numpy(GroupSort(2)(v)).reshape(50, -1) for v in (a, b))
    assert np.all(
        np.linalg.norm(fa - fb, axis=1) <= np.linalg.norm((a - b).reshape(50, -1), axis=1) + 1e-5
    )
    with pytest.raises(ValueError, match="multiple of group_size"):
        GroupSort(4)(np.zeros((1, 6), "float32"))
    with pytest.raises(ValueError, match="group_size"):
        GroupSort(1)


def test_pooling_layers():
    x = np.arange(16, dtype="float32").reshape(1, 4, 4, 1)
    windows = x.reshape(2, 2, 2, 2).transpose(0, 2, 1, 3).reshape(4, 4)  # the 2x2 windows
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(L2NormPooling2D(2)(x)).ravel(),
        np.linalg.norm(windows, axis=1),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(ScaledAveragePooling2D(2)(x)).ravel(),
        windows.mean(1) * 2,
        rtol=1e-6,
    )
    assert abs(operator_norm(ScaledAveragePooling2D(2), (4, 4, 2)) - 1.0) < 1e-5  # tight
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(2, 20, 4, 4, 2)).astype("float32")
    pool = L2NormPooling2D(2)
    diff = keras.ops.convert_to_numpy(pool(a) - pool(b)).reshape(20, -1)
    assert np.all(
        np.linalg.norm(diff, axis=1) <= np.linalg.norm((a - b).reshape(20, -1), axis=1) + 1e-5
    )
    for cls in (L2NormPooling2D, ScaledAveragePooling2D):
        with pytest.raises(ValueError, match="non-overlapping"):
            cls(3, strides=2)


def test_layers_refuse_what_breaks_the_bound():
    with pytest.raises(ValueError, match="1-Lipschitz.*activation='exponential'"):
        LipschitzDense(3, activation="exponential")
    with pytest.raises(ValueError, match="dilation_rate=1"):
        LipschitzConv2D(3, 3, dilation_rate=2)


def test_save_and_load_round_trip(tmp_path):
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            LipschitzConv2D(4, 3, padding="same"),
            GroupSort(2),
            L2NormPooling2D(2),
            LipschitzConv2D(4, 3, padding="same", activation="relu"),
            ScaledAveragePooling2D(2),
            keras.layers.Flatten(),
            LipschitzDense(6),
            GroupSort(3),
            LipschitzDense(3),
        ]
    )
    x = np.random.default_rng(4).normal(size=(3, 8, 8, 1)).astype("float32")
    path = tmp_path / "lipschitz.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert [type(layer).__name__ for layer in loaded.layers] == [
        type(layer).__name__ for layer in model.layers
    ]
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(model(x)), atol=1e-6
    )


def test_margin_loss_by_hand():
    z = np.array([[3.0, 0.0, 1.0], [0.5, 0.2, 0.0]], "float32")
    loss = LipschitzMarginCrossEntropy(epsilon=0.5, temperature=0.5)
    margin = np.sqrt(2) * 0.5
    shifted = (z - margin * np.eye(3)[[0, 1]]) / 0.5
    log_softmax = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    expected = 0.5 * -np.mean(log_softmax[[0, 1], [0, 1]])
    assert float(loss(np.array([0, 1]), z)) == pytest.approx(expected, rel=1e-5)
    assert float(loss(np.eye(3)[[0, 1]], z)) == pytest.approx(expected, rel=1e-5)  # one-hot
    again = LipschitzMarginCrossEntropy.from_config(loss.get_config())
    assert (again.epsilon, again.temperature, again.margin) == (0.5, 0.5, pytest.approx(margin))
    with pytest.raises(ValueError, match="epsilon"):
        LipschitzMarginCrossEntropy(epsilon=0)
    with pytest.raises(ValueError, match="from_logits"):
        LipschitzMarginCrossEntropy(from_logits=False)
