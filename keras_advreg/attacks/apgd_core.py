"""APGD (Croce & Hein, 2020) in pure TensorFlow: its losses, step-size schedule and one run.

"Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free
attacks" (ICML 2020); the reference implementation is `autoattack/autopgd_base.py` of
fra31/auto-attack. Everything here is graph-mode TensorFlow (one `tf.while_loop` over the
steps), to be called inside a `tf.function`. Points are flat: `(batch, D)` features; the
caller owns the model, the reshaping to its input and the restarts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf

from keras_advreg.attacks.norms import seed_pair

__all__ = [
    "LOSSES",
    "NORMS",
    "apgd",
    "checkpoints",
    "cross_entropy",
    "dlr",
    "seed_pair",
    "targeted_dlr",
]

NORMS = ("infinity", "l2")

ClosureFn = Callable[[tf.Tensor], tf.Tensor]
ValueAndGradFn = Callable[[tf.Tensor, ClosureFn], tuple[tf.Tensor, tf.Tensor, tf.Tensor]]

_ALG = "philox"  # fixed: "auto_select" may draw differently on other devices


# --------------------------------------------------------------------------- losses
def _true_mask(z: tf.Tensor, ids: tf.Tensor) -> tf.Tensor:
    return tf.equal(tf.range(tf.shape(z)[1])[None, :], ids[:, None])


def _true_logit(z: tf.Tensor, ids: tf.Tensor) -> tf.Tensor:
    return tf.gather(z, ids, axis=1, batch_dims=1)


def _max_other(z: tf.Tensor, ids: tf.Tensor) -> tf.Tensor:
    return tf.reduce_max(tf.where(_true_mask(z, ids), tf.constant(-float("inf"), z.dtype), z), 1)


def _sorted_logits(z: tf.Tensor, k: int) -> tf.Tensor:
    """The `k` largest logits, decreasing; with fewer classes the smallest one is repeated."""
    classes = z.shape[-1]
    kk = k if classes is None else min(k, classes)
    top = tf.math.top_k(z, k=kk, sorted=True).values
    if kk < k:
        top = tf.concat([top, tf.repeat(top[:, -1:], k - kk, axis=1)], axis=1)
    return top


def _prepare(z: Any, ids: Any) -> tuple[tf.Tensor, tf.Tensor]:
    return tf.convert_to_tensor(z), tf.cast(ids, tf.int32)


def cross_entropy(z: tf.Tensor, ids: tf.Tensor) -> tf.Tensor:
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
    shifted = z - _true_logit(z, ids)[:, None]
    others = tf.where(_true_mask(z, ids), tf.constant(-float("inf"), z.dtype), shifted)
    return tf.nn.softplus(tf.reduce_logsumexp(others, axis=1))


def dlr(z: tf.Tensor, ids: tf.Tensor) -> tf.Tensor:
    """Difference-of-logits-ratio loss, `-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12)`.

    Args:
        z: `(batch, C)` logits (`pi` sorts them decreasingly).
        ids: `(batch,)` true class ids.

    Returns:
        `(batch,)` losses (to maximise).
    """
    z, ids = _prepare(z, ids)
    top = _sorted_logits(z, 3)
    return -(_true_logit(z, ids) - _max_other(z, ids)) / (top[:, 0] - top[:, 2] + 1e-12)


def targeted_dlr(z: tf.Tensor, ids: tf.Tensor, target_ids: tf.Tensor) -> tf.Tensor:
    """Targeted DLR loss, `-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)`.

    Args:
        z: `(batch, C)` logits (`pi` sorts them decreasingly).
        ids: `(batch,)` true class ids.
        target_ids: `(batch,)` target class ids.

    Returns:
        `(batch,)` losses (to maximise).
    """
    z, ids = _prepare(z, ids)
    target_ids = tf.cast(target_ids, tf.int32)
    top = _sorted_logits(z, 4)
    margin = _true_logit(z, ids) - _true_logit(z, target_ids)
    return -margin / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


LOSSES: dict[str, Callable[..., tf.Tensor]] = {
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


# --------------------------------------------------------------------------- helpers
def _l2(t: tf.Tensor) -> tf.Tensor:
    return tf.sqrt(tf.reduce_sum(tf.square(t), axis=1, keepdims=True))


def _projector(v0: tf.Tensor, eps: tf.Tensor, lo: tf.Tensor, hi: tf.Tensor, norm: str):
    """Projection onto the eps-ball around `v0`, then onto the box `[lo, hi]`."""
    if norm == "infinity":
        low, high = tf.maximum(v0 - eps, lo), tf.minimum(v0 + eps, hi)

        def project(v: tf.Tensor) -> tf.Tensor:
            return tf.minimum(tf.maximum(v, low), high)

    else:

        def project(v: tf.Tensor) -> tf.Tensor:
            d = v - v0
            n = _l2(d)
            d = d / (n + 1e-12) * tf.minimum(eps, n)
            return tf.minimum(tf.maximum(v0 + d, lo), hi)

    return project


def _misclassified(z: tf.Tensor, ids: tf.Tensor) -> tf.Tensor:
    return tf.not_equal(tf.argmax(z, axis=1, output_type=tf.int32), ids)


# --------------------------------------------------------------------------- the attack
def apgd(
    value_and_grad: ValueAndGradFn,
    v0: tf.Tensor,
    ids: tf.Tensor,
    eps: tf.Tensor,
    lo: Any,
    hi: Any,
    *,
    norm: str,
    steps: int,
    loss_fn: Callable[..., tf.Tensor] | str,
    rho: float = 0.75,
    alpha: float = 0.75,
    random_start: bool = True,
    seed: Any = None,
    target_ids: tf.Tensor | None = None,
    compact: bool = False,
) -> tuple[tf.Tensor, tf.Tensor]:
    """One run of APGD on a batch of flat points (graph mode; wrap it in a `tf.function`).

    Step `2 * eps` halved at the `checkpoints(steps)` (restarting from the best point) when
    the loss rose in at most `rho` of the steps since the last checkpoint, or the step was not
    halved there and the best loss has not improved since; momentum `alpha` (1 on the first
    step). An example is broken by the first iterate that misclassifies it, which is kept;
    it is then frozen, and the loop stops once none is left. Assumes `v0` lies in `[lo, hi]`.

    Args:
        value_and_grad: `(v, closure) -> (loss, logits, grad)`: `closure(logits)` per example,
            the `(batch, C)` logits at `v`, and the gradient of `sum(loss)` w.r.t. `v`.
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
        random_start: Whether to start from a random point of the ball (uniform for l-inf,
            on the sphere for l2) clipped to the box, instead of `v0`.
        seed: None, an int, or a `[]`/`[2]` int tensor: the same seed, the same start.
        target_ids: `(batch,)` target class ids passed to `loss_fn`, or None.
        compact: Whether to evaluate only the examples not yet broken (faster once many are):
            `value_and_grad` then gets subsets of the rows with a closure for them, so it must
            not depend on other tensors of the batch.

    Returns:
        `(v_adv, broken)`: `(batch, D)` points in the ball and the box (the adversarial point
        of a broken example; the highest-loss point of a robust one; `v0` of an example
        misclassified at `v0`) and `(batch,)` bool.
    """
    if norm not in NORMS:
        raise ValueError(f"`norm` must be one of {NORMS}. Received: norm={norm!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"`steps` must be an integer >= 1. Received: steps={steps!r}")
    if isinstance(loss_fn, str):
        loss_fn = LOSSES[loss_fn]
    v0 = tf.cast(v0, tf.float32)
    ids = tf.cast(ids, tf.int32)
    eps = tf.cast(eps, tf.float32)
    lo = tf.cast(lo, tf.float32)
    hi = tf.cast(hi, tf.float32)
    if target_ids is not None:
        target_ids = tf.cast(target_ids, tf.int32)

    def evaluate(v: tf.Tensor, rows: tf.Tensor | None = None):
        """`(loss, logits, grad)` at `v`; with `rows`, only those rows are evaluated (the
        others are zero)."""
        labels, targets, v_rows = ids, target_ids, v
        if rows is not None:
            labels, v_rows = tf.gather(ids, rows), tf.gather(v, rows)
            targets = None if target_ids is None else tf.gather(target_ids, rows)

        def closure(z: tf.Tensor) -> tf.Tensor:
            return loss_fn(z, labels) if targets is None else loss_fn(z, labels, targets)

        loss, z, grad = value_and_grad(v_rows, closure)
        loss, grad = tf.cast(loss, tf.float32), tf.cast(grad, tf.float32)
        if rows is not None:
            at, n = rows[:, None], tf.shape(v, out_type=tf.int64)[0]
            loss = tf.scatter_nd(at, loss, [n])
            z = tf.scatter_nd(at, z, tf.stack([n, tf.shape(z, out_type=tf.int64)[1]]))
            grad = tf.scatter_nd(at, grad, tf.shape(v, out_type=tf.int64))
        return loss, z, grad

    project = _projector(v0, eps, lo, hi, norm)
    batch = tf.shape(v0)[0]
    if random_start:
        _, z_clean, _ = evaluate(v0)
        clean_wrong = _misclassified(z_clean, ids)
        if norm == "infinity":
            u = tf.random.stateless_uniform(tf.shape(v0), seed_pair(seed), -1.0, 1.0, alg=_ALG)
            x = v0 + eps * u
        else:
            t = tf.random.stateless_normal(tf.shape(v0), seed_pair(seed), alg=_ALG)
            x = v0 + eps * t / (_l2(t) + 1e-12)
        x = project(x)
        loss, z, grad = evaluate(x)
        wrong = _misclassified(z, ids)
    else:
        x = v0
        loss, z, grad = evaluate(x)
        clean_wrong = wrong = _misclassified(z, ids)
    broken = clean_wrong | wrong
    v_adv = tf.where(clean_wrong[:, None], v0, x)

    cps = tf.constant(checkpoints(steps), tf.int32)
    rho = tf.constant(rho, tf.float32)
    alpha = tf.constant(alpha, tf.float32)

    def step(x: tf.Tensor, x_prev: tf.Tensor, grad: tf.Tensor, eta: tf.Tensor, a: tf.Tensor):
        direction = tf.sign(grad) if norm == "infinity" else grad / (_l2(grad) + 1e-12)
        z1 = project(x + eta * direction)
        return project(x + a * (z1 - x) + (1.0 - a) * (x - x_prev))

    def body(
        i, x, x_prev, grad, loss_prev, n_up, eta, x_best, grad_best, loss_best, best_at_check,
        reduced, last_check, broken, v_adv,
    ):  # fmt: skip
        a = tf.where(tf.equal(i, 0), tf.constant(1.0), alpha)
        x_new = step(x, x_prev, grad, eta, a)
        loss, z, g = evaluate(x_new, tf.where(~broken)[:, 0] if compact else None)
        wrong = _misclassified(z, ids) & ~broken
        v_adv = tf.where(wrong[:, None], x_new, v_adv)
        broken = broken | wrong
        n_up = n_up + tf.cast(loss > loss_prev, tf.float32)
        better = loss > loss_best
        x_best = tf.where(better[:, None], x_new, x_best)
        grad_best = tf.where(better[:, None], g, grad_best)
        loss_best = tf.where(better, loss, loss_best)

        done = i + 1
        at_check = tf.reduce_any(tf.equal(done, cps))
        since = tf.cast(done - last_check, tf.float32)
        halve = at_check & ((n_up <= rho * since) | (~reduced & (best_at_check >= loss_best)))
        eta = tf.where(halve[:, None], 0.5 * eta, eta)
        x_next = tf.where(halve[:, None], x_best, x_new)
        g_next = tf.where(halve[:, None], grad_best, g)
        reduced = tf.where(at_check, halve, reduced)
        best_at_check = tf.where(at_check, loss_best, best_at_check)
        n_up = tf.where(at_check, tf.zeros_like(n_up), n_up)
        last_check = tf.where(at_check, done, last_check)
        return (
            done, x_next, x, g_next, loss, n_up, eta, x_best, grad_best, loss_best,
            best_at_check, reduced, last_check, broken, v_adv,
        )  # fmt: skip

    def cond(i, *state):
        broken = state[-2]
        return (i < steps) & ~tf.reduce_all(broken)

    loop_vars = (
        tf.constant(0, tf.int32),
        x,
        x,
        grad,
        loss,
        tf.zeros_like(loss),
        tf.fill([batch, 1], 2.0 * eps),
        x,
        grad,
        loss,
        loss,
        tf.ones_like(broken),
        tf.constant(0, tf.int32),
        broken,
        v_adv,
    )
    out = tf.while_loop(cond, body, loop_vars, maximum_iterations=steps)
    x_best, broken, v_adv = out[7], out[-2], out[-1]
    return tf.where(broken[:, None], v_adv, x_best), broken
