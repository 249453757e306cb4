"""NSL's "Adversarial regularization for image classification" tutorial on Keras 3.

The flow of `keras-advreg demo`, step by step (`keras_advreg.apps.demo.run_demo` is
the same flow with results.json, figures and saved models on top):

1. load MNIST with tfds (images scaled to [0, 1]);
2. train the tutorial's CNN plainly ("base");
3. train the same CNN wrapped in `keras_advreg.AdversarialRegularization`
   (multiplier 0.2, FGSM step 0.2, l-inf);
4. score both on FGSM examples generated on the base model (the tutorial's
   measurement) and on FGSM examples generated on each model itself.

Run (offline, from the project root):

    python examples/mnist_adversarial.py --epochs 5 --manual-dir ../shared/data/mnist

Without `--manual-dir`, tfds downloads MNIST.
"""

from __future__ import annotations

import argparse

import keras

import keras_advreg
from keras_advreg.apps import demo


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--train-subset", type=int, default=None)
    parser.add_argument("--test-subset", type=int, default=None)
    parser.add_argument("--data-dir", default=None, help="tfds data folder")
    parser.add_argument("--manual-dir", default=None, help="folder with the MNIST .gz files")
    args = parser.parse_args(argv)

    # 1. Data: a shuffled, batched training set (a fresh one per model, so that both
    #    models see the same order) and the test set as arrays.
    config = demo.DemoConfig(
        epochs=args.epochs,
        train_subset=args.train_subset,
        test_subset=args.test_subset,
        data_dir=args.data_dir,
        manual_dir=args.manual_dir,
    )
    data = demo.load_demo_data(config)
    x_test, y_test = data.x_test, data.y_test

    # 2. The base model: the tutorial's CNN (logits), adam, sparse cross-entropy.
    keras.utils.set_random_seed(config.seed)
    base_model = demo.compile_tutorial(demo.build_base_cnn())
    base_model.fit(data.make_train(), epochs=config.epochs)

    # 3. The adversarially regularised model: the same CNN, wrapped. The training data
    #    is the same (image, label) pairs; no conversion to dicts is needed.
    keras.utils.set_random_seed(config.seed)
    adv_config = keras_advreg.AdvConfig(multiplier=0.2, adv_step_size=0.2, adv_grad_norm="infinity")
    adv_model = keras_advreg.AdversarialRegularization(demo.build_base_cnn(), adv_config=adv_config)
    demo.compile_tutorial(adv_model)
    adv_model.fit(data.make_train(), epochs=config.epochs)

    # 4a. The tutorial's measurement: FGSM (eps 0.2, l-inf) generated on the base model,
    #     clipped to [0, 1], and the same perturbed images given to both models.
    models = {"base": base_model, "adv-regularized": adv_model}
    perturbed, _ = demo.transfer_accuracy(base_model, models, x_test, y_test, epsilon=0.2)

    # 4b. White-box: FGSM generated on each model itself (for the wrapper, on its base model).
    results = {"models": {}}
    for name, model in models.items():
        report = keras_advreg.evaluate_robustness(
            model,
            (x_test, y_test),
            epsilons=(0.2,),
            attack=keras_advreg.attacks.FGSM(
                norm="infinity", clip_value_min=0.0, clip_value_max=1.0
            ),
        )
        results["models"][name] = {
            "clean_accuracy": report.clean_accuracy,
            "perturbed_accuracy": perturbed[name],
            "whitebox_accuracy": report.accuracy[0.2],
        }
    print(demo.format_table(results))
    return results


if __name__ == "__main__":
    main()
