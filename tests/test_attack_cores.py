"""The graph-mode APGD and Square cores on hand-computable models.

Linear models give the exact minimal perturbation; a quantising model masks gradients, which
APGD cannot get past and Square can.
"""

from __future__ import annotations

import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_advreg.attacks.apgd_core import (
    apgd,
    checkpoints,
    cross_entropy,
    dlr,
    draw_start,
    targeted_dlr,
)
from keras_advreg.attacks.square_core import draw as square_draw
from keras_advreg.attacks.square_core import square_linf
from keras_advreg.backend import ops as backend_ops

INF = float("inf")
TOL = 1e-5


def _value_and_grad(logits_fn):
    """`(v, closure) -> (loss, logits, grad)` of `logits_fn`, through the backend's gradient."""

    def value_and_grad(v, closure):
        def fn(v):
            z = logits_fn(v)
            loss = closure(z)
            return keras.ops.sum(loss), (loss, z)

        (loss, z), grad = backend_ops.value_and_grad(fn, v)
        return loss, z, grad

    return value_and_grad


@functools.cache
def _apgd_fn(logits_fn, *, norm, loss_fn=cross_entropy, steps=100, lo=-INF, hi=INF, **kwargs):
    vag = _value_and_grad(logits_fn)

    def run(v0, ids, eps, start):
        return apgd(
            vag, v0, ids, eps, lo, hi, norm=norm, steps=steps, loss_fn=loss_fn, start=start,
            **kwargs,
        )  # fmt: skip

    compiled = backend_ops.compile(run)

    def attack(v0, ids, eps, seed=0):
        start = draw_start(np.random.default_rng(seed), len(v0), v0.shape[1], norm)
        return backend_ops.to_numpy(compiled(v0, ids, np.float32(eps), start))

    return attack


@functools.cache
def _square_fn(logits_fn, *, image_shape, queries, lo=-INF, hi=INF, **kwargs):
    def run(v0, ids, eps, stripes, draws):
        return square_linf(
            logits_fn,
            v0,
            ids,
            eps,
            lo,
            hi,
            stripes=stripes,
            draws=draws,
            image_shape=image_shape,
            queries=queries,
            **kwargs,
        )

    compiled = backend_ops.compile(run)

    def attack(v0, ids, eps, seed=0):
        noise = square_draw(np.random.default_rng(seed), len(v0), image_shape, queries)
        outputs = compiled(v0, ids, np.float32(eps), noise["stripes"], noise["draws"])
        return backend_ops.to_numpy(outputs)

    return attack


def _predict(logits_fn, v):
    return np.argmax(logits_fn(tf.constant(v)).numpy(), axis=1)


def _assert_in_ball_and_box(v, v0, eps, norm, lo=-INF, hi=INF):
    d = v - v0
    size = np.abs(d).max(axis=1) if norm == "infinity" else np.linalg.norm(d, axis=1)
    assert np.all(size <= eps * (1 + TOL) + 1e-6), size.max()
    assert np.all(v >= lo) and np.all(v <= hi)


# --------------------------------------------------------------------------- losses, schedule
def test_checkpoints_match_the_reference_for_100_steps():
    # autopgd_base.py: n_iter_2 = 22, size_decr = 3, n_iter_min = 6.
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(1) == [1]


def test_dlr_losses_match_hand_computed_values():
    z = tf.constant([[3.0, 1.0, 2.0, 0.5], [0.0, 5.0, 1.0, -1.0]])
    ids = tf.constant([0, 2])
    # Row 0: -(3 - 2) / (3 - 1); row 1: -(1 - 5) / (5 - 0).
    np.testing.assert_allclose(dlr(z, ids).numpy(), [-0.5, 0.8], rtol=1e-6)
    # Row 0 -> 2: -(3 - 2) / (3 - (1 + 0.5) / 2); row 1 -> 1: -(1 - 5) / (5 - (0 - 1) / 2).
    expected = [-1 / 2.25, 4 / 5.5]
    np.testing.assert_allclose(targeted_dlr(z, ids, tf.constant([2, 1])).numpy(), expected, 1e-6)


