"""APGD's `keras.ops` core, its losses and the attack heads' losses on every Keras backend.

Runs on the backend of the session (`KERAS_BACKEND`); `test_apgd_gives_the_same_points_on_
every_backend` runs the same attacks under TensorFlow, JAX and PyTorch in subprocesses and
compares the points. No TensorFlow here: this module is backend-agnostic.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import cross_backend
from keras import ops

from keras_advreg.attacks import apgd_core, heads
from keras_advreg.attacks.apgd import target_classes
from keras_advreg.attacks.apgd_core import apgd, cross_entropy, dlr, draw_start, targeted_dlr
from keras_advreg.backend import ops as backend_ops

TOL = 1e-5
BACKEND_TOL = 1e-5  # the same points on every backend, to this

pytestmark = pytest.mark.backends


def _np(t):
    return keras.ops.convert_to_numpy(t)


def _grad(fn, z):
    """d sum(fn(z)) / dz through the backend's gradient."""

    def total(v):
        out = fn(v)
        return ops.sum(out), out

    _, grad = backend_ops.value_and_grad(total, ops.convert_to_tensor(z))
    return _np(grad)


# --------------------------------------------------------------------------- the tiny model
def _dense_model():
    """A fixed 12 -> 16 (relu) -> 5 dense classifier (the same weights on every backend)."""
    rng = np.random.default_rng(2)
    model = keras.Sequential(
        [keras.Input((12,)), keras.layers.Dense(16, "relu"), keras.layers.Dense(5)]
    )
    model.set_weights(
        [
            rng.normal(size=(12, 16)).astype("float32"),
            rng.normal(scale=0.1, size=16).astype("float32"),
            rng.normal(size=(16, 5)).astype("float32"),
            rng.normal(scale=0.1, size=5).astype("float32"),
        ]
    )
    return model


def _examples(model):
    rng = np.random.default_rng(4)
    # Pixels in [0, 1] with many exactly at the bounds, as in images.
    v0 = np.clip(rng.uniform(-0.5, 1.5, size=(48, 12)), 0, 1).astype("float32")
    ids = np.argmax(_np(model(v0)), axis=1).astype("int32")
    ids[0] = (ids[0] + 1) % 5  # misclassified at v0
    return v0, ids


@functools.cache
def _attack(norm, loss, compact=False, steps=20, targeted_rank=None):
    """A compiled APGD run on `_dense_model`: `(v0, ids, eps, start) -> (v_adv, broken)`."""
    model = _dense_model()

    def value_and_grad(v, closure):
        def fn(v):
            z = model(v, training=False)
            values = closure(z)
            return ops.sum(values), (values, z)

        (values, z), grad = backend_ops.value_and_grad(fn, v)
        return values, z, grad

    def run(v0, ids, eps, start):
        targets = None
        if targeted_rank is not None:
            targets = target_classes(model(v0, training=False), ids, targeted_rank)
        return apgd(
            value_and_grad, v0, ids, eps, 0.0, 1.0, norm=norm, steps=steps, loss_fn=loss,
            start=start, target_ids=targets, compact=compact,
        )  # fmt: skip

    compiled = backend_ops.compile(run, model.variables)
    return model, lambda *args: backend_ops.to_numpy(compiled(*args))


_CASES = {
    "linf-ce": dict(norm="infinity", loss="ce", eps=0.1),
    "linf-dlr-compact": dict(norm="infinity", loss="dlr", eps=0.1, compact=True),
    "linf-targeted": dict(norm="infinity", loss="targeted_dlr", eps=0.1, targeted_rank=2),
    "l2-ce": dict(norm="l2", loss="ce", eps=0.4),
    "l2-dlr-no-start": dict(norm="l2", loss="dlr", eps=0.4, start=False),
}


def _run_case(name, seed=3):
    case = dict(_CASES[name])
    eps, use_start = case.pop("eps"), case.pop("start", True)
    model, attack = _attack(**case)
    v0, ids = _examples(model)
    start = draw_start(np.random.default_rng(seed), len(v0), v0.shape[1], case["norm"])
    v_adv, broken = attack(v0, ids, np.float32(eps), start if use_start else None)
    return model, v0, ids, eps, v_adv, broken


