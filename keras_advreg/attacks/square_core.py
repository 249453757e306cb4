"""The l-inf Square attack (Andriushchenko et al., 2020) in pure TensorFlow.

"Square Attack: a query-efficient black-box adversarial attack via random search" (ECCV
2020); the reference implementation is `autoattack/square.py` of fra31/auto-attack. A
gradient-free random search on the margin loss, batched in one `tf.while_loop` over the
queries, to be called inside a `tf.function`. Points are flat `(batch, D)` features laid out
as channels-last images of `image_shape`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import tensorflow as tf

from keras_advreg.attacks.norms import seed_pair

__all__ = ["size_schedule", "square_linf"]

_ALG = "philox"  # fixed: "auto_select" may draw differently on other devices


def _hwc(image_shape: Sequence[int]) -> tuple[int, int, int]:
    """`(H, W, C)` from `(H, W, C)` or `(H, W)` (one channel)."""
    dims = tuple(int(d) for d in image_shape)
    if len(dims) == 2:
        return (*dims, 1)
    if len(dims) != 3:
        raise ValueError(f"`image_shape` must be (H, W) or (H, W, C). Received: {image_shape!r}")
    return dims


def _p_selection(it: int, p_init: float, queries: int) -> float:
    """The reference's piecewise-constant schedule of `p`, with the iteration rescaled."""
    it = int(it / queries * 10000)
    for bound, divisor in (
        (8000, 512), (6000, 256), (4000, 128), (2000, 64), (1000, 32), (500, 16), (200, 8),
        (50, 4), (10, 2),
    ):  # fmt: skip
        if it > bound:
            return p_init / divisor
    return p_init


def size_schedule(queries: int, image_shape: Sequence[int], p_init: float) -> list[int]:
    """Side of the square tried at each iteration (the reference's rounding).

    Args:
        queries: Number of iterations.
        image_shape: `(H, W, C)` or `(H, W)`.
        p_init: Initial fraction of pixels changed.

    Returns:
        `queries` sides in `[1, min(H, W)]`.
    """
    h, w, _ = _hwc(image_shape)
    sides = []
    for i in range(queries):
        s = max(int(round(math.sqrt(_p_selection(i, p_init, queries) * h * w))), 1)
        sides.append(min(s, h, w))
    return sides


