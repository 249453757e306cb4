"""What `keras-advreg evaluate` writes: the results file and the accuracy-vs-epsilon curve."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from keras_advreg.apps.parser import EVALUATE_CURVE_FILE, EVALUATE_RESULTS_FILE
from keras_advreg.apps.process import PROG, UserError


def plots_wanted(args: argparse.Namespace) -> bool:
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


def write_evaluation(
    args: argparse.Namespace,
    report: Any,
    dataset: str,
    *,
    plots: bool = True,
    certified: Any = None,
) -> None:
    os.makedirs(args.output_dir, exist_ok=True)
    results = {
        "model": os.path.abspath(args.model),
        "dataset": dataset,
        **report.to_dict(),
    }
    if certified is not None:
        results["certified"] = certified.to_dict()
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
