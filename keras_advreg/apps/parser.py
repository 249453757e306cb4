"""The `keras-advreg` argument parser: the subcommands and their options.

No TensorFlow here: parsing and `--help` stay fast. A new option of a subcommand is one
`add_argument` call in its section of `build_parser`.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

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
from keras_advreg.apps.process import EXIT_USAGE, PROG

EVALUATE_EPSILONS = (0.05, 0.1, 0.2, 0.3)
EVALUATE_RESULTS_FILE = "robustness.json"
EVALUATE_CURVE_FILE = "accuracy_vs_epsilon.png"


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

    evaluate = commands.add_parser(
        "evaluate",
        parents=[data],
        help="measure the robustness of a saved Keras model",
        description="Load a .keras model (safe mode: no code from the file is run) and "
        "measure its accuracy under attack: AutoAttack by default (APGD-CE, APGD-T and the "
        "gradient-free Square attack), or a single attack chosen with --attack.",
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
        help="an attack of keras_advreg.attacks.names(): autoattack (the standard AutoAttack: "
        "APGD-CE, APGD-T, FAB-T, Square), autoattack-fast, autoattack-rand (for randomized "
        "models: APGD-CE and APGD-DLR, gradients averaged over 20 draws), apgd-ce, apgd-t, fab-t, "
        "square, ...; pgd and fgsm only bound robustness from above (default: autoattack).",
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
        help="lower bound of perturbed inputs (default: the model's InputRange, else 0 for "
        "mnist, none for .npz).",
    )
    evaluate.add_argument(
        "--clip-max",
        type=finite_float,
        help="upper bound of perturbed inputs (default: the model's InputRange, else 1 for "
        "mnist, none for .npz).",
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
    evaluate.add_argument(
        "--state",
        metavar="PATH",
        help="keep the finished batches' counts in PATH (a JSON file written after every "
        "batch): a run stopped part-way and started again with the same --state resumes "
        "where it stopped and reports what an uninterrupted run reports; a file written for "
        "another model, attack or data is refused and left as it is.",
    )
    evaluate.add_argument(
        "--certify",
        action="store_true",
        help="also certify (l2 only): a certified-accuracy column beside the attacked one, for "
        "models built from keras_advreg.layers (Lipschitz-margin certificate).",
    )

    robust = commands.add_parser(
        "robust-mnist",
        parents=[data],
        help="train the documented robust MNIST recipe and measure it with AutoAttack",
        description="Train the documented adversarial-training recipe for an l-inf epsilon "
        "(0.3: TRADES with PGD-3 neighbours, 100 epoch-equivalents; 0.2: fast FGSM neighbours) "
        "on MNIST, then measure clean, FGSM, PGD-40 and the standard AutoAttack's accuracy on "
        "the test set (with Square on the first 1000). Writes "
        "model.keras (a plain Keras classifier) and results.json.",
    )
    robust.add_argument("--epsilon", type=float, choices=(0.2, 0.3), default=0.3)
    robust.add_argument("--output-dir", default="outputs/robust-mnist")
    robust.add_argument("--epochs", type=positive_int, help="default: the recipe's.")
    robust.add_argument("--train-subset", type=positive_int, help="default: all 60000.")
    robust.add_argument("--test-subset", type=positive_int, help="default: all 10000.")
    robust.add_argument("--seed", type=non_negative_int, default=0, help="default: 0.")
    return parser