def _margin(z: tf.Tensor, ids: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """`z_y - max_{i != y} z_i` and whether `argmax(z) != y`."""
    z = tf.cast(z, tf.float32)
    true = tf.equal(tf.range(tf.shape(z)[1])[None, :], ids[:, None])
    z_y = tf.gather(z, ids, axis=1, batch_dims=1)
    other = tf.reduce_max(tf.where(true, tf.constant(-float("inf")), z), axis=1)
    wrong = tf.not_equal(tf.argmax(z, axis=1, output_type=tf.int32), ids)
    return z_y - other, wrong


def square_linf(
    logits_fn: Callable[[tf.Tensor], tf.Tensor],
    v0: tf.Tensor,
    ids: tf.Tensor,
    eps: tf.Tensor,
    lo: Any,
    hi: Any,
    *,
    image_shape: Sequence[int],
    queries: int,
    p_init: float = 0.8,
    seed: Any = None,
    compact: bool = False,
) -> tuple[tf.Tensor, tf.Tensor]:
    """The l-inf Square attack on a batch of flat points (graph mode; wrap it in a `tf.function`).

    Starts from vertical stripes at the vertices of the ball, then each iteration sets one
    random square (a side from `size_schedule`, one random sign per channel, drawn per
    example; unlike the reference, a square may also touch the last row and column) to a
    vertex and keeps it where the margin `z_y - max_{i != y} z_i` decreases. An
    example is frozen once misclassified, and the loop stops when all are broken. Assumes `v0`
    lies in `[lo, hi]`.

    Args:
        logits_fn: `(v) -> (batch, C)` logits of `(batch, D)` points.
        v0: `(batch, D)` float32 clean points, `D = H * W * C` channels-last.
        ids: `(batch,)` true class ids.
        eps: scalar float32 radius (a run-time value).
        lo: lower bound of the box, broadcastable to `(batch, D)` (`-inf`: none).
        hi: upper bound of the box, broadcastable to `(batch, D)` (`inf`: none).
        image_shape: `(H, W, C)`, or `(H, W)` for one channel.
        queries: int >= 0. Iterations after the initial query (the reference's `n_queries`).
        p_init: Initial fraction of pixels in a square.
        seed: None, an int, or a `[]`/`[2]` int tensor: the same seed, the same result.
        compact: Whether to query only the examples not yet broken (faster once many are);
            `logits_fn` then gets subsets of the rows, so it must not depend on other tensors
            of the batch.

    Returns:
        `(v_adv, broken)`: `(batch, D)` points in the ball and the box (the misclassified
        point of a broken example, the lowest-margin point of a robust one, `v0` of an example
        misclassified at `v0`) and `(batch,)` bool.
    """
    if isinstance(queries, bool) or not isinstance(queries, int) or queries < 0:
        raise ValueError(f"`queries` must be an integer >= 0. Received: queries={queries!r}")
    h, w, c = _hwc(image_shape)
    v0 = tf.cast(v0, tf.float32)
    if v0.shape.rank != 2 or v0.shape[1] not in (None, h * w * c):
        raise ValueError(
            f"`v0` must have shape (batch, {h * w * c}) for image_shape={image_shape}. "
            f"Received: {v0.shape}"
        )
    ids = tf.cast(ids, tf.int32)
    eps = tf.cast(eps, tf.float32)
    lo = tf.cast(lo, tf.float32)
    hi = tf.cast(hi, tf.float32)
    seed = seed_pair(seed)
    batch = tf.shape(v0)[0]
    full = tf.stack([batch, h, w, c])
    # The two vertices of the ball in each coordinate, clipped to the box.
    v_plus = tf.minimum(tf.maximum(v0 + eps, lo), hi)
    v_minus = tf.minimum(tf.maximum(v0 - eps, lo), hi)

    def flat(t: tf.Tensor) -> tf.Tensor:
        return tf.reshape(t, [tf.shape(t)[0], h * w * c])

    _, clean_wrong = _margin(logits_fn(v0), ids)
    stripes = tf.random.stateless_uniform([batch, 1, w, c], seed, alg=_ALG) < 0.5
    stripes = flat(tf.broadcast_to(stripes, full))
    x = tf.where(stripes, v_plus, v_minus)
    margin, wrong = _margin(logits_fn(x), ids)
    broken = clean_wrong | wrong
    x = tf.where(clean_wrong[:, None], v0, x)
    sides = tf.constant(size_schedule(queries, (h, w, c), p_init) or [1], tf.int32)

    def body(i, x, margin, broken):
        s = sides[i]
        # Draw for the whole batch so that an example's draws do not depend on the others.
        key = tf.random.experimental.stateless_fold_in(seed, tf.cast(i, tf.int64), alg=_ALG)
        u = tf.random.stateless_uniform([batch, 2 + c], key, alg=_ALG)
        top = tf.minimum(tf.cast(u[:, 0] * tf.cast(h - s + 1, tf.float32), tf.int32), h - s)
        left = tf.minimum(tf.cast(u[:, 1] * tf.cast(w - s + 1, tf.float32), tf.int32), w - s)
        rows, cols = tf.range(h)[None, :], tf.range(w)[None, :]
        in_rows = (rows >= top[:, None]) & (rows < top[:, None] + s)
        in_cols = (cols >= left[:, None]) & (cols < left[:, None] + s)
        window = flat(tf.broadcast_to(in_rows[:, :, None, None] & in_cols[:, None, :, None], full))
        plus = flat(tf.broadcast_to(u[:, None, None, 2:] < 0.5, full))
        candidate = tf.where(window, tf.where(plus, v_plus, v_minus), x)
        if compact:
            at = tf.where(~broken)
            m, wrong = _margin(logits_fn(tf.gather_nd(candidate, at)), tf.gather_nd(ids, at))
            m = tf.scatter_nd(at, m, [tf.cast(batch, tf.int64)])
            wrong = tf.scatter_nd(at, tf.cast(wrong, tf.int32), [tf.cast(batch, tf.int64)]) > 0
        else:
            m, wrong = _margin(logits_fn(candidate), ids)
        active = ~broken
        accept = active & ((m < margin) | wrong)
        x = tf.where(accept[:, None], candidate, x)
        margin = tf.where(accept, m, margin)
        broken = broken | (active & wrong)
        return i + 1, x, margin, broken

    def cond(i, x, margin, broken):
        return (i < queries) & ~tf.reduce_all(broken)

    _, x, _, broken = tf.while_loop(
        cond, body, (tf.constant(0, tf.int32), x, margin, broken), maximum_iterations=queries
    )
    return x, broken
