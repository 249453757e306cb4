"""Peak memory of `evaluate_robustness` over a `tf.data` dataset: 10k vs 60k examples.

`evaluate_robustness` streams: it keeps per-class counts, not the examples or their
adversarial versions, so its peak memory should not grow with the size of the data. Each
size runs in its own process (peak RSS, `ru_maxrss`, is per process), on the same tutorial-
sized CNN and the same attack, over a dataset generated on the fly (nothing materialised):

    python benchmarks/eval_memory.py [--sizes 10000,60000] [--attack fgsm] [--batch 256]

Goal: peak RSS at 60k within 10% of that at 10k.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def worker(n: int, attack: str, batch: int) -> dict:
    import keras
    import tensorflow as tf

    import keras_advreg

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10),
        ]
    )

    def example(i):
        seed = tf.stack([tf.cast(i, tf.int32), 7])
        image = tf.random.stateless_uniform((28, 28, 1), seed)
        return image, tf.cast(i % 10, tf.int64)

    data = tf.data.Dataset.range(n).map(example).batch(batch)
    start = time.perf_counter()
    report = keras_advreg.evaluate_robustness(
        model, data, epsilons=0.1, warn=False,
        attack=keras_advreg.attacks.get(attack, clip_value_min=0.0, clip_value_max=1.0),
    )  # fmt: skip
    return {
        "examples": report.num_examples,
        "seconds": time.perf_counter() - start,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,60000")
    parser.add_argument("--attack", default="fgsm")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.attack, args.batch)))
        return
    results = {}
    for n in (int(s) for s in args.sizes.split(",")):
        out = subprocess.run(
            [sys.executable, __file__, "--worker", str(n), "--attack", args.attack,
             "--batch", str(args.batch)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        results[n] = json.loads(out.stdout.strip().splitlines()[-1])
        r = results[n]
        print(
            f"{n:6d} examples ({args.attack}, batch {args.batch}): peak RSS "
            f"{r['peak_rss_mb']:.0f} MB, {r['seconds']:.1f} s",
            flush=True,
        )
    sizes = sorted(results)
    small, large = results[sizes[0]], results[sizes[-1]]
    ratio = large["peak_rss_mb"] / small["peak_rss_mb"]
    print(f"peak RSS {sizes[-1]} / {sizes[0]}: {ratio:.3f}x (target <= 1.10x)")


if __name__ == "__main__":
    main()
