"""Robust accuracy against compute for a `robust-mnist` recipe variant (MNIST, l-inf).

Trains one variant of the eps-0.3 recipe (`keras_advreg/apps/robust_mnist.py`) and, at the
end of chosen epochs, measures the in-training weights on the first `--curve-examples` test
images with APGD-CE + APGD-T (9 targets) - the gradient members of the standard AutoAttack -
and records the epoch-equivalents spent so far. After training it measures the final model
on the first `--examples` test images with APGD-CE + APGD-T, then Square (5000 queries) on
the first `--square-examples`, and writes everything (with the library version, the seed and
each attack's description) to `--output` as JSON.

    python benchmarks/recipe_curve.py --adv-loss trades --multiplier 6 --pgd-iterations 3 \\
        --step-ratio 0.5 --epochs 20 --output trades.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import keras

from keras_advreg.apps import robust_mnist
from keras_advreg.apps.reporting import versions
from keras_advreg.attacks import AutoAttack
from keras_advreg.data.datasets import load_mnist_test, load_mnist_train
from keras_advreg.evaluation import evaluate_robustness

BOX = dict(clip_value_min=0.0, clip_value_max=1.0)


def gradient_attack(epsilon: float, seed: int) -> AutoAttack:
    return AutoAttack(
        epsilon, version="custom", attacks_to_run=["apgd-ce", "apgd-t"], seed=seed, **BOX
    )


def measure(model, x, y, attack) -> dict:
    wall, cpu = time.perf_counter(), time.process_time()
    report = evaluate_robustness(model, (x, y), attack=attack, batch_size=500, warn=False)
    eps = attack.epsilons[0]
    return {
        "accuracy": report.accuracy[eps],
        "clean_accuracy": report.clean_accuracy,
        "attack": report.description,
        "examples": int(len(y)),
        "broken_by": report.broken_by[eps],
        "seconds": {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu},
    }


class Curve(keras.callbacks.Callback):
    """Measures the network (`self.model.base_model`) at the end of the epochs `epochs_at`."""

    def __init__(self, x, y, epochs_at, recipe, seed, out, write):
        super().__init__()
        self.x, self.y, self.at = x, y, set(epochs_at)
        self.recipe, self.seed, self.out, self.write = recipe, seed, out, write
        self.cpu = time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1
        cpu = time.process_time() - self.cpu
        if done in self.at:
            base = self.model.base_model
            point = measure(base, self.x, self.y, gradient_attack(self.recipe.epsilon, self.seed))
            point["epoch"] = done
            point["epoch_equivalents"] = done * (2 + self.recipe.pgd_iterations)
            point["training_cpu_before"] = cpu
            self.out["curve"].append(point)
            self.write()
            print("curve", done, point["clean_accuracy"], point["accuracy"], flush=True)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--adv-loss", default="labeled", choices=("labeled", "trades"))
    p.add_argument("--multiplier", type=float, default=4.0)
    p.add_argument("--pgd-iterations", type=int, default=2)
    p.add_argument("--step-ratio", type=float, default=0.75)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--warmup-epochs", type=int, default=3)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--dense", type=int, default=200)
    p.add_argument("--peak-learning-rate", type=float, default=5e-3)
    p.add_argument("--curve-at", default="", help="comma-separated epochs to measure at")
    p.add_argument("--curve-examples", type=int, default=500)
    p.add_argument("--examples", type=int, default=1000)
    p.add_argument("--square-examples", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--manual-dir", default="../shared/data/mnist")
    p.add_argument("--save", default=None, help="where to save the final model (.keras)")
    p.add_argument("--output", required=True)
    a = p.parse_args()
    recipe = dataclasses.replace(
        robust_mnist.RECIPES[0.3],
        adv_loss=a.adv_loss,
        multiplier=a.multiplier,
        pgd_iterations=a.pgd_iterations,
        step_ratio=a.step_ratio,
        epochs=a.epochs,
        warmup_epochs=a.warmup_epochs,
        width=a.width,
        dense=a.dense,
        peak_learning_rate=a.peak_learning_rate,
    )
    keras.utils.set_random_seed(a.seed)
    train_data = load_mnist_train(
        batch_size=recipe.batch_size, seed=a.seed, manual_dir=a.manual_dir
    )
    steps = int(train_data.cardinality())
    x, y = load_mnist_test(take=max(a.examples, a.curve_examples), manual_dir=a.manual_dir)
    out = {
        "recipe": dataclasses.asdict(recipe),
        "adv_config": recipe.adv_config().get_config(),
        "epoch_equivalents": recipe.epoch_equivalents,
        "seed": a.seed,
        "versions": versions(),
        "curve": [],
    }

    def write() -> None:
        with open(a.output, "w") as f:
            json.dump(out, f, indent=2)
            f.write("\n")

    at = [int(e) for e in a.curve_at.split(",") if e]
    curve = Curve(x[: a.curve_examples], y[: a.curve_examples], at, recipe, a.seed, out, write)
    base, wall, cpu = robust_mnist.train(recipe, train_data, steps, callbacks=[curve])
    out["training_seconds"] = {"wall": wall, "cpu": cpu}
    out["training_seconds"]["cpu_in_curve"] = sum(c["seconds"]["cpu"] for c in out["curve"])
    base.compile(keras.optimizers.Adam(), robust_mnist.LOSS, metrics=["accuracy"])
    if a.save:
        base.save(a.save)
    wall, cpu = robust_mnist.plain_epoch_seconds(recipe, train_data)
    out["plain_epoch_seconds"] = {"wall": wall, "cpu": cpu}
    write()
    out["final"] = measure(
        base, x[: a.examples], y[: a.examples], gradient_attack(recipe.epsilon, a.seed)
    )
    write()
    print("final", out["final"]["clean_accuracy"], out["final"]["accuracy"], flush=True)
    if a.square_examples:
        n = a.square_examples
        square = AutoAttack(
            recipe.epsilon,
            version="custom",
            attacks_to_run=["apgd-ce", "apgd-t", "square"],
            seed=a.seed,
            **BOX,
        )
        out["final_with_square"] = measure(base, x[:n], y[:n], square)
        write()
        print(
            "square",
            out["final_with_square"]["accuracy"],
            out["final_with_square"]["broken_by"],
            flush=True,
        )


if __name__ == "__main__":
    main()
