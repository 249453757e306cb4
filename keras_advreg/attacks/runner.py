"""Runs an attack on one batch: several radii, restarts and cascades, on robust points only.

The first stage runs on the whole batch for every radius in one compiled call (FGSM shares
one gradient between radii); each further restart or cascade member runs only on the
examples still classified correctly at that radius. An example is broken by the first
stage that finds a misclassified point in the ball, and that point is kept.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import tensorflow as tf

from keras_advreg.attacks.problem import get_compiled, get_problem

_INT32 = 2**31 - 1


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


def seed_for(base: int, batch: int, stage: int, restart: int, radius: int) -> tf.Tensor:
    """The stateless seed of one compiled call: a pure function of where it runs."""
    mixed = (batch * 7919 + stage * 104729 + restart * 1299709 + radius * 15485863) % _INT32
    return tf.constant([base % _INT32, mixed], tf.int32)


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
) -> BatchResult:
    """Attacks one batch with every stage of `attack` (see the module docstring)."""
    stages = attack.stages(problem)
    k = len(epsilons)
    first = get_compiled(model, stages[0], problem, x, y, k)
    out = first.run(
        x,
        y,
        tf.constant(epsilons, tf.float32),
        seed_for(seed, batch_index, 0, 0, 0),
        tf.constant(stages[0].runtime_value(), tf.int32),
    )
    result = BatchResult(
        ids=out["ids"].numpy(),
        clean_predictions=out["clean_predictions"].numpy(),
        zero_gradient=out["zero_gradient"].numpy(),
        adversarial=out["adversarial"].numpy(),
        adversarial_predictions=out["adversarial_predictions"].numpy(),
        broken_by=[{s.label: 0 for s in stages} for _ in epsilons],
    )
    clean = result.clean_predictions == result.ids
    robust = result.robust
    for i in range(k):
        result.broken_by[i][stages[0].label] += int(np.sum(clean & ~robust[i]))
    for s, stage in enumerate(stages):
        for restart in range(1 if s == 0 else 0, stage.restarts):
            for i, eps in enumerate(epsilons):
                index = np.flatnonzero(result.robust[i])
                if index.size == 0:
                    continue
                xs, ys = tf.nest.map_structure(lambda a, ix=index: tf.gather(a, ix), (x, y))
                compiled = get_compiled(model, stage, problem, xs, ys, 1)
                seed_i = seed_for(seed, batch_index, s, restart, i)
                variant = tf.constant(stage.runtime_value(), tf.int32)
                o = compiled.run(xs, ys, tf.constant([eps], tf.float32), seed_i, variant)
                predictions = o["adversarial_predictions"].numpy()[0]
                newly = predictions != result.ids[index]
                hit = index[newly]
                result.adversarial[i, hit] = o["adversarial"].numpy()[0][newly]
                result.adversarial_predictions[i, hit] = predictions[newly]
                result.broken_by[i][stage.label] += int(newly.sum())
    return result


__all__ = ["BatchResult", "attack_batch", "prepare", "seed_for"]
