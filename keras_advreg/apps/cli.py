"""The `keras-advreg` command: the MNIST tutorial end to end, and robustness of a saved model.

```
keras-advreg demo [--epochs 5] [--manual-dir DIR] [--output-dir outputs/demo] ...
keras-advreg evaluate MODEL.keras --dataset mnist|PATH.npz [--epsilons 0.05,0.1,0.2,0.3]
                      [--attack fgsm|pgd] [--norm infinity|l2|l1] [--output-dir DIR] ...
```

User errors (a missing or corrupt model file, data that does not fit the
model, bad option values, a Keras backend other than TensorFlow) print
`keras-advreg: error: ...` to stderr and exit with status 2, without a traceback.

Parsing, `--help` and usage errors do not import TensorFlow (the console script imports
the package lazily, see `keras_advreg/__init__.py`). A command imports it once its
arguments are parsed, with `TF_CPP_MIN_LOG_LEVEL=2` unless that is set already, and
without TensorFlow's C++ start-up log (`--verbose`, or `TF_CPP_MIN_LOG_LEVEL=0`, shows
both). Progress goes to stderr (plain lines when it is not a terminal), results to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from keras_advreg.apps.arguments import parse_epsilons  # noqa: F401  (the CLI's types, as before)
from keras_advreg.apps.models import check_input_shape, load_model
from keras_advreg.apps.output import plots_wanted, write_evaluation
from keras_advreg.apps.parser import (  # noqa: F401  (importable from here, as before)
    EVALUATE_CURVE_FILE,
    EVALUATE_EPSILONS,
    EVALUATE_RESULTS_FILE,
    build_parser,
)
from keras_advreg.apps.process import (  # noqa: F401
    EXIT_USAGE,
    PROG,
    UserError,
    check_keras_backend,
    import_tensorflow,
    keras_backend,
)


# --------------------------------------------------------------------------- entry point
def main(argv: Sequence[str] | None = None) -> int:
    """Runs `keras-advreg` with `argv` (default: `sys.argv[1:]`); returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, --version and usage errors
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    if not args.verbose:  # before TensorFlow is imported: it reads it once
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        check_keras_backend(args.command)
        quiet = not args.verbose and os.environ.get("TF_CPP_MIN_LOG_LEVEL") != "0"
        import_tensorflow(quiet=quiet)
        return HANDLERS[args.command](args)
    except UserError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return EXIT_USAGE


# --------------------------------------------------------------------------- the commands
def _run_demo(args: argparse.Namespace) -> int:
    from keras_advreg.apps import demo

    config = demo.DemoConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        train_subset=args.train_subset,
        test_subset=args.test_subset,
        data_dir=args.data_dir,
        manual_dir=args.manual_dir,
        output_dir=args.output_dir,
        epsilons=args.epsilons,
        strong_subset=args.strong_subset,
        seed=args.seed,
        save_models=args.save_models,
        plots=args.plots,
        verbose=0 if args.quiet else 1,
    )
    # Progress and chatter (Keras' progress bars print to sys.stdout) go to stderr, plain
    # when it is not a terminal; the results table goes to stdout.
    with contextlib.redirect_stdout(sys.stderr):
        try:  # user errors show up here, before any training
            if config.plots:
                demo.check_plotting()
            data = demo.load_demo_data(config)
        except (ValueError, ImportError, OSError) as e:
            raise UserError(str(e)) from None
        results = demo.run_demo(config, data=data, print_table=False)
    print(demo.format_table(results))
    if results["files"]:
        print(f"\nWrote {', '.join(results['files'].values())}")
    return 0


def _run_robust_mnist(args: argparse.Namespace) -> int:
    from keras_advreg.apps import robust_mnist

    with contextlib.redirect_stdout(sys.stderr):  # progress to stderr, as in _run_demo
        try:
            results = robust_mnist.run(
                args.epsilon,
                args.output_dir,
                data_dir=args.data_dir,
                manual_dir=args.manual_dir,
                train_subset=args.train_subset,
                test_subset=args.test_subset,
                epochs=args.epochs,
                seed=args.seed,
                verbose=0 if args.quiet else 1,
            )
        except (ValueError, OSError) as e:
            raise UserError(str(e)) from None
    print(robust_mnist.format_table(results))
    return 0


