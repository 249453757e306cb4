"""The l-inf Square attack (Andriushchenko et al., 2020) in backend-agnostic `keras.ops`.

"Square Attack: a query-efficient black-box adversarial attack via random search" (ECCV
2020); the reference implementation is `autoattack/square.py` of fra31/auto-attack. A
gradient-free random search on the margin loss, batched in one `keras.ops.while_loop` over
the queries, to be called inside a compiled function (`keras_advreg.backend.ops.compile`:
`tf.function`, `jax.jit`, or eagerly on PyTorch). Points are flat `(batch, D)` features laid
out as channels-last images of `image_shape`.

Every random number is drawn on the host by `draw` (NumPy) and passed in as float32 arrays,
so that the TensorFlow, JAX and PyTorch backends search along the same squares.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from keras import ops

from keras_advreg.attacks.heads import margin as logit_margin
from keras_advreg.backend import ops as backend_ops

__all__ = ["draw", "size_schedule", "square_linf"]


def _hwc(image_shape: Sequence[int]) -> tuple[int, int, int]:
    """`(H, W, C)` from `(H, W, C)` or `(H, W)` (one channel)."""
    dims = tuple(int(d) for d in image_shape)
    if len(dims) == 2:
        return (*dims, 1)
    if len(dims) != 3:
        raise ValueError(f"`image_shape` must be (H, W) or (H, W, C). Received: {image_shape!r}")
    return dims


def _check_queries(queries: Any) -> int:
    if isinstance(queries, bool) or not isinstance(queries, (int, np.integer)) or queries < 0:
        raise ValueError(f"`queries` must be an integer >= 0. Received: queries={queries!r}")
    return int(queries)


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


def draw(
    rng: np.random.Generator, n: int, image_shape: Sequence[int], queries: int
) -> dict[str, np.ndarray]:
    """The random numbers of one run of `square_linf` on `n` examples, drawn on the host.

    Args:
        rng: The NumPy generator to draw from.
        n: int >= 0. Number of examples.
        image_shape: `(H, W, C)`, or `(H, W)` for one channel.
        queries: int >= 0. Iterations of the search.

    Returns:
        `{"stripes": (n, W, C), "draws": (n, queries, 2 + C)}` float32 arrays uniform in
        `[0, 1)`: the sign of each column and channel of the initial stripes, and per
        example and iteration the top and left position fractions of the square and one
        sign per channel. The examples are the first axis of both (as every attack's
        draws: the runner selects and pads rows).
    """
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"`rng` must be a `np.random.Generator`. Received: rng={rng!r}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"`n` must be an integer >= 0. Received: n={n!r}")
    queries = _check_queries(queries)
    _, w, c = _hwc(image_shape)
    return {
        "stripes": rng.random((int(n), w, c), dtype=np.float32),
        "draws": rng.random((int(n), queries, 2 + c), dtype=np.float32),
    }


def _margin(z: Any, ids: Any) -> tuple[Any, Any]:
    """`z_y - max_{i != y} z_i` and whether `argmax(z) != y`."""
    z = ops.cast(z, "float32")
    wrong = ops.not_equal(ops.cast(ops.argmax(z, axis=1), "int32"), ids)
    return logit_margin(z, ids), wrong


def _check_shape(name: str, value: Any, expected: tuple) -> None:
    shape = tuple(value.shape)
    if len(shape) != len(expected) or any(
        e is not None and s is not None and int(s) != e for s, e in zip(shape, expected)
    ):
        wanted = ", ".join("batch" if e is None else str(e) for e in expected)
        raise ValueError(f"`{name}` must have shape ({wanted}). Received: {shape}")


def square_linf(
    logits_fn: Callable[[Any], Any],
    v0: Any,
    ids: Any,
    eps: Any,
    lo: Any,
    hi: Any,
    *,
    stripes: Any,
    draws: Any,
    image_shape: Sequence[int],
    queries: int,
    p_init: float = 0.8,
    compact: bool = False,
) -> tuple[Any, Any]:
    """The l-inf Square attack on a batch of flat points (`keras.ops`; compile the caller).

    Starts from vertical stripes at the vertices of the ball, then each iteration sets one
    random square (a side from `size_schedule`, one random sign per channel, drawn per
    example; unlike the reference, a square may also touch the last row and column) to a
    vertex and keeps it where the margin `z_y - max_{i != y} z_i` decreases. An
    example is frozen once misclassified, and the loop stops when all are broken. Assumes `v0`
    lies in `[lo, hi]`. The same `stripes` and `draws` give the same result on every backend
    (up to the model's own rounding).

    Args:
        logits_fn: `(v) -> (batch, C)` logits of `(batch, D)` points.
        v0: `(batch, D)` float32 clean points, `D = H * W * C` channels-last.
        ids: `(batch,)` true class ids.
        eps: scalar float32 radius (a run-time value).
        lo: lower bound of the box, broadcastable to `(batch, D)` (`-inf`: none).
        hi: upper bound of the box, broadcastable to `(batch, D)` (`inf`: none).
        stripes: `(batch, W, C)` float32 uniform in `[0, 1)` (`draw`): the initial sign of
            each column and channel (`+` below 0.5).
        draws: `(batch, queries, 2 + C)` float32 uniform in `[0, 1)` (`draw`):
            `draws[:, i]` holds iteration `i`'s top and left position fractions and one sign
            per channel.
        image_shape: `(H, W, C)`, or `(H, W)` for one channel.
        queries: int >= 0. Iterations after the initial query (the reference's `n_queries`).
        p_init: Initial fraction of pixels in a square.
        compact: Whether to query only the examples not yet broken (faster once many are);
            `logits_fn` then gets subsets of the rows, so it must not depend on other tensors
            of the batch. Honoured only where the backend allows data-dependent shapes
            (`keras_advreg.backend.ops.dynamic_shapes()`: TensorFlow, PyTorch); ignored on JAX.

    Returns:
        `(v_adv, broken)`: `(batch, D)` points in the ball and the box (the misclassified
        point of a broken example, the lowest-margin point of a robust one, `v0` of an example
        misclassified at `v0`) and `(batch,)` bool.
    """
    queries = _check_queries(queries)
    h, w, c = _hwc(image_shape)
    d = h * w * c
    v0 = ops.cast(v0, "float32")
    _check_shape("v0", v0, (None, d))
    stripes = ops.cast(stripes, "float32")
    _check_shape("stripes", stripes, (None, w, c))
    draws = ops.cast(draws, "float32")
    _check_shape("draws", draws, (None, queries, 2 + c))
    if v0.shape[0] == 0:  # a static empty batch (PyTorch's max refuses empty tensors)
        return v0, ops.zeros((0,), "bool")
    compact = bool(compact) and backend_ops.dynamic_shapes()
    ids = ops.cast(ids, "int32")
    eps = ops.cast(eps, "float32")
    lo = ops.cast(lo, "float32")
    hi = ops.cast(hi, "float32")
    # The two vertices of the ball in each coordinate, clipped to the box, as images.
    v_plus = ops.reshape(ops.minimum(ops.maximum(v0 + eps, lo), hi), (-1, h, w, c))
    v_minus = ops.reshape(ops.minimum(ops.maximum(v0 - eps, lo), hi), (-1, h, w, c))

    _, clean_wrong = _margin(logits_fn(v0), ids)
    x = ops.reshape(ops.where((stripes < 0.5)[:, None, :, :], v_plus, v_minus), (-1, d))
    margin, wrong = _margin(logits_fn(x), ids)
    broken = ops.logical_or(clean_wrong, wrong)
    x = ops.where(clean_wrong[:, None], v0, x)
    if queries == 0:
        return x, broken
    sides = ops.convert_to_tensor(np.asarray(size_schedule(queries, (h, w, c), p_init), "int32"))
    rows = ops.arange(h, dtype="int32")[None, :]
    cols = ops.arange(w, dtype="int32")[None, :]

    def body(i, x, margin, broken):
        s = ops.take(sides, i)
        u = ops.take(draws, i, axis=1)  # (batch, 2 + C)
        top = ops.minimum(ops.cast(u[:, 0] * ops.cast(h - s + 1, "float32"), "int32"), h - s)
        left = ops.minimum(ops.cast(u[:, 1] * ops.cast(w - s + 1, "float32"), "int32"), w - s)
        in_rows = ops.logical_and(rows >= top[:, None], rows < top[:, None] + s)
        in_cols = ops.logical_and(cols >= left[:, None], cols < left[:, None] + s)
        window = ops.logical_and(in_rows[:, :, None, None], in_cols[:, None, :, None])
        vertex = ops.where((u[:, 2:] < 0.5)[:, None, None, :], v_plus, v_minus)
        candidate = ops.reshape(ops.where(window, vertex, ops.reshape(x, (-1, h, w, c))), (-1, d))
        active = ops.logical_not(broken)
        if compact:
            # Query the active rows only; map their results back by their rank among them.
            at = ops.nonzero(active)[0]
            m, wrong = _margin(logits_fn(ops.take(candidate, at, axis=0)), ops.take(ids, at))
            rank = ops.maximum(ops.cumsum(ops.cast(active, "int32")) - 1, 0)
            m = ops.take(m, rank)
            wrong = ops.take(wrong, rank)
        else:
            m, wrong = _margin(logits_fn(candidate), ids)
        wrong = ops.logical_and(active, wrong)
        accept = ops.logical_and(active, ops.logical_or(m < margin, wrong))
        x = ops.where(accept[:, None], candidate, x)
        margin = ops.where(accept, m, margin)
        broken = ops.logical_or(broken, wrong)
        return i + 1, x, margin, broken

    def cond(i, x, margin, broken):
        return ops.logical_and(i < queries, ops.logical_not(ops.all(broken)))

    start = ops.convert_to_tensor(0, "int32")
    _, x, _, broken = ops.while_loop(
        cond, body, (start, x, margin, broken), maximum_iterations=queries
    )
    return x, broken