def test_cross_entropy_is_exact_and_keeps_gradients_when_saturated():
    z = tf.constant([[3.0, 1.0, 2.0, 0.5], [30.0, 0.0, -10.0, 1.0]])
    ids = tf.constant([0, 0])
    reference = tf.nn.sparse_softmax_cross_entropy_with_logits(ids, z)
    np.testing.assert_allclose(cross_entropy(z, ids).numpy()[0], reference.numpy()[0], rtol=1e-6)
    with tf.GradientTape() as tape:
        tape.watch(z)
        loss = cross_entropy(z, ids)
    grad = tape.gradient(loss, z).numpy()
    # Row 1: softmax rounds p_y to 1 in float32, but the gradient stays exact.
    others = np.exp([-30.0, -40.0, -29.0])
    np.testing.assert_allclose(grad[1], [-others.sum(), *others], rtol=1e-4)


# --------------------------------------------------------------------------- exact linear thresholds
def _linear_model(norm):
    """A 4-class linear model `z = v W + b` on which maximising the cross-entropy over the ball
    has a single local maximum for class-0 points, so that APGD must reach the exact threshold.

    Maximising a convex loss over a ball has local maxima: on a generic multi-class linear
    model APGD-CE can settle at a vertex that pushes towards a farther class. Here every
    `w_j - w_0` lies in one orthant (l-inf: the gradient's sign never changes) or on one line
    (l2: its direction never changes).
    """
    rng = np.random.default_rng(0)
    w0, u = rng.normal(size=6), rng.normal(size=6)
    if norm == "infinity":
        steps = [np.sign(u) * np.abs(rng.normal(size=6)) for _ in range(3)]
        b = np.zeros(4)
    else:
        steps = [lam * u for lam in (1.0, 2.0, 4.0)]
        b = np.array([0.0, -1.0, -3.0, -2.0])
    w = np.stack([w0] + [w0 + d for d in steps], axis=1)
    return w.astype("float32"), b.astype("float32")


def _minimal_perturbation(w, b, v, ids, dual_order):
    """`min_{j != y} (z_y - z_j) / ||w_y - w_j||_dual` per example."""
    z = v @ w + b
    return np.array(
        [
            min(
                (z[n, y] - z[n, j]) / np.linalg.norm(w[:, y] - w[:, j], ord=dual_order)
                for j in range(w.shape[1])
                if j != y
            )
            for n, y in enumerate(ids)
        ]
    )


def _linear_examples(norm, w, b):
    """Class-0 points of `_linear_model` whose minimal perturbation is exactly 1."""
    rng = np.random.default_rng(1)
    if norm == "infinity":
        v = rng.normal(size=(400, 6))
        v = v[np.argmax(v @ w + b, axis=1) == 0]
        v = v / _minimal_perturbation(w, b, v, np.zeros(len(v), int), 1)[:, None]
    else:
        # z_j - z_0 = lam_j t + b_j with t = u . v: move every point to t = t_c - ||u||.
        u = w[:, 1] - w[:, 0]
        t_c = min(-b[j] / (u @ (w[:, j] - w[:, 0]) / (u @ u)) for j in (1, 2, 3))
        v = rng.normal(size=(64, 6))
        v = v + ((t_c - np.linalg.norm(u) - v @ u) / (u @ u))[:, None] * u
    return v.astype("float32"), np.zeros(len(v), "int32")


@pytest.mark.parametrize("norm, dual_order", [("infinity", 1), ("l2", 2)])
def test_apgd_ce_finds_the_exact_minimal_perturbation_of_a_linear_model(norm, dual_order):
    w, b = _linear_model(norm)
    v0, ids = _linear_examples(norm, w, b)
    assert len(ids) >= 40
    np.testing.assert_allclose(_minimal_perturbation(w, b, v0, ids, dual_order), 1.0, rtol=1e-4)

    def logits(v):
        return tf.matmul(v, tf.constant(w)) + tf.constant(b)

    attack = _apgd_fn(logits, norm=norm)
    v_adv, broken = attack(v0, ids, 1.01)
    assert broken.all(), np.flatnonzero(~broken)
    assert np.all(_predict(logits, v_adv) != ids)
    _assert_in_ball_and_box(v_adv, v0, 1.01, norm)
    v_adv, broken = attack(v0, ids, 0.99)
    assert not broken.any()
    _assert_in_ball_and_box(v_adv, v0, 0.99, norm)


