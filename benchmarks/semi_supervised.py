"""Semi-supervised MNIST with virtual adversarial training (VAT), beside the same network
trained on the labeled examples alone, in one run.

The labeled set is a fixed draw of 10 images per class from the MNIST training set:
for each class c (0..9), the first 10 indices of
`np.random.default_rng(DRAW_SEED + c).permutation(indices of class c)`, DRAW_SEED = 2018.
The other 59,900 training images are the unlabeled set (their labels are not used).
Test error is on the 10,000 MNIST test images.

Network (permutation-invariant, as Miyato et al. 2018's MNIST runs): an MLP
784-1200-1200-10 with batch normalisation and ReLU (`--output-bn`: of the logits too, as
theirs). Plain: Adam on the 100 labeled images alone, `--plain-steps` updates of batch 32
(`--plain-seeds` seeds: a cheap run). VAT:
`AdvConfig(adv_loss="vat", adv_step_size=eps, multiplier=1, pgd_iterations=1)` (one power
iteration, xi `--xi`; `--entropy`: `vat_entropy`, off for the first `--entropy-warmup`
epochs; `--balance`: `vat_balance`), batches of `--labeled-batch` labeled + unlabeled images
(`keras_advreg.data.semi_supervised_batches`), Adam, trained until `--cpu-budget` seconds
of process CPU time are spent (whole epochs of `--steps-per-epoch` updates), or for
`--epochs` epochs with a cosine decay of the learning rate (`--decay-rate r`: times r after
every epoch instead); test error after every epoch (`--population-stats`: also with batch
normalization's statistics recomputed over the training images) and its most frequent
confusion.

The result in the README (small CNN, VAT + entropy + class balance, 2,400 updates):

    python benchmarks/semi_supervised.py --network cnn --eps 3.0 --entropy 1.0 --balance 1.0 \
        --batch 350 --labeled-batch 100 --steps-per-epoch 240 --epochs 10 --plain-seeds 3

Close to the reference's setting (all 100 labeled images and 250 unlabeled ones in every
update, batch normalization of the logits, eps 0.3, learning rate 0.002 times 0.9 per epoch
for 100 epochs; its epochs are 500 updates, 50,000 in all; here an epoch is one pass over the
unlabeled images, 240 updates, 24,000 in all):

    python benchmarks/semi_supervised.py --eps 0.3 --batch 350 --labeled-batch 100 \
        --output-bn --steps-per-epoch 240 --epochs 100 --decay-rate 0.9 --out run.json

Prints one JSON line per epoch and a summary; CPU time (time.process_time) beside wall time.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

DEFAULT_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
DRAW_SEED = 2018


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_mnist(root: Path):
    names = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")  # fmt: skip
    xtr, ytr, xte, yte = (_read_idx(root / n) for n in names)
    flat = lambda x: x.reshape(len(x), -1).astype("float32") / 255.0  # noqa: E731
    return flat(xtr), ytr.astype("int64"), flat(xte), yte.astype("int64")


def labeled_draw(y: np.ndarray, per_class: int = 10, draw_seed: int = DRAW_SEED) -> np.ndarray:
    """`per_class` indices per class: for class `c` the first of
    `default_rng(2018 + c).permutation(...)` (the documented draw), or with another
    `draw_seed` of `default_rng(draw_seed + 10000 + c)` (no seed shared with it)."""
    picks = []
    for c in range(10):
        idx = np.flatnonzero(y == c)
        picks.append(np.random.default_rng(draw_seed + 10_000 * (draw_seed != DRAW_SEED) + c)
                     .permutation(idx)[:per_class])  # fmt: skip
    return np.concatenate(picks)


def mlp(hidden, seed, output_bn=False, noise=0.0):
    import keras

    keras.utils.set_random_seed(seed)
    layers = [keras.Input((784,))]
    for units in hidden:
        layers += [keras.layers.Dense(units, use_bias=False), keras.layers.BatchNormalization(),
                   keras.layers.ReLU()]  # fmt: skip
        if noise:  # Gaussian noise on each hidden layer while training (Miyato et al. 2018)
            layers += [keras.layers.GaussianNoise(noise, seed=seed)]
    layers += [keras.layers.Dense(10)]
    if output_bn:  # as Miyato et al.'s MNIST network: batch normalization of the logits too
        layers += [keras.layers.BatchNormalization()]
    return keras.Sequential(layers)


def cnn(seed, output_bn=False):
    """A small CNN on the flat 784 pixels (reshaped inside: the perturbation and its l2 norm
    are the same as the MLP's): two 5x5 convolutions of stride 2 (32 and 64 filters) with
    batch normalization and ReLU, a 128-unit dense layer with both, the logits."""
    import keras

    keras.utils.set_random_seed(seed)
    layers = [keras.Input((784,)), keras.layers.Reshape((28, 28, 1))]
    for filters in (32, 64):
        layers += [keras.layers.Conv2D(filters, 5, strides=2, padding="same", use_bias=False),
                   keras.layers.BatchNormalization(), keras.layers.ReLU()]  # fmt: skip
    layers += [keras.layers.Flatten(), keras.layers.Dense(128, use_bias=False),
               keras.layers.BatchNormalization(), keras.layers.ReLU(), keras.layers.Dense(10)]  # fmt: skip
    if output_bn:
        layers += [keras.layers.BatchNormalization()]
    return keras.Sequential(layers)


def test_error(model, x, y) -> float:
    return float(np.mean(predicted_digits(model, x) != y))


def predicted_digits(model, x) -> np.ndarray:
    return np.argmax(model.predict(x, batch_size=1000, verbose=0), -1)


def top_confusions(predicted, y, n: int = 5) -> list:
    """The `n` most frequent (true digit, predicted digit, count) errors."""
    pairs = ((int(a), int(b), int(np.sum((y == a) & (predicted == b))))
             for a in range(10) for b in range(10) if a != b)  # fmt: skip
    return sorted(pairs, key=lambda t: -t[2])[:n]


def population_error(model, x_train, x_test, y_test) -> float:
    """Test error with each batch normalization layer's statistics set to those of its inputs
    over `x_train` (layer by layer, each after the ones before it), on a copy of the model."""
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    for layer in copy.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            inputs = keras.Model(copy.inputs, layer.input).predict(
                x_train, batch_size=2000, verbose=0
            )
            layer.moving_mean.assign(inputs.mean(0))
            layer.moving_variance.assign(inputs.var(0))
    return test_error(copy, x_test, y_test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mnist-dir", type=Path, default=DEFAULT_MNIST)
    parser.add_argument("--eps", type=float, default=0.3)
    parser.add_argument("--xi", type=float, default=1e-3)
    parser.add_argument(
        "--entropy",
        type=float,
        default=0.0,
        help="weight of the entropy term (`vat_entropy`; 1.0 is Miyato et al.'s VAT+EntMin)",
    )
    parser.add_argument(
        "--balance",
        type=float,
        default=0.0,
        help="weight of the class-balance term (`vat_balance`: log(classes) minus the entropy "
        "of the batch's mean prediction)",
    )
    parser.add_argument("--entropy-warmup", type=int, default=0,
                        help="train the first this many epochs with VAT alone (entropy weight "
                             "0), then with `--entropy`")  # fmt: skip
    parser.add_argument("--network", choices=("mlp", "cnn"), default="mlp",
                        help="mlp: permutation-invariant, `--hidden` units; cnn: a small CNN")  # fmt: skip
    parser.add_argument("--hidden", default="1200,1200")
    parser.add_argument("--noise", type=float, default=0.0,
                        help="stddev of Gaussian noise added to each hidden layer while training "
                             "(0.5 with --hidden 1200,600,300,150 is Miyato et al. 2018's "
                             "MNIST network)")  # fmt: skip
    parser.add_argument("--labeled-batch", type=int, default=32)
    parser.add_argument("--batch", type=int, default=160)
    parser.add_argument("--steps-per-epoch", type=int, default=200)
    parser.add_argument("--cpu-budget", type=float, default=900.0)
    parser.add_argument("--plain-steps", type=int, default=600)
    parser.add_argument("--plain-seeds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--draw-seed", type=int, default=DRAW_SEED,
                        help="another draw of the 100 labeled images (2018: the documented one)")  # fmt: skip
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--output-bn", action="store_true",
                        help="batch normalization of the logits too (Miyato et al.'s MNIST MLP)")  # fmt: skip
    parser.add_argument("--epochs", type=int, default=None,
                        help="train this many epochs (with a cosine decay of the learning "
                             "rate to 0 over them) instead of until --cpu-budget")  # fmt: skip
    parser.add_argument("--decay-rate", type=float, default=None,
                        help="multiply the learning rate by this after every epoch (the "
                             "reference's 0.9 per 500 updates) instead of the cosine decay")  # fmt: skip
    parser.add_argument("--population-stats", action="store_true",
                        help="also report the test error with batch normalization's statistics "
                             "recomputed over the whole training set (the reference's last step)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    import keras

    import keras_advreg
    from keras_advreg.data import semi_supervised_batches

    hidden = [int(h) for h in args.hidden.split(",")]

    def network(seed):
        if args.network == "cnn":
            return cnn(seed, args.output_bn)
        return mlp(hidden, seed, args.output_bn, args.noise)

    xtr, ytr, xte, yte = load_mnist(args.mnist_dir)
    lab = labeled_draw(ytr, draw_seed=args.draw_seed)
    unl = np.setdiff1d(np.arange(len(xtr)), lab)
    x_lab, y_lab, x_unl = xtr[lab], ytr[lab], xtr[unl]
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    result = {"backend": keras.backend.backend(), "args": {k: str(v) for k, v in vars(args).items()},
              "labeled": int(len(lab)), "unlabeled": int(len(unl)), "plain": [], "vat": []}  # fmt: skip

    # Plain: the same network on the 100 labeled images alone.
    for seed in range(args.plain_seeds):
        model = network(seed)
        model.compile(keras.optimizers.Adam(args.lr), ce)
        epochs = max(1, args.plain_steps * 32 // len(lab))
        c0, w0 = time.process_time(), time.perf_counter()
        model.fit(x_lab, y_lab, batch_size=32, epochs=epochs, verbose=0)
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        steps = epochs * -(-len(lab) // 32)
        row = {"seed": seed, "steps": steps, "test_error": test_error(model, xte, yte),
               "cpu_s": round(cpu, 1), "wall_s": round(wall, 1),
               "cpu_ms_per_step": round(1000 * cpu / steps, 2)}  # fmt: skip
        result["plain"].append(row)
        print(json.dumps({"plain": row}), flush=True)

    # VAT: labeled + unlabeled batches, until the CPU budget is spent.
    base = network(args.seed)
    config = keras_advreg.AdvConfig(
        adv_loss="vat",
        multiplier=1.0,
        adv_step_size=args.eps,
        pgd_iterations=1,
        vat_xi=args.xi,
        vat_entropy=args.entropy,
        vat_balance=args.balance,
    )
    model = keras_advreg.AdversarialRegularization(base, adv_config=config)
    rate = args.lr
    if args.decay_rate:
        rate = keras.optimizers.schedules.ExponentialDecay(
            args.lr, args.steps_per_epoch, args.decay_rate, staircase=True
        )
    elif args.epochs:
        rate = keras.optimizers.schedules.CosineDecay(args.lr, args.epochs * args.steps_per_epoch)
    model.compile(keras.optimizers.Adam(rate), ce)
    batches = semi_supervised_batches(
        x_lab, y_lab, x_unl, batch_size=args.batch, labeled_batch_size=args.labeled_batch,
        seed=args.seed,
    )  # fmt: skip
    c0, w0 = time.process_time(), time.perf_counter()
    epoch = 0
    while (epoch < args.epochs) if args.epochs else (time.process_time() - c0 < args.cpu_budget):
        entropy = 0.0 if epoch < args.entropy_warmup else args.entropy
        if model.adv_config.vat_entropy != entropy:  # traced into the step: retrace it
            model.adv_config = model.adv_config.replace(vat_entropy=entropy)
            model.make_train_function(force=True)
        e0 = time.process_time()
        history = model.fit(batches, epochs=epoch + 1, initial_epoch=epoch,
                            steps_per_epoch=args.steps_per_epoch, verbose=0)  # fmt: skip
        epoch += 1
        cpu_epoch = time.process_time() - e0
        predicted = predicted_digits(base, xte)
        row = {"epoch": epoch, "updates": epoch * args.steps_per_epoch,
               "test_error": float(np.mean(predicted != yte)),
               "top_confusion": top_confusions(predicted, yte, 1)[0],
               **({"test_error_population_stats": population_error(base, xtr, xte, yte)}
                  if args.population_stats else {}),
               "vat_entropy": model.adv_config.vat_entropy,
               "vat_term": float(history.history["scaled_adversarial_loss"][-1]),
               "cpu_s_epoch": round(cpu_epoch, 1),
               "cpu_ms_per_step": round(1000 * cpu_epoch / args.steps_per_epoch, 2),
               "cpu_s_total": round(time.process_time() - c0, 1),
               "wall_s_total": round(time.perf_counter() - w0, 1)}  # fmt: skip
        result["vat"].append(row)
        print(json.dumps({"vat": row}), flush=True)
    predicted = predicted_digits(base, xte)
    summary = {
        # Which digits the errors fall on: a few classes far above the rest is a cluster of
        # unlabeled images given the wrong label, not an even blur.
        "vat_test_error_by_class": [
            round(float(np.mean(predicted[yte == c] != c)), 4) for c in range(10)
        ],
        "vat_confusions": top_confusions(predicted, yte),
        "plain_test_error": [r["test_error"] for r in result["plain"]],
        "vat_test_error_last": result["vat"][-1]["test_error"] if result["vat"] else None,
        "vat_updates": result["vat"][-1]["updates"] if result["vat"] else 0,
    }
    result["summary"] = summary
    print(json.dumps({"summary": summary}), flush=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
