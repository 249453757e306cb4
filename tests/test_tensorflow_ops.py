"""TensorFlow's compilation of the attacks: no "retracing" warnings in normal use; the
XLA-fused pieces (`backend.ops.fuse`) inside and outside compiled code."""

from __future__ import annotations

import logging

import keras
import numpy as np
import tensorflow as tf

import keras_advreg

RNG = np.random.default_rng(0)
X = RNG.random((16, 4), dtype="float32")
Y = RNG.integers(0, 3, 16)


def test_many_models_and_attacks_log_no_retracing_warning():
    # Each model and attack is compiled once; TensorFlow warns when one code object is
    # traced 5 times in a row, which several evaluations in one process used to do.
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = tf.get_logger()
    logger.addHandler(handler)
    try:
        for seed in range(3):  # 6 compilations: TensorFlow warns at 5
            keras.utils.set_random_seed(seed)
            model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
            for attack in ("fgsm", "pgd", keras_advreg.attacks.FABTargeted(steps=3)):
                keras_advreg.evaluate_robustness(
                    model, (X, Y), epsilons=0.1, attack=attack, warn=False
                )
    finally:
        logger.removeHandler(handler)
    retracing = [r.getMessage()[:120] for r in records if "retracing" in r.getMessage()]
    assert retracing == []


def test_fuse_compiles_with_xla_and_computes_the_function():
    from keras_advreg.backend import ops as backend_ops
    from keras_advreg.backend import tensorflow_ops

    def scaled_norms(t, norm, scale):  # `norm` and `scale`: static (Python) arguments
        power = {"l1": 1.0, "l2": 2.0}[norm]
        return scale * tf.reduce_sum(tf.abs(t) ** power, axis=1) ** (1.0 / power)

    t = np.array([[3.0, -4.0], [1.0, 1.0], [0.0, 2.0]], "float32")
    # XLA: only a function compiled with `jit_compile=True` yields its HLO.
    hlo = tensorflow_ops.fuse(scaled_norms).experimental_get_compiler_ir(t, "l2", 1.0)()
    assert "HloModule" in hlo
    for rows in ((), (0,)):  # (0,): rows padded to 8 and cut back to 3
        fused = backend_ops.fuse(scaled_norms, rows=rows)
        np.testing.assert_allclose(fused(t, "l2", 2.0), [10.0, 2 * 2**0.5, 4.0], rtol=1e-6)
        np.testing.assert_allclose(fused(t, "l1", 1.0), [7.0, 2.0, 2.0], rtol=1e-6)
        # Inside a compiled function with an unknown batch size as well.
        outer = tf.function(
            lambda t, fused=fused: fused(t, "l2", 1.0) + 1.0,
            input_signature=[tf.TensorSpec([None, 2], tf.float32)],
        )
        np.testing.assert_allclose(outer(t), [6.0, 1.0 + 2**0.5, 3.0], rtol=1e-6)
        np.testing.assert_allclose(outer(t[:1]), [6.0], rtol=1e-6)
