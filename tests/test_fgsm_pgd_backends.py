"""FGSM's and PGD's `perturb` in `keras.ops`, compiled, on the Keras backend this runs on.

A linear softmax classifier on flat features stands in for `AttackProblem` (its input
gradient is known in closed form), and a NumPy version of each attack is the reference:
the points must agree to 1e-5 on TensorFlow, JAX and PyTorch
(`KERAS_BACKEND=jax|torch pytest tests/test_fgsm_pgd_backends.py`).
"""

from __future__ import annotations

import types

import keras
import numpy as np
import pytest

from keras_advreg.attacks.fgsm import FGSM
from keras_advreg.attacks.pgd import PGD
from keras_advreg.backend import ops
from keras_advreg.ball import random_unit_ball

TOL = 1e-5
D, C = 6, 3
EPS = {"infinity": 0.25, "l2": 0.6, "l1": 1.0}  # radii that break some examples, not all

pytestmark = pytest.mark.backends


class LinearProblem:
    """`AttackProblem`'s interface for `scores = v @ w + b` (cross-entropy on logits)."""

    def __init__(self, w, b, lo=-np.inf, hi=np.inf, sign=1.0):
        self.w_np, self.b_np = np.asarray(w, "float32"), np.asarray(b, "float32")
        self.w = keras.ops.convert_to_tensor(self.w_np)
        self.b = keras.ops.convert_to_tensor(self.b_np)
        self.dims = self.w_np.shape[0]
        self.lo = np.full(self.dims, lo, "float32")
        self.hi = np.full(self.dims, hi, "float32")
        self.sign = sign  # -1: the attack loss is minus the cross-entropy (it descends)

    def scores(self, x, v):
        return keras.ops.matmul(v, self.w) + self.b

    def loss(self, y, scores):
        ce = keras.ops.sparse_categorical_crossentropy(y, scores, from_logits=True)
        return self.sign * ce

    def value_and_grad(self, x, v, loss_of_scores):
        def fn(v):
            scores = self.scores(x, v)
            loss = loss_of_scores(scores)
            return keras.ops.sum(loss), (loss, scores)

        (loss, scores), grad = ops.value_and_grad(fn, v)
        return loss, scores, grad

    def classes(self, scores):
        return keras.ops.cast(keras.ops.argmax(scores, axis=-1), "int32")

    def clip(self, v):
        return keras.ops.clip(v, self.lo, self.hi)

    def ids(self, y):
        return keras.ops.cast(y, "int32")

    def start(self, x, y):
        v0 = x
        _, scores, grad = self.value_and_grad(x, v0, lambda s: self.loss(y, s))
        return types.SimpleNamespace(x=x, y=y, ids=self.ids(y), v0=v0, scores=scores, grad=grad)


def _run(attack, problem, v0, ids, eps, noise=None):
    """`attack.perturb` compiled for this backend; NumPy in and out."""

    def fn(x, y, eps, noise):
        state = problem.start(x, y)
        return attack.perturb(problem, state, eps, noise)

    compiled = ops.compile(fn)
    noise = {} if noise is None else noise
    out = compiled(
        keras.ops.convert_to_tensor(v0, "float32"),
        keras.ops.convert_to_tensor(ids, "int32"),
        keras.ops.convert_to_tensor(eps, "float32"),
        {k: keras.ops.convert_to_tensor(a) for k, a in noise.items()},
    )
    v, broken = ops.to_numpy(out)
    return np.asarray(v), np.asarray(broken)


# ---------------------------------------------------------------------- NumPy reference
def _np_grad(problem, v, ids):
    z = v @ problem.w_np.astype(np.float64) + problem.b_np
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(v)), ids] -= 1.0
    return problem.sign * p @ problem.w_np.T.astype(np.float64), np.argmax(z, axis=1)


def _np_unit(g, norm):
    if norm == "infinity":
        return np.sign(g)
    peak = np.abs(g).max(axis=1, keepdims=True)  # scale_small_gradients
    g = g / np.where(peak > 0, peak, 1.0)
    if norm == "l2":
        return g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-6)
    a = np.abs(g)
    is_peak = (a == a.max(axis=1, keepdims=True)).astype(np.float64)
    return is_peak * np.sign(g) / np.maximum(is_peak.sum(axis=1, keepdims=True), 1e-6)


def _np_project(d, eps, norm):
    if norm == "infinity":
        return np.clip(d, -eps, eps)
    n = np.sqrt(np.maximum(np.sum(d**2, axis=1, keepdims=True), 1e-12))
    return d * np.where(n <= eps, 1.0, eps / n)


def _np_fgsm(problem, v0, ids, eps, norm):
    g, _ = _np_grad(problem, v0, ids)
    v = np.clip(v0 + eps * _np_unit(g, norm), problem.lo, problem.hi)
    return v, _np_grad(problem, v, ids)[1] != ids


def _np_pgd(problem, v0, ids, eps, norm, steps, size, start):
    v = v0 if start is None else np.clip(v0 + eps * start, problem.lo, problem.hi)
    best, broken = v0.copy(), np.zeros(len(v0), bool)
    for _ in range(steps):
        g, pred = _np_grad(problem, v, ids)
        wrong = pred != ids
        best = np.where((wrong & ~broken)[:, None], v, best)
        broken |= wrong
        delta = _np_project(v + size * _np_unit(g, norm) - v0, eps, norm)
        v = np.clip(v0 + delta, problem.lo, problem.hi)
    last = _np_grad(problem, v, ids)[1] != ids
    return np.where(broken[:, None], best, v), broken | last


def _data(seed=0, n=16, scale=1.0):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(D, C)) * scale
    b = rng.normal(size=C) * 0.1
    v0 = rng.uniform(0.2, 0.8, size=(n, D)).astype("float32")
    ids = np.argmax(v0 @ w + b, axis=1).astype("int32")  # classified correctly
    return w, b, v0, ids


