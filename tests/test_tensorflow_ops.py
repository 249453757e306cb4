"""TensorFlow's compilation of the attacks: no "retracing" warnings in normal use."""

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
            for attack in ("fgsm", "pgd"):
                keras_advreg.evaluate_robustness(
                    model, (X, Y), epsilons=0.1, attack=attack, warn=False
                )
    finally:
        logger.removeHandler(handler)
    retracing = [r.getMessage()[:120] for r in records if "retracing" in r.getMessage()]
    assert retracing == []