def _run_evaluate(args: argparse.Namespace) -> int:
    from keras_advreg.apps.reporting import attack_settings
    from keras_advreg.attacks.base import resolve, with_options
    from keras_advreg.attacks.bounds import with_model_bounds

    is_mnist = args.dataset == "mnist"
    try:  # the attack settings first: before loading the model and (maybe building) the data
        options = {
            "norm": args.norm,
            "clip_value_min": args.clip_min,
            "clip_value_max": args.clip_max,
            "pgd_steps": args.pgd_steps,
            "pgd_step_size": args.pgd_step_size,
        }
        attack = with_options(resolve(args.attack, args.epsilons), options)
        if is_mnist:  # its default box [0, 1] where not given (unless the model declares one)
            with_options(
                attack,
                {
                    "clip_value_min": 0.0 if args.clip_min is None else args.clip_min,
                    "clip_value_max": 1.0 if args.clip_max is None else args.clip_max,
                },
            )
    except ValueError as e:
        raise UserError(str(e)) from None
    if args.certify and attack.norm != "l2":
        raise UserError(
            f"--certify certifies l2 radii: use --norm l2. Received: --norm {args.norm}"
        )
    plots = plots_wanted(args)
    if is_mnist:
        _check_tfds()
    model = load_model(args.model)
    try:  # no --clip-min/--clip-max: the model's InputRange, else [0, 1] for mnist
        attack, declared = with_model_bounds(model, attack)
    except ValueError as e:
        raise UserError(str(e)) from None
    if is_mnist and not declared:
        attack = attack.replace(
            clip_value_min=0.0 if args.clip_min is None else args.clip_min,
            clip_value_max=1.0 if args.clip_max is None else args.clip_max,
        )
    x, y, dataset = load_dataset(args)
    check_input_shape(model, x)
    certified = _certify(model, x, y, attack, args) if args.certify else None
    declared_note = " (the model's InputRange)" if declared else ""
    print(f"Attack: {attack_settings(attack)}{declared_note}", flush=True)
    title = None if args.quiet else f"{attack.describe()} ({attack.norm}) on {len(y)} examples"
    try:
        report = _evaluate(model, x, y, attack, args.batch_size, title, state_path=args.state)
    except ValueError as e:
        raise UserError(str(e)) from None
    print(report)
    if certified is not None:
        from keras_advreg.apps.reporting import certified_table

        print(certified_table(report, certified))
    if args.output_dir:
        write_evaluation(args, report, dataset, plots=plots, certified=certified)
    return 0


def _certify(model: Any, x: Any, y: Any, attack: Any, args: argparse.Namespace) -> Any:
    """`keras_advreg.certify` at the attack's radii, before the attack (a model without a
    proved bound is refused before any attack work)."""
    from keras_advreg.certification import certify

    try:
        return certify(model, (x, y), list(attack.epsilons), batch_size=args.batch_size)
    except ValueError as e:
        raise UserError(str(e)) from None


_TFDS_MISSING = (
    '`--dataset mnist` needs tensorflow-datasets: pip install "keras-advreg[datasets]" '
    "(or pass --dataset PATH.npz with arrays x and y)"
)


def _check_tfds() -> None:
    """Raises `UserError` (before the model is loaded) when tensorflow-datasets is missing."""
    import importlib.util

    try:
        found = importlib.util.find_spec("tensorflow_datasets") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise UserError(_TFDS_MISSING)


def _evaluate(
    model: Any,
    x: Any,
    y: Any,
    attack: Any,
    batch_size: int,
    title: str | None,
    state_path: str | None = None,
):
    """`evaluate_robustness` on arrays, with a progress bar on stderr titled `title`.

    With `title=None` there is no bar. The bar counts batches, advances after each stage
    of the attack within a batch, and shows the time since the start and an estimate of
    the rest. `state_path`: `evaluate_robustness`'s (a resumable run).
    """
    from keras_advreg.apps.reporting import progress_bar
    from keras_advreg.evaluation import evaluate_robustness

    progress = progress_bar(len(y), batch_size, title)
    # The report prints its findings; other warnings (e.g. about the model's output) are
    # printed once each as one line, without Python's source line.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = evaluate_robustness(
            model,
            (x, y),
            attack=attack,
            batch_size=batch_size,
            state_path=state_path,
            progress=progress,
        )
    shown = set(report.warnings)
    for warning in caught:
        message = str(warning.message)
        if message not in shown and issubclass(warning.category, UserWarning):
            shown.add(message)
            print(f"{PROG}: warning: {message}", file=sys.stderr)
    return report


def load_dataset(args: argparse.Namespace):
    """Returns `(x, y, name)`: the MNIST test split, or arrays `x` and `y` of a `.npz` file."""
    from keras_advreg.data.datasets import load_test_set

    try:
        x, y = load_test_set(
            args.dataset,
            take=args.max_examples,
            data_dir=args.data_dir,
            manual_dir=args.manual_dir,
        )
    except ImportError as e:
        if "tensorflow-datasets" in str(e) or "tensorflow_datasets" in str(e):
            raise UserError(_TFDS_MISSING) from None
        raise UserError(str(e)) from None
    except (ValueError, OSError) as e:
        raise UserError(str(e)) from None
    return x, y, args.dataset


#: The function that runs each subcommand.
HANDLERS = {"demo": _run_demo, "evaluate": _run_evaluate, "robust-mnist": _run_robust_mnist}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
