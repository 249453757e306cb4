"""Certified accuracy of a saved 1-Lipschitz MNIST model, and its soundness under attack.

`keras_advreg.certify` (the Lipschitz-margin certificate, l2) on the 10,000 MNIST test images
(tfds order); then APGD-CE and APGD-T (l2, 100 steps, unclipped: a superset of the clipped
threat model) at each epsilon on the examples certified at that epsilon among the first
`--attack-images` test images. A sound certificate leaves every one of them unbroken.

    python benchmarks/lipschitz_mnist_eval.py MODEL.keras --attack-images 1000
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import keras
import numpy as np

import keras_advreg
from keras_advreg.apps.mnist import load_mnist_test

MNIST_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--epsilons", default="0.3,1.58")
    parser.add_argument("--attack-images", type=int, default=1000)
    parser.add_argument("--attacks", default="apgd-ce,apgd-t")
    parser.add_argument("--data-dir", default="/tmp/cert-tfds")
    args = parser.parse_args()
    epsilons = [float(e) for e in args.epsilons.split(",")]
    model = keras.models.load_model(args.model)
    x, y = load_mnist_test(data_dir=args.data_dir, manual_dir=str(MNIST_DIR))
    wall, cpu = time.time(), time.process_time()
    report = keras_advreg.certify(model, (x, y), epsilons, batch_size=1000)
    print(report)
    print(
        json.dumps(
            {
                "certify_wall_s": round(time.time() - wall, 1),
                "certify_cpu_s": round(time.process_time() - cpu, 1),
            }
        ),
        flush=True,
    )
    k = args.attack_images
    for eps in epsilons:
        held = np.flatnonzero(report.radii[:k] > eps)
        if not len(held):
            print(json.dumps({"epsilon": eps, "certified_of_first": f"0/{k}", "attacked": 0}))
            continue
        for attack in args.attacks.split(","):
            wall, cpu = time.time(), time.process_time()
            attacked = keras_advreg.evaluate_robustness(
                model, (x[held], y[held]), epsilons=eps, attack=attack, norm="l2", warn=False
            )
            broken = int(round((1 - attacked.accuracy[eps]) * len(held)))
            row = {
                "epsilon": eps,
                "attack": attacked.description,
                "certified_of_first": f"{len(held)}/{k}",
                "broken": broken,
                "wall_s": round(time.time() - wall, 1),
                "cpu_s": round(time.process_time() - cpu, 1),
            }
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
