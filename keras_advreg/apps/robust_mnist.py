"""`keras-advreg robust-mnist`: the documented recipe for an MNIST model robust at eps 0.3/0.2.

The recipe (chosen by measurement on a 2-core CPU; see README "Robust training"):

- eps 0.3: a conv(32, 4x4, /2)-conv(64, 4x4, /2)-fc200 network trained with TRADES
  (beta 6: `AdvConfig(adv_loss="trades", multiplier=6)`), its neighbour found by 3 PGD
  steps of 0.5 eps from a random start, epsilon warmed up over 5 epochs, Adam with a
  triangular learning rate peaking at 5e-3, batch 100, 20 epochs: 100 epoch-equivalents of
  compute (clean + 3 steps + neighbour per epoch).
- eps 0.2: the smaller conv(16)-conv(32)-fc100 network of Wong et al., "fast" FGSM
  neighbours from a random start (step 1.25 eps) trained at eps 0.3 (margin for the
  evaluation at 0.2), multiplier 3, 13 epochs.

It writes `model.keras` (the plain classifier, logits, loadable without keras_advreg)
and `results.json` (clean, FGSM, PGD-40 and AutoAttack accuracy, training time and the
time of plain training of the same network, per epoch, measured in the same run).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any

import keras
import numpy as np

from keras_advreg.apps.reporting import fit_verbosity, markdown_table, versions
from keras_advreg.attacks import FGSM, PGD, AutoAttack
from keras_advreg.data.datasets import load_mnist_test, load_mnist_train
from keras_advreg.evaluation import evaluate_robustness
from keras_advreg.training import AdvConfig, AdversarialRegularization, EpsilonSchedule


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One documented training recipe."""

    epsilon: float  # evaluated at
    train_epsilon: float
    width: int  # channels of the first convolution (the second has twice)
    dense: int
    pgd_iterations: int
    step_ratio: float  # adv_step_size / epsilon
    multiplier: float
    epochs: int
    warmup_epochs: int = 3
    batch_size: int = 100
    peak_learning_rate: float = 5e-3
    adv_loss: str = "labeled"  # or "trades" (`multiplier` is then TRADES' beta)

    @property
    def epoch_equivalents(self) -> int:
        """Forward+backward passes over the training set: clean + neighbour steps + neighbour."""
        return self.epochs * (2 + self.pgd_iterations)

    def adv_config(self) -> AdvConfig:
        return AdvConfig(
            multiplier=self.multiplier,
            adv_step_size=self.step_ratio * self.train_epsilon,
            adv_grad_norm="infinity",
            clip_value_min=0.0,
            clip_value_max=1.0,
            pgd_iterations=self.pgd_iterations,
            pgd_epsilon=self.train_epsilon,
            random_init=True,
            adv_loss=self.adv_loss,
        )


#: Test examples the full AutoAttack cascade (with Square) runs on.
SQUARE_EXAMPLES = 1000

RECIPES = {
    # fmt: off
    0.3: Recipe(
        0.3,
        0.3,
        32,
        200,
        pgd_iterations=3,
        step_ratio=0.5,
        multiplier=6.0,
        epochs=20,
        warmup_epochs=5,
        adv_loss="trades",
    ),
    # fmt: on
    0.2: Recipe(0.2, 0.3, 16, 100, pgd_iterations=1, step_ratio=1.25, multiplier=3.0, epochs=13),
}


