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
import json
import os
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

from keras_advreg.apps.arguments import (
    ATTACKS,
    DEMO_EPSILONS,
    EVAL_BATCH_SIZE,
    finite_float,
    non_negative_int,
    norm,
    parse_epsilons,
    positive_int,
)

PROG = "keras-advreg"
EXIT_USAGE = 2
EVALUATE_EPSILONS = (0.05, 0.1, 0.2, 0.3)
EVALUATE_RESULTS_FILE = "robustness.json"
EVALUATE_CURVE_FILE = "accuracy_vs_epsilon.png"


class UserError(Exception):
    """An error in what the user asked for: reported in one line, without a traceback."""


class _Parser(argparse.ArgumentParser):
    """argparse, with every error reported as `keras-advreg: error: ...` (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{PROG}: error: {message}\n")


# --------------------------------------------------------------------------- the parser
def build_parser() -> argparse.ArgumentParser:
    """The `keras-advreg` argument parser (subcommands `demo`, `evaluate`, `robust-mnist`).

    Building and using it imports no TensorFlow.
    """
    from keras_advreg.version import __version__

    parser = _Parser(
        prog=PROG,
        description="Adversarial regularization and robustness evaluation for Keras 3.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    data = argparse.ArgumentParser(add_help=False)
    data.add_argument(
        "--data-dir",
        help="tfds data folder (default: tfds' own, ~/tensorflow_datasets).",
    )
    data.add_argument(
        "--manual-dir",
        help="folder with the four original MNIST .gz files, to build MNIST offline "
        "(default: tfds downloads it).",
    )
    data.add_argument("--quiet", action="store_true", help="no progress bars.")
    data.add_argument(
        "--verbose",
        action="store_true",
        help="show TensorFlow's C++ log, start-up lines included (hidden by default: "
        "TF_CPP_MIN_LOG_LEVEL=2 unless set).",
    )

    demo = commands.add_parser(
        "demo",
        parents=[data],
        help="reproduce NSL's adversarial-regularization tutorial on MNIST",
        description="Train the tutorial's CNN plainly and with adversarial regularization "
        "(multiplier 0.2, FGSM step 0.2, l-inf) on MNIST, then measure clean, perturbed "
        "(FGSM 0.2 generated on the base model) and white-box accuracy of both.",
    )
    demo.add_argument("--epochs", type=positive_int, default=5, help="default: 5.")
    demo.add_argument("--batch-size", type=positive_int, default=32, help="default: 32.")
    demo.add_argument(
        "--train-subset",
        type=positive_int,
        help="train on the first N training examples (default: all 60000).",
    )
    demo.add_argument(
        "--test-subset",
        type=positive_int,
        help="evaluate on the first N test examples (default: all 10000).",
    )
    demo.add_argument("--output-dir", default="outputs/demo", help="default: outputs/demo.")
    demo.add_argument(
        "--epsilons",
        type=parse_epsilons,
        default=DEMO_EPSILONS,
        help="epsilons of the accuracy-vs-epsilon curve "
        f"(default: {','.join(f'{e:g}' for e in DEMO_EPSILONS)}).",
    )
    demo.add_argument(
        "--strong-subset",
        type=positive_int,
        default=1000,
        help="run PGD-40 and AutoAttack on the first N test examples (default: 1000).",
    )
    demo.add_argument("--seed", type=non_negative_int, default=0, help="default: 0.")
    demo.add_argument(
        "--save-models",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="save base.keras and adv-regularized.keras in the output folder (default: yes).",
    )
    demo.add_argument(
        "--plots",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="write the figures; needs matplotlib (default: yes).",
    )
    demo.set_defaults(handler=_run_demo)

    evaluate = commands.add_parser(
        "evaluate",
        parents=[data],
        help="measure the robustness of a saved Keras model",
        description="Load a .keras model (safe mode: no code from the file is run) and "
        "measure its accuracy under white-box FGSM or PGD attacks.",
    )
    evaluate.add_argument("model", help="the model file (.keras).")
    evaluate.add_argument(
        "--dataset",
        default="mnist",
        help="'mnist' (the tfds test split) or a .npz file with arrays x and y (default: mnist).",
    )
    evaluate.add_argument(
        "--epsilons",
        type=parse_epsilons,
        default=EVALUATE_EPSILONS,
        help=f"default: {','.join(f'{e:g}' for e in EVALUATE_EPSILONS)}.",
    )
    evaluate.add_argument(
        "--attack",
        choices=ATTACKS,
        default="autoattack",
        help="autoattack (APGD-CE, APGD-T, FAB-T, Square: the standard), autoattack-fast, apgd-ce, "
        "apgd-dlr, apgd-t, fab, fab-t, square, pgd or fgsm (the last two only bound robustness from above; "
        "default: autoattack).",
    )
    evaluate.add_argument(
        "--norm", type=norm, default="infinity", help="infinity, l2 or l1 (default: infinity)."
    )
    evaluate.add_argument("--pgd-steps", type=positive_int, help="PGD only (default: 10).")
    evaluate.add_argument(
        "--pgd-step-size", type=finite_float, help="default: 2.5 * epsilon / pgd-steps."
    )
    evaluate.add_argument(
        "--clip-min",
        type=finite_float,
        help="lower bound of perturbed inputs (default: 0 for mnist, none for .npz).",
    )
    evaluate.add_argument(
        "--clip-max",
        type=finite_float,
        help="upper bound of perturbed inputs (default: 1 for mnist, none for .npz).",
    )
    evaluate.add_argument(
        "--batch-size",
        type=positive_int,
        default=EVAL_BATCH_SIZE,
        help=f"default: {EVAL_BATCH_SIZE}.",
    )
    evaluate.add_argument(
        "--max-examples", type=positive_int, help="evaluate the first N examples only."
    )
    evaluate.add_argument(
        "--output-dir",
        default="outputs/evaluate",
        help=f"where {EVALUATE_RESULTS_FILE} and the curve go (default: outputs/evaluate).",
    )
    evaluate.add_argument(
        "--plots",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="write the accuracy-vs-epsilon curve; needs matplotlib (default: when "
        'matplotlib is installed, pip install "keras-advreg[plot]").',
    )
    evaluate.set_defaults(handler=_run_evaluate)

    robust = commands.add_parser(
        "robust-mnist",
        parents=[data],
        help="train the documented robust MNIST recipe and measure it with AutoAttack",
        description="Train the documented adversarial-training recipe for an l-inf epsilon "
        "(0.3: PGD-2 neighbours, 40 epoch-equivalents; 0.2: fast FGSM neighbours) on MNIST, "
        "then measure clean, FGSM, PGD-40 and AutoAttack accuracy on the test set. Writes "
        "model.keras (a plain Keras classifier) and results.json.",
    )
    robust.add_argument("--epsilon", type=float, choices=(0.2, 0.3), default=0.3)
    robust.add_argument("--output-dir", default="outputs/robust-mnist")
    robust.add_argument("--epochs", type=positive_int, help="default: the recipe's.")
    robust.add_argument("--train-subset", type=positive_int, help="default: all 60000.")
    robust.add_argument("--test-subset", type=positive_int, help="default: all 10000.")
    robust.add_argument("--seed", type=non_negative_int, default=0, help="default: 0.")
    robust.set_defaults(handler=_run_robust_mnist)
    return parser


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
        return args.handler(args)
    except UserError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return EXIT_USAGE


def import_tensorflow(*, quiet: bool = True) -> None:
    """Imports TensorFlow and lists its devices; with `quiet`, without its start-up log.

    TensorFlow >= 2.19 writes its start-up lines (oneDNN, CUDA, CPU features) through
    absl before its log is initialized, whatever `TF_CPP_MIN_LOG_LEVEL` says
    (tensorflow/tensorflow#100442). With `quiet`, file descriptor 2 points at a
    temporary file while TensorFlow loads and finds its devices: the lines are
    dropped, or written to stderr after all when the import fails.
    """
    if "tensorflow" in sys.modules:
        return
    context = _native_stderr_captured() if quiet else contextlib.nullcontext()
    with context:
        import tensorflow as tf

        tf.config.list_physical_devices()


@contextlib.contextmanager
def _native_stderr_captured() -> Iterator[None]:
    """Sends what is written to file descriptor 2 to a temporary file; shows it on errors."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (AttributeError, OSError, ValueError):  # no usable stderr: nothing to hide
        yield
        return
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        finally:
            with contextlib.suppress(AttributeError, OSError, ValueError):
                sys.stderr.flush()  # Python's own writes to fd 2 land in the file too
            os.dup2(saved, 2)
            os.close(saved)
            if failed:
                log.seek(0)
                sys.stderr.write(log.read().decode(errors="replace"))


def keras_backend() -> tuple[str, str]:
    """`(backend, source)`: the Keras backend, found as Keras finds it, without importing it.

    The source is what chose it (`KERAS_BACKEND=...`, the keras.json file, Keras'
    default), for the error message.
    """
    keras = sys.modules.get("keras")
    if keras is not None:  # imported already: its choice is made
        try:
            return keras.backend.backend(), "keras.backend.backend()"
        except AttributeError:  # a partly imported module
            pass
    name = os.environ.get("KERAS_BACKEND")
    if name:
        return name, f"KERAS_BACKEND={name}"
    if "KERAS_HOME" in os.environ:
        keras_dir = os.environ["KERAS_HOME"]
    else:
        home = os.path.expanduser("~")
        keras_dir = os.path.join(home if os.access(home, os.W_OK) else "/tmp", ".keras")
    config_path = os.path.expanduser(os.path.join(keras_dir, "keras.json"))
    try:
        with open(config_path) as f:
            config = json.load(f)
    except (OSError, ValueError):
        config = {}
    name = config.get("backend") if isinstance(config, dict) else None
    if isinstance(name, str) and name:
        return name, f"backend={name!r} in {config_path}"
    return "tensorflow", "Keras' default"


def check_keras_backend(command: str) -> None:
    """Raises `UserError` unless Keras runs on TensorFlow (every command needs it)."""
    backend, source = keras_backend()
    if backend != "tensorflow":
        raise UserError(
            f"`{PROG} {command}` needs the TensorFlow backend of Keras 3; set "
            f"KERAS_BACKEND=tensorflow. Received: {source}"
        )


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
    from keras_advreg.attacks.base import from_arguments

    is_mnist = args.dataset == "mnist"
    clip_min = args.clip_min if args.clip_min is not None else (0.0 if is_mnist else None)
    clip_max = args.clip_max if args.clip_max is not None else (1.0 if is_mnist else None)
    try:  # the attack settings first: before loading the model and (maybe building) the data
        attack = from_arguments(
            args.attack,
            args.epsilons,
            args.norm,
            clip_min,
            clip_max,
            args.pgd_steps,
            args.pgd_step_size,
        )
    except ValueError as e:
        raise UserError(str(e)) from None
    plots = _plots_wanted(args)
    if is_mnist:
        _check_tfds()
    model = load_model(args.model)
    x, y, dataset = load_dataset(args)
    check_input_shape(model, x)
    print(f"Attack: {attack_settings(attack)}", flush=True)
    title = None if args.quiet else f"{attack.describe()} ({attack.norm}) on {len(y)} examples"
    try:
        report = _evaluate(model, x, y, attack, args.batch_size, title)
    except ValueError as e:
        raise UserError(str(e)) from None
    print(report)
    if args.output_dir:
        _write_evaluation(args, report, dataset, plots=plots)
    return 0


def _plots_wanted(args: argparse.Namespace) -> bool:
    """Whether `evaluate` draws the curve: `--plots`, or by default when matplotlib is there."""
    if args.plots is False or not args.output_dir:
        return False
    try:
        import matplotlib  # noqa: F401  (keras_advreg.plotting imports it when drawing)
    except ImportError:
        if args.plots:  # asked for explicitly
            raise UserError(
                '`--plots` needs matplotlib: pip install "keras-advreg[plot]" (or pass --no-plots)'
            ) from None
        print(
            f"{PROG}: note: matplotlib is not installed, so the accuracy-vs-epsilon curve is "
            'skipped (pip install "keras-advreg[plot]" to draw it)',
            file=sys.stderr,
        )
        return False
    return True


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


def _evaluate(model: Any, x: Any, y: Any, attack: Any, batch_size: int, title: str | None):
    """`evaluate_robustness` on arrays, with a progress bar on stderr titled `title`.

    With `title=None` there is no bar. The batches are those `evaluate_robustness`
    makes from the arrays with the same `batch_size`.
    """
    from keras_advreg.apps.tutorial import batches_with_progress
    from keras_advreg.evaluation import evaluate_robustness

    data = batches_with_progress(x, y, batch_size, title)
    return evaluate_robustness(model, data, attack=attack, batch_size=batch_size)


# --------------------------------------------------------------------------- evaluate's pieces
def load_model(path: str):
    """`keras.models.load_model(path, safe_mode=True)`, with one-line errors."""
    if not os.path.exists(path):
        raise UserError(f"model file not found: {path}")
    if os.path.isdir(path):
        raise UserError(
            f"{path} is a folder; expected a .keras model file (a SavedModel folder cannot "
            "be loaded by keras.models.load_model in Keras 3)"
        )
    _check_keras_archive(path)
    import keras

    # Registers keras_advreg's serializable classes (AdversarialRegularization, its
    # schedules, the attacks) for loading: the command imports the package lazily.
    import keras_advreg.attacks  # noqa: F401
    import keras_advreg.training  # noqa: F401

    try:
        return keras.models.load_model(path, safe_mode=True)
    except (ValueError, OSError, zipfile.BadZipFile, KeyError, TypeError) as e:
        kind = "corrupt or not a Keras model file" if _is_bad_zip(e, path) else "could not load"
        raise UserError(f"{kind}: {path}: {e}") from None


def _check_keras_archive(path: str) -> None:
    """Raises `UserError` when a `.keras` file is not a zip archive (what Keras 3 saves)."""
    if not str(path).lower().endswith(".keras") or zipfile.is_zipfile(path):
        return
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        damaged = f.read(4) == b"PK\x03\x04"  # a zip's first bytes, without its end
    if damaged:
        raise UserError(
            f"`model` is a damaged Keras model file (a truncated or corrupt zip archive): "
            f"{path}. Received: a {size}-byte file without a zip archive's central directory"
        )
    raise UserError(
        f"`model` is not a Keras model file (.keras is a zip archive): {path}. "
        f"Received: a {size}-byte file that is not a zip archive"
    )


def _is_bad_zip(error: Exception, path: str) -> bool:
    if isinstance(error, zipfile.BadZipFile):
        return True
    return path.endswith(".keras") and not zipfile.is_zipfile(path)


def load_dataset(args: argparse.Namespace):
    """Returns `(x, y, name)`: the MNIST test split, or arrays `x` and `y` of a `.npz` file."""
    import numpy as np

    dataset = args.dataset
    if dataset == "mnist":
        from keras_advreg.apps.mnist import load_mnist_test

        try:
            x, y = load_mnist_test(
                take=args.max_examples, data_dir=args.data_dir, manual_dir=args.manual_dir
            )
        except ImportError as e:
            if "tensorflow-datasets" in str(e) or "tensorflow_datasets" in str(e):
                raise UserError(_TFDS_MISSING) from None
            raise UserError(str(e)) from None
        except (ValueError, OSError) as e:
            raise UserError(str(e)) from None
        return x, y, "mnist"
    if not dataset.endswith(".npz"):
        raise UserError(
            "`--dataset` must be 'mnist' or the path of a .npz file with arrays x and y. "
            f"Received: --dataset {dataset}"
        )
    if not os.path.isfile(dataset):
        raise UserError(f"dataset file not found: {dataset}")
    try:
        with np.load(dataset, allow_pickle=False) as npz:
            missing = [k for k in ("x", "y") if k not in npz.files]
            if missing:
                raise UserError(
                    f"{dataset} must hold arrays 'x' and 'y'; missing {missing}. "
                    f"Found: {sorted(npz.files)}"
                )
            x, y = npz["x"], npz["y"]
    except (ValueError, OSError, zipfile.BadZipFile) as e:
        raise UserError(f"could not read {dataset}: {e}") from None
    if len(x) != len(y):
        raise UserError(
            f"{dataset}: x and y must have as many examples; x has {len(x)}, y has {len(y)}"
        )
    if len(y) == 0:
        raise UserError(f"{dataset} holds no examples")
    if np.issubdtype(x.dtype, np.unsignedinteger):  # images stored as bytes, as tfds does
        x = x.astype("float32") / float(np.iinfo(x.dtype).max)
    elif np.issubdtype(x.dtype, np.floating):
        x = x.astype("float32")
    else:
        raise UserError(
            f"{dataset}: x must hold floating-point numbers (or unsigned-integer images, "
            f"scaled to [0, 1]). Received x of dtype {x.dtype}"
        )
    if args.max_examples is not None:
        x, y = x[: args.max_examples], y[: args.max_examples]
    return x, y, dataset


def check_input_shape(model: Any, x: Any) -> None:
    """Raises `UserError` when the examples do not fit the model's input."""
    expected = _input_shape(model)
    received = tuple(x.shape[1:])
    if expected is not None:
        fits = len(expected) == len(received) and all(
            e is None or e == r for e, r in zip(expected, received, strict=True)
        )
        if fits:
            return
    else:  # a subclassed model: only a call can tell
        try:
            model(x[:1], training=False)
            return
        except Exception:  # noqa: BLE001 - any failure here means the data does not fit
            pass
    shown = "unknown" if expected is None else str((None, *expected))
    raise UserError(
        f"the model's input shape {shown} does not match the data: examples of shape "
        f"{received} (data shape {tuple(x.shape)})"
    )


def _input_shape(model: Any) -> tuple | None:
    target = getattr(model, "base_model", model)
    try:
        inputs = target.inputs
    except (AttributeError, ValueError):
        return None
    if not inputs or len(inputs) != 1:
        return None
    return tuple(inputs[0].shape[1:])


def _write_evaluation(
    args: argparse.Namespace, report: Any, dataset: str, *, plots: bool = True
) -> None:
    os.makedirs(args.output_dir, exist_ok=True)
    results = {
        "model": os.path.abspath(args.model),
        "dataset": dataset,
        **report.to_dict(),
    }
    path = os.path.join(args.output_dir, EVALUATE_RESULTS_FILE)
    written = [path]
    if plots:
        from keras_advreg import plotting

        curve = os.path.join(args.output_dir, EVALUATE_CURVE_FILE)
        plotting.plot_accuracy_vs_epsilon(
            {os.path.basename(args.model): report},
            curve,
            title=f"{report.description} ({report.norm}) on {dataset}",
        )
        written.append(curve)
    with open(path, "w") as f:
        json.dump(results, f, indent=2, default=str)
        f.write("\n")
    print(f"Wrote {', '.join(written)}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
