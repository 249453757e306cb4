"""Training under tf.distribute.MirroredStrategy (2 logical CPUs) equals training on one device."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("distributed") / "out.npz"
    script = Path(__file__).with_name("distributed_reference.py")
    result = subprocess.run(
        [sys.executable, str(script), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return dict(np.load(out))


@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_mirrored_strategy_matches_one_device(runs, attack):
    assert int(runs["replicas"]) == 2
    for i in range(4):
        one, mirrored = runs[f"{attack}_one_w{i}"], runs[f"{attack}_mirrored_w{i}"]
        np.testing.assert_allclose(mirrored, one, atol=1e-5)
    assert not np.allclose(runs[f"{attack}_one_w0"], runs["initial_w0"])  # training happened
    for key in ("loss", "scaled_adversarial_loss", "accuracy"):
        np.testing.assert_allclose(
            runs[f"{attack}_mirrored_{key}"], runs[f"{attack}_one_{key}"], rtol=1e-5
        )
