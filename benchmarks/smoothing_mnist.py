"""Randomized smoothing on MNIST: a CNN fine-tuned under Gaussian noise, certified l2 accuracy.

The base model is the reference tutorial CNN (../shared/models/tutorial-base.keras), trained
further for `--epochs` under `keras.layers.GaussianNoise(sigma)` (noise only in training);
`keras_advreg.RandomizedSmoothing` then certifies the first `--images` test images (tfds order)
with Cohen et al.'s CERTIFY. It also times the sampling against the model's compiled forward
floor at the same batch size.

    python benchmarks/smoothing_mnist.py --sigma 0.5 --images 100 --n 10000
    python benchmarks/smoothing_mnist.py --epochs 0 ...   # certify the model saved at --out
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import keras
import numpy as np

from keras_advreg.apps.mnist import load_mnist_test, load_mnist_train
from keras_advreg.backend import ops as backend_ops
from keras_advreg.certification import RandomizedSmoothing

ROOT = Path(__file__).resolve().parents[1].parent / "shared"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sigma", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--n0", type=int, default=100)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--alpha", type=float, default=0.001)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--data-dir", default="/tmp/cert-tfds")
    parser.add_argument("--out", default="/tmp/cert-smoothing-mnist.keras")
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    manual = str(ROOT / "data" / "mnist")
    if args.epochs == 0:  # certify the model a previous run saved at --out
        model = keras.models.load_model(args.out)
        return certify(model, args, manual)
    base = keras.models.load_model(ROOT / "models" / "tutorial-base.keras")
    model = keras.Sequential(
        [keras.Input((28, 28, 1)), keras.layers.GaussianNoise(args.sigma), base]
    )
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["sparse_categorical_accuracy"],
    )
    wall, cpu = time.time(), time.process_time()
    train = load_mnist_train(batch_size=128, data_dir=args.data_dir, manual_dir=manual)
    model.fit(train, epochs=args.epochs, verbose=2)
    model.save(args.out)
    print(
        json.dumps(
            {
                "train_wall_s": round(time.time() - wall, 1),
                "train_cpu_s": round(time.process_time() - cpu, 1),
            }
        ),
        flush=True,
    )

    certify(model, args, manual)


def certify(model: keras.Model, args: argparse.Namespace, manual: str) -> None:
    x, y = load_mnist_test(data_dir=args.data_dir, manual_dir=manual)
    x, y = x[: args.images], y[: args.images]
    smoothed = RandomizedSmoothing(model, args.sigma, batch_size=args.batch_size)

    # Speed: sampling (host noise + compiled forward + counting) vs the compiled forward alone.
    rng = np.random.default_rng(0)
    smoothed.sample_counts(x[0], args.batch_size, rng)  # compile
    reps = 10
    t = time.perf_counter()
    smoothed.sample_counts(x[0], reps * args.batch_size, rng)
    sampling = reps * args.batch_size / (time.perf_counter() - t)
    forward = backend_ops.compile(
        lambda v: keras.ops.argmax(model(v, training=False), axis=-1), model.variables
    )
    batch = (x[0][None] + args.sigma * rng.standard_normal((args.batch_size, *x.shape[1:]))).astype(
        "float32"
    )
    keras.ops.convert_to_numpy(forward(batch))
    t = time.perf_counter()
    for _ in range(reps):
        keras.ops.convert_to_numpy(forward(batch))
    floor = reps * args.batch_size / (time.perf_counter() - t)
    print(
        json.dumps(
            {
                "batch": args.batch_size,
                "sampling_per_s": round(sampling),
                "forward_floor_per_s": round(floor),
                "ratio": round(floor / sampling, 3),
            }
        ),
        flush=True,
    )

    wall, cpu = time.time(), time.process_time()
    report = smoothed.certified_accuracy(
        (x, y), radii=(0.25, 0.5, 0.75, 1.0, 1.5, 2.0), n0=args.n0, n=args.n, alpha=args.alpha
    )
    print(report)
    print(
        json.dumps(
            {
                **report.to_dict(),
                "certify_wall_s": round(time.time() - wall, 1),
                "certify_cpu_s": round(time.process_time() - cpu, 1),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