def _write_points(path: str) -> None:
    """Every `_CASES` run on this process' backend, to `path` (npz); run in subprocesses."""
    out = {}
    for name in _CASES:
        model, v0, ids, _, v_adv, broken = _run_case(name)
        loss_fn, rank = apgd_core.LOSSES[_CASES[name]["loss"]], _CASES[name].get("targeted_rank")
        extra = () if rank is None else (target_classes(model(v0), ids, rank),)
        out[f"{name}/v"], out[f"{name}/broken"] = v_adv, broken
        out[f"{name}/loss"] = _np(loss_fn(model(v_adv), ids, *extra))
    np.savez(path, **out)


# --------------------------------------------------------------------------- losses
def test_dlr_losses_match_hand_computed_values():
    z = np.array([[3.0, 1.0, 2.0, 0.5], [0.0, 5.0, 1.0, -1.0]], "float32")
    ids = np.array([0, 2], "int32")
    # Row 0: -(3 - 2) / (3 - 1); row 1: -(1 - 5) / (5 - 0).
    np.testing.assert_allclose(_np(dlr(z, ids)), [-0.5, 0.8], rtol=1e-6)
    # Row 0 -> 2: -(3 - 2) / (3 - (1 + 0.5) / 2); row 1 -> 1: -(1 - 5) / (5 - (0 - 1) / 2).
    expected = [-1 / 2.25, 4 / 5.5]
    targets = np.array([2, 1], "int32")
    np.testing.assert_allclose(_np(targeted_dlr(z, ids, targets)), expected, rtol=1e-6)


def test_dlr_losses_on_fewer_classes_repeat_the_smallest_logit():
    z = np.array([[3.0, 1.0], [0.0, 2.0]], "float32")
    ids = np.array([0, 0], "int32")
    # Two classes: z_pi3 = z_pi2.
    np.testing.assert_allclose(_np(dlr(z, ids)), [-1.0, 1.0], rtol=1e-6)


def test_dlr_gradient_flows_through_the_sorted_logits():
    z = np.array([[3.0, 1.0, 2.0, 0.5]], "float32")
    ids = np.array([0], "int32")
    # dlr = -(z0 - z2) / (z0 - z1): d/dz0 = -(z2 - z1) / (z0 - z1)^2, d/dz1 = -(z0 - z2) /
    # (z0 - z1)^2, d/dz2 = 1 / (z0 - z1).
    expected = [-0.25, -0.25, 0.5, 0.0]
    np.testing.assert_allclose(_grad(lambda t: dlr(t, ids), z)[0], expected, rtol=1e-5)


def test_cross_entropy_is_exact_and_keeps_gradients_when_saturated():
    z = np.array([[3.0, 1.0, 2.0, 0.5], [30.0, 0.0, -10.0, 1.0]], "float32")
    ids = np.array([0, 0], "int32")
    reference = np.log(np.exp(z[0].astype(np.float64)).sum()) - z[0, 0]
    np.testing.assert_allclose(_np(cross_entropy(z, ids))[0], reference, rtol=1e-6)
    grad = _grad(lambda t: cross_entropy(t, ids), z)
    # Row 1: softmax rounds p_y to 1 in float32, but the gradient stays exact.
    others = np.exp([-30.0, -40.0, -29.0])
    np.testing.assert_allclose(grad[1], [-others.sum(), *others], rtol=1e-4)


def test_losses_by_name():
    assert apgd_core.LOSSES["ce"] is cross_entropy
    with pytest.raises(ValueError, match="`loss_fn` must be"):
        apgd(None, np.zeros((1, 2), "float32"), [0], 0.1, 0, 1, norm="l2", steps=1, loss_fn="x")


# --------------------------------------------------------------------------- heads
def _head(binary, output="logits"):
    return types.SimpleNamespace(binary=binary, output=output)


