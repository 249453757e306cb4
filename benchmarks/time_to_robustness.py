"""Time to robustness: each training method on the same network, data and compute budget.

Two measurements, side by side in one run (CPU time beside wall time):

(a) Cost of one optimizer update: "free" training (each update one forward+backward at
    the perturbed point, whose input gradient also moves the perturbation) against a plain
    update of the same network and batch. Rounds interleave plain and free epochs over the
    same batches after a warm-up. Goal: free <= 1.2x plain, CPU time.

(b) For each method, the network of `keras-advreg robust-mnist --epsilon 0.2` (Wong et al.'s
    conv16-conv32-fc100) trained on MNIST for the same budget of epoch-equivalents (forward
    + backward passes over the training set), with the recipe's epsilon warm-up and
    one-cycle learning rate, then attacked with autoattack-fast (APGD-CE + APGD-T x3) on
    the first `--test` test images at `--epsilon`:

    - plain: no adversarial term (a baseline, trained for the whole budget);
    - nsl-fgsm: NSL's FGSM neighbours, step eps, multiplier 1 (cost: 2 passes per step);
    - fast: FGSM from a random start, step 1.25 eps (3 passes);
    - pgd-k: NSL's PGD from a random start, k steps of eps/4 ... (2 + k passes);
    - trades: TRADES' KL term, neighbour by 2 steps (4 passes);
    - free: free training, m replays (1 pass per update; epochs = budget / m).

    Printed: epochs, training CPU seconds, that / one plain epoch's CPU seconds (the
    epoch-equivalents actually spent), clean and autoattack-fast accuracy. Goal:
    free's robust accuracy within 3 points of pgd-2's at the same budget.

    python benchmarks/time_to_robustness.py [--budget 16] [--train 60000] [--test 1000]
        [--epsilon 0.3] [--methods plain,nsl-fgsm,fast,pgd-2,trades,free] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_advreg import AdvConfig, AdversarialRegularization, EpsilonSchedule  # noqa: E402
from keras_advreg.apps.robust_mnist import (  # noqa: E402
    LOSS,
    RECIPES,
    TriangularLearningRate,
    build_network,
)
from keras_advreg.attacks import AutoAttack  # noqa: E402
from keras_advreg.data.datasets import load_mnist_test, load_mnist_train  # noqa: E402
from keras_advreg.evaluation import evaluate_robustness  # noqa: E402

DEFAULT_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
NETWORK = RECIPES[0.2]  # conv16-conv32-fc100, batch 100, peak learning rate 5e-3
REPLAYS = 4


def method_config(name: str, eps: float) -> tuple[AdvConfig | None, int]:
    """The method's `AdvConfig` and its forward+backward passes per optimizer update."""
    box = dict(clip_value_min=0.0, clip_value_max=1.0, adv_grad_norm="infinity")
    if name == "plain":
        return None, 1
    if name == "nsl-fgsm":
        return AdvConfig(multiplier=1.0, adv_step_size=eps, **box), 2
    if name == "fast":
        return AdvConfig.fast(eps, multiplier=1.0), 3
    if name.startswith("pgd-"):
        k = int(name.split("-")[1])
        step = max(eps / 4, 2.5 * eps / k)
        return AdvConfig(
            multiplier=1.0, adv_step_size=step, pgd_iterations=k, pgd_epsilon=eps,
            random_init=True, **box,
        ), 2 + k  # fmt: skip
    if name == "trades":
        return AdvConfig(
            multiplier=6.0, adv_step_size=eps / 2, pgd_iterations=2, pgd_epsilon=eps,
            adv_loss="trades", **box,
        ), 4  # fmt: skip
    if name == "free":
        return AdvConfig.free(eps, replays=REPLAYS), 1
    raise SystemExit(f"unknown method {name!r}")