def build_network(recipe: Recipe) -> keras.Model:
    """conv(w, 4x4, stride 2)-conv(2w, 4x4, stride 2)-dense-logits (Wong et al.'s MNIST net)."""
    return keras.Sequential(
        [
            keras.Input((28, 28, 1), name="image"),
            keras.layers.Conv2D(recipe.width, 4, strides=2, padding="same", activation="relu"),
            keras.layers.Conv2D(2 * recipe.width, 4, strides=2, padding="same", activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(recipe.dense, activation="relu"),
            keras.layers.Dense(10),
        ],
        name=f"robust_mnist_eps{recipe.epsilon:g}",
    )


class TriangularLearningRate(keras.callbacks.Callback):
    """Learning rate 0 -> peak at 40% of the steps -> 0 (a one-cycle schedule), per batch."""

    def __init__(self, peak: float, total_steps: int):
        super().__init__()
        self.peak, self.total = peak, max(total_steps, 1)
        self.step = 0

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        t = self.step / self.total
        rate = self.peak * (t / 0.4 if t < 0.4 else max(0.0, (1.0 - t) / 0.6))
        self.model.optimizer.learning_rate.assign(rate)
        self.step += 1


LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def train(
    recipe: Recipe,
    train_data: Any,
    steps_per_epoch: int,
    verbose: int = 1,
    callbacks: list | None = None,
):
    """Trains the recipe's network; returns it and the wall/CPU seconds. `callbacks` run
    after the recipe's own (their `self.model.base_model` is the network)."""
    base = build_network(recipe)
    model = AdversarialRegularization(base, adv_config=recipe.adv_config())
    model.compile(keras.optimizers.Adam(0.0), LOSS, metrics=["accuracy"])
    callbacks = [
        EpsilonSchedule(recipe.train_epsilon, recipe.warmup_epochs),
        TriangularLearningRate(recipe.peak_learning_rate, recipe.epochs * steps_per_epoch),
        *(callbacks or []),
    ]
    wall, cpu = time.perf_counter(), time.process_time()
    model.fit(train_data, epochs=recipe.epochs, callbacks=callbacks, verbose=fit_verbosity(verbose))
    return base, time.perf_counter() - wall, time.process_time() - cpu


def plain_epoch_seconds(recipe: Recipe, train_data: Any) -> tuple[float, float]:
    """Wall and CPU seconds of one plain epoch of the same network (after a warm-up step)."""
    base = build_network(recipe)
    base.compile(keras.optimizers.Adam(1e-3), LOSS)
    base.fit(train_data.take(2), epochs=1, verbose=0)  # tracing, not timed
    wall, cpu = time.perf_counter(), time.process_time()
    base.fit(train_data, epochs=1, verbose=0)
    return time.perf_counter() - wall, time.process_time() - cpu


def evaluate(
    model: keras.Model, x: np.ndarray, y: np.ndarray, epsilon: float, seed: int, write: Any
) -> dict:
    """Clean, FGSM, PGD-40 and AutoAttack accuracy at `epsilon`, with their times.

    The gradient members of the standard AutoAttack (APGD-CE, APGD-T and FAB-T, 9 targets
    each) run on every example, and the whole standard cascade (with Square, 5000 queries)
    on the first `SQUARE_EXAMPLES`: Square costs 5000 forward passes per robust example.
    Each result records the attack's description and its full config. `write(results)` is called after each
    attack, so a long run leaves what it measured.
    """
    box = dict(clip_value_min=0.0, clip_value_max=1.0)
    out: dict[str, Any] = {}
    n = min(SQUARE_EXAMPLES, len(y))
    for key, attack, count in (
        ("fgsm", FGSM(epsilon, **box), len(y)),
        ("pgd40", PGD(epsilon, steps=40, seed=seed, **box), len(y)),
        ("autoattack", AutoAttack(epsilon, seed=seed, square_queries=0, **box), len(y)),
        ("autoattack_with_square", AutoAttack(epsilon, seed=seed, **box), n),
    ):
        start = time.perf_counter()
        report = evaluate_robustness(
            model, (x[:count], y[:count]), attack=attack, batch_size=500, warn=False
        )
        out[key] = {
            "accuracy": report.accuracy[epsilon],
            "attack": report.description,
            "attack_config": {"name": attack.name, **attack.get_config()},
            "examples": count,
            "broken_by": report.broken_by[epsilon],
            "seconds": time.perf_counter() - start,
        }
        if count == len(y):
            out["clean_accuracy"] = report.clean_accuracy
        write(out)
    return out


def run(
    epsilon: float,
    output_dir: str,
    *,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    train_subset: int | None = None,
    test_subset: int | None = None,
    epochs: int | None = None,
    seed: int = 0,
    verbose: int = 1,
) -> dict:
    """Trains and evaluates the recipe for `epsilon`; writes model.keras and results.json."""
    if epsilon not in RECIPES:
        raise ValueError(f"`epsilon` must be one of 0.2, 0.3. Received: epsilon={epsilon!r}")
    recipe = RECIPES[epsilon]
    if epochs is not None:
        recipe = dataclasses.replace(
            recipe, epochs=epochs, warmup_epochs=min(recipe.warmup_epochs, epochs)
        )
    keras.utils.set_random_seed(seed)
    kwargs = dict(data_dir=data_dir, manual_dir=manual_dir)
    train_data = load_mnist_train(
        batch_size=recipe.batch_size, take=train_subset, seed=seed, **kwargs
    )
    steps = int(train_data.cardinality())
    x_test, y_test = load_mnist_test(take=test_subset, **kwargs)
    model, wall, cpu = train(recipe, train_data, steps, verbose)
    os.makedirs(output_dir, exist_ok=True)
    model.compile(keras.optimizers.Adam(), LOSS, metrics=["accuracy"])
    model.save(os.path.join(output_dir, "model.keras"))  # before the (long) evaluation
    plain_wall, plain_cpu = plain_epoch_seconds(recipe, train_data)
    results = {
        "epsilon": epsilon,
        "recipe": dataclasses.asdict(recipe),
        "adv_config": recipe.adv_config().get_config(),
        "epoch_equivalents": recipe.epoch_equivalents,
        "test_examples": int(len(y_test)),
        "training_seconds": {"wall": wall, "cpu": cpu},
        "plain_training_seconds": {
            "wall_per_epoch": plain_wall,
            "cpu_per_epoch": plain_cpu,
            "wall": plain_wall * recipe.epochs,
            "cpu": plain_cpu * recipe.epochs,
        },
        "seed": seed,
        "versions": versions(),
    }

    def write(measured: dict) -> None:
        results.update(measured)
        with open(os.path.join(output_dir, "results.json"), "w") as f:
            json.dump(results, f, indent=2)
            f.write("\n")

    write({})
    evaluate(model, x_test, y_test, epsilon, seed, write)
    return results


def format_table(results: dict) -> str:
    eps = f"{results['epsilon']:g}"
    t, p = results["training_seconds"], results["plain_training_seconds"]
    header = (
        "model",
        "clean",
        f"FGSM {eps}",
        f"PGD-40 {eps}",
        f"APGD-CE + APGD-T {eps}",
        f"AutoAttack {eps} (first {results['autoattack_with_square']['examples']})",
        "train / plain CPU",
    )
    row = (
        f"robust-mnist eps {eps} ({results['epoch_equivalents']} epoch-eq.)",
        f"{results['clean_accuracy']:.4f}",
        f"{results['fgsm']['accuracy']:.4f}",
        f"{results['pgd40']['accuracy']:.4f}",
        f"{results['autoattack']['accuracy']:.4f}",
        f"{results['autoattack_with_square']['accuracy']:.4f}",
        f"{t['cpu'] / p['cpu']:.2f}x",
    )
    return markdown_table(header, [row])
