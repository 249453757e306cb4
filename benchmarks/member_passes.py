"""AutoAttack's gradient members next to their floors of compiled forward/backward passes.

Each member's cost is its model passes. Per run over a batch, at a radius so small that no
example is broken (every example runs all `--steps` iterations):

- APGD-CE and APGD-T (one target): one forward+backward pass per iteration, plus one at
  the start (the clean point's loss and gradient);
- FAB-T (one target): per iteration one forward+backward pass (the gradient of `z_t - z_y`
  at the current point) and one forward pass (whether the new point is misclassified),
  plus one forward+backward and two forward passes per run (the clean point's scores and
  gradient, its class, the final prediction).

This times, in one process and interleaved rounds, on the same images and model
(TensorFlow): `evaluate_robustness` with each member alone (ours, `warn=False`,
`check_finite=False`) and its floor, one compiled `tf.while_loop` of those passes over each
batch and nothing else, and prints the ratio of the CPU times (the target: within 1.15x).
Square has its own benchmark (`square_passes.py`).

Run: python benchmarks/member_passes.py [--examples 200] [--steps 100] [--batch 200]
[--rounds 2] [--traces 1]
"""

from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from robust_eval import DEFAULT_MNIST, DEFAULT_MODEL, Method, clone, mnist  # noqa: E402

from keras_advreg import attacks  # noqa: E402
from keras_advreg.evaluation import evaluate_robustness  # noqa: E402

EPS = 1e-4  # below every example's distance to the boundary: no early stop


def batched(passes, batch: int):
    """`run(x, y)`: `passes` over each batch of `x, y`, waiting for its result."""

    def run(x, y):
        for start in range(0, len(x), batch):
            passes(x[start : start + batch], y[start : start + batch]).numpy()

    return run


def make_floor(model: keras.Model, steps: int, batch: int):
    """FAB-T's passes over each batch in one `tf.while_loop`: `steps` x (forward+backward of
    one logit difference, forward), then one forward+backward and two forward passes."""

    def margin_grad(x, t, y):
        with tf.GradientTape() as tape:
            tape.watch(x)
            z = model(x, training=False)
            f = tf.reduce_sum(z * (tf.one_hot(t, 10) - tf.one_hot(y, 10)), axis=-1)
            total = tf.reduce_sum(f)  # recorded by the tape
        return f, tape.gradient(total, x)

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

    return batched(passes, batch)


def make_apgd_floor(model: keras.Model, steps: int, batch: int):
    """APGD's passes over each batch in one `tf.while_loop`: `steps + 1` forward+backward
    passes of the cross-entropy."""

    def loss_grad(x, y):
        with tf.GradientTape() as tape:
            tape.watch(x)
            z = model(x, training=False)
            total = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(y, z))
        return total, tape.gradient(total, x)

    @tf.function
    def passes(x, y):
        value, g = loss_grad(x, y)

        def body(i, xa, acc):
            value, g = loss_grad(xa, y)
            return i + 1, xa + 1e-6 * tf.sign(g), acc + value

        _, xa, acc = tf.while_loop(lambda i, *_: i < steps, body, (0, x + 0.0 * g, value))
        return acc

    return batched(passes, batch)


def make_ours(model: keras.Model, steps: int, batch: int, member: str = "fab-t"):
    def run(x, y):
        box = dict(clip_value_min=0.0, clip_value_max=1.0, seed=0)
        if member == "fab-t":
            attack = attacks.FABTargeted(EPS, steps=steps, num_targets=1, **box)
        elif member == "apgd-t":
            attack = attacks.APGDTargeted(EPS, steps=steps, num_targets=1, **box)
        else:
            attack = attacks.APGD(EPS, steps=steps, **box)
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
    parser.add_argument(
        "--traces",
        type=int,
        default=1,
        help="compile each member and floor this many times (each on its own copy of the "
        "model) and compare the fastest traces too: on a shared machine one compiled "
        "function can run in a slow mode for a whole process",
    )
    parser.add_argument("--model", type=pathlib.Path, default=DEFAULT_MODEL)
    parser.add_argument("--mnist-dir", type=pathlib.Path, default=DEFAULT_MNIST)
    args = parser.parse_args()

    x, y = mnist(args.mnist_dir, "t10k")
    x, y = x[: args.examples], y[: args.examples]
    model = keras.models.load_model(args.model, compile=False)
    # A copy of the model per extra trace: its own compiled attacks and floors.
    models = [model] + [clone(model) for _ in range(args.traces - 1)]
    s, b = args.steps, args.batch
    fns = {
        "ours: APGD-CE": [make_ours(m, s, b, "apgd-ce") for m in models],
        "ours: APGD-T (1 target)": [make_ours(m, s, b, "apgd-t") for m in models],
        f"floor: {s + 1} fwd+bwd": [make_apgd_floor(m, s, b) for m in models],
        "ours: FAB-T (1 target)": [make_ours(m, s, b, "fab-t") for m in models],
        f"floor: {s} x (fwd+bwd, fwd) + 1 fwd+bwd + 2 fwd": [make_floor(m, s, b) for m in models],
    }
    for traces in fns.values():  # tracing and first calls are not timed
        for fn in traces:
            fn(x[: args.batch], y[: args.batch])
    methods = {
        name: Method([lambda fn=fn: fn(x, y) for fn in traces], len(y))
        for name, traces in fns.items()
    }
    for _ in range(args.rounds):
        for method in methods.values():
            method.time()
    print(
        f"\nl-inf, {args.steps} iterations, no example broken, on the first "
        f"{len(y)} MNIST test images, batch {args.batch}, {args.model.name}; medians "
        f"(and minima) of {args.rounds} interleaved rounds x {args.traces} trace(s)\n"
    )
    for name, m in methods.items():
        cpu, wall = sum(m.cpu, []), sum(m.wall, [])
        traces = f"  per trace {m.per_trace()}" if args.traces > 1 else ""
        print(
            f"{name:<55} CPU {m.c:7.2f} s ({min(cpu):.2f})  "
            f"wall {m.w:7.2f} s ({min(wall):.2f}){traces}"
        )
    ce, targeted, apgd_floor, fab, fab_floor = methods.values()
    print()
    # On a shared machine the minimum over rounds is the least disturbed reading.
    for name, ours, floor in (("APGD-CE", ce, apgd_floor), ("APGD-T", targeted, apgd_floor),
                              ("FAB-T", fab, fab_floor)):  # fmt: skip
        fastest = (f", fastest traces {ours.best / floor.best:.2f}x"
                   if args.traces > 1 else "")  # fmt: skip
        print(f"{name:<8} ours / floor: CPU {ours.c / floor.c:.2f}x (minima "
              f"{min(sum(ours.cpu, [])) / min(sum(floor.cpu, [])):.2f}x{fastest}), wall "
              f"{ours.w / floor.w:.2f}x (minima "
              f"{min(sum(ours.wall, [])) / min(sum(floor.wall, [])):.2f}x)"
              f"  (robust accuracy at eps {EPS:g}, nothing broken: {ours.result:.3f})")  # fmt: skip


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
