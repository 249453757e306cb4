"""Search the adversarial hyperparameters on MNIST with keras-tuner.

Runs a `keras_tuner.RandomSearch` over `adv_multiplier`, `adv_step_size` and
`adv_grad_norm` (the tutorial hand-picks 0.2 / 0.2 / l-inf), maximising the
validation accuracy under an FGSM attack (`val_adv_accuracy`), and prints the
best `AdvConfig` with its clean and robust accuracy.

    pip install "keras-advreg[tuner,datasets]"
    python examples/tuner_search.py --manual-dir /path/to/mnist_gz_files --max-trials 5

`--manual-dir` builds MNIST offline from the four original `.gz` files;
without it tfds downloads MNIST. For a search that outgrows one machine, run
this same script on several machines with keras-tuner's environment variables
(`KERASTUNER_TUNER_ID=chief` on one, `tuner0`, `tuner1`, ... on the others,
and `KERASTUNER_ORACLE_IP`/`KERASTUNER_ORACLE_PORT` of the chief on all) and a
shared `--directory`.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import keras_tuner as kt  # noqa: E402

import keras_advreg  # noqa: E402
from keras_advreg.tuning import AdversarialHyperModel, search  # noqa: E402


def build_base_model(hp):
    """The tutorial's MNIST classifier, with a tunable width."""
    return keras.Sequential(
        [
            keras.Input((28, 28, 1), name="image"),
            keras.layers.Flatten(),
            keras.layers.Dense(hp.Choice("units", [64, 128]), activation="relu"),
            keras.layers.Dense(10),
        ]
    )


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manual-dir", help="folder with the 4 original MNIST .gz files")
    parser.add_argument("--data-dir", help="tfds data_dir (where MNIST is prepared)")
    parser.add_argument("--directory", default="tuner_search", help="keras-tuner project folder")
    parser.add_argument("--max-trials", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument(
        "--subset", type=int, default=10_000, help="training examples (0: all 60000)"
    )
    parser.add_argument("--eval-examples", type=int, default=1000, help="validation examples")
    parser.add_argument("--epsilon", type=float, default=0.1, help="l-inf radius of the attack")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    common = dict(data_dir=args.data_dir, manual_dir=args.manual_dir, seed=args.seed)
    train = keras_advreg.load_tfds("mnist", "train", take=args.subset or None, **common)
    val = keras_advreg.load_tfds("mnist", "test", take=args.eval_examples, shuffle=False, **common)

    hypermodel = AdversarialHyperModel(
        build_base_model,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        adv_config=keras_advreg.AdvConfig(clip_value_min=0.0, clip_value_max=1.0),
        epsilons=(args.epsilon,),
    )
    tuner = kt.RandomSearch(
        hypermodel,
        objective=hypermodel.objective(),  # val_adv_accuracy, maximised
        max_trials=args.max_trials,
        seed=args.seed,
        directory=args.directory,
        project_name="mnist_adversarial",
        overwrite=True,
    )
    completed = search(tuner, train, epochs=args.epochs, validation_data=val, verbose=2)
    if not completed:  # a distributed worker: the chief reports
        return

    best = tuner.oracle.get_best_trials(1)[0]
    config = hypermodel.get_adv_config(best.hyperparameters)
    metrics = best.metrics
    clean_key = next(k for k in ("val_clean_accuracy", "val_accuracy") if metrics.exists(k))
    print(f"\n{len(completed)} of {len(tuner.oracle.trials)} trials completed.")
    print("Best adversarial config:", config)
    print("  units:", best.hyperparameters.get("units"))
    print(f"  clean accuracy:  {metrics.get_last_value(clean_key):.4f}")
    print(f"  robust accuracy: {best.score:.4f} (FGSM, l-inf epsilon={args.epsilon})")


if __name__ == "__main__":
    main()
