"""Runs an attack on one batch: several radii, restarts and cascades, on robust points only.

The first stage runs on the whole batch for every radius in one compiled call (FGSM shares
one gradient between radii); each further restart or cascade member runs only on the
examples still classified correctly at that radius. An example is broken by the first
stage that finds a misclassified point in the ball, and that point is kept.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import numpy as np

from keras_advreg.attacks.problem import get_compiled, get_problem
from keras_advreg.backend import ops as backend_ops

_INT32 = 2**31 - 1
_SMALLEST_BUCKET = 8


@dataclasses.dataclass
class BatchResult:
    """What an attack did to one batch (numpy values)."""

    ids: np.ndarray  # (n,) true class ids
    clean_predictions: np.ndarray  # (n,)
    zero_gradient: np.ndarray  # (n,) bool: all-zero input gradient at the clean point
    adversarial: np.ndarray  # (k, n, D) flat adversarial points per radius
    adversarial_predictions: np.ndarray  # (k, n)
    broken_by: list  # per radius: {stage label: examples it broke}

    @property
    def robust(self) -> np.ndarray:
        """(k, n) bool: correctly classified at the clean point and every adversarial one."""
        clean = self.clean_predictions == self.ids
        return (self.adversarial_predictions == self.ids[None, :]) & clean[None, :]


def rng_for(base: int, batch: int, stage: int, restart: int, radius: int) -> np.random.Generator:
    """The random draws of one compiled call: a pure function of where it runs."""
    return np.random.default_rng([base % _INT32, batch, stage, restart, radius])


def _bucket(n: int) -> int:
    """The padded number of rows of a call on a backend that compiles per shape (JAX): the
    next power of two, so that subsets of any size share a few compiled functions."""
    return max(_SMALLEST_BUCKET, 1 << max(n - 1, 0).bit_length())


def _rows(tree: Any, index: np.ndarray) -> Any:
    """The rows `index` of every array or tensor of a nest."""

    def take(a):
        if isinstance(a, np.ndarray):
            return a[index]
        return keras.ops.take(a, keras.ops.convert_to_tensor(index), axis=0)

    return keras.tree.map_structure(take, tree)


def _call(compiled: Any, x: Any, y: Any, epsilons: list, noise: list, variant: int) -> dict:
    """`compiled.run` on `n` rows; on a backend without dynamic shapes, padded to a bucket
    (copies of the first row, dropped from the results; every row is attacked on its own,
    with its own draws, so the real rows' results do not change, unless a user's `loss`
    reduces over the batch: then the copies weigh in its mean, as other batch sizes would)."""
    n = int(np.shape(keras.tree.flatten(y)[0])[0])
    padded = n if backend_ops.dynamic_shapes() else _bucket(n)
    if padded != n:
        index = np.concatenate([np.arange(n), np.zeros(padded - n, np.int64)])
        x, y, noise = _rows((x, y), index) + (_rows(noise, index),)
    out = compiled.run(x, y, epsilons, noise, variant)
    if padded == n:
        return out
    return {k: v[:, :n] if k.startswith("adversarial") else v[:n] for k, v in out.items()}


def prepare(model: Any, attack: Any, x: Any, y: Any, loss: Any) -> tuple[Any, int]:
    """The problem of a first batch, checked against every stage (before any work), and the
    base seed of this evaluation (the attack's, else one from NumPy's global state)."""
    problem = get_problem(model, x, y, loss, attack.clip_value_min, attack.clip_value_max)
    for stage in attack.stages(problem):
        stage.check_problem(problem)
    seed = attack.seed if attack.seed is not None else int(np.random.randint(_INT32))
    return problem, seed


def attack_batch(
    model: Any,
    attack: Any,
    problem: Any,
    x: Any,
    y: Any,
    epsilons: tuple[float, ...],
    seed: int,
    batch_index: int,
    progress: Any = None,
) -> BatchResult:
    """Attacks one batch with every stage of `attack` (see the module docstring).

    `progress`, when given, is called with the share of the batch's work done (a float in
    `(0, 1]`, weighted by `stage_cost`) after each stage and restart.
    """
    stages = attack.stages(problem)
    costs = [stage_cost(stage) for stage in stages for _ in range(stage.restarts)]
    total, done = float(sum(costs)), 0.0
    runs = iter(costs)

    def advance():
        nonlocal done
        done += next(runs)
        if progress is not None:
            progress(min(done / total, 1.0))

    k = len(epsilons)
    if backend_ops.name() != "tensorflow":  # arrays in, so that rows can be taken and padded
        x, y = keras.tree.map_structure(keras.ops.convert_to_numpy, (x, y))
    n = int(np.shape(keras.tree.flatten(y)[0])[0])
    first = get_compiled(model, stages[0], problem, x, y, k)
    noise = [stages[0].draw(problem, n, rng_for(seed, batch_index, 0, 0, i)) for i in range(k)]
    out = _call(first, x, y, list(epsilons), noise, stages[0].runtime_value())
    result = BatchResult(
        ids=out["ids"],
        clean_predictions=out["clean_predictions"],
        zero_gradient=out["zero_gradient"],
        adversarial=np.array(out["adversarial"]),
        adversarial_predictions=np.array(out["adversarial_predictions"]),
        broken_by=[{s.label: 0 for s in stages} for _ in epsilons],
    )
    clean = result.clean_predictions == result.ids
    robust = result.robust
    for i in range(k):
        result.broken_by[i][stages[0].label] += int(np.sum(clean & ~robust[i]))
    advance()
    for s, stage in enumerate(stages):
        for restart in range(1 if s == 0 else 0, stage.restarts):
            for i, eps in enumerate(epsilons):
                index = np.flatnonzero(result.robust[i])
                if index.size == 0:
                    continue
                xs, ys = _rows((x, y), index)
                compiled = get_compiled(model, stage, problem, xs, ys, 1)
                rng = rng_for(seed, batch_index, s, restart, i)
                noise = [stage.draw(problem, index.size, rng)]
                o = _call(compiled, xs, ys, [eps], noise, stage.runtime_value())
                predictions = o["adversarial_predictions"][0]
                newly = predictions != result.ids[index]
                hit = index[newly]
                result.adversarial[i, hit] = o["adversarial"][0][newly]
                result.adversarial_predictions[i, hit] = predictions[newly]
                result.broken_by[i][stage.label] += int(newly.sum())
            advance()
    return result


def stage_cost(stage: Any) -> float:
    """A stage's rough cost in forward passes per example, to weigh progress within a batch:
    `steps` forward and backward passes (~3 forward) per draw for a gradient attack, one
    forward pass per query for a gradient-free one."""
    if not stage.uses_gradients:
        return float(getattr(stage, "queries", 1))
    return 3.0 * getattr(stage, "steps", 1) * getattr(stage, "eot_iter", 1)


__all__ = ["BatchResult", "attack_batch", "prepare", "rng_for", "stage_cost"]