# --------------------------------------------------------------------------- ball and box
_MLP = [
    np.random.default_rng(2).normal(size=(12, 16)).astype("float32"),
    np.random.default_rng(3).normal(size=(16, 5)).astype("float32"),
]


def _mlp(v):
    return tf.matmul(tf.nn.relu(tf.matmul(v, _MLP[0])), _MLP[1])


def _box_examples():
    rng = np.random.default_rng(4)
    # Pixels in [0, 1] with many exactly at the bounds, as in images.
    v0 = np.clip(rng.uniform(-0.5, 1.5, size=(64, 12)), 0, 1).astype("float32")
    ids = _predict(_mlp, v0).astype("int32")
    ids[0] = (ids[0] + 1) % 5  # misclassified at v0
    return v0, ids


@pytest.mark.parametrize("norm, eps", [("infinity", 0.2), ("l2", 0.8)])
def test_apgd_points_stay_in_the_ball_and_the_box(norm, eps):
    v0, ids = _box_examples()
    v_adv, broken = _apgd_fn(_mlp, norm=norm, lo=0.0, hi=1.0, steps=20)(v0, ids, eps)
    _assert_in_ball_and_box(v_adv, v0, eps, norm, 0.0, 1.0)
    assert broken[0] and np.array_equal(v_adv[0], v0[0])
    assert 0 < broken.sum() < len(ids)
    assert np.all(_predict(_mlp, v_adv[broken]) != ids[broken])
    assert np.all(_predict(_mlp, v_adv[~broken]) == ids[~broken])


def test_square_points_stay_in_the_ball_and_the_box():
    v0, ids = _box_examples()
    attack = _square_fn(_mlp, image_shape=(2, 2, 3), queries=50, lo=0.0, hi=1.0)
    v_adv, broken = attack(v0, ids, 0.2)
    _assert_in_ball_and_box(v_adv, v0, 0.2, "infinity", 0.0, 1.0)
    assert broken[0] and np.array_equal(v_adv[0], v0[0])
    assert 0 < broken.sum() < len(ids)
    assert np.all(_predict(_mlp, v_adv[broken]) != ids[broken])
    # Square perturbs at the vertices of the ball, clipped to the box.
    d = np.abs(v_adv - v0)[1:]
    at_vertex = np.isclose(d, 0.2, atol=1e-6) | np.isclose(v_adv[1:], 0) | np.isclose(v_adv[1:], 1)
    assert at_vertex.all()


# --------------------------------------------------------------------------- gradient masking
_QW = np.random.default_rng(5).normal(size=(16, 4)).astype("float32")


def _quantised(v):
    """A linear model on inputs rounded to multiples of 1/4: zero input gradients."""
    return tf.matmul(tf.stop_gradient(tf.round(v * 4.0) / 4.0), tf.constant(_QW))


def test_square_breaks_a_gradient_masked_model_that_apgd_cannot():
    v0 = np.random.default_rng(6).uniform(0.3, 0.7, size=(64, 16)).astype("float32")
    ids = _predict(_quantised, v0).astype("int32")
    eps = 0.15
    _, apgd_broken = _apgd_fn(_quantised, norm="infinity", lo=0.0, hi=1.0, steps=20)(v0, ids, eps)
    attack = _square_fn(_quantised, image_shape=(4, 4, 1), queries=100, lo=0.0, hi=1.0)
    v_adv, square_broken = attack(v0, ids, eps)
    assert np.all(_predict(_quantised, v_adv[square_broken]) != ids[square_broken])
    assert square_broken.sum() >= apgd_broken.sum() + 20, (square_broken.sum(), apgd_broken.sum())


# --------------------------------------------------------------------------- seeds
@pytest.mark.parametrize("norm", ["infinity", "l2"])
def test_apgd_same_seed_same_result_other_seed_other_start(norm):
    v0, ids = _box_examples()
    attack = _apgd_fn(_mlp, norm=norm, lo=0.0, hi=1.0, steps=20)
    first, again, other = attack(v0, ids, 0.1, 7), attack(v0, ids, 0.1, 7), attack(v0, ids, 0.1, 8)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])