def cpu_wall(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


# --------------------------------------------------------------------------- (a) per update
def per_update_cost(data: tf.data.Dataset, eps: float, rounds: int) -> dict:
    keras.utils.set_random_seed(0)
    plain = build_network(NETWORK)
    plain.compile(keras.optimizers.Adam(1e-3), LOSS)
    free = AdversarialRegularization(
        build_network(NETWORK), adv_config=AdvConfig.free(eps, replays=REPLAYS)
    )
    free.compile(keras.optimizers.Adam(1e-3), LOSS)
    batches = int(data.cardinality())
    for model in (plain, free):
        model.fit(data, epochs=1, verbose=0)  # tracing and the data pipeline, not timed
    times = {"plain": [], "free": []}
    for _ in range(rounds):
        times["plain"].append(cpu_wall(lambda: plain.fit(data, epochs=1, verbose=0)))
        times["free"].append(cpu_wall(lambda: free.fit(data, epochs=1, verbose=0)))
    updates = {"plain": batches, "free": batches * REPLAYS}
    out = {}
    for name, measured in times.items():
        cpu = statistics.median(t[0] for t in measured) / updates[name]
        wall = statistics.median(t[1] for t in measured) / updates[name]
        out[name] = {"cpu_ms_per_update": 1e3 * cpu, "wall_ms_per_update": 1e3 * wall}
    out["ratio_cpu"] = out["free"]["cpu_ms_per_update"] / out["plain"]["cpu_ms_per_update"]
    out["ratio_wall"] = out["free"]["wall_ms_per_update"] / out["plain"]["wall_ms_per_update"]
    return out


# --------------------------------------------------------------------------- (b) to robustness
def train_method(name: str, data, eps: float, budget: int, seed: int):
    config, passes = method_config(name, eps)
    updates_per_step = REPLAYS if name == "free" else 1
    epochs = max(1, round(budget / (passes * updates_per_step)))
    keras.utils.set_random_seed(seed)
    base = build_network(NETWORK)
    steps = int(data.cardinality())
    schedule = TriangularLearningRate(NETWORK.peak_learning_rate, epochs * steps)
    if config is None:
        model, callbacks = base, [schedule]
    else:
        model = AdversarialRegularization(base, adv_config=config)
        warmup = max(1, round(0.4 * epochs))
        callbacks = [EpsilonSchedule(eps, warmup), schedule]
    model.compile(keras.optimizers.Adam(0.0), LOSS, metrics=["accuracy"])
    cpu, wall = cpu_wall(lambda: model.fit(data, epochs=epochs, callbacks=callbacks, verbose=0))
    return base, epochs, cpu, wall


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--budget", type=int, default=16, help="epoch-equivalents per method")
    parser.add_argument("--train", type=int, default=60000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--epsilon", type=float, default=0.3)
    parser.add_argument("--methods", default="plain,nsl-fgsm,fast,pgd-2,trades,free")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the per-update timing")
    parser.add_argument("--update-batches", type=int, default=60)
    parser.add_argument("--skip-updates", action="store_true")
    parser.add_argument("--mnist-dir", default=str(DEFAULT_MNIST))
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    eps = args.epsilon
    kwargs = dict(data_dir=args.data_dir, manual_dir=args.mnist_dir)
    data = load_mnist_train(
        batch_size=NETWORK.batch_size, take=args.train, seed=args.seed, **kwargs
    )
    x_test, y_test = load_mnist_test(take=args.test, **kwargs)
    results: dict = {"epsilon": eps, "budget": args.budget, "train": args.train}

    def write() -> None:
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))

    print(f"TF {tf.__version__}, Keras {keras.__version__}, {os.cpu_count()} CPUs", flush=True)
    if not args.skip_updates:
        batches = data.take(args.update_batches).cache()
        upd = per_update_cost(batches, eps, args.rounds)
        results["per_update"] = upd
        write()
        print(
            f"(a) per optimizer update, batch {NETWORK.batch_size}: plain "
            f"{upd['plain']['cpu_ms_per_update']:.1f} ms CPU, free (m={REPLAYS}) "
            f"{upd['free']['cpu_ms_per_update']:.1f} ms CPU -> {upd['ratio_cpu']:.3f}x CPU "
            f"({upd['ratio_wall']:.3f}x wall); target <= 1.2x",
            flush=True,
        )
    plain_epoch = None
    rows = []
    for name in args.methods.split(","):
        base, epochs, cpu, wall = train_method(name, data, eps, args.budget, args.seed)
        if name == "plain":
            plain_epoch = cpu / epochs
        attack = AutoAttack(eps, version="fast", seed=args.seed, clip_value_min=0.0,
                            clip_value_max=1.0)  # fmt: skip
        report = evaluate_robustness(
            base, (x_test, y_test), attack=attack, batch_size=500, warn=False
        )
        row = {
            "method": name,
            "epochs": epochs,
            "train_cpu_s": cpu,
            "train_wall_s": wall,
            "clean_accuracy": report.clean_accuracy,
            "autoattack_fast_accuracy": report.accuracy[eps],
            "attack": report.description,
        }
        if plain_epoch:
            row["plain_epoch_equivalents"] = cpu / plain_epoch
        rows.append(row)
        results["methods"] = rows
        write()
        print(
            f"(b) {name:9s} {epochs:3d} epochs  {cpu:7.1f} s CPU ({wall:6.1f} s wall)  "
            f"= {row.get('plain_epoch_equivalents', float('nan')):5.1f} plain epochs  "
            f"clean {report.clean_accuracy:.4f}  {report.description} "
            f"{report.accuracy[eps]:.4f}",
            flush=True,
        )
    by = {r["method"]: r["autoattack_fast_accuracy"] for r in rows}
    if "free" in by and "pgd-2" in by:
        print(f"free - pgd-2 at the same budget: {by['free'] - by['pgd-2']:+.4f} (target >= -0.03)")
    print(f"test images: {len(y_test)}, eps {eps}, budget {args.budget} epoch-equivalents")
    np.set_printoptions()
    sys.stdout.flush()


if __name__ == "__main__":
    main()
