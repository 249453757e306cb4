"""A robust MNIST classifier at eps 0.2 (l-inf), measured with AutoAttack.

The flow of `keras-advreg robust-mnist --epsilon 0.2`, as a script to read and adapt
(`keras_advreg.apps.robust_mnist` is the same recipe with results.json on top):

1. load MNIST with tfds (images in [0, 1]);
2. wrap Wong et al.'s small CNN in `AdversarialRegularization` with "fast" neighbours
   (one FGSM step of 1.25 eps from a random start, `AdvConfig.fast`), trained at eps 0.3
   for a margin at 0.2, the adversarial term weighted 3x;
3. warm epsilon up over 3 epochs (`EpsilonSchedule`), run a one-cycle learning rate, and
   watch PGD accuracy on held-out images each epoch: if it collapses (catastrophic
   overfitting, the known failure of fast training), training stops and the best weights
   come back (`stop_on_collapse`);
4. measure clean, PGD-40 and AutoAttack accuracy at eps 0.2 on test images.

Run (offline, from the project root; ~3 minutes of training on 2 CPU cores, then the
attacks):

    python examples/robust_mnist.py --manual-dir ../shared/data/mnist

Measured with the full recipe (13 epochs, all 10000 test images): clean 0.991, AutoAttack
(APGD-CE + APGD-T) 0.942 - see the README's "Robust training".
"""

from __future__ import annotations

import argparse

import keras

import keras_advreg
from keras_advreg.data.datasets import load_mnist_test, load_mnist_train

EPSILON, TRAIN_EPSILON = 0.2, 0.3


def build_network() -> keras.Model:
    """conv(16, 4x4, /2) - conv(32, 4x4, /2) - dense 100 - 10 logits."""
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(16, 4, strides=2, padding="same", activation="relu"),
            keras.layers.Conv2D(32, 4, strides=2, padding="same", activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(100, activation="relu"),
            keras.layers.Dense(10),
        ]
    )


class OneCycle(keras.callbacks.Callback):
    """Learning rate 0 -> `peak` over the first 40% of the batches -> 0 at the end."""

    def __init__(self, peak: float, total_steps: int):
        super().__init__()
        self.peak, self.total, self.step = peak, total_steps, 0

    def on_train_batch_begin(self, batch, logs=None):
        t = self.step / self.total
        self.model.optimizer.learning_rate.assign(
            self.peak * (t / 0.4 if t < 0.4 else max(0.0, (1.0 - t) / 0.6))
        )
        self.step += 1


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=13)
    parser.add_argument("--train-subset", type=int, default=None)
    parser.add_argument("--test-subset", type=int, default=1000)
    parser.add_argument("--data-dir", default=None, help="tfds data folder")
    parser.add_argument("--manual-dir", default=None, help="folder with the MNIST .gz files")
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(0)
    data = dict(data_dir=args.data_dir, manual_dir=args.manual_dir)

    # 1. Data: the training set as a shuffled, batched tf.data pipeline; the test images as
    #    arrays, the first 500 of which also serve as held-out data during training.
    train = load_mnist_train(batch_size=100, take=args.train_subset, **data)
    x_test, y_test = load_mnist_test(take=args.test_subset, **data)

    # 2. The model: the network wrapped, with "fast" neighbours clipped to the image range.
    base = build_network()
    config = keras_advreg.AdvConfig.fast(TRAIN_EPSILON, multiplier=3.0)
    model = keras_advreg.AdversarialRegularization(base, adv_config=config)
    model.compile(
        keras.optimizers.Adam(0.0),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )

    # 3. Training. The robustness callback goes first, so that what comes after it (here
    #    the history) sees `val_adv_accuracy`.
    watch = keras_advreg.AdversarialRobustnessCallback(
        (x_test[:500], y_test[:500]),
        epsilons=EPSILON,
        # PGD-10: cheap, multi-step (FGSM accuracy would rise on a collapse)
        attack=keras_advreg.attacks.PGD(steps=10, clip_value_min=0.0, clip_value_max=1.0),
        stop_on_collapse=0.2,
    )
    steps = int(train.cardinality()) * args.epochs
    model.fit(
        train,
        epochs=args.epochs,
        callbacks=[
            watch,
            keras_advreg.EpsilonSchedule(TRAIN_EPSILON, warmup_epochs=min(3, args.epochs)),
            OneCycle(5e-3, steps),
        ],
    )

    # 4. Evaluation of the base network (a plain Keras classifier) at eps 0.2.
    results = {}
    box = dict(clip_value_min=0.0, clip_value_max=1.0)
    for name, attack in (
        ("pgd40", keras_advreg.attacks.PGD(EPSILON, steps=40, seed=0, **box)),
        ("autoattack", keras_advreg.attacks.AutoAttack(EPSILON, seed=0, square_queries=0, **box)),
    ):
        report = keras_advreg.evaluate_robustness(base, (x_test, y_test), attack=attack)
        print(report)
        results["clean"] = report.clean_accuracy
        results[name] = report.accuracy[EPSILON]
    print(results)
    return results


if __name__ == "__main__":
    main()
