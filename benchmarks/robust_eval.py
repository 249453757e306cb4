"""Cost of `keras_advreg.evaluate_robustness` next to the floor and to `model.evaluate`.

On 10k MNIST-shaped random examples and the tutorial CNN (Conv2D 32/64/64 3x3
relu with max-pooling, Flatten, Dense 64 relu, Dense 10 logits), batch size 256,
this times, in interleaved rounds in one process:

- `model.evaluate` (the unit of the ratios),
- a bare `tf.function` FGSM written inline here (one forward, one input-gradient
  backward, one forward per epsilon: the floor), for 1 and 4 epsilons,
- `evaluate_robustness` FGSM with 1 and 4 epsilons, and PGD-10,
- the tutorial's way: a Python loop calling `perturb_on_batch` per batch of 32
  (a Python loop; keras_advreg compiles each call's math), then predicting on the
  perturbed batch.

Process CPU time (`time.process_time`) is printed beside wall time: wall time on
shared VMs sometimes stalls on a slow thread wake-up while CPU time does not.
The acceptance target is `evaluate_robustness` / bare FGSM <= 1.15 (CPU time)
for 1 and for 4 epsilons.

Run: python benchmarks/robust_eval.py [--rounds 5] [--examples 10000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_advreg  # noqa: E402
from keras_advreg.evaluation import evaluate_robustness  # noqa: E402

BATCH = 256
EPS1 = (0.1,)
EPS4 = (0.05, 0.1, 0.2, 0.3)


def tutorial_cnn() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((28, 28, 1), name="image"),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10),
        ]
    )


def make_bare_fgsm(model: keras.Model, epsilons: tuple[float, ...]):
    """The floor: 1 forward, 1 input-gradient backward, 1 forward per epsilon."""

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            tape.watch(x)
            logits = model(x, training=False)
            loss = tf.reduce_sum(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
            )
        direction = tf.sign(tape.gradient(loss, x))
        correct = [
            tf.reduce_sum(tf.cast(tf.argmax(logits, -1, output_type=tf.int32) == y, tf.int32))
        ]
        for eps in epsilons:
            x_adv = tf.clip_by_value(x + eps * direction, 0.0, 1.0)
            pred = tf.argmax(model(x_adv, training=False), -1, output_type=tf.int32)
            correct.append(tf.reduce_sum(tf.cast(pred == y, tf.int32)))
        return tf.stack(correct)

    def run(x, y):
        total = 0
        for start in range(0, len(y), BATCH):
            total = total + step(x[start : start + BATCH], y[start : start + BATCH]).numpy()
        return total / len(y)

    return run


def make_tutorial_loop(model: keras.Model, x: np.ndarray, y: np.ndarray):
    """The NSL tutorial's evaluation: a Python loop of `perturb_on_batch` per batch of 32."""
    wrapper_cls = keras_advreg.AdversarialRegularization
    config = keras_advreg.make_adv_reg_config(
        multiplier=0.2,
        adv_step_size=0.1,
        adv_grad_norm="infinity",
        clip_value_min=0.0,
        clip_value_max=1.0,
    )
    adv_model = wrapper_cls(model, label_keys=("label",), adv_config=config)
    adv_model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )

    def perturb(batch):
        return adv_model.perturb_on_batch(batch)["image"]

    label = "tutorial loop (perturb_on_batch per batch of 32, then predict)"

    def run(*_):
        correct = 0
        for start in range(0, len(y), 32):
            batch = {"image": x[start : start + 32], "label": y[start : start + 32]}
            x_adv = perturb(batch)
            pred = np.argmax(model(x_adv, training=False), -1)
            correct += int(np.sum(pred == batch["label"]))
        return correct / len(y)

    return label, run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--examples", type=int, default=10_000)
    parser.add_argument("--skip-tutorial", action="store_true")
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.random((args.examples, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, args.examples).astype("int32")
    model = tutorial_cnn()
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x[:2048], y[:2048], batch_size=BATCH, epochs=1, verbose=0)  # not all-random weights

    def ours(epsilons, attack="fgsm"):
        return lambda: evaluate_robustness(
            model,
            (x, y),
            epsilons=epsilons,
            attack=attack,
            batch_size=BATCH,
            clip_value_min=0.0,
            clip_value_max=1.0,
            warn=False,
        )

    bare1, bare4 = make_bare_fgsm(model, EPS1), make_bare_fgsm(model, EPS4)
    methods = {
        "model.evaluate": lambda: model.evaluate(x, y, batch_size=BATCH, verbose=0),
        "bare FGSM, 1 eps": lambda: bare1(x, y),
        "evaluate_robustness FGSM, 1 eps": ours(EPS1),
        "bare FGSM, 4 eps": lambda: bare4(x, y),
        "evaluate_robustness FGSM, 4 eps": ours(EPS4),
        "evaluate_robustness PGD-10, 1 eps": ours(EPS1, "pgd"),
    }
    if not args.skip_tutorial:
        label, loop = make_tutorial_loop(model, x, y)
        methods[label] = loop

    # Same answers: the FGSM accuracies must agree with the floor's.
    r1, r4, b1, b4 = ours(EPS1)(), ours(EPS4)(), bare1(x, y), bare4(x, y)
    assert abs(r1.clean_accuracy - b1[0]) < 1e-9 and abs(r1.accuracy[0.1] - b1[1]) < 1e-9, (r1, b1)
    assert np.allclose([r4.accuracy[e] for e in EPS4], b4[1:]), (r4, b4)
    for fn in methods.values():  # warm-up: tracing is not timed
        fn()

    cpu = {name: [] for name in methods}
    wall = {name: [] for name in methods}
    for _ in range(args.rounds):
        for name, fn in methods.items():
            c0, w0 = time.process_time(), time.perf_counter()
            fn()
            cpu[name].append(time.process_time() - c0)
            wall[name].append(time.perf_counter() - w0)

    med = lambda v: statistics.median(v)  # noqa: E731
    base_c, base_w = med(cpu["model.evaluate"]), med(wall["model.evaluate"])
    print(
        f"\n{args.examples} examples, batch {BATCH}, {args.rounds} interleaved rounds, "
        f"medians; TF {tf.__version__}, Keras {keras.__version__}"
    )
    print(f"{'method':<72} {'cpu s':>7} {'wall s':>7} {'cpu/eval':>8} {'wall/eval':>9}")
    for name in methods:
        c, w = med(cpu[name]), med(wall[name])
        print(f"{name:<72} {c:7.3f} {w:7.3f} {c / base_c:8.2f} {w / base_w:9.2f}")
    print("\nevaluate_robustness / bare FGSM (target <= 1.15):")
    for k in ("1 eps", "4 eps"):
        ours_name, bare_name = f"evaluate_robustness FGSM, {k}", f"bare FGSM, {k}"
        rc = med(cpu[ours_name]) / med(cpu[bare_name])
        rw = med(wall[ours_name]) / med(wall[bare_name])
        print(f"  {k}: cpu {rc:.3f}x, wall {rw:.3f}x")


if __name__ == "__main__":
    main()
