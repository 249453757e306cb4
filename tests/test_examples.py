"""The scripts in examples/ run end to end on small subsets of real MNIST."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_robust_mnist_example_trains_and_reports_strong_attacks(mnist_manual_dir, tfds_data_dir):
    example = load("robust_mnist")
    results = example.main(
        [
            "--epochs", "2", "--train-subset", "2000", "--test-subset", "100",
            "--manual-dir", str(mnist_manual_dir), "--data-dir", str(tfds_data_dir),
        ]
    )  # fmt: skip
    assert set(results) == {"clean", "pgd40", "autoattack"}
    assert results["clean"] > 0.5  # it learned
    # AutoAttack (APGD-CE + APGD-T) is at least as strong as PGD-40, up to a few examples.
    assert results["autoattack"] <= results["pgd40"] + 0.02 <= results["clean"] + 0.02
