"""The Square core on every Keras backend: the same draws give the same points.

`square_linf` is `keras.ops` only and draws nothing itself (`square_core.draw` draws on the
host), so TensorFlow, JAX and PyTorch must find the same adversarial points on the same
model. Each backend runs in its own subprocess (this file is also the worker script:
`python tests/test_square_backends.py BACKEND OUT.npz`); the in-process tests run on the
backend of the session (`KERAS_BACKEND`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import cross_backend

REPO_ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ("tensorflow", "jax", "torch")
EPS = 0.1
QUERIES = 100
TOL = 1e-5
# Two tiny models of 5 classes on flat points laid out as these images.
MODELS = ("dense", "conv")
IMAGE_SHAPES = {"dense": (2, 2, 3), "conv": (6, 6, 2)}

pytestmark = pytest.mark.backends


def _model(kind: str):
    """A tiny classifier of 5 classes on flat points, with fixed NumPy weights."""
    import keras

    h, w, c = IMAGE_SHAPES[kind]
    inputs = keras.Input((h * w * c,))
    if kind == "dense":
        hidden = keras.layers.Dense(16, activation="relu")(inputs)
    else:
        images = keras.layers.Reshape((h, w, c))(inputs)
        hidden = keras.layers.Conv2D(4, 3, activation="relu")(images)
        hidden = keras.layers.Flatten()(hidden)
    model = keras.Model(inputs, keras.layers.Dense(5)(hidden))
    rng = np.random.default_rng(10)
    model.set_weights([rng.normal(size=wt.shape).astype("float32") for wt in model.get_weights()])
    return model


def _examples(kind: str, n: int = 48) -> np.ndarray:
    """Pixels in [0, 1], many exactly at the bounds, as in images."""
    d = int(np.prod(IMAGE_SHAPES[kind]))
    rng = np.random.default_rng(11)
    return np.clip(rng.uniform(-0.5, 1.5, size=(n, d)), 0, 1).astype("float32")


def _attack(model, kind: str, compact: bool):
    """The compiled `(v0, ids, eps, stripes, draws) -> (v_adv, broken)` of this backend."""
    from keras_advreg.attacks.square_core import square_linf
    from keras_advreg.backend import ops as backend_ops

    def run(v0, ids, eps, stripes, draws):
        return square_linf(
            model,
            v0,
            ids,
            eps,
            0.0,
            1.0,
            stripes=stripes,
            draws=draws,
            image_shape=IMAGE_SHAPES[kind],
            queries=QUERIES,
            compact=compact,
        )

    return backend_ops.compile(run, model.variables)


def run_backend(out: str) -> None:
    """The worker: Square on both models (compact and not) on this process' backend."""
    import keras

    from keras_advreg.attacks.square_core import draw
    from keras_advreg.backend import ops as backend_ops

    results = {}
    for kind in MODELS:
        model = _model(kind)
        v0 = _examples(kind)
        ids = np.argmax(backend_ops.to_numpy(model(v0)), axis=1).astype("int32")
        ids[0] = (ids[0] + 1) % 5  # misclassified at v0
        noise = draw(np.random.default_rng(12), len(v0), IMAGE_SHAPES[kind], QUERIES)
        eps = np.float32(EPS)
        for compact in (False, True):
            attack = _attack(model, kind, compact)
            v_adv, broken = backend_ops.to_numpy(
                attack(v0, ids, eps, noise["stripes"], noise["draws"])
            )
            predicted = np.argmax(backend_ops.to_numpy(model(v_adv)), axis=1)
            results[f"{kind}_{compact}_v"] = v_adv
            results[f"{kind}_{compact}_broken"] = broken
            results[f"{kind}_{compact}_predicted"] = predicted
        results[f"{kind}_v0"] = v0
        results[f"{kind}_ids"] = ids
    results["backend"] = np.array(keras.backend.backend())
    np.savez(out, **results)


