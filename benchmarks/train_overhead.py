"""Training cost of adversarial regularization, measured side by side in one run.

Prints, for the NSL tutorial's CNN (3 conv, 2 dense, logits) on MNIST-shaped data at batch 32:

(a) keras_advreg's adversarial epoch / a plain Keras epoch of the same base model;
(b) keras_advreg's adversarial epoch / NSL 1.4.0's own `AdversarialRegularization` on tf_keras
    (Keras 2), which runs in a worker subprocess with `TF_USE_LEGACY_KERAS=1`.

Rounds are interleaved (plain, keras_advreg, NSL, plain, ...) after one warm-up epoch each, and
each epoch reports process CPU time beside wall time: on these VMs wall time sometimes stalls on a
slow thread wake-up while CPU time does not. The data are the first `--examples` real MNIST
training images when `--mnist-dir` holds the original files (the default looks in
../shared/data/mnist), else random MNIST-shaped data.

    python benchmarks/train_overhead.py [--examples 9600] [--rounds 3]

Goals: (a) <= 2.1x in CPU time (an exact method's floor is about 2.0x: one extra
forward and backward), (b) <= 1.05x.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

DEFAULT_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
ADV = {"multiplier": 0.2, "adv_step_size": 0.2, "adv_grad_norm": "infinity"}
BATCH = 32


def load_data(mnist_dir: Path, n: int, seed: int = 0):
    images, labels = (
        mnist_dir / "train-images-idx3-ubyte.gz",
        mnist_dir / "train-labels-idx1-ubyte.gz",
    )
    if images.exists() and labels.exists():
        with gzip.open(images) as f:
            x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28, 1)[:n]
        with gzip.open(labels) as f:
            y = np.frombuffer(f.read(), np.uint8, offset=8)[:n]
        return (x / 255.0).astype("float32"), y.astype("int64"), "real MNIST"
    rng = np.random.default_rng(seed)
    x = rng.random((n, 28, 28, 1), dtype="float32")
    return x, rng.integers(0, 10, n), "random MNIST-shaped"


def build_cnn(k):
    """The tutorial's base model, in Keras module `k` (Keras 3 or tf_keras)."""
    return k.Sequential(
        [
            k.Input((28, 28, 1), name="image"),
            k.layers.Conv2D(32, 3, activation="relu"),
            k.layers.MaxPooling2D(2),
            k.layers.Conv2D(64, 3, activation="relu"),
            k.layers.MaxPooling2D(2),
            k.layers.Conv2D(64, 3, activation="relu"),
            k.layers.Flatten(),
            k.layers.Dense(64, activation="relu"),
            k.layers.Dense(10),
        ]
    )


def timed_epoch(model, dataset) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    model.fit(dataset, epochs=1, verbose=0, shuffle=False)
    return time.perf_counter() - wall, time.process_time() - cpu


# ------------------------------------------------------------------------- NSL worker (tf_keras)
def nsl_worker(mnist_dir: str, n: int) -> None:
    """Serves 'epoch' requests on stdin; answers 'wall cpu' on stdout."""
    import tensorflow as tf

    from keras_advreg.backend.nsl import nsl

    k = tf.keras
    assert "tf_keras" in k.__name__, k.__name__
    x, y, _ = load_data(Path(mnist_dir), n)
    model = nsl.keras.AdversarialRegularization(
        build_cnn(k), label_keys=["label"], adv_config=nsl.configs.make_adv_reg_config(**ADV)
    )
    model.compile(
        "adam", loss=k.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    dataset = tf.data.Dataset.from_tensor_slices({"image": x, "label": y}).batch(BATCH)
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "epoch":
            break
        print(*timed_epoch(model, dataset), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--examples", type=int, default=9600)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mnist-dir", type=Path, default=DEFAULT_MNIST)
    parser.add_argument("--no-nsl", action="store_true", help="skip the NSL/tf_keras comparison")
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    parser.add_argument("--nsl-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.nsl_worker:
        return nsl_worker(str(args.mnist_dir), args.examples)

    worker = None
    if not args.no_nsl:
        worker = subprocess.Popen(
            [sys.executable, __file__, "--nsl-worker", "--examples", str(args.examples),
             "--mnist-dir", str(args.mnist_dir)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**os.environ, "TF_USE_LEGACY_KERAS": "1"},
        )  # fmt: skip

    import keras
    import tensorflow as tf

    import keras_advreg

    keras.utils.set_random_seed(0)
    x, y, source = load_data(args.mnist_dir, args.examples)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    plain = build_cnn(keras)
    plain.compile("adam", loss=loss, metrics=["accuracy"])
    adv = keras_advreg.AdversarialRegularization(
        build_cnn(keras), adv_config=keras_advreg.AdvConfig(**ADV)
    )
    adv.compile("adam", loss=loss, metrics=["accuracy"])

    def nsl_epoch():
        worker.stdin.write("epoch\n")
        worker.stdin.flush()
        wall, cpu = map(float, worker.stdout.readline().split())
        return wall, cpu

    runners = {
        "plain": lambda: timed_epoch(plain, dataset),
        "keras_advreg": lambda: timed_epoch(adv, dataset),
    }
    if worker is not None:
        assert worker.stdout.readline().strip() == "ready", "NSL worker failed to start"
        runners["nsl_tf_keras"] = nsl_epoch
    print(f"data: {args.examples} {source} examples, batch {BATCH}, {args.rounds} rounds + warm-up")
    for run in runners.values():  # warm-up: tracing and first-epoch costs
        run()
    times = {name: [] for name in runners}
    for r in range(args.rounds):
        for name, run in runners.items():
            times[name].append(run())
            wall, cpu = times[name][-1]
            print(f"  round {r + 1} {name:13s} wall {wall:7.2f} s  cpu {cpu:7.2f} s", flush=True)
    if worker is not None:
        worker.stdin.write("stop\n")
        worker.stdin.close()
        worker.wait(timeout=60)

    med = {
        name: [statistics.median(t[i] for t in ts) for i in (0, 1)] for name, ts in times.items()
    }
    print("\nmedian epoch       wall (s)   cpu (s)")
    for name, (wall, cpu) in med.items():
        print(f"  {name:15s} {wall:8.2f}  {cpu:8.2f}")
    ratios = {
        "(a) keras_advreg adversarial / plain": [
            med["keras_advreg"][i] / med["plain"][i] for i in (0, 1)
        ]
    }
    if "nsl_tf_keras" in med:
        ratios["(b) keras_advreg / NSL own class"] = [
            med["keras_advreg"][i] / med["nsl_tf_keras"][i] for i in (0, 1)
        ]
        ratios["    NSL own class / plain"] = [
            med["nsl_tf_keras"][i] / med["plain"][i] for i in (0, 1)
        ]
    print("\nratio                                   wall     cpu   target (cpu)")
    targets = {"(a)": "<= 2.10", "(b)": "<= 1.05"}
    for name, (wall, cpu) in ratios.items():
        print(f"  {name:36s} {wall:6.2f}x {cpu:6.2f}x   {targets.get(name[:3], '')}")
    if args.json:
        args.json.write_text(
            json.dumps({"median": med, "ratios": ratios, "rounds": times}, indent=2)
        )


if __name__ == "__main__":
    main()
