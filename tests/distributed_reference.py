"""Trains the same AdversarialRegularization model on one device and under MirroredStrategy.

Run by tests/test_distribution.py in a subprocess (the two logical CPU devices must be set up
before TensorFlow initialises): `python tests/distributed_reference.py OUTPUT.npz`.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_advreg  # noqa: E402


def train(strategy, data, initial_weights, config):
    with strategy.scope():
        base = keras.Sequential(
            [
                keras.Input((6,), name="feature"),
                keras.layers.Dense(8, activation="tanh"),
                keras.layers.Dense(3),
            ]
        )
        base.set_weights(initial_weights)
        model = keras_advreg.AdversarialRegularization(base, adv_config=config)
        model.compile(
            keras.optimizers.SGD(0.2),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
    dataset = tf.data.Dataset.from_tensor_slices(data).batch(16)
    history = model.fit(dataset, epochs=2, verbose=0)
    return base.get_weights(), history.history


def main(output_path):
    rng = np.random.default_rng(0)
    data = (
        rng.uniform(0, 1, (64, 6)).astype("float32"),
        rng.integers(0, 3, 64),
        rng.uniform(0.5, 1.5, 64).astype("float32"),
    )
    weights = [rng.normal(0, 0.5, s).astype("float32") for s in [(6, 8), (8,), (8, 3), (3,)]]
    out = {}
    configs = {
        "fgsm": keras_advreg.AdvConfig(
            multiplier=0.5, adv_step_size=0.05, adv_grad_norm="infinity"
        ),
        "pgd": keras_advreg.AdvConfig(
            multiplier=0.5,
            adv_step_size=0.02,
            adv_grad_norm="l2",
            pgd_iterations=3,
            pgd_epsilon=0.05,
        ),
    }
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    out["replicas"] = np.array(mirrored.num_replicas_in_sync)
    for name, config in configs.items():
        for label, strategy in (("one", tf.distribute.get_strategy()), ("mirrored", mirrored)):
            final, history = train(strategy, data, weights, config)
            for i, w in enumerate(final):
                out[f"{name}_{label}_w{i}"] = w
            for key, values in history.items():
                out[f"{name}_{label}_{key}"] = np.array(values)
    out["initial_w0"] = weights[0]
    np.savez(output_path, **out)


if __name__ == "__main__":
    main(sys.argv[1])