@pytest.mark.parametrize("label_mode", ["sparse", "categorical"])
def test_head_cross_entropy_is_exact_and_keeps_gradients_when_saturated(label_mode):
    fn = heads.attack_loss(_head(False), label_mode, None)
    z = np.array([[3.0, 1.0, 2.0, 0.5], [1.0, 30.0, -10.0, 1.0]], "float32")
    sparse = np.array([[0], [1]], "int32")
    y = sparse if label_mode == "sparse" else np.eye(4, dtype="float32")[sparse[:, 0]]
    shifted = z.astype(np.float64) - z.max(1, keepdims=True)
    reference = np.log(np.exp(shifted).sum(1)) - shifted[[0, 1], [0, 1]]
    np.testing.assert_allclose(_np(fn(y, z)), reference, rtol=1e-5, atol=1e-12)
    grad = _grad(lambda t: fn(y, t), z)
    others = np.exp([-29.0, -40.0, -29.0])
    np.testing.assert_allclose(grad[1], [others[0], -others.sum(), *others[1:]], rtol=1e-4)
    np.testing.assert_array_equal(_np(heads.true_ids(y, label_mode)), [0, 1])


def test_head_binary_loss_is_softplus_and_keeps_gradients_when_saturated():
    fn = heads.attack_loss(_head(True), "sparse", None)
    z = np.array([[2.0], [-1.0], [40.0]], "float32")
    y = np.array([1, 1, 1], "int32")  # (batch,) labels against (batch, 1) logits
    np.testing.assert_allclose(_np(fn(y, z))[:, 0], np.log1p(np.exp(-z[:, 0])), rtol=1e-6)
    grad = _grad(lambda t: fn(y, t), z)
    np.testing.assert_allclose(grad[:, 0], -1 / (1 + np.exp(z[:, 0])), rtol=1e-4)
    np.testing.assert_allclose(
        _np(fn(np.zeros((3, 1), "int32"), z))[:, 0], np.log1p(np.exp(z[:, 0])), rtol=1e-6
    )


def test_head_custom_and_probability_losses():
    fn = heads.attack_loss(_head(False), "sparse", "sparse_categorical_crossentropy")
    p = np.array([[0.5, 0.25, 0.25]], "float32")
    np.testing.assert_allclose(_np(fn(np.array([1]), p)), [np.log(4)], rtol=1e-5)
    fn = heads.attack_loss(_head(False, "probabilities"), "categorical", None)
    np.testing.assert_allclose(_np(fn(np.array([[0, 0, 1.0]]), p)), [np.log(4)], rtol=1e-5)


def test_margin_and_true_ids():
    z = np.array([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0]], "float32")
    np.testing.assert_allclose(_np(heads.margin(z, np.array([0, 2]))), [1.0, -4.0])
    np.testing.assert_array_equal(_np(heads.true_ids(np.array([[2], [1]]), "sparse")), [2, 1])
    assert _np(heads.true_ids(np.array([2.0, 1.0]), "sparse")).dtype == np.int32


# --------------------------------------------------------------------------- targets, draws
def test_target_classes_rank_the_other_classes_with_ties_to_the_lower_id():
    scores = np.array([[1.0, 3.0, 3.0, 0.0, 3.0], [5.0, 2.0, 2.0, 9.0, 2.0]], "float32")
    ids = np.array([2, 3], "int32")
    ranked = [[1, 4, 0, 3], [0, 1, 2, 4]]
    for rank in range(1, 5):
        expected = [row[rank - 1] for row in ranked]
        np.testing.assert_array_equal(_np(target_classes(scores, ids, rank)), expected)
        rank_tensor = ops.convert_to_tensor(rank, "int32")  # a run-time rank
        np.testing.assert_array_equal(_np(target_classes(scores, ids, rank_tensor)), expected)


def test_draw_start():
    linf = draw_start(np.random.default_rng(0), 500, 40, "infinity")
    assert linf.shape == (500, 40) and linf.dtype == np.float32
    assert linf.min() >= -1 and linf.max() <= 1 and abs(linf.mean()) < 0.02
    l2 = draw_start(np.random.default_rng(0), 500, 40, "l2")
    assert l2.dtype == np.float32 and abs(l2.std() - 1) < 0.02 and l2.min() < -1
    again = draw_start(np.random.default_rng(0), 500, 40, "l2")
    np.testing.assert_array_equal(l2, again)
    with pytest.raises(ValueError, match="`norm` must be one of"):
        draw_start(np.random.default_rng(0), 1, 1, "l1")