def _per_backend(folder: Path) -> dict:
    """The worker's results per installed backend (one test, so that xdist runs it once)."""
    # `cross_backend` runs this from the TensorFlow session, with jax and torch installed
    # (skipped where they are not, except in CI, where the missing one fails).
    backends = list(BACKENDS)
    procs = {}
    for backend in backends:
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        out = folder / f"{backend}.npz"
        cmd = [sys.executable, __file__, str(out)]
        procs[backend] = (
            subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600),
            out,
        )
    results = {}
    for backend, (proc, out) in procs.items():
        assert proc.returncode == 0, f"{backend} worker failed:\n{proc.stderr[-4000:]}"
        with np.load(out) as data:
            results[backend] = dict(data)
            assert str(results[backend]["backend"]) == backend
    return results


@cross_backend
def test_square_finds_the_same_points_on_every_backend(tmp_path):
    per_backend = _per_backend(tmp_path)
    for kind in MODELS:
        _check_same_points(per_backend, kind)


def _check_same_points(per_backend: dict, kind: str) -> None:
    reference = next(iter(per_backend.values()))  # TensorFlow's, where installed
    v0, ids = reference[f"{kind}_v0"], reference[f"{kind}_ids"]
    v_ref = reference[f"{kind}_False_v"]
    broken_ref = reference[f"{kind}_False_broken"]
    # Not trivial: some examples broken, some robust.
    assert broken_ref[0] and np.array_equal(v_ref[0], v0[0])
    assert 0 < broken_ref.sum() < len(ids) - 1, broken_ref.sum()
    for backend, result in per_backend.items():
        np.testing.assert_array_equal(result[f"{kind}_ids"], ids, err_msg=backend)
        for compact in (False, True):
            v, broken = result[f"{kind}_{compact}_v"], result[f"{kind}_{compact}_broken"]
            where = f"{backend}, compact={compact}"
            np.testing.assert_array_equal(broken, broken_ref, err_msg=where)
            np.testing.assert_allclose(v, v_ref, rtol=0, atol=TOL, err_msg=where)
            # In the ball and the box; broken examples misclassified, robust ones not.
            assert np.abs(v - v0).max() <= EPS * (1 + TOL) + 1e-6, where
            assert v.min() >= 0 and v.max() <= 1, where
            predicted = result[f"{kind}_{compact}_predicted"]
            assert np.all(predicted[broken] != ids[broken]), where
            assert np.all(predicted[~broken] == ids[~broken]), where


def test_square_on_this_backend_same_draws_same_result_other_draws_other_result():
    from keras_advreg.attacks.square_core import draw
    from keras_advreg.backend import ops as backend_ops

    model, kind = _model("dense"), "dense"
    v0 = _examples(kind)
    ids = np.argmax(backend_ops.to_numpy(model(v0)), axis=1).astype("int32")
    attack = _attack(model, kind, compact=True)

    def run(seed):
        noise = draw(np.random.default_rng(seed), len(v0), IMAGE_SHAPES[kind], QUERIES)
        stripes, draws = noise["stripes"], noise["draws"]
        return backend_ops.to_numpy(attack(v0, ids, np.float32(EPS), stripes, draws))

    first, again, other = run(7), run(7), run(8)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])
    assert 0 < first[1].sum() < len(ids)
    assert np.abs(first[0] - v0).max() <= EPS * (1 + TOL) + 1e-6


def test_draw_shapes_and_errors():
    from keras_advreg.attacks.square_core import draw

    noise = draw(np.random.default_rng(0), 3, (4, 5), 7)
    assert noise["stripes"].shape == (3, 5, 1) and noise["stripes"].dtype == np.float32
    assert noise["draws"].shape == (3, 7, 3) and noise["draws"].dtype == np.float32
    assert draw(np.random.default_rng(0), 2, (4, 5, 3), 0)["draws"].shape == (2, 0, 5)
    with pytest.raises(ValueError, match="`queries` must be an integer >= 0"):
        draw(np.random.default_rng(0), 3, (4, 5), -1)
    with pytest.raises(ValueError, match="`rng` must be"):
        draw(0, 3, (4, 5), 7)


if __name__ == "__main__":
    run_backend(sys.argv[1])
