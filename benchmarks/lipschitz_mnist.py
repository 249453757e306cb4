"""Trains a 1-Lipschitz CNN (keras_advreg.layers) on MNIST and reports certified accuracy.

The certificate: the Lipschitz-margin certificate of `keras_advreg.certify` (l2; per class
pair, the margin over the last layer's row-difference norm). Each epoch's model is saved, and
the clean and certified accuracy on the 10,000 test images are printed per epoch.

    python benchmarks/lipschitz_mnist.py --epochs 12 --epsilon 1.58 --out /tmp/lip.keras
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
from keras_advreg.layers import GroupSort, LipschitzConv2D, LipschitzDense, ScaledAveragePooling2D
from keras_advreg.losses import LipschitzMarginCrossEntropy

MNIST_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


def build_model(width: int = 16, dense: int = 256, downsample: str = "pool") -> keras.Model:
    """Four AOL convolutions and two AOL dense layers, MaxMin activations.

    `downsample="pool"`: stride-1 convolutions and `ScaledAveragePooling2D` (norm exactly 1);
    `"stride"`: 4x4 stride-2 convolutions. AOL bounds a strided convolution by its stride-1
    version, so strided layers lose up to a factor sqrt(stride^2) of their bound.
    """
    w = width

    def down(filters):
        if downsample == "stride":
            return [LipschitzConv2D(filters, 4, strides=2, padding="same"), GroupSort(2)]
        return [
            LipschitzConv2D(filters, 3, padding="same"),
            GroupSort(2),
            ScaledAveragePooling2D(2),
        ]

    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            LipschitzConv2D(w, 3, padding="same"),
            GroupSort(2),
            *down(2 * w),
            LipschitzConv2D(2 * w, 3, padding="same"),
            GroupSort(2),
            *down(2 * w),
            keras.layers.Flatten(),
            LipschitzDense(dense),
            GroupSort(2),
            LipschitzDense(10),
        ]
    )


def certified(model: keras.Model, x: np.ndarray, y: np.ndarray, epsilons) -> dict:
    """Clean and certified accuracy (1-Lipschitz trunk; last layer's per-pair row norms)."""
    last = model.layers[-1]
    trunk = keras.Sequential(model.layers[:-1])
    h = trunk.predict(x, batch_size=1000, verbose=0)
    w = keras.ops.convert_to_numpy(last.lipschitz_kernel)  # (features, classes)
    z = h @ w + keras.ops.convert_to_numpy(last.bias)
    pred = z.argmax(1)
    norms = np.linalg.norm(w[:, :, None] - w[:, None, :], axis=0)  # (classes, classes)
    margins = z[np.arange(len(y)), y][:, None] - z
    with np.errstate(divide="ignore", invalid="ignore"):
        radii = margins / norms[y]
    radii[np.arange(len(y)), y] = np.inf
    radius = np.where(pred == y, radii.min(1), 0.0)
    return {
        "clean": float((pred == y).mean()),
        **{str(e): float((radius > e).mean()) for e in epsilons},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--epsilon", type=float, default=1.58)
    parser.add_argument("--temperature", type=float, default=0.25)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--downsample", choices=("pool", "stride"), default="pool")
    parser.add_argument("--out", default="/tmp/cert-lipschitz-mnist.keras")
    parser.add_argument("--data-dir", default="/tmp/cert-tfds")
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    train = load_mnist_train(
        batch_size=args.batch_size, data_dir=args.data_dir, manual_dir=str(MNIST_DIR)
    )
    x_test, y_test = load_mnist_test(data_dir=args.data_dir, manual_dir=str(MNIST_DIR))
    model = build_model(args.width, downsample=args.downsample)
    steps = 60000 // args.batch_size * args.epochs
    schedule = keras.optimizers.schedules.CosineDecay(args.lr, steps, alpha=0.01)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=LipschitzMarginCrossEntropy(epsilon=args.epsilon, temperature=args.temperature),
        metrics=["sparse_categorical_accuracy"],
    )
    start_wall, start_cpu = time.time(), time.process_time()

    class Report(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.save(args.out)
            row = {
                "epoch": epoch + 1,
                "wall_s": round(time.time() - start_wall, 1),
                "cpu_s": round(time.process_time() - start_cpu, 1),
                "loss": round(float(logs["loss"]), 4),
                **certified(self.model, x_test, y_test, (0.3, 1.58)),
            }
            print(json.dumps(row), flush=True)

    model.fit(train, epochs=args.epochs, verbose=2, callbacks=[Report()])


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