# --------------------------------------------------------------------------- the attack
def _assert_in_ball_and_box(v, v0, eps, norm):
    d = v - v0
    size = np.abs(d).max(axis=1) if norm == "infinity" else np.linalg.norm(d, axis=1)
    assert np.all(size <= eps * (1 + TOL) + 1e-6), size.max()
    assert np.all(v >= 0) and np.all(v <= 1)


@pytest.mark.parametrize("name", sorted(_CASES))
def test_apgd_points_stay_in_the_ball_and_the_box(name):
    model, v0, ids, eps, v_adv, broken = _run_case(name)
    _assert_in_ball_and_box(v_adv, v0, eps, _CASES[name]["norm"])
    assert broken[0] and np.array_equal(v_adv[0], v0[0])
    assert 0 < broken.sum() < len(ids), broken.sum()
    predictions = np.argmax(_np(model(v_adv)), axis=1)
    assert np.all(predictions[broken] != ids[broken])
    assert np.all(predictions[~broken] == ids[~broken])


def test_apgd_same_start_same_points_and_compact_changes_nothing():
    first, again = _run_case("linf-dlr-compact"), _run_case("linf-dlr-compact")
    np.testing.assert_array_equal(first[4], again[4])
    model, attack = _attack("infinity", "dlr", compact=False)
    v0, ids = _examples(model)
    start = draw_start(np.random.default_rng(3), len(v0), v0.shape[1], "infinity")
    full = attack(v0, ids, np.float32(0.1), start)
    np.testing.assert_array_equal(full[1], first[5])
    np.testing.assert_allclose(full[0], first[4], atol=1e-6)
    other = _run_case("linf-dlr-compact", seed=4)
    assert not np.array_equal(other[4], first[4])


def test_apgd_validates_its_arguments():
    v0, kwargs = np.zeros((1, 2), "float32"), dict(steps=1, loss_fn="ce")
    with pytest.raises(ValueError, match="`norm` must be one of"):
        apgd(None, v0, [0], 0.1, 0.0, 1.0, norm="l1", **kwargs)
    with pytest.raises(ValueError, match="`steps` must be an integer >= 1"):
        apgd(None, v0, [0], 0.1, 0.0, 1.0, norm="l2", steps=0, loss_fn="ce")


# --------------------------------------------------------------------------- across backends
@cross_backend
def test_apgd_gives_the_same_points_on_every_backend(tmp_path):
    tests = Path(__file__).resolve().parent
    code = (
        f"import sys; sys.path.insert(0, {str(tests)!r}); "
        "import test_apgd_backends as t; t._write_points(sys.argv[1])"
    )
    results = {}
    for backend in backend_ops.BACKENDS:
        path = tmp_path / f"{backend}.npz"
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
        done = subprocess.run(
            [sys.executable, "-c", code, str(path)], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, (backend, done.stderr[-3000:])
        results[backend] = dict(np.load(path))
    reference = results["tensorflow"]
    report = {}
    for backend in ("jax", "torch"):
        other = results[backend]
        for name in _CASES:
            v, broken, loss = (f"{name}/{k}" for k in ("v", "broken", "loss"))
            np.testing.assert_array_equal(other[broken], reference[broken], err_msg=backend)
            diff = np.abs(other[v] - reference[v]).max(axis=1)
            report[f"{backend} {name}"] = float(diff.max())
            # Every broken example is broken by the same iterate, on every backend.
            assert diff[reference[broken]].max() <= BACKEND_TOL, (backend, name, diff)
            # A robust example keeps its highest-loss iterate; where two iterates' losses
            # tie to float32 rounding (small steps near a maximum, the flat top of the l2
            # sphere), the backends' rounding may keep a different one of them: the same
            # loss, a point up to ~1e-4 away.
            np.testing.assert_allclose(
                other[loss], reference[loss], rtol=1e-5, atol=1e-5, err_msg=f"{backend} {name}"
            )
            assert np.mean(diff <= BACKEND_TOL) >= 0.9, (backend, name, diff)
            assert diff.max() <= 1e-3, (backend, name, diff.max())
    print(json.dumps(report, indent=1))
