"""`InputRange` on the reference models of ../shared/models: the same robust accuracy from
the bounds the model declares as from clip arguments, and in 0-255 units at epsilon x 255.

For each model, three evaluations with the same attack and seed on the first `--examples`
MNIST test images in file order:

- `clip`: the model as it is, pixels / 255, `clip_value_min=0, clip_value_max=1`;
- `layer`: `Sequential([Input, InputRange(0, 1), model])`, no clip arguments;
- `0-255`: `Sequential([Input, InputRange(0, 255), Rescaling(1 / 255), model])`, raw pixels
  (0-255), epsilons x 255, no clip arguments.

    python benchmarks/input_range.py [--examples 500] [--attack apgd-ce]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(__file__))

import keras  # noqa: E402
from reference_models import SHARED, load_test_images  # noqa: E402

import keras_advreg  # noqa: E402
from keras_advreg import attacks  # noqa: E402
from keras_advreg.layers import InputRange  # noqa: E402

EPSILONS = (0.1, 0.2, 0.3)


def attack(name: str, epsilons, **box):
    if name == "apgd-ce":
        return attacks.APGD(epsilons, loss="ce", seed=0, **box)
    if name == "autoattack-fast":
        return attacks.AutoAttack(epsilons, version="fast", seed=0, **box)
    raise SystemExit(f"--attack must be apgd-ce or autoattack-fast. Received: {name!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=500)
    parser.add_argument("--attack", default="apgd-ce")
    parser.add_argument("--models", default="base,adv-regularized")
    args = parser.parse_args()
    x, y = load_test_images(args.examples)
    files = {
        "base": "tutorial-base.keras",
        "adv-regularized": "tutorial-adv-regularized.keras",
    }
    results = {}
    for name in args.models.split(","):
        model = keras.models.load_model(os.path.join(SHARED, "models", files[name]))
        shape = model.input_shape[1:]
        layer = keras.Sequential([keras.Input(shape), InputRange(0, 1), model])
        pixels = keras.Sequential(
            [keras.Input(shape), InputRange(0, 255), keras.layers.Rescaling(1 / 255), model]
        )
        runs = {
            "clip": (model, x, attack(args.attack, EPSILONS, clip_value_min=0, clip_value_max=1)),
            "layer": (layer, x, attack(args.attack, EPSILONS)),
            "0-255": (pixels, x * 255.0, attack(args.attack, [e * 255 for e in EPSILONS])),
        }
        for run, (m, data, a) in runs.items():
            wall, cpu = time.perf_counter(), time.process_time()
            report = keras_advreg.evaluate_robustness(m, (data, y), attack=a, warn=False)
            row = {
                "clean": report.clean_accuracy,
                "accuracy": {f"{e:g}": v for e, v in report.accuracy.items()},
                "units": report.units,
                "first": report.describe(),
                "wall_s": round(time.perf_counter() - wall, 1),
                "cpu_s": round(time.process_time() - cpu, 1),
            }
            results[f"{name}/{run}"] = row
            print(name, run, json.dumps(row), flush=True)
    print(json.dumps({"examples": args.examples, "attack": args.attack, "results": results}))


if __name__ == "__main__":
    main()