# ---------------------------------------------------------------------- FGSM
@pytest.mark.parametrize("norm", ("infinity", "l2", "l1"))
@pytest.mark.parametrize("box", (False, True))
def test_fgsm_matches_numpy(norm, box):
    w, b, v0, ids = _data(1, n=32)
    problem = LinearProblem(w, b, *((0.0, 1.0) if box else ()))
    eps = EPS[norm]
    v, broken = _run(FGSM(epsilon=eps, norm=norm), problem, v0, ids, eps)
    v_ref, broken_ref = _np_fgsm(problem, v0.astype(np.float64), ids, eps, norm)
    np.testing.assert_allclose(v, v_ref, atol=TOL, rtol=0)
    np.testing.assert_array_equal(broken, broken_ref)
    assert not broken.all() and (broken.any() or box)


@pytest.mark.parametrize("norm", ("l2", "l1"))
def test_fgsm_moves_confident_examples_by_epsilon(norm):
    # Large logit gaps: the cross-entropy gradients are tiny (NSL's normalisation divides
    # by max(norm, 1e-6) and would barely move); scale_small_gradients still steps by eps.
    w, b, v0, ids = _data(2, n=64, scale=40.0)
    problem = LinearProblem(w, b)
    state = problem.start(keras.ops.convert_to_tensor(v0), keras.ops.convert_to_tensor(ids))
    peak = np.abs(ops.to_numpy(state.grad)).max(axis=1)
    assert np.sum((peak > 0) & (peak < 1e-7)) >= 3, peak
    v, _ = _run(FGSM(epsilon=0.5, norm=norm), problem, v0, ids, 0.5)
    size = np.linalg.norm(v - v0, 2 if norm == "l2" else 1, axis=1)
    np.testing.assert_allclose(size[peak > 0], 0.5, rtol=1e-5)
    np.testing.assert_array_equal(size[peak == 0], 0.0)


def test_fgsm_zero_gradient_stays_put():
    w = np.zeros((D, C))
    problem = LinearProblem(w, [1.0, 0.0, 0.0])
    v0 = np.full((3, D), 0.5, "float32")
    for norm in ("infinity", "l2", "l1"):
        v, broken = _run(FGSM(epsilon=0.2, norm=norm), problem, v0, np.zeros(3, "int32"), 0.2)
        np.testing.assert_array_equal(v, v0)
        assert not broken.any()


# ---------------------------------------------------------------------- PGD
@pytest.mark.parametrize("norm", ("infinity", "l2"))
@pytest.mark.parametrize("random_start", (True, False))
@pytest.mark.parametrize("step_size", (None, 0.05))
def test_pgd_matches_numpy(norm, random_start, step_size):
    w, b, v0, ids = _data(3, n=32)
    problem = LinearProblem(w, b, 0.0, 1.0)
    eps, steps = EPS[norm], 7
    attack = PGD(
        epsilon=eps, norm=norm, steps=steps, step_size=step_size, random_start=random_start
    )
    noise = attack.draw(problem, len(v0), np.random.default_rng(5))
    assert set(noise) == ({"start"} if random_start else set())
    v, broken = _run(attack, problem, v0, ids, eps, noise)
    size = step_size or 2.5 * eps / steps
    start = noise["start"].astype(np.float64) if random_start else None
    v_ref, broken_ref = _np_pgd(problem, v0.astype(np.float64), ids, eps, norm, steps, size, start)
    np.testing.assert_allclose(v, v_ref, atol=TOL, rtol=0)
    np.testing.assert_array_equal(broken, broken_ref)
    assert broken.any() and not broken.all()
    d = v - v0
    sizes = np.abs(d).max(axis=1) if norm == "infinity" else np.linalg.norm(d, axis=1)
    assert np.all(sizes <= eps * (1 + TOL) + 1e-6)
    assert np.all((v >= 0) & (v <= 1))


def test_pgd_draw_is_the_unit_ball_of_its_norm():
    w, b, _, _ = _data(4)
    problem = LinearProblem(w, b)
    for norm in ("infinity", "l2"):
        noise = PGD(norm=norm).draw(problem, 9, np.random.default_rng(11))
        expected = random_unit_ball(np.random.default_rng(11), 9, D, norm)
        assert noise["start"].dtype == np.float32
        np.testing.assert_array_equal(noise["start"], expected)
    assert PGD(random_start=False).draw(problem, 9, np.random.default_rng(0)) == {}


def test_pgd_keeps_any_iterate_that_breaks_an_example():
    # The "attack" loss is minus the cross-entropy: PGD walks back to the true class, so only
    # the random start can misclassify; those examples count as broken at their start point.
    w, b, v0, ids = _data(6, n=64)
    problem = LinearProblem(w, b, sign=-1.0)
    eps = 1.0
    attack = PGD(epsilon=eps, steps=5, norm="infinity")
    noise = attack.draw(problem, len(v0), np.random.default_rng(1))
    v, broken = _run(attack, problem, v0, ids, eps, noise)
    start = v0 + eps * noise["start"]
    wrong_at_start = np.argmax(start @ w + b, axis=1) != ids
    assert wrong_at_start.any() and not wrong_at_start.all()
    assert np.all(broken[wrong_at_start])
    np.testing.assert_allclose(v[wrong_at_start], start[wrong_at_start], atol=TOL)
    np.testing.assert_array_equal(np.argmax(v @ w + b, axis=1) != ids, broken)
    # without the random start, descending the cross-entropy breaks nothing
    _, broken = _run(attack.replace(random_start=False), problem, v0, ids, eps)
    assert not broken.any()
