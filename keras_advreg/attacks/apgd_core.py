"""APGD (Croce & Hein, 2020) in `keras.ops`: its losses, step-size schedule and one run.

"Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free
attacks" (ICML 2020); the reference implementation is `autoattack/autopgd_base.py` of
fra31/auto-attack. Everything here is backend-agnostic `keras.ops` (one
`keras.ops.while_loop` over the steps), to be called inside a function compiled by
`keras_advreg.backend.ops.compile` (or eagerly). Points are flat: `(batch, D)` features; the
caller owns the model, the reshaping to its input, the input gradient (`value_and_grad`,
built with `keras_advreg.backend.ops.value_and_grad`), the random draws (`draw_start`, on
the host with NumPy, so that every backend starts from the same points) and the restarts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from keras import ops

from keras_advreg.attacks.heads import class_mask, max_other, true_logit
from keras_advreg.backend import ops as backend_ops

__all__ = [
    "LOSSES",
    "NORMS",
    "apgd",
    "checkpoints",
    "cross_entropy",
    "draw_start",
    "dlr",
    "targeted_dlr",
]

NORMS = ("infinity", "l2")

ClosureFn = Callable[[Any], Any]
ValueAndGradFn = Callable[[Any, ClosureFn], tuple[Any, Any, Any]]


def _check_norm(norm: Any) -> None:
    if norm not in NORMS:
        raise ValueError(f"`norm` must be one of {NORMS}. Received: norm={norm!r}")


# --------------------------------------------------------------------------- losses
def _sorted_logits(z: Any, k: int) -> Any:
    """The `k` largest logits, decreasing; with fewer classes the smallest one is repeated."""
    classes = z.shape[-1]
    kk = k if classes is None else min(k, classes)
    top, _ = ops.top_k(z, kk, sorted=True)
    if kk < k:
        top = ops.concatenate([top, ops.repeat(top[:, -1:], k - kk, axis=1)], axis=1)
    return top


def _prepare(z: Any, ids: Any) -> tuple[Any, Any]:
    return ops.convert_to_tensor(z), ops.cast(ids, "int32")


def cross_entropy(z: Any, ids: Any) -> Any:
    """Per-example softmax cross-entropy, `softplus(logsumexp_{j != y}(z_j - z_y))`.

    Equal to `logsumexp(z) - z_y`, but its gradient does not round to zero when the softmax
    saturates in float32.

    Args:
        z: `(batch, C)` logits.
        ids: `(batch,)` true class ids.

    Returns:
        `(batch,)` losses (to maximise).
    """
    z, ids = _prepare(z, ids)
    shifted = z - true_logit(z, ids)[:, None]
    others = ops.where(class_mask(z, ids), ops.full_like(z, -np.inf), shifted)
    return ops.softplus(ops.logsumexp(others, axis=1))


def dlr(z: Any, ids: Any) -> Any:
    """Difference-of-logits-ratio loss, `-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12)`.

    Args:
        z: `(batch, C)` logits (`pi` sorts them decreasingly).
        ids: `(batch,)` true class ids.

    Returns:
        `(batch,)` losses (to maximise).
    """
    z, ids = _prepare(z, ids)
    top = _sorted_logits(z, 3)
    return -(true_logit(z, ids) - max_other(z, ids)) / (top[:, 0] - top[:, 2] + 1e-12)


def targeted_dlr(z: Any, ids: Any, target_ids: Any) -> Any:
    """Targeted DLR loss, `-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)`.

    Args:
        z: `(batch, C)` logits (`pi` sorts them decreasingly).
        ids: `(batch,)` true class ids.
        target_ids: `(batch,)` target class ids.

    Returns:
        `(batch,)` losses (to maximise).
    """
    z, ids = _prepare(z, ids)
    target_ids = ops.cast(target_ids, "int32")
    top = _sorted_logits(z, 4)
    margin = true_logit(z, ids) - true_logit(z, target_ids)
    return -margin / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


LOSSES: dict[str, Callable[..., Any]] = {
    "ce": cross_entropy,
    "dlr": dlr,
    "targeted_dlr": targeted_dlr,
}


# --------------------------------------------------------------------------- schedule
def checkpoints(steps: int) -> list[int]:
    """The iteration counts after which APGD checks its step size.

    The reference's integer form: the first interval is `max(int(0.22 * steps), 1)`, each
    next one `max(int(0.03 * steps), 1)` shorter, down to `max(int(0.06 * steps), 1)`.

    Args:
        steps: int. Number of iterations.

    Returns:
        Increasing iteration counts in `[1, steps]`.
    """
    first = max(int(0.22 * steps), 1)
    decrease = max(int(0.03 * steps), 1)
    shortest = max(int(0.06 * steps), 1)
    out, at, k = [], 0, first
    while at + k <= steps:
        at += k
        out.append(at)
        k = max(k - decrease, shortest)
    return out


# --------------------------------------------------------------------------- random start
def draw_start(rng: np.random.Generator, n: int, dims: int, norm: str) -> np.ndarray:
    """The draws of APGD's random start for `n` points of `dims` features, on the host.

    `apgd(..., start=draws)` turns them into a point of the ball: `v0 + eps * u` for
    l-inf (`u` uniform in `[-1, 1]`), `v0 + eps * t / ||t||_2` for l2 (`t` standard normal:
    uniform on the sphere), then clipped to the box.

    Args:
        rng: `np.random.Generator`. The source of the draws.
        n: int. Number of points (the batch size).
        dims: int. Features per point (`D`).
        norm: `"infinity"` or `"l2"`.

    Returns:
        `(n, dims)` float32 array.
    """
    _check_norm(norm)
    if norm == "infinity":
        draws = rng.uniform(-1.0, 1.0, size=(n, dims))
    else:
        draws = rng.standard_normal(size=(n, dims))
    return draws.astype(np.float32)


# --------------------------------------------------------------------------- helpers
def _l2(t: Any) -> Any:
    return ops.sqrt(ops.sum(ops.square(t), axis=1, keepdims=True))


def _projector(v0: Any, eps: Any, lo: Any, hi: Any, norm: str) -> Callable[[Any], Any]:
    """Projection onto the eps-ball around `v0`, then onto the box `[lo, hi]`."""
    if norm == "infinity":
        low, high = ops.maximum(v0 - eps, lo), ops.minimum(v0 + eps, hi)

        def project(v: Any) -> Any:
            return ops.minimum(ops.maximum(v, low), high)

    else:

        def project(v: Any) -> Any:
            d = v - v0
            n = _l2(d)
            d = d / (n + 1e-12) * ops.minimum(eps, n)
            return ops.minimum(ops.maximum(v0 + d, lo), hi)

    return project


def _misclassified(z: Any, ids: Any) -> Any:
    return ops.not_equal(ops.cast(ops.argmax(z, axis=1), "int32"), ids)


# --------------------------------------------------------------------------- the attack
def apgd(
    value_and_grad: ValueAndGradFn,
    v0: Any,
    ids: Any,
    eps: Any,
    lo: Any,
    hi: Any,
    *,
    norm: str,
    steps: int,
    loss_fn: Callable[..., Any] | str,
    rho: float = 0.75,
    alpha: float = 0.75,
    start: Any | None = None,
    target_ids: Any | None = None,
    compact: bool = False,
    keep_searching: bool = False,
) -> tuple[Any, Any]:
    """One run of APGD on a batch of flat points (`keras.ops`; compile it for speed).

    Step `2 * eps` halved at the `checkpoints(steps)` (restarting from the best point) when
    the loss rose in at most `rho` of the steps since the last checkpoint, or the step was not
    halved there and the best loss has not improved since; momentum `alpha` (1 on the first
    step). An example is broken by the first iterate that misclassifies it, which is kept;
    it is then frozen, and the loop stops once none is left (with `keep_searching`, for a
    randomized model, every example runs every step and the last misclassifying iterate is
    kept). Assumes `v0` lies in `[lo, hi]`.

    Args:
        value_and_grad: `(v, closure) -> (loss, logits, grad)`: `closure(logits)` per example,
            the `(batch, C)` logits at `v`, and the gradient of `sum(loss)` w.r.t. `v` (build
            it with `keras_advreg.backend.ops.value_and_grad`).
        v0: `(batch, D)` float32 clean points.
        ids: `(batch,)` true class ids.
        eps: scalar float32 radius (a run-time value).
        lo: lower bound of the box, broadcastable to `(batch, D)` (`-inf`: none).
        hi: upper bound of the box, broadcastable to `(batch, D)` (`inf`: none).
        norm: `"infinity"` or `"l2"`.
        steps: int >= 1. Number of iterations.
        loss_fn: `(z, ids) -> loss` or `(z, ids, target_ids) -> loss` when `target_ids` is
            given (or a name in `LOSSES`).
        rho: Checkpoint threshold on the fraction of steps that increased the loss.
        alpha: Momentum.
        start: `(batch, D)` float32 draws of the random start (`draw_start`: uniform in
            `[-1, 1]` for l-inf, standard normal for l2), turned into a point of the ball
            (uniform for l-inf, on the sphere for l2) clipped to the box; or None to start
            at `v0`.
        target_ids: `(batch,)` target class ids passed to `loss_fn`, or None.
        compact: Whether to evaluate only the examples not yet broken (faster once many are):
            `value_and_grad` then gets subsets of the rows with a closure for them, so it must
            not depend on other tensors of the batch. Honoured only where the backend allows
            value-dependent shapes (`keras_advreg.backend.ops.dynamic_shapes()`: TensorFlow,
            PyTorch); elsewhere (JAX) every row is evaluated, with the same results.
        keep_searching: For a randomized model (gradients averaged over draws), as the
            reference implementation's APGD: a misclassifying draw may be a lucky one, so
            keep attacking broken examples to the last step and keep the last iterate a
            draw misclassified, which lies deeper in the adversarial region than the first;
            return `v0` for an example never misclassified (and for one misclassified at
            `v0`, which is not attacked). No compaction, no early stop.

    Returns:
        `(v_adv, broken)`: `(batch, D)` points in the ball and the box (the adversarial point
        of a broken example; the highest-loss point of a robust one, `v0` with
        `keep_searching`; `v0` of an example misclassified at `v0`) and `(batch,)` bool.
    """
    _check_norm(norm)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"`steps` must be an integer >= 1. Received: steps={steps!r}")
    if isinstance(loss_fn, str):
        if loss_fn not in LOSSES:
            raise ValueError(
                f"`loss_fn` must be a callable or one of {tuple(LOSSES)}. "
                f"Received: loss_fn={loss_fn!r}"
            )
        loss_fn = LOSSES[loss_fn]
    keep_searching = bool(keep_searching)
    compact = bool(compact) and backend_ops.dynamic_shapes() and not keep_searching
    v0 = ops.cast(v0, "float32")
    ids = ops.cast(ids, "int32")
    eps = ops.cast(eps, "float32")
    lo = ops.cast(lo, "float32")
    hi = ops.cast(hi, "float32")
    if target_ids is not None:
        target_ids = ops.cast(target_ids, "int32")

    def evaluate(v: Any, rows: Any | None = None) -> tuple[Any, Any, Any]:
        """`(loss, logits, grad)` at `v`; with `rows`, only those rows are evaluated (the
        others are zero)."""
        labels, targets, v_rows = ids, target_ids, v
        if rows is not None:
            labels, v_rows = ops.take(ids, rows, axis=0), ops.take(v, rows, axis=0)
            targets = None if target_ids is None else ops.take(target_ids, rows, axis=0)

        def closure(z: Any) -> Any:
            return loss_fn(z, labels) if targets is None else loss_fn(z, labels, targets)

        loss, z, grad = value_and_grad(v_rows, closure)
        loss, grad = ops.cast(loss, "float32"), ops.cast(grad, "float32")
        if rows is not None:
            at = rows[:, None]
            loss = ops.scatter_update(ops.zeros_like(v[:, 0]), at, loss)
            z_full = ops.zeros_like(v[:, :1]) * ops.zeros_like(z[:1, :])  # (batch, C) zeros
            z = ops.scatter_update(ops.cast(z_full, z.dtype), at, z)
            grad = ops.scatter_update(ops.zeros_like(v), at, grad)
        return loss, z, grad

    project = _projector(v0, eps, lo, hi, norm)
    if start is not None:
        start = ops.cast(start, "float32")
        _, z_clean, _ = evaluate(v0)
        clean_wrong = _misclassified(z_clean, ids)
        if norm == "infinity":
            x = v0 + eps * start
        else:
            x = v0 + eps * start / (_l2(start) + 1e-12)
        x = project(x)
        loss, z, grad = evaluate(x)
        wrong = _misclassified(z, ids)
    else:
        x = v0
        loss, z, grad = evaluate(x)
        clean_wrong = wrong = _misclassified(z, ids)
    broken = ops.logical_or(clean_wrong, wrong)
    v_adv = ops.where(clean_wrong[:, None], v0, x)

    cps = ops.convert_to_tensor(np.asarray(checkpoints(steps), np.int32))
    rho = float(rho)
    alpha = float(alpha)

    def step(x: Any, x_prev: Any, grad: Any, eta: Any, a: Any) -> Any:
        direction = ops.sign(grad) if norm == "infinity" else grad / (_l2(grad) + 1e-12)
        z1 = project(x + eta * direction)
        return project(x + a * (z1 - x) + (1.0 - a) * (x - x_prev))

    def body(
        i, x, x_prev, grad, loss_prev, n_up, eta, x_best, grad_best, loss_best, best_at_check,
        reduced, last_check, broken, v_adv,
    ):  # fmt: skip
        a = ops.where(ops.equal(i, 0), 1.0, alpha)
        x_new = step(x, x_prev, grad, eta, a)
        rows = ops.nonzero(ops.logical_not(broken))[0] if compact else None
        loss, z, g = evaluate(x_new, rows)
        wrong = _misclassified(z, ids)
        # The first misclassifying iterate stays; searching on, the last (never for an
        # example misclassified at `v0`, which is not attacked).
        wrong = ops.logical_and(wrong, ops.logical_not(clean_wrong if keep_searching else broken))
        v_adv = ops.where(wrong[:, None], x_new, v_adv)
        broken = ops.logical_or(broken, wrong)
        n_up = n_up + ops.cast(ops.greater(loss, loss_prev), "float32")
        better = ops.greater(loss, loss_best)
        x_best = ops.where(better[:, None], x_new, x_best)
        grad_best = ops.where(better[:, None], g, grad_best)
        loss_best = ops.where(better, loss, loss_best)

        done = i + 1
        at_check = ops.any(ops.equal(cps, done))
        since = ops.cast(done - last_check, "float32")
        stalled = ops.logical_and(
            ops.logical_not(reduced), ops.greater_equal(best_at_check, loss_best)
        )
        halve = ops.logical_and(
            at_check, ops.logical_or(ops.less_equal(n_up, rho * since), stalled)
        )
        eta = ops.where(halve[:, None], 0.5 * eta, eta)
        x_next = ops.where(halve[:, None], x_best, x_new)
        g_next = ops.where(halve[:, None], grad_best, g)
        reduced = ops.where(at_check, halve, reduced)
        best_at_check = ops.where(at_check, loss_best, best_at_check)
        n_up = ops.where(at_check, ops.zeros_like(n_up), n_up)
        last_check = ops.where(at_check, done, last_check)
        return (
            done, x_next, x, g_next, loss, n_up, eta, x_best, grad_best, loss_best,
            best_at_check, reduced, last_check, broken, v_adv,
        )  # fmt: skip

    def cond(i, *state):
        if keep_searching:
            return ops.less(i, steps)
        broken = state[-2]
        return ops.logical_and(ops.less(i, steps), ops.logical_not(ops.all(broken)))

    zero = ops.convert_to_tensor(0, "int32")
    loop_vars = (
        zero,
        x,
        x,
        grad,
        loss,
        ops.zeros_like(loss),
        ops.ones_like(loss)[:, None] * (2.0 * eps),
        x,
        grad,
        loss,
        loss,
        ops.ones_like(broken),
        zero,
        broken,
        v_adv,
    )
    out = ops.while_loop(cond, body, loop_vars, maximum_iterations=steps)
    x_best, broken, v_adv = out[7], out[-2], out[-1]
    return ops.where(broken[:, None], v_adv, v0 if keep_searching else x_best), broken
