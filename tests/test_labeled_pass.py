"""The supervised pass of mixed labeled/unlabeled batches (`training/labeled_pass.py`).

Only the labeled examples of a batch holding unlabeled ones (label `-1`) enter the
supervised loss; with batch normalization it runs on a batch of its labeled examples alone.
With `multiplier=0` one step on a mixed batch equals a plain Keras step on the labeled
examples (whose batch statistics exclude the unlabeled ones), with and without batch
normalization, while the moving statistics follow the whole batch. Marker
`backends`: TensorFlow and JAX (the training tests skip on PyTorch).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

import keras_advreg
from keras_advreg.training.labeled_pass import labeled_fill_indices

pytestmark = pytest.mark.backends
LOGITS_CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
trains_here = pytest.mark.skipif(
    keras.backend.backend() not in ("tensorflow", "jax"),
    reason="AdversarialRegularization trains on TensorFlow and JAX",
)


@pytest.mark.parametrize(
    "selection, expected",
    [
        # labeled at 1 and 4; the unlabeled positions 0, 2, 3, 5 take them in turn
        ([0, 1, 0, 0, 1, 0], [1, 1, 4, 1, 4, 4]),
        ([1, 1, 1], [0, 1, 2]),  # all labeled: the batch itself
        ([0, 0, 0], [0, 1, 2]),  # none labeled: the batch itself (every weight is 0)
        ([0, 0, 1], [2, 2, 2]),
    ],
)
def test_labeled_fill_indices(selection, expected):
    got = labeled_fill_indices(keras.ops.convert_to_tensor(np.array(selection, "float32")))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(got), expected)


def _model(batch_norm, momentum):
    keras.utils.set_random_seed(0)
    if not batch_norm:
        return keras.Sequential([
            keras.Input((2,)),
            keras.layers.Dense(4, activation="tanh"),
            keras.layers.Dense(3),
        ])  # fmt: skip
    return keras.Sequential([
        keras.Input((2,)),
        keras.layers.Dense(4, use_bias=False),
        keras.layers.BatchNormalization(momentum=momentum),
        keras.layers.ReLU(),
        keras.layers.Dense(3),
        keras.layers.BatchNormalization(momentum=momentum),
    ])  # fmt: skip


@trains_here
@pytest.mark.parametrize("batch_norm", [False, True], ids=["dense", "batch_norm"])
def test_a_mixed_batch_steps_as_its_labeled_examples(batch_norm):
    # With multiplier 0, one step on 4 labeled + 4 unlabeled examples is a plain Keras step
    # on the 4 labeled ones. The unlabeled examples are far from the labeled ones: inside a
    # batch normalization over all 8, they would move every labeled example's normalized
    # activations.
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(4, 2)), 5.0 + 3.0 * rng.normal(size=(4, 2))])
    x = x.astype("float32")
    y = np.array([0, 2, 1, 0, -1, -1, -1, -1])
    m = 0.5
    base = _model(batch_norm, m)
    plain = keras.models.clone_model(base)
    plain.set_weights(base.get_weights())
    config = keras_advreg.AdvConfig(adv_loss="vat", multiplier=0.0, adv_step_size=0.5)
    model = keras_advreg.AdversarialRegularization(base, adv_config=config)
    model.compile(keras.optimizers.SGD(0.5), LOGITS_CE)
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    plain.compile(keras.optimizers.SGD(0.5), LOGITS_CE)
    plain.fit(x[:4], y[:4], batch_size=4, epochs=1, shuffle=False, verbose=0)
    for got, want in zip(base.trainable_weights, plain.trainable_weights):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(got), keras.ops.convert_to_numpy(want),
            rtol=1e-5, atol=1e-6,
        )  # fmt: skip
    if not batch_norm:
        return
    # The moving statistics describe the whole batch: the first normalization's inputs
    # are x @ W (the kernel before the step: a fresh model of the same seed), and its
    # moving mean moved from 0 by (1 - m) * their mean over all 8 examples.
    first = base.layers[1]
    h = x @ keras.ops.convert_to_numpy(_model(True, m).layers[0].kernel)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(first.moving_mean), (1 - m) * h.mean(0), rtol=1e-4, atol=1e-6
    )
