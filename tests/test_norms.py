"""`keras_advreg.attacks.norms` in `keras.ops` against NSL's TensorFlow functions.

`unit_direction` and `project` must give NSL's `maximize_within_unit_norm` and
`project_to_ball` values (to 1e-6) on nests of batched tensors, on the Keras backend this
runs on (`KERAS_BACKEND=jax` / `torch` run the same comparisons; NSL's reference is always
computed with TensorFlow). A subprocess test also computes them on the other installed
backends from a TensorFlow run. `random_unit_ball` is checked for its distributions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import cross_backend

from keras_advreg.ball import project, random_unit_ball, unit_direction

TOL = 1e-6
NSL_NORMS = ("infinity", "l2", "l1")

pytestmark = pytest.mark.backends


def _nsl():
    from keras_advreg.backend.nsl import nsl_configs, nsl_utils

    return nsl_utils, nsl_configs


def _tf_nest(nest):
    import tensorflow as tf

    return tf.nest.map_structure(tf.constant, nest)


def _numpy(nest):
    return keras.tree.map_structure(lambda t: np.asarray(keras.ops.convert_to_numpy(t)), nest)


def _nsl_unit(grad, norm):
    utils, configs = _nsl()
    out = utils.maximize_within_unit_norm(_tf_nest(grad), configs.NormType(norm))
    return keras.tree.map_structure(lambda t: t.numpy(), out)


def _nsl_project(delta, radius, norm):
    utils, configs = _nsl()
    out = utils.project_to_ball(_tf_nest(delta), radius, configs.NormType(norm))
    return keras.tree.map_structure(lambda t: t.numpy(), out)


def _ours(nest):
    return keras.tree.map_structure(keras.ops.convert_to_tensor, nest)


def _assert_close(actual, expected, tol=TOL):
    keras.tree.assert_same_structure(actual, expected)
    for a, e in zip(keras.tree.flatten(actual), keras.tree.flatten(expected)):
        assert a.shape == e.shape and a.dtype == e.dtype, (a.shape, e.shape, a.dtype, e.dtype)
        np.testing.assert_allclose(a, e, rtol=tol, atol=tol)


def _cases():
    """Nests of batched float32 tensors: single tensors of several ranks, dicts, lists,
    zero rows, ties of largest magnitudes (for l1) and tiny gradients."""
    rng = np.random.default_rng(0)
    f = lambda *shape: rng.normal(size=shape).astype("float32")  # noqa: E731
    ties = np.array([[1, -1, 0.5, 1], [0, 0, 0, 0], [2, 0, -2, 1], [-3, 1, 1, 3]], "float32")
    zero_rows = f(5, 6)
    zero_rows[[1, 3]] = 0
    tiny = f(4, 3) * 1e-9
    tied_dict = {
        "a": np.array([[1, 2], [0, 0], [0.5, -3]], "float32"),
        "b": np.array([[[-2.0]], [[0.0]], [[3.0]]], "float32"),
    }
    return {
        "matrix": f(6, 10),
        "rank1": f(7),
        "image": f(3, 4, 5, 2),
        "dict": {"x": f(4, 3), "y": f(4, 2, 2), "z": f(4)},
        "nested": [f(2, 5), {"p": f(2, 1), "q": (f(2, 3, 3),)}],
        "ties": ties,
        "tied_dict": tied_dict,
        "zero_rows": zero_rows,
        "all_zero_dict": {"u": np.zeros((3, 4), "float32"), "v": np.zeros((3, 2), "float32")},
        "tiny": tiny,
        "big": f(3, 8) * 1e6,
    }


CASES = _cases()


@pytest.mark.parametrize("norm", NSL_NORMS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_unit_direction_equals_nsl(case, norm):
    grad = CASES[case]
    _assert_close(_numpy(unit_direction(_ours(grad), norm)), _nsl_unit(grad, norm))


@pytest.mark.parametrize("norm", ("infinity", "l2"))
@pytest.mark.parametrize("radius", (0.0, 0.3, 2.0, 1e-8))
@pytest.mark.parametrize("case", sorted(CASES))
def test_project_equals_nsl(case, norm, radius):
    delta = CASES[case]
    _assert_close(_numpy(project(_ours(delta), radius, norm)), _nsl_project(delta, radius, norm))


@pytest.mark.parametrize("norm", ("infinity", "l2"))
def test_project_takes_a_tensor_radius(norm):
    delta = CASES["dict"]
    radius = keras.ops.convert_to_tensor(0.4, "float32")
    expected = _nsl_project(delta, np.float32(0.4), norm)
    _assert_close(_numpy(project(_ours(delta), radius, norm)), expected)


def test_unit_direction_properties():
    grad = CASES["dict"]
    for norm, order in (("infinity", np.inf), ("l2", 2), ("l1", 1)):
        out = _numpy(unit_direction(_ours(grad), norm))
        flat = np.concatenate([t.reshape(len(t), -1) for t in keras.tree.flatten(out)], axis=1)
        g = np.concatenate([t.reshape(len(t), -1) for t in keras.tree.flatten(grad)], axis=1)
        np.testing.assert_allclose(np.linalg.norm(flat, order, axis=1), 1.0, rtol=1e-5)
        # the maximum of <grad, d> over the unit ball is the dual norm of grad
        dual = {np.inf: 1, 2: 2, 1: np.inf}[order]
        np.testing.assert_allclose(
            np.sum(flat * g, axis=1), np.linalg.norm(g, dual, axis=1), rtol=1e-5
        )
    # l1 ties share the unit mass evenly; zero rows stay zero
    out = _numpy(unit_direction(_ours(CASES["ties"]), "l1"))
    np.testing.assert_allclose(out[0], [1 / 3, -1 / 3, 0, 1 / 3], atol=TOL)
    np.testing.assert_array_equal(out[1], 0.0)


def test_unit_direction_keeps_empty_nests():
    assert unit_direction([], "l2") == []
    assert unit_direction({}, "l1") == {}


def test_norm_errors():
    with pytest.raises(ValueError, match="`norm` must be one of 'infinity', 'l2', 'l1'"):
        unit_direction(CASES["matrix"], "l3")
    with pytest.raises(NotImplementedError, match="norm='infinity' and norm='l2' only"):
        project(CASES["matrix"], 1.0, "l1")
    with pytest.raises(ValueError, match="Received: norm='linf'"):
        project(CASES["matrix"], 1.0, "linf")


def test_nsl_norm_type_is_accepted():
    _, configs = _nsl()
    grad = CASES["matrix"]
    expected = _numpy(unit_direction(_ours(grad), "l2"))
    _assert_close(_numpy(unit_direction(_ours(grad), configs.NormType.L2)), expected)


# ---------------------------------------------------------------------- random_unit_ball
def _norms(points, norm):
    return np.linalg.norm(points, {"infinity": np.inf, "l2": 2, "l1": 1}[norm], axis=1)


@pytest.mark.parametrize("norm", NSL_NORMS)
@pytest.mark.parametrize("dims", (1, 3, 50))
def test_random_unit_ball_is_inside_the_ball(norm, dims):
    points = random_unit_ball(np.random.default_rng(1), 2000, dims, norm)
    assert points.shape == (2000, dims) and points.dtype == np.float32
    assert np.all(_norms(points, norm) <= 1 + 1e-6)
    np.testing.assert_allclose(points.mean(axis=0), 0.0, atol=0.1)  # symmetric


@pytest.mark.parametrize("norm", NSL_NORMS)
@pytest.mark.parametrize("dims", (1, 2, 5, 20))
def test_random_unit_ball_is_uniform_in_the_ball(norm, dims):
    # Uniform in a d-dimensional ball: P(||x|| <= r) = r^d for every norm, so ||x||^d is
    # uniform on [0, 1] (Kolmogorov-Smirnov distance, n = 20000: 1.63/sqrt(n) ~ 0.0115).
    n = 20000
    points = random_unit_ball(np.random.default_rng(2), n, dims, norm)
    u = np.sort(_norms(points.astype(np.float64), norm) ** dims)
    ks = np.max(np.abs(u - np.arange(1, n + 1) / n))
    assert ks < 0.0115, ks


def test_random_unit_ball_linf_is_uniform_per_coordinate():
    points = random_unit_ball(np.random.default_rng(3), 20000, 4, "infinity")
    for column in points.T:
        u = np.sort((column.astype(np.float64) + 1) / 2)
        assert np.max(np.abs(u - np.arange(1, len(u) + 1) / len(u))) < 0.0115


def test_random_unit_ball_l2_direction_is_isotropic():
    points = random_unit_ball(np.random.default_rng(4), 20000, 3, "l2")
    directions = points / np.linalg.norm(points, axis=1, keepdims=True)
    np.testing.assert_allclose(directions.T @ directions / len(points), np.eye(3) / 3, atol=0.01)


def test_random_unit_ball_is_repeatable_and_validates():
    a = random_unit_ball(np.random.default_rng(7), 5, 4, "l1")
    np.testing.assert_array_equal(a, random_unit_ball(np.random.default_rng(7), 5, 4, "l1"))
    assert random_unit_ball(np.random.default_rng(7), 0, 4, "l2").shape == (0, 4)
    with pytest.raises(ValueError, match="`norm` must be one of"):
        random_unit_ball(np.random.default_rng(0), 2, 2, "l0")
    with pytest.raises(ValueError, match="`rng` must be a `np.random.Generator`"):
        random_unit_ball(0, 2, 2, "l2")
    with pytest.raises(ValueError, match="`dims` must be an integer >= 1"):
        random_unit_ball(np.random.default_rng(0), 2, 0, "l2")
    with pytest.raises(ValueError, match="`n` must be an integer >= 0"):
        random_unit_ball(np.random.default_rng(0), -1, 2, "l2")


# ---------------------------------------------------------------------- other backends
_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import keras
    import numpy as np
    from keras_advreg.ball import project, unit_direction

    assert keras.backend.backend() == sys.argv[1], keras.backend.backend()
    data = np.load(sys.argv[2])
    cases = json.loads(sys.argv[3])
    out = {}
    for name, keys in cases.items():
        nest = {k: keras.ops.convert_to_tensor(data[name + "/" + k]) for k in keys}
        for norm in ("infinity", "l2", "l1"):
            for k, t in unit_direction(nest, norm).items():
                out[f"unit/{norm}/{name}/{k}"] = keras.ops.convert_to_numpy(t)
        for norm in ("infinity", "l2"):
            radius = keras.ops.convert_to_tensor(0.3, "float32")
            for k, t in project(nest, radius, norm).items():
                out[f"project/{norm}/{name}/{k}"] = keras.ops.convert_to_numpy(t)
    np.savez(sys.argv[4], **out)
    """
)


