"""The NSL adversarial-regularization tutorial on MNIST, as reusable functions.

This is the flow of NSL's "Adversarial regularization for image classification"
tutorial on Keras 3: the tutorial's CNN trained plainly ("base") and with
adversarial regularization ("adv-regularized": multiplier 0.2, FGSM step 0.2,
l-inf), then both measured on the test set:

- `clean_accuracy`: accuracy on the unperturbed test images;
- `perturbed_accuracy`: accuracy on FGSM (epsilon 0.2, l-inf) examples
  generated on the *base* model and clipped to `[0, 1]`, the tutorial's own
  measurement (the same perturbed images for both models);
- `whitebox_accuracy`: accuracy on FGSM examples generated on the model
  itself (`keras_advreg.evaluate_robustness`).

`keras-advreg demo` (see `keras_advreg.apps.cli`) and `examples/mnist_adversarial.py`
both run `run_demo`. Loading MNIST needs `tensorflow-datasets`
(`pip install "keras-advreg[datasets]"`); the figures need matplotlib
(`pip install "keras-advreg[plot]"`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_advreg.apps.reporting import json_default, markdown_table, versions
from keras_advreg.apps.tutorial import (  # noqa: F401  (re-exported for the CLI)
    ADV,
    BASE,
    EVAL_BATCH_SIZE,
    PERTURBED_EPSILON,
    TUTORIAL_ADV_CONFIG,
    build_base_cnn,
    compile_tutorial,
    robustness,
    train_models,
    transfer_accuracy,
)
from keras_advreg.attacks import PGD, AutoAttack
from keras_advreg.data.datasets import load_mnist_test, load_mnist_train
from keras_advreg.evaluation import RobustnessReport
from keras_advreg.training import AdversarialRegularization

#: Epsilons of the accuracy-vs-epsilon curve.
CURVE_EPSILONS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
#: Epsilons of the strong (multi-step) attacks: PGD-40 and AutoAttack.
STRONG_EPSILONS = (0.1, 0.2, 0.3)
#: Files written to the output folder.
RESULTS_FILE = "results.json"
GRID_FILE = "perturbed_examples.png"
CURVE_FILE = "accuracy_vs_epsilon.png"
MODEL_FILES = {BASE: "base.keras", ADV: "adv-regularized.keras"}


@dataclasses.dataclass
class DemoConfig:
    """Settings of `run_demo` (the options of `keras-advreg demo`).

    Args:
        epochs: int. Training epochs of each model. Defaults to `5`.
        batch_size: int. Training batch size. Defaults to `32`.
        train_subset: int or None. Train on the first this many training
            examples. Defaults to `None` (all 60000).
        test_subset: int or None. Evaluate on the first this many test
            examples. Defaults to `None` (all 10000).
        data_dir: str or None. tfds data folder. Defaults to `None` (tfds'
            default, `~/tensorflow_datasets`).
        manual_dir: str or None. Folder with the four original MNIST `.gz`
            files, to build the dataset offline. Defaults to `None` (tfds
            downloads MNIST).
        output_dir: str or None. Where the results, figures and models go;
            `None` writes nothing. Defaults to `"outputs/demo"`.
        epsilons: tuple of float. Epsilons of the accuracy-vs-epsilon curve.
            Defaults to `CURVE_EPSILONS`.
        strong_subset: int or None. Run PGD-40 and AutoAttack (at
            `STRONG_EPSILONS`) on the first this many test examples.
            Defaults to `1000` (AutoAttack on all 10000 takes tens of minutes
            on a 2-core CPU); `None`: all.
        seed: int. Random seed (weights, data order, attack starts).
            Defaults to `0`.
        save_models: bool. Save `base.keras` and `adv-regularized.keras` (the
            regularized model's base model, a plain Keras model) in
            `output_dir`. Defaults to `True`.
        plots: bool. Write the figures (needs matplotlib). Defaults to `True`.
        verbose: int. `0` silent, `1` progress bars and the table. Defaults
            to `1`.
    """

    epochs: int = 5
    batch_size: int = 32
    train_subset: int | None = None
    test_subset: int | None = None
    data_dir: str | None = None
    manual_dir: str | None = None
    output_dir: str | None = "outputs/demo"
    epsilons: tuple[float, ...] = CURVE_EPSILONS
    strong_subset: int | None = 1000
    seed: int = 0
    save_models: bool = True
    plots: bool = True
    verbose: int = 1

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "epsilons": list(self.epsilons)}


# --------------------------------------------------------------------------- model and data
@dataclasses.dataclass
class DemoData:
    """The demo's data: a factory of training datasets and the test arrays."""

    make_train: Callable[[], tf.data.Dataset]
    train_size: int
    x_test: np.ndarray
    y_test: np.ndarray
    seconds: float = 0.0


def load_demo_data(config: DemoConfig) -> DemoData:
    """Loads (preparing once with tfds) MNIST as `config` asks."""
    start = time.perf_counter()
    data_kwargs = dict(data_dir=config.data_dir, manual_dir=config.manual_dir)
    x_test, y_test = load_mnist_test(take=config.test_subset, **data_kwargs)

    def make_train(batch_size: int | None = config.batch_size) -> tf.data.Dataset:
        return load_mnist_train(
            batch_size=batch_size, take=config.train_subset, seed=config.seed, **data_kwargs
        )

    train_size = int(make_train(batch_size=None).cardinality())
    return DemoData(make_train, train_size, x_test, y_test, time.perf_counter() - start)


def check_plotting() -> None:
    """Raises `ImportError` (with the pip command) when the figures cannot be drawn."""
    try:
        import matplotlib  # noqa: F401  (keras_advreg.plotting imports it when drawing)
    except ImportError as error:
        raise ImportError(
            'The figures need matplotlib: pip install "keras-advreg[plot]" (or pass '
            "--no-plots / plots=False)."
        ) from error


def run_demo(
    config: DemoConfig | None = None,
    data: DemoData | None = None,
    *,
    print_table: bool = True,
    **overrides: Any,
) -> dict:
    """Runs the tutorial end to end and returns the results (also written to `output_dir`).

    Args:
        config: DemoConfig. Defaults to `DemoConfig()`.
        data: DemoData. Data loaded beforehand with `load_demo_data(config)`.
            Defaults to `None` (loaded here).
        print_table: bool. With `config.verbose`, print the results table and
            the files written at the end. Defaults to `True`.
        **overrides: Fields of `DemoConfig` to change.

    Returns:
        The dict written to `results.json`: `models` holds, for `"base"` and
        `"adv-regularized"`, `clean_accuracy`, `perturbed_accuracy` and
        `whitebox_accuracy`; `curve` the accuracy per epsilon; plus the
        configuration, versions, data sizes, timings and written files.

    Example:

    ```python
    results = run_demo(epochs=1, train_subset=5000, test_subset=1000,
                       manual_dir="../shared/data/mnist", output_dir="/tmp/demo")
    print(format_table(results))
    ```
    """
    config = dataclasses.replace(config or DemoConfig(), **overrides)
    verbose = config.verbose
    if config.plots and config.output_dir is not None:
        check_plotting()  # fail before training when matplotlib is missing
    keras.utils.set_random_seed(config.seed)
    data = data or load_demo_data(config)
    x_test, y_test, train_size = data.x_test, data.y_test, data.train_size
    timings: dict[str, float] = {"load_data": data.seconds}
    if verbose:
        print(f"MNIST: {train_size} training and {len(y_test)} test examples")

    models, training = train_models(
        data.make_train,
        epochs=config.epochs,
        seed=config.seed,
        verbose=verbose,
    )
    for name in models:
        timings[f"train_{name}"] = training[name]["seconds"]

    start = time.perf_counter()
    perturbed, sample = transfer_accuracy(models[BASE], models, x_test, y_test)
    timings["perturbed_accuracy"] = time.perf_counter() - start

    epsilons = tuple(sorted(set(config.epsilons) | {PERTURBED_EPSILON}))
    reports: dict[str, RobustnessReport] = {}
    strong: dict[str, dict[str, RobustnessReport]] = {}
    n = len(y_test) if config.strong_subset is None else min(config.strong_subset, len(y_test))
    box = dict(clip_value_min=0.0, clip_value_max=1.0, seed=config.seed)
    strong_attacks = {
        "pgd40": PGD(STRONG_EPSILONS, steps=40, **box),
        "autoattack": AutoAttack(STRONG_EPSILONS, **box),
    }
    for name, model in models.items():
        start = time.perf_counter()
        title = f"\nWhite-box FGSM on the {name} model" if verbose else None
        reports[name] = robustness(model, x_test, y_test, epsilons, title=title, warn=False)
        timings[f"whitebox_{name}"] = time.perf_counter() - start
        strong[name] = {}
        for key, attack in strong_attacks.items():
            start = time.perf_counter()
            title = f"{attack.describe()} on the {name} model ({n} examples)" if verbose else None
            strong[name][key] = robustness(
                model, x_test[:n], y_test[:n], attack=attack, title=title, warn=False
            )
            timings[f"{key}_{name}"] = time.perf_counter() - start

    results = {
        "models": {
            name: {
                "clean_accuracy": reports[name].clean_accuracy,
                "perturbed_accuracy": perturbed[name],
                "whitebox_accuracy": reports[name].accuracy[PERTURBED_EPSILON],
                **{
                    f"{key}_accuracy": {f"{e:g}": a for e, a in r.accuracy.items()}
                    for key, r in strong[name].items()
                },
            }
            for name in models
        },
        "curve": {
            name: {f"{eps:g}": acc for eps, acc in reports[name].accuracy.items()}
            for name in models
        },
        "measurements": {
            "clean_accuracy": "accuracy on the test set",
            "perturbed_accuracy": (
                f"FGSM l-inf epsilon {PERTURBED_EPSILON:g} generated on the base model, "
                "clipped to [0, 1], applied to each model (the tutorial's measurement)"
            ),
            "whitebox_accuracy": (
                f"FGSM l-inf epsilon {PERTURBED_EPSILON:g} generated on each model itself, "
                "clipped to [0, 1] (keras_advreg.evaluate_robustness): an upper bound"
            ),
            "pgd40_accuracy": (
                f"{strong_attacks['pgd40'].describe()} (step 2.5 eps/40, random start), l-inf, "
                f"clipped to [0, 1], per epsilon, on the first {n} test examples"
            ),
            "autoattack_accuracy": (
                f"{strong_attacks['autoattack'].describe()}, l-inf, clipped to [0, 1], per "
                f"epsilon, on the first {n} test examples: the robust accuracy"
            ),
        },
        "adv_config": TUTORIAL_ADV_CONFIG.get_config(),
        "config": config.to_dict(),
        "data": {"train_examples": train_size, "test_examples": int(len(y_test))},
        "reports": {name: report.to_dict() for name, report in reports.items()},
        "strong_reports": {
            name: {key: r.to_dict() for key, r in by_attack.items()}
            for name, by_attack in strong.items()
        },
        "training": training,
        "versions": versions(),
        "timings_seconds": timings,
        "files": {},
    }
    if config.output_dir is not None:
        results["files"] = write_outputs(results, models, sample, reports, config)
    if verbose and print_table:
        print("\n" + format_table(results))
        if results["files"]:
            print(f"\nWrote {', '.join(results['files'].values())}")
    return results


def write_outputs(
    results: dict,
    models: Mapping[str, keras.Model],
    sample: Mapping[str, np.ndarray],
    reports: Mapping[str, RobustnessReport],
    config: DemoConfig,
) -> dict[str, str]:
    """Writes the models, the figures and `results.json`; returns what was written."""
    out = config.output_dir
    os.makedirs(out, exist_ok=True)
    files: dict[str, str] = {}
    if config.save_models:
        for name, model in models.items():
            path = os.path.join(out, MODEL_FILES[name])
            if isinstance(model, AdversarialRegularization):
                model.save_base_model(path)
            else:
                model.save(path)
            files[f"model_{name}"] = path
    if config.plots:
        files.update(_write_figures(out, sample, reports))
    path = os.path.join(out, RESULTS_FILE)
    files["results"] = path
    results["files"] = files
    with open(path, "w") as f:
        json.dump(results, f, indent=2, default=json_default)
        f.write("\n")
    return files


def _plotting():
    from keras_advreg import plotting

    return plotting


def _write_figures(out: str, sample: Mapping[str, np.ndarray], reports) -> dict[str, str]:
    plotting = _plotting()
    files = {}
    grid = os.path.join(out, GRID_FILE)
    plotting.plot_perturbed_examples(
        sample["image"],
        sample["label"],
        {"base": sample[BASE], "adv": sample[ADV]},
        grid,
        max_examples=len(sample["label"]),
        columns=4,  # the tutorial's layout
    )
    files["perturbed_examples"] = grid
    curve = os.path.join(out, CURVE_FILE)
    plotting.plot_accuracy_vs_epsilon(
        dict(reports), curve, title="MNIST test set, white-box FGSM (l-inf)"
    )
    files["accuracy_vs_epsilon"] = curve
    return files


def format_table(results: Mapping) -> str:
    """The results table: clean, the tutorial's FGSM numbers, PGD-40 and AutoAttack."""
    eps = f"{PERTURBED_EPSILON:g}"
    strong = [f"{e:g}" for e in STRONG_EPSILONS]
    header = (
        "model",
        "clean",
        f"FGSM {eps} on base (tutorial)",
        f"FGSM {eps}",
        f"PGD-40 {eps}",
        *(f"AutoAttack {e}" for e in strong),
    )
    rows = [
        (
            name,
            f"{m['clean_accuracy']:.4f}",
            f"{m['perturbed_accuracy']:.4f}",
            f"{m['whitebox_accuracy']:.4f}",
            f"{m['pgd40_accuracy'][eps]:.4f}",
            *(f"{m['autoattack_accuracy'][e]:.4f}" for e in strong),
        )
        for name, m in results["models"].items()
    ]
    return markdown_table(header, rows)
