"""Runs the attacks on one Keras backend (a subprocess of tests/test_backends.py).

Usage: KERAS_BACKEND=<backend> python tests/backend_reference.py MODEL.keras DATA.npz OUT.npz

Loads the same saved model and data on every backend, runs `evaluate_robustness` and
`generate_adversarial_examples` with seeded attacks, and saves accuracies and adversarial
examples, so that the backends can be compared number by number. Also records whether
TensorFlow was imported.
"""

from __future__ import annotations

import sys

import keras
import numpy as np

import keras_advreg
from keras_advreg import attacks

CLIP = {"clip_value_min": 0.0, "clip_value_max": 1.0}


def attack_list():
    return {
        "fgsm": attacks.FGSM(epsilon=[0.05, 0.15], **CLIP),
        "fgsm_l2": attacks.FGSM(epsilon=0.5, norm="l2", **CLIP),
        "pgd": attacks.PGD(epsilon=0.1, steps=10, random_start=False, **CLIP),
        "pgd_l2": attacks.PGD(epsilon=0.8, steps=5, random_start=False, norm="l2", **CLIP),
        "pgd_random": attacks.PGD(epsilon=0.1, steps=5, seed=4, **CLIP),
        "apgd": attacks.APGD(epsilon=[0.05, 0.1], steps=20, seed=3, **CLIP),
        "apgd_dlr_l2": attacks.APGD(epsilon=0.8, steps=10, loss="dlr", norm="l2", seed=5, **CLIP),
        "apgd_t": attacks.APGDTargeted(epsilon=0.1, steps=10, num_targets=2, seed=6, **CLIP),
        "square": attacks.Square(epsilon=0.1, queries=40, seed=7, **CLIP),
    }


def main(model_path: str, data_path: str, out_path: str) -> None:
    model = keras.models.load_model(model_path)
    data = np.load(data_path)
    x, y = data["x"], data["y"]
    out = {}
    for name, attack in attack_list().items():
        report = keras_advreg.evaluate_robustness(
            model, (x, y), attack=attack, batch_size=16, warn=False
        )
        out[f"{name}/clean"] = np.float64(report.clean_accuracy)
        out[f"{name}/accuracy"] = np.array([report.accuracy[e] for e in attack.epsilons])
        x_adv, _, adv = keras_advreg.generate_adversarial_examples(
            model, x, y, attack=attack.replace(epsilon=attack.epsilons[-1])
        )
        out[f"{name}/x_adv"] = x_adv
        out[f"{name}/predictions"] = adv
    out["tensorflow_imported"] = np.array("tensorflow" in sys.modules)
    np.savez(out_path, **out)


if __name__ == "__main__":
    main(*sys.argv[1:4])
