"""FAB-T next to its floor of compiled forward and backward passes.

FAB-T's cost is its model passes: per iteration one forward+backward pass (the gradient of
`z_t - z_y` at the current point) and one forward pass (whether the new point is
misclassified), plus one forward+backward and two forward passes per run (the clean point's
scores and gradient, its class, the final prediction). This times, in one process and
interleaved rounds, on the same images and model (TensorFlow):

- `evaluate_robustness` with `attacks.FABTargeted(eps, num_targets=1)` (ours) at a radius so
  small that no example is broken (every example runs all `--steps` iterations),
- the floor: one compiled `tf.while_loop` of those passes over each batch and nothing else,

and prints the ratio of the CPU times (the target: within 1.15x).

Run: python benchmarks/fab_passes.py [--examples 200] [--steps 100] [--batch 200]
"""

from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from robust_eval import DEFAULT_MNIST, DEFAULT_MODEL, Method, mnist  # noqa: E402

from keras_advreg import attacks  # noqa: E402
from keras_advreg.evaluation import evaluate_robustness  # noqa: E402

EPS = 1e-4  # below every example's distance to the boundary: no early stop


def make_floor(model: keras.Model, steps: int, batch: int):
    """FAB-T's passes over each batch in one `tf.while_loop`: `steps` x (forward+backward of
    one logit difference, forward), then one forward+backward and two forward passes."""

    def margin_grad(x, t, y):
        with tf.GradientTape() as tape:
            tape.watch(x)
            z = model(x, training=False)
            f = tf.reduce_sum(z * (tf.one_hot(t, 10) - tf.one_hot(y, 10)), axis=-1)
        return f, tape.gradient(tf.reduce_sum(f), x)

    @tf.function
    def passes(x, y):
        t = (y + 1) % 10
        f, g = margin_grad(x, t, y)
        acc = tf.reduce_sum(f) + tf.reduce_sum(model(x, training=False))

        def body(i, xa, acc):
            f, g = margin_grad(xa, t, y)
            x_new = xa + 1e-6 * g
            z = model(x_new, training=False)
            return i + 1, x_new, acc + tf.reduce_sum(z) + tf.reduce_sum(f)

        _, xa, acc = tf.while_loop(lambda i, *_: i < steps, body, (0, x + 0.0 * g, acc))
        return acc + tf.reduce_sum(model(xa, training=False))

    def run(x, y):
        for start in range(0, len(x), batch):
            passes(x[start : start + batch], y[start : start + batch]).numpy()

    return run


def make_ours(model: keras.Model, steps: int, batch: int):
    def run(x, y):
        attack = attacks.FABTargeted(
            EPS, steps=steps, num_targets=1, clip_value_min=0.0, clip_value_max=1.0, seed=0
        )
        report = evaluate_robustness(
            model, (x, y), attack=attack, batch_size=batch, warn=False, check_finite=False
        )
        return report.accuracy[EPS]

    return run


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model", type=pathlib.Path, default=DEFAULT_MODEL)
    parser.add_argument("--mnist-dir", type=pathlib.Path, default=DEFAULT_MNIST)
    args = parser.parse_args()

    x, y = mnist(args.mnist_dir, "t10k")
    x, y = x[: args.examples], y[: args.examples]
    model = keras.models.load_model(args.model, compile=False)
    fns = {
        "ours: evaluate_robustness FAB-T (1 target)": make_ours(model, args.steps, args.batch),
        f"floor: {args.steps} x (fwd+bwd, fwd) + 1 fwd+bwd + 2 fwd": make_floor(
            model, args.steps, args.batch
        ),
    }
    for fn in fns.values():  # tracing and first calls are not timed
        fn(x[: args.batch], y[: args.batch])
    methods = {name: Method(lambda fn=fn: fn(x, y), len(y)) for name, fn in fns.items()}
    for _ in range(args.rounds):
        for method in methods.values():
            method.time()
    print(
        f"\nFAB-T (l-inf, 1 target, {args.steps} iterations, no example broken) on the first "
        f"{len(y)} MNIST test images, batch {args.batch}, {args.model.name}; medians of "
        f"{args.rounds} rounds\n"
    )
    for name, m in methods.items():
        print(f"{name:<55} CPU {m.c:7.1f} s  wall {m.w:7.1f} s")
    ours, floor = methods.values()
    print(f"\nours / floor: CPU {ours.c / floor.c:.2f}x, wall {ours.w / floor.w:.2f}x")
    print(f"robust accuracy at eps {EPS:g} (clean accuracy, nothing broken): {ours.result:.3f}")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
