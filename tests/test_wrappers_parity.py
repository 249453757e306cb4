"""One SGD step and `perturb_on_batch` equal NSL 1.4.0's own class (run on tf_keras), to 1e-5."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_advreg

CASES = [
    {
        "id": "linf",
        "config": {"multiplier": 0.2, "adv_step_size": 0.05, "adv_grad_norm": "infinity"},
    },
    {"id": "l2", "config": {"multiplier": 0.5, "adv_step_size": 0.3, "adv_grad_norm": "l2"}},
    {"id": "l1", "config": {"multiplier": 0.3, "adv_step_size": 0.3, "adv_grad_norm": "l1"}},
    {
        "id": "pgd-linf",
        "config": {
            "multiplier": 0.2,
            "adv_step_size": 0.02,
            "adv_grad_norm": "infinity",
            "pgd_iterations": 4,
            "pgd_epsilon": 0.05,
        },
    },
    {
        "id": "pgd-l2",
        "config": {
            "multiplier": 0.4,
            "adv_step_size": 0.1,
            "adv_grad_norm": "l2",
            "pgd_iterations": 3,
            "pgd_epsilon": 0.15,
        },
    },
    {
        "id": "clipped",
        "config": {
            "multiplier": 0.2,
            "adv_step_size": 0.3,
            "adv_grad_norm": "infinity",
            "clip_value_min": 0.0,
            "clip_value_max": 1.0,
        },
    },
    {
        "id": "weighted",
        "weighted": True,
        "config": {"multiplier": 0.3, "adv_step_size": 0.1, "adv_grad_norm": "l2"},
    },
]
for case in CASES:
    case.setdefault("lr", 0.5)


def _build_keras3():
    return keras.Sequential(
        [
            keras.Input((6,), name="feature"),
            keras.layers.Dense(5, activation="tanh"),
            keras.layers.Dense(3),
        ]
    )


@pytest.fixture(scope="module")
def batch_and_weights():
    rng = np.random.default_rng(0)
    data = {
        "x": rng.uniform(0, 1, (8, 6)).astype("float32"),
        "y": rng.integers(0, 3, 8).astype("int64"),
        "w": rng.uniform(0.2, 2.0, 8).astype("float32"),
    }
    weights = _build_keras3().get_weights()
    weights = [rng.normal(0, 0.8, w.shape).astype("float32") for w in weights]
    return data, weights


@pytest.fixture(scope="module")
def nsl_reference(batch_and_weights, tmp_path_factory):
    # NSL's class needs tf_keras matching TensorFlow's minor version (`.ci/run` installs it;
    # it is not in the `dev` extra): skipped without it, except under CI.
    if importlib.util.find_spec("tf_keras") is None and not os.environ.get("CI"):
        pytest.skip('NSL parity needs tf-keras: pip install "tf-keras~=<TF major.minor>.0"')
    data, weights = batch_and_weights
    tmp = tmp_path_factory.mktemp("nsl_reference")
    np.savez(tmp / "in.npz", **data, **{f"w{i}": w for i, w in enumerate(weights)})
    cases = [{k: v for k, v in c.items() if k != "id"} for c in CASES]
    (tmp / "cases.json").write_text(json.dumps(cases))
    script = Path(__file__).with_name("nsl_reference.py")
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1"}
    result = subprocess.run(
        [
            sys.executable,
            str(script),
            str(tmp / "in.npz"),
            str(tmp / "cases.json"),
            str(tmp / "out.npz"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return dict(np.load(tmp / "out.npz"))


@pytest.mark.parametrize("index", range(len(CASES)), ids=[c["id"] for c in CASES])
def test_matches_nsl_own_class(index, batch_and_weights, nsl_reference):
    data, weights = batch_and_weights
    case = CASES[index]
    base = _build_keras3()
    base.set_weights(weights)
    weighted = case.get("weighted", False)
    model = keras_advreg.AdversarialRegularization(
        base,
        label_keys="label",
        sample_weight_key="w" if weighted else None,
        adv_config=keras_advreg.make_adv_reg_config(**case["config"]),
    )
    model.compile(
        keras.optimizers.SGD(case["lr"]),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    batch = {"feature": data["x"], "label": data["y"]}
    if weighted:
        batch["w"] = data["w"]  # Keras' usual (batch,) shape
    adv = model.perturb_on_batch(dict(batch))["feature"]
    np.testing.assert_allclose(adv, nsl_reference[f"adv{index}"], atol=1e-5)
    assert not np.allclose(adv, data["x"])  # the perturbation is real
    model.train_on_batch(batch)
    for j, w in enumerate(base.get_weights()):
        np.testing.assert_allclose(w, nsl_reference[f"case{index}_w{j}"], atol=1e-5)
        assert not np.allclose(w, weights[j])  # the step moved every weight
