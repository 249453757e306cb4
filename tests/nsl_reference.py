"""Runs NSL 1.4.0's own `AdversarialRegularization` on tf_keras (Keras 2), for the parity tests.

Invoked by tests/test_wrappers_parity.py in a subprocess with TF_USE_LEGACY_KERAS=1:

    python tests/nsl_reference.py INPUT.npz CASES.json OUTPUT.npz

For every case: the model of `build` with the given weights, one `perturb_on_batch` and one SGD
`train_on_batch` step on the batch; writes the perturbed features and the weights after the step.
"""

import json
import os
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_advreg.backend.nsl import nsl  # noqa: E402  (the shim makes NSL importable on TF >= 2.16)


def build(tfk):
    return tfk.Sequential(
        [
            tfk.Input((6,), name="feature"),
            tfk.layers.Dense(5, activation="tanh"),
            tfk.layers.Dense(3),
        ]
    )


def main(input_path, cases_path, output_path):
    tfk = tf.keras
    assert "tf_keras" in tfk.__name__, f"expected tf_keras, got {tfk.__name__}"
    data = np.load(input_path)
    weights = [data[f"w{i}"] for i in range(4)]
    with open(cases_path) as f:
        cases = json.load(f)
    out = {}
    for i, case in enumerate(cases):
        base = build(tfk)
        base.set_weights(weights)
        config = nsl.configs.make_adv_reg_config(**case["config"])
        weighted = case.get("weighted", False)
        model = nsl.keras.AdversarialRegularization(
            base,
            label_keys=["label"],
            sample_weight_key="w" if weighted else None,
            adv_config=config,
        )
        model.compile(
            tfk.optimizers.SGD(case["lr"]),
            loss=tfk.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        batch = {"feature": data["x"], "label": data["y"]}
        if weighted:
            batch["w"] = data["w"][:, None]  # NSL 1.4.0 only works with (batch, 1) weights
        out[f"adv{i}"] = model.perturb_on_batch(dict(batch))["feature"]
        model.train_on_batch(batch)
        for j, w in enumerate(base.get_weights()):
            out[f"case{i}_w{j}"] = w
    np.savez(output_path, **out)


if __name__ == "__main__":
    main(*sys.argv[1:4])
