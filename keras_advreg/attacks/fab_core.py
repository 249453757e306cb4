"""FAB (Croce & Hein, 2020) in `keras.ops`: the projection onto a hyperplane and a box, one run.

"Minimally distorted adversarial examples with a fast adaptive boundary attack" (ICML 2020);
the reference implementation is `autoattack/fab_base.py` and `fab_projections.py` of
fra31/auto-attack. Each iteration linearises the classifier at the current point, takes the
closest linearised decision boundary (the class `k` minimising `|f_k| / ||grad f_k||_dual`),
projects both the current point and the clean point onto it (within the box), and moves to a
convex combination of the two projections, overshot by `eta`, biased towards the clean point
by at most `alpha_max`. An adversarial iterate is kept when it is the smallest perturbation
so far, and the search steps back towards the clean point by `beta`.

Everything is backend-agnostic `keras.ops` (one `keras.ops.while_loop`), to be called inside
a function compiled by `keras_advreg.backend.ops.compile` (or eagerly); the elementwise work of
an iteration between the model's passes is two functions fused by
`keras_advreg.backend.ops.fuse` (XLA kernels on TensorFlow). Points are flat:
`(batch, D)` features; the caller owns the model (`linearize`, `predict`) and the random
draws (`draw_start`, on the host).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
from keras import ops

from keras_advreg.backend import ops as backend_ops

__all__ = ["NORMS", "draw_start", "fab", "lp_norm", "project_hyperplane"]

NORMS = ("infinity", "l2", "l1")

#: Capacity of an unbounded coordinate, and the radius of "no move is enough".
_BIG = 1e12
#: The norm of an example FAB has not broken (the reference's `1e10`).
NOT_FOUND = 1e10


def _check_norm(norm: Any) -> None:
    if norm not in NORMS:
        raise ValueError(f"`norm` must be one of {NORMS}. Received: norm={norm!r}")


def lp_norm(t: Any, norm: str, axis: int = -1) -> Any:
    """The `norm` (`"infinity"`, `"l2"` or `"l1"`) of `t` along `axis`."""
    if norm == "infinity":
        return ops.max(ops.abs(t), axis=axis)
    if norm == "l2":
        return ops.sqrt(ops.sum(ops.square(t), axis=axis))
    return ops.sum(ops.abs(t), axis=axis)


def _dual_norm(t: Any, norm: str, axis: int = -1) -> Any:
    return lp_norm(t, {"infinity": "l1", "l2": "l2", "l1": "infinity"}[norm], axis)


def _clip(v: Any, lo: Any, hi: Any) -> Any:
    return ops.minimum(ops.maximum(v, lo), hi)


def _take(a: Any, index: Any) -> Any:
    return ops.take_along_axis(a, index, axis=1)


# --------------------------------------------------------------------------- projection
def project_hyperplane(t: Any, w: Any, b: Any, lo: Any, hi: Any, norm: str) -> Any:
    """The smallest step `d` (in `norm`) with `w . (t + d) = b` and `lo <= t + d <= hi`.

    Row by row: `t`, `w` of shape `(n, D)`, `b` of shape `(n,)`. Where the box does not
    reach the hyperplane, the step to the box's corner closest to it. Assumes `t` in the
    box. The reference's `projection_linf` / `projection_l2` / `projection_l1` on a general
    box (theirs is `[0, 1]`): l-inf and l2 solved exactly by Newton's method on the
    piecewise-linear covering equation (no sort), l1 in closed form after one sort.

    With `r = |w . t - b|` the distance to cover and `q_i` the room of coordinate `i` in the
    direction that covers it (`-sign(w_i)`), the step is `-sign(w_i) min(lam, q_i)` (l-inf)
    or `-sign(w_i) min(lam |w_i|, q_i)` (l2) for the smallest `lam` covering `r`: a
    piecewise-linear equation in `lam`, whose breaks are the `q_i` (`q_i / |w_i|`).
    For l1, the coordinates with the largest `|w_i|` move first, each to its bound.

    Args:
        t: `(n, D)` points.
        w: `(n, D)` normals.
        b: `(n,)` offsets.
        lo: lower bound of the box, broadcastable to `(n, D)` (`-inf`: none).
        hi: upper bound of the box, broadcastable to `(n, D)` (`inf`: none).
        norm: `"infinity"`, `"l2"` or `"l1"`.

    Returns:
        `(n, D)` steps.
    """
    _check_norm(norm)
    t, w = ops.cast(t, "float32"), ops.cast(w, "float32")
    b = ops.cast(b, "float32")
    gap = ops.sum(w * t, axis=1) - b
    sign = ops.where(ops.greater_equal(gap, 0.0), 1.0, -1.0)
    w = w * sign[:, None]  # now w . t >= b: every coordinate moves against w
    r = ops.abs(gap)[:, None]
    down = ops.greater(w, 0.0)
    room = ops.clip(ops.where(down, t - lo, hi - t), 0.0, _BIG)  # t in the box: never NaN
    aw = ops.abs(w)
    direction = -ops.sign(w)
    dims = int(w.shape[1])
    if norm == "l1":
        active = ops.greater(aw, 1e-8)
        order = ops.argsort(-ops.where(active, aw, 0.0), axis=1)
        aw_s, room_s = _take(aw, order), _take(ops.where(active, room, 0.0), order)
        gain = ops.cumsum(aw_s * room_s, axis=1)  # what the first k coordinates cover
        k = ops.sum(ops.cast(ops.less(gain, r), "int32"), axis=1, keepdims=True)
        kk = ops.minimum(k, dims - 1)
        before = _take(gain, kk) - _take(aw_s * room_s, kk)
        part = ops.clip((r - before) / ops.maximum(_take(aw_s, kk), 1e-30), 0.0, _BIG)
        pos = ops.arange(dims, dtype="int32")[None, :]
        move_s = ops.where(
            ops.less(pos, k), room_s, ops.where(ops.equal(pos, kk), ops.minimum(part, room_s), 0.0)
        )
        move = _take(move_s, ops.argsort(order, axis=1))
        return ops.where(active, direction * move, 0.0)
    if norm == "infinity":  # a coordinate with w_i = 0 weighs nothing and does not move
        return direction * ops.minimum(_covering_radius(aw, room, r), room)
    active = ops.greater(aw, 1e-8)
    weight = ops.where(active, ops.square(w), 0.0)
    breaks = ops.where(active, ops.minimum(room / ops.maximum(aw, 1e-30), _BIG), _BIG)
    lam = _covering_radius(weight, breaks, r)
    return ops.where(active, direction * aw * ops.minimum(lam, breaks), 0.0)


def _covering_radius(weight: Any, breaks: Any, r: Any) -> Any:
    """Row by row, the smallest `lam` with `sum_i weight_i min(lam, breaks_i) = r`, or `_BIG`.

    The left side `F(lam)` is concave, increasing and piecewise linear (its breaks are the
    `breaks`), and `F(lam) <= lam sum_i weight_i`. Newton's method from `r / sum weight`
    therefore climbs monotonically to the root, crossing at least one break per step, and
    lands on it exactly from within its linear piece: a row is done when its step crossed
    no break. Two or three steps on images (measured on MNIST gradients), at a few
    elementwise passes each: what a sort of every row would cost several times over.
    `weight >= 0`; `0 <= breaks <= _BIG`; `r` of shape `(n, 1)`.
    `_BIG` where even every coordinate at its break falls short of `r` (out of reach).
    """
    reach = ops.sum(weight * breaks, axis=1, keepdims=True)
    lam = r / ops.maximum(ops.sum(weight, axis=1, keepdims=True), 1e-30)
    open_ = ops.greater_equal(reach, r)[:, 0]

    def body(i, lam, open_):
        above = ops.greater(breaks, lam)
        covered = ops.sum(weight * ops.minimum(lam, breaks), axis=1, keepdims=True)
        slope = ops.sum(ops.where(above, weight, 0.0), axis=1, keepdims=True)
        new = lam + ops.maximum(r - covered, 0.0) / ops.maximum(slope, 1e-30)
        crossed = ops.any(ops.logical_and(above, ops.less(breaks, new)), axis=1)
        lam = ops.where(open_[:, None], new, lam)
        return i + 1, lam, ops.logical_and(open_, crossed)

    def cond(i, lam, open_):
        return ops.any(open_)

    zero = ops.convert_to_tensor(0, "int32")
    # At most one step per break (and one more); far fewer in practice.
    _, lam, _ = ops.while_loop(
        cond, body, (zero, lam, open_), maximum_iterations=int(breaks.shape[1]) + 1
    )
    return ops.where(ops.less(reach, r), _BIG, lam)


# --------------------------------------------------------------------------- one iteration
# The model's passes are the caller's; what lies between them is elementwise work on
# `(batch, D)` tensors, fused into one kernel each where the backend can
# (`keras_advreg.backend.ops.fuse`: XLA on TensorFlow).
@functools.partial(backend_ops.fuse, rows=(0, 1, 2, 3))
def _step(x, v0, f, g, lo, hi, norm, alpha_max, eta):
    """The next iterate from the linearisation `(f, g)` at `x`: both `x` and `v0` projected
    onto the nearest linearised boundary, combined, overshot by `eta`, clipped to the box."""
    f, g = ops.cast(f, "float32"), ops.cast(g, "float32")
    dist = ops.abs(f) / (1e-12 + _dual_norm(g, norm, axis=-1))
    nearest = ops.cast(ops.argmin(dist, axis=1), "int32")[:, None]
    f_k = _take(f, nearest)[:, 0]
    w = ops.take_along_axis(g, nearest[:, :, None], axis=1)[:, 0, :]
    b = ops.sum(w * x, axis=1) - f_k  # the linearised boundary: w . v = b
    d = project_hyperplane(
        ops.concatenate([x, v0], axis=0),
        ops.concatenate([w, w], axis=0),
        ops.concatenate([b, b], axis=0),
        lo,
        hi,
        norm,
    )
    size = ops.maximum(lp_norm(d, norm, axis=1), 1e-8)
    d1, d2 = ops.split(d, 2, axis=0)
    a1, a2 = ops.split(size, 2, axis=0)
    alpha = ops.clip(a1 / (a1 + a2), 0.0, alpha_max)[:, None]
    return _clip((x + eta * d1) * (1.0 - alpha) + (v0 + eta * d2) * alpha, lo, hi)


@functools.partial(backend_ops.fuse, rows=(0, 1, 2, 3, 4))
def _keep(hit, x_new, v0, norms, adv, norm, beta):
    """`(x, norms, adv)` after the iterate `x_new` (`hit`: misclassified): the smallest
    adversarial point kept, a step back towards `v0` after a hit."""
    dist_new = lp_norm(x_new - v0, norm, axis=1)
    better = ops.logical_and(hit, ops.less(dist_new, norms))
    adv = ops.where(better[:, None], x_new, adv)
    norms = ops.where(better, dist_new, norms)
    x = ops.where(hit[:, None], v0 + (x_new - v0) * beta, x_new)
    return x, norms, adv


# --------------------------------------------------------------------------- random start
def draw_start(rng: np.random.Generator | None, n: int, dims: int, norm: str) -> np.ndarray:
    """The draws of FAB's random start for `n` points of `dims` features, on the host.

    `fab(..., start=draws)` starts at `v0 + eps / 2 * u / ||u||` (clipped to the box), as
    the reference's restarts after the first: `u` uniform in `[-1, 1]` for l-inf, standard
    normal for l2 and l1. `rng=None` gives zeros: the start at the clean point (the
    reference's first run).

    Returns:
        `(n, dims)` float32 array.
    """
    _check_norm(norm)
    if rng is None:
        return np.zeros((n, dims), np.float32)
    if norm == "infinity":
        return rng.uniform(-1.0, 1.0, size=(n, dims)).astype(np.float32)
    return rng.standard_normal(size=(n, dims)).astype(np.float32)


# --------------------------------------------------------------------------- the attack
def fab(
    linearize: Callable[[Any], tuple[Any, Any]],
    predict: Callable[[Any], Any],
    v0: Any,
    ids: Any,
    eps: Any,
    lo: Any,
    hi: Any,
    *,
    norm: str,
    steps: int = 100,
    start: Any | None = None,
    alpha_max: float = 0.1,
    eta: float = 1.05,
    beta: float = 0.9,
) -> tuple[Any, Any]:
    """One run of FAB on a batch of flat points (`keras.ops`; compile it for speed).

    Runs `steps` iterations, or fewer once every example has an adversarial point within
    `eps` (going on could only shrink perturbations that already count). Assumes `v0` in
    `[lo, hi]`.

    Args:
        linearize: `v -> (f, g)`: `(batch, K)` differences of logits `z_k - z_y` to every
            class `k` considered (one for a targeted run; a large value, e.g. `1e10`, at the
            true class of an untargeted one) and their gradients, `(batch, K, D)`.
        predict: `v -> (batch, C)` logits.
        v0: `(batch, D)` float32 clean points.
        ids: `(batch,)` true class ids.
        eps: scalar float32 radius: of the random start, and of the early stop.
        lo: lower bound of the box, broadcastable to `(batch, D)` (`-inf`: none).
        hi: upper bound of the box, broadcastable to `(batch, D)` (`inf`: none).
        norm: `"infinity"`, `"l2"` or `"l1"`: the norm minimised.
        steps: int >= 1. Iterations.
        start: `(batch, D)` draws of the random start (`draw_start`), or None (or zeros):
            start at `v0`.
        alpha_max: Largest weight of the clean point's projection in a step.
        eta: Overshoot of the projections.
        beta: Step back towards `v0` after an adversarial iterate.

    Returns:
        `(adv, norms)`: `(batch, D)` the smallest adversarial point found (`v0` where none
        was; `v0` for an example misclassified at `v0`), and `(batch,)` its distance to
        `v0` in `norm` (`NOT_FOUND` where none; `0` where `v0` is misclassified).
    """
    _check_norm(norm)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"`steps` must be an integer >= 1. Received: steps={steps!r}")
    v0 = ops.cast(v0, "float32")
    ids = ops.cast(ids, "int32")
    eps = ops.cast(eps, "float32")
    lo = ops.cast(lo, "float32")
    hi = ops.cast(hi, "float32")

    def wrong(v):
        return ops.not_equal(ops.cast(ops.argmax(predict(v), axis=1), "int32"), ids)

    if start is None:
        x = v0
    else:
        start = ops.cast(start, "float32")
        size = lp_norm(start, norm, axis=1)[:, None]
        x = _clip(v0 + 0.5 * eps * start / ops.where(ops.greater(size, 0.0), size, 1.0), lo, hi)
    norms = ops.where(wrong(v0), 0.0, NOT_FOUND * ops.ones_like(v0[:, 0]))
    adv = v0
    alpha_max, eta, beta = float(alpha_max), float(eta), float(beta)

    def body(i, x, norms, adv):
        f, g = linearize(x)
        x_new = _step(x, v0, f, g, lo, hi, norm, alpha_max, eta)
        x, norms, adv = _keep(wrong(x_new), x_new, v0, norms, adv, norm, beta)
        return i + 1, x, norms, adv

    def cond(i, x, norms, adv):
        return ops.logical_and(ops.less(i, steps), ops.logical_not(ops.all(norms <= eps)))

    zero = ops.convert_to_tensor(0, "int32")
    _, _, norms, adv = ops.while_loop(cond, body, (zero, x, norms, adv), maximum_iterations=steps)
    return adv, norms