def test_square_same_seed_same_result_other_seed_other_result():
    v0, ids = _box_examples()
    attack = _square_fn(_mlp, image_shape=(2, 2, 3), queries=50, lo=0.0, hi=1.0)
    first, again, other = attack(v0, ids, 0.1, 7), attack(v0, ids, 0.1, 7), attack(v0, ids, 0.1, 8)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])


# --------------------------------------------------------------------------- compaction
_COMPACTABLE = {
    "apgd-ce-linf": lambda **kw: _apgd_fn(_mlp, norm="infinity", lo=0.0, hi=1.0, steps=20, **kw),
    "apgd-dlr-l2": lambda **kw: _apgd_fn(
        _mlp, norm="l2", loss_fn=dlr, lo=0.0, hi=1.0, steps=20, **kw
    ),
    "square": lambda **kw: _square_fn(
        _mlp, image_shape=(2, 2, 3), queries=50, lo=0.0, hi=1.0, **kw
    ),
}


@pytest.mark.parametrize("attack", sorted(_COMPACTABLE))
def test_compact_evaluation_gives_the_same_results(attack):
    v0, ids = _box_examples()
    full = _COMPACTABLE[attack]()(v0, ids, 0.2, 3)
    compact = _COMPACTABLE[attack](compact=True)(v0, ids, 0.2, 3)
    assert 0 < full[1].sum() < len(ids)
    np.testing.assert_array_equal(full[1], compact[1])
    np.testing.assert_allclose(full[0], compact[0], atol=1e-6)


def _scripted_apgd(hits, start, keep_searching):
    """APGD on one example of a stand-in for a randomized model: its draws misclassify the
    example at the evaluations numbered in `hits` only (1: the clean point, 2: the random
    start, then one per step), and its gradients change sign so that iterates differ.
    Returns `(v_adv, broken, v0, seen)`, `seen` the points evaluated, in order."""
    seen = []

    def value_and_grad(v, closure):
        seen.append(v.numpy().copy())
        z = tf.constant([[0.0, 1.0]] if len(seen) in hits else [[1.0, 0.0]])
        return closure(z), z, [1.0, -1.0, 0.5][len(seen) % 3] * tf.ones_like(v)

    v0 = np.full((1, 3), 0.5, "float32")
    v_adv, broken = apgd(
        value_and_grad, v0, np.zeros(1, "int32"), 0.3, 0.0, 1.0, norm="infinity", steps=10,
        loss_fn="ce", start=np.full((1, 3), start, "float32"), keep_searching=keep_searching,
    )  # fmt: skip
    return v_adv, broken, v0, seen


@pytest.mark.parametrize("keep_searching", [False, True])
def test_apgd_keeps_the_first_hit_or_on_a_randomized_model_the_last(keep_searching):
    # Misclassified by the draws of the 4th and 7th evaluations. A deterministic attack keeps
    # the first such point and stops; on a randomized model the reference's APGD keeps
    # attacking and returns the last point a draw misclassified.
    v_adv, broken, _, seen = _scripted_apgd((4, 7), 0.0, keep_searching)
    assert bool(broken[0])
    if keep_searching:
        assert not np.array_equal(seen[3], seen[6])
    np.testing.assert_array_equal(v_adv, seen[6] if keep_searching else seen[3])
    assert len(seen) == (12 if keep_searching else 4)  # the clean point, the start, 10 steps


@pytest.mark.parametrize("keep_searching", [False, True])
@pytest.mark.parametrize("hits", [(), (1, 7)])
def test_apgd_returns_for_an_example_it_did_not_attack_or_break(keep_searching, hits):
    # Never misclassified: the highest-loss point (here the start: the loss never rises), or
    # on a randomized model the clean point, which the reference's cascade checks once more.
    # Misclassified at the clean point (the 1st evaluation): not attacked, the clean point.
    v_adv, broken, v0, seen = _scripted_apgd(hits, 0.5, keep_searching)
    assert bool(broken[0]) == bool(hits)
    expected = v0 if hits or keep_searching else seen[1]
    assert not np.array_equal(seen[1], v0)
    np.testing.assert_array_equal(v_adv, expected)
