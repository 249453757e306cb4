"""keras_advreg's attacks on the two reference models of ../shared/models, beside the
accuracies independent libraries (foolbox 3.3.4, adversarial-robustness-toolbox 1.20.1)
measured on the same images: the first 1000 MNIST test images in file order, l-inf,
clipped to [0, 1].

    python benchmarks/reference_models.py [--examples 1000] [--attacks fgsm,pgd40,apgd-ce,autoattack]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_advreg  # noqa: E402
from keras_advreg import attacks  # noqa: E402

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared")
EPSILONS = (0.1, 0.2, 0.3)
# models/README.md of ../shared: (model, attack) -> {epsilon: accuracy}.
INDEPENDENT = {
    ("base", "fgsm"): {0.1: 0.825, 0.2: 0.41, 0.3: 0.104},
    ("base", "pgd40"): {0.1: 0.61, 0.2: 0.00, 0.3: 0.00},
    ("base", "apgd-ce+dlr"): {0.1: 0.559, 0.2: 0.000, 0.3: 0.000},
    ("adv-regularized", "fgsm"): {0.1: 0.950, 0.2: 0.880, 0.3: 0.799},
    ("adv-regularized", "pgd40"): {0.1: 0.82, 0.2: 0.23, 0.3: 0.00},
    ("adv-regularized", "apgd-ce+dlr"): {0.1: 0.790, 0.2: 0.104, 0.3: 0.000},
    ("adv-regularized", "square-1000"): {0.1: 0.876, 0.2: 0.342, 0.3: 0.002},
}


def load_test_images(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `n` MNIST test images in file order, pixels / 255."""
    folder = os.path.join(SHARED, "data", "mnist")
    with gzip.open(os.path.join(folder, "t10k-images-idx3-ubyte.gz")) as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28, 1)
    with gzip.open(os.path.join(folder, "t10k-labels-idx1-ubyte.gz")) as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)
    return (x[:n] / 255.0).astype("float32"), y[:n].astype("int64")


def make(name: str):
    box = dict(clip_value_min=0.0, clip_value_max=1.0, seed=0)
    return {
        "fgsm": lambda: attacks.FGSM(EPSILONS, clip_value_min=0.0, clip_value_max=1.0),
        "pgd40": lambda: attacks.PGD(EPSILONS, steps=40, **box),
        "apgd-ce": lambda: attacks.APGD(EPSILONS, loss="ce", **box),
        "apgd-dlr": lambda: attacks.APGD(EPSILONS, loss="dlr", **box),
        "square-1000": lambda: attacks.Square(EPSILONS, queries=1000, **box),
        "autoattack": lambda: attacks.AutoAttack(EPSILONS, **box),
        "autoattack-fast": lambda: attacks.AutoAttack(EPSILONS, version="fast", **box),
    }[name]()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--attacks", default="fgsm,pgd40,apgd-ce,autoattack")
    parser.add_argument("--models", default="base,adv-regularized")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    x, y = load_test_images(args.examples)
    rows = []
    for model_name in args.models.split(","):
        path = os.path.join(SHARED, "models", f"tutorial-{model_name}.keras")
        model = keras.models.load_model(path)
        for attack_name in args.attacks.split(","):
            attack = make(attack_name)
            wall, cpu = time.perf_counter(), time.process_time()
            report = keras_advreg.evaluate_robustness(
                model, (x, y), attack=attack, batch_size=500, warn=False
            )
            row = {
                "model": model_name,
                "attack": attack.describe(),
                "accuracy": {f"{e:g}": a for e, a in report.accuracy.items()},
                "clean": report.clean_accuracy,
                "broken_by": {f"{e:g}": b for e, b in report.broken_by.items()},
                "wall_s": round(time.perf_counter() - wall, 1),
                "cpu_s": round(time.process_time() - cpu, 1),
            }
            rows.append(row)
            ref = INDEPENDENT.get((model_name, attack_name))
            if attack_name.startswith("autoattack") or attack_name == "apgd-ce":
                ref = INDEPENDENT.get((model_name, "apgd-ce+dlr"))
            shown = "  ".join(
                f"eps {e:g}: {report.accuracy[e]:.3f}"
                + (f" (independent {ref[e]:.3f})" if ref else "")
                for e in EPSILONS
            )
            print(
                f"{model_name:16s} {attack.describe():45s} {shown}  "
                f"[{row['wall_s']} s wall, {row['cpu_s']} s CPU]",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