@cross_backend
@pytest.mark.parametrize("backend", ("jax", "torch"))
def test_other_backends_give_nsl_values(backend, tmp_path):
    # `cross_backend` runs it from the TensorFlow session only, where jax and torch are
    # installed (or, in CI, it fails: a missing backend is not skipped there).
    cases = {
        name: CASES[name] if isinstance(CASES[name], dict) else {"t": CASES[name]}
        for name in ("matrix", "image", "dict", "ties", "tied_dict", "zero_rows", "tiny")
    }
    arrays = {f"{name}/{k}": v for name, nest in cases.items() for k, v in nest.items()}
    np.savez(tmp_path / "in.npz", **arrays)
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    keys = json.dumps({name: sorted(nest) for name, nest in cases.items()})
    subprocess.run(
        [
            sys.executable,
            "-c",
            _SCRIPT,
            backend,
            str(tmp_path / "in.npz"),
            keys,
            str(tmp_path / "out.npz"),
        ],
        check=True,
        env=env,
        cwd=Path(__file__).resolve().parents[1],
        timeout=600,
    )
    out = np.load(tmp_path / "out.npz")
    for name, nest in cases.items():
        for norm in NSL_NORMS:
            expected = _nsl_unit(nest, norm)
            _assert_close({k: out[f"unit/{norm}/{name}/{k}"] for k in nest}, expected)
        for norm in ("infinity", "l2"):
            expected = _nsl_project(nest, np.float32(0.3), norm)
            _assert_close({k: out[f"project/{norm}/{name}/{k}"] for k in nest}, expected)
