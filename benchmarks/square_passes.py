"""The Square attack, ours and ART's, counted in forward passes: where AutoAttack's time goes.

AutoAttack's Square member (5000 queries on every example the gradient attacks left) is
most of its cost when many examples are robust (~85% of ours at eps 0.1 on the
adversarially regularized reference model). This runs, in one process and interleaved
rounds, on the same images and the same model:

- `evaluate_robustness` with `attacks.Square(eps, queries=Q)` (ours),
- ART's `SquareAttack` (l-inf, `max_iter=Q`, `p_init=0.8`, 1 restart, `TensorFlowV2Classifier`
  on the logits), when the adversarial-robustness-toolbox is installed,
- the floor: one compiled `tf.while_loop` of `Q + 2` forward passes over each batch (what a
  Square attack costs on examples that stay robust: the clean point, the initial stripes
  and one candidate per query),

and counts the rows (images) every method passes through the model, with a layer in front
of it that adds each call's batch size to a counter (it runs inside the compiled loops as
in eager calls). Printed per method: process CPU and wall seconds, forward rows per
example per query, CPU microseconds per forward row, robust accuracy.

What it shows (README "Benchmarks"): both implementations run at about the cost of their
forward passes; ours makes one forward row per example and query, ART's about three (a
prediction on every example given to it, then the margin at the current point and at the
candidate, each query). The ratio of the two is bounded by that count, whatever either
does beyond the model.

Run: python benchmarks/square_passes.py [--examples 500] [--queries 500] [--eps 0.1]
"""

from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from robust_eval import (  # noqa: E402
    ART_MISSING,
    DEFAULT_MNIST,
    DEFAULT_MODEL,
    Method,
    art_classifier,
    counted,
    counting,
    import_art,
    mnist,
)

from keras_advreg import attacks  # noqa: E402
from keras_advreg.evaluation import evaluate_robustness  # noqa: E402


def make_floor(model: keras.Model, passes: int, batch: int):
    """`passes` compiled forward passes over each batch, in one `tf.while_loop`."""

    @tf.function
    def forward(x):
        def body(i, acc):
            return i + 1, acc + tf.reduce_sum(model(x, training=False))

        return tf.while_loop(lambda i, _: i < passes, body, (0, 0.0))[1]

    def run(x, _y):
        for start in range(0, len(x), batch):
            forward(x[start : start + batch]).numpy()

    return run


def make_ours(model: keras.Model, eps: float, queries: int, batch: int):
    def run(x, y):
        attack = attacks.Square(
            eps, queries=queries, clip_value_min=0.0, clip_value_max=1.0, seed=0
        )
        report = evaluate_robustness(model, (x, y), attack=attack, batch_size=batch, warn=False)
        return report.accuracy[eps]

    return run


def make_art(art, model: keras.Model, eps: float, queries: int, batch: int):
    square_cls, classifier = art[2], art_classifier(art, model)

    def run(x, y):
        np.random.seed(0)
        square = square_cls(
            classifier, eps=eps, max_iter=queries, p_init=0.8, nb_restarts=1,
            batch_size=batch, verbose=False,
        )  # fmt: skip
        x_adv = square.generate(x, y)
        predictions = np.argmax(classifier.predict(x_adv, batch_size=batch), -1)
        return float(np.mean(predictions == y))

    return run


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--examples", type=int, default=500)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model", type=pathlib.Path, default=DEFAULT_MODEL)
    parser.add_argument("--mnist-dir", type=pathlib.Path, default=DEFAULT_MNIST)
    args = parser.parse_args()

    x, y = mnist(args.mnist_dir, "t10k")
    x, y = x[: args.examples], y[: args.examples]
    model, counter = counted(keras.models.load_model(args.model, compile=False))
    ours_name, art_name = "ours: evaluate_robustness Square", "ART SquareAttack"
    floor_name = f"floor: {args.queries + 2} compiled forward passes"
    fns = {
        ours_name: make_ours(model, args.eps, args.queries, args.batch),
        floor_name: make_floor(model, args.queries + 2, args.batch),
    }
    art = import_art()
    if art:
        fns[art_name] = make_art(art, model, args.eps, args.queries, args.batch)
    for fn in fns.values():  # tracing and first calls are not timed
        fn(x[:16], y[:16])
    rows: dict[str, list[int]] = {name: [] for name in fns}
    methods = {
        name: Method(counting(counter, lambda fn=fn: fn(x, y), rows[name]), len(y))
        for name, fn in fns.items()
    }
    for _ in range(args.rounds):
        for method in methods.values():
            method.time()

    n, q = len(y), args.queries
    print(
        f"\nSquare (l-inf, eps {args.eps}, {q} queries, p_init 0.8) on the first {n} MNIST test "
        f"images, batch {args.batch}, {args.model.name}; medians of {args.rounds} rounds\n"
    )
    header = "method", "CPU s", "wall s", "rows/(n*q)", "CPU us/row", "robust"
    print(
        f"{header[0]:<40} {header[1]:>7} {header[2]:>7} {header[3]:>10} {header[4]:>10} {header[5]:>7}"
    )
    for name, m in methods.items():
        r = float(np.median(rows[name]))
        robust = f"{m.result:.3f}" if m.result is not None else ""
        print(
            f"{name:<40} {m.c:7.1f} {m.w:7.1f} {r / (n * q):10.2f} {m.c / r * 1e6:10.1f} {robust:>7}"
        )
    ours, floor = methods[ours_name], methods[floor_name]
    print(f"\nours / floor: CPU {ours.c / floor.c:.2f}x, wall {ours.w / floor.w:.2f}x")
    if art:
        art_m = methods[art_name]
        ratio_rows = np.median(rows[art_name]) / np.median(rows[ours_name])
        print(
            f"ART / ours: CPU {art_m.c / ours.c:.2f}x, wall {art_m.w / ours.w:.2f}x; forward rows "
            f"{ratio_rows:.2f}x; CPU per row {art_m.c / ours.c / ratio_rows:.2f}x"
        )
    else:
        print(ART_MISSING)


if __name__ == "__main__":
    main()
