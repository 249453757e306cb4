"""What every attack runs on: the model as a function of flattened features, compiled.

`AttackProblem` turns one model, its labels and clip range into functions of a flat
`(batch, D)` tensor `v` holding every floating-point feature (a dict of several inputs is
attacked jointly, as NSL does: one norm over all of them): the scores, the loss and its
input gradient, the predicted classes and the box `[lo, hi]`. `CompiledAttack` traces
one attack's `perturb` over it for several radii per call, compiled for the Keras backend
(`keras_advreg.backend.ops.compile`: a `tf.function`, a `jax.jit`, or eager PyTorch) and
cached on the model. Everything here is `keras.ops`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_advreg.attacks.heads import Head, attack_loss, attack_target, make_head, true_ids
from keras_advreg.backend import ops as backend_ops
from keras_advreg.data.batching import label_mode as find_label_mode


@dataclasses.dataclass
class BatchState:
    """One batch, as attacks see it (inside the compiled function)."""

    x: Any  # the model's features (non-float leaves are kept as they are)
    y: Any  # labels as given (sparse or one-hot)
    ids: Any  # int32 class ids, (batch,)
    v0: Any  # clean float features, flattened: (batch, D)
    scores: Any  # clean scores (logits), (batch, classes)
    grad: Any  # input gradient of the attack loss at v0, (batch, D)


class AttackProblem:
    """A classifier and its data layout, as functions of flat features `v`.

    Args:
        head: `Head`. The scores to attack (logits found by `make_head`).
        label_mode: str. `"sparse"` or `"categorical"`.
        loss: The user's loss on the model output, or None (cross-entropy).
        x_spec: nest of `backend.ops.TensorSpec`. The features' layout.
        clip_value_min, clip_value_max: float or dict per feature, or None.
        threshold: float. Decision threshold of a 1-unit output.
    """

    def __init__(self, head, label_mode, loss, x_spec, clip_value_min, clip_value_max, threshold):
        self.head, self.label_mode, self.custom_loss = head, label_mode, loss
        self.num_classes = max(head.num_classes, 2)
        self.threshold = threshold
        self._loss = attack_loss(head, label_mode, loss)
        if isinstance(x_spec, Mapping):  # clip values may be given per top-level feature name
            # The leaves' names, in the order keras.tree flattens the features.
            names = {k: keras.tree.map_structure(lambda _, k=k: k, v) for k, v in x_spec.items()}
            paths = keras.tree.flatten(type(x_spec)(names) if type(x_spec) is not dict else names)
        else:
            paths = [""] * len(keras.tree.flatten(x_spec))
        leaves = keras.tree.flatten(x_spec)
        self.float_index = [i for i, s in enumerate(leaves) if s.is_floating]
        if not self.float_index:
            raise ValueError("`data` has no floating-point features to perturb.")
        self.shapes = [tuple(leaves[i].shape[1:]) for i in self.float_index]
        if any(d is None for shape in self.shapes for d in shape):
            raise ValueError(
                "Attacked features need a known shape (besides the batch dimension). "
                f"Received feature shapes {[leaves[i].shape for i in self.float_index]}"
            )
        self.sizes = [int(np.prod(shape, dtype=np.int64)) for shape in self.shapes]
        self.dims = int(sum(self.sizes))
        names = [paths[i] for i in self.float_index]
        lo = [_bound(clip_value_min, n, -np.inf) for n in names]
        hi = [_bound(clip_value_max, n, np.inf) for n in names]
        self.lo = np.concatenate([np.full(s, b, "float32") for s, b in zip(self.sizes, lo)])
        self.hi = np.concatenate([np.full(s, b, "float32") for s, b in zip(self.sizes, hi)])
        self.bounded = bool(np.all(np.isfinite(self.lo)) and np.all(np.isfinite(self.hi)))
        # Whether attacks may evaluate subsets of a batch's rows (APGD's and Square's
        # `compact`): the scores then depend on `v` alone, and the loss on the class ids.
        self.compactable = len(self.float_index) == len(leaves) and loss is None and not head.binary

    # ------------------------------------------------------------------ layout
    @property
    def image_shape(self) -> tuple[int, ...] | None:
        """`(height, width, channels)` when the features are one image tensor, else None."""
        if len(self.shapes) != 1:
            return None
        shape = self.shapes[0]
        if len(shape) == 2:
            return (*shape, 1)
        if len(shape) == 3:
            return shape
        return None

    def flatten(self, x: Any) -> Any:
        leaves = keras.tree.flatten(x)
        flat = [
            ops.reshape(ops.cast(leaves[i], "float32"), (-1, n))
            for i, n in zip(self.float_index, self.sizes)
        ]
        return flat[0] if len(flat) == 1 else ops.concatenate(flat, axis=1)

    def unflatten(self, x: Any, v: Any) -> Any:
        leaves = keras.tree.flatten(x)
        if len(self.sizes) > 1:
            parts = ops.split(v, np.cumsum(self.sizes)[:-1].tolist(), axis=1)
        else:
            parts = [v]
        for i, part, shape in zip(self.float_index, parts, self.shapes):
            leaves[i] = ops.cast(ops.reshape(part, (-1, *shape)), _dtype(leaves[i]))
        return keras.tree.pack_sequence_as(x, leaves)

    def clip(self, v: Any) -> Any:
        if not self._any_bound:
            return v
        return ops.minimum(ops.maximum(v, self.lo), self.hi)

    @property
    def _any_bound(self) -> bool:
        return bool(np.any(np.isfinite(self.lo)) or np.any(np.isfinite(self.hi)))

    # ------------------------------------------------------------------ model
    def scores(self, x: Any, v: Any) -> Any:
        with backend_ops.fresh_randomness(self.head.model, v):
            return self.head.scores(self.unflatten(x, v))

    def loss(self, y: Any, scores: Any) -> Any:
        """The per-example attack loss (cross-entropy on logits, or the user's loss)."""
        values = ops.convert_to_tensor(self._loss(y, scores))
        if len(values.shape) == 0:  # a callable that reduces: the same value for every example
            return ops.zeros_like(scores[:, 0], dtype=values.dtype) + values
        return ops.sum(ops.reshape(values, (ops.shape(scores)[0], -1)), axis=1)

    def value_and_grad(
        self, x: Any, v: Any, loss_of_scores: Callable, draws: int = 1
    ) -> tuple[Any, Any, Any]:
        """`(per-example loss, scores, d sum(loss) / d v)` at `v`.

        With `draws > 1` (expectation over transformation, for a randomized model), the
        gradient is the mean of `draws` forward and backward passes, each with its own
        draw of the model's randomness; the loss and scores are the last pass's (as the
        reference APGD's).
        """

        def total(v):
            scores = self.scores(x, v)
            loss = loss_of_scores(scores)
            return ops.sum(loss), (loss, scores)

        (loss, scores), grad = backend_ops.value_and_grad(total, v)
        for _ in range(1, draws):
            (loss, scores), more = backend_ops.value_and_grad(total, v)
            grad = grad + more
        if draws > 1:
            grad = grad / float(draws)
        return loss, scores, grad

    def classes(self, scores: Any) -> Any:
        if scores.shape[-1] == 1:
            return ops.cast(ops.reshape(scores, (-1,)) > self.threshold, "int32")
        return ops.cast(ops.argmax(scores, axis=-1), "int32")

    def ids(self, y: Any) -> Any:
        return true_ids(y, self.label_mode)

    def start(self, x: Any, y: Any) -> BatchState:
        v0 = self.flatten(x)
        _, scores, grad = self.value_and_grad(x, v0, lambda s: self.loss(y, s))
        return BatchState(x, y, self.ids(y), v0, scores, grad)


def _dtype(value: Any) -> str:
    return keras.backend.standardize_dtype(value.dtype)


def _bound(value: Any, name: str, default: float) -> float:
    if isinstance(value, Mapping):
        value = value.get(name)
    return default if value is None else float(value)


class CompiledAttack:
    """One attack on one problem, compiled for the backend over `(x, y, eps[k], noise[k],
    variant)` (cached on the model; `backend.ops.compile`)."""

    def __init__(self, attack: Any, problem: AttackProblem, x_spec, y_spec, k: int):
        self.attack, self.problem, self.k = attack, problem, k
        self._x_spec, self._y_spec = x_spec, y_spec
        self._compiled: dict = {}  # noise layout -> compiled function

    def run(self, x: Any, y: Any, eps: Any, noise: list, variant: int) -> dict:
        """The attack on one batch: NumPy results (see `_run`)."""
        layout = repr(keras.tree.map_structure(lambda a: np.shape(a)[1:], noise))
        if layout not in self._compiled:
            specs = backend_ops.TensorSpec
            signature = [
                self._x_spec,
                self._y_spec,
                specs((self.k,), "float32"),
                keras.tree.map_structure(
                    lambda a: specs((None, *np.shape(a)[1:]), "float32"), noise
                ),
                specs((), "int32"),
            ]
            target = self.problem.head.model

            def attack(x, y, eps, noise, variant):  # one function object per compilation:
                return self._run(x, y, eps, noise, variant)  # no TF "retracing" warnings

            self._compiled[layout] = backend_ops.compile(attack, target.variables, signature)
        out = self._compiled[layout](
            x, y, np.asarray(eps, "float32"), noise, np.asarray(variant, "int32")
        )
        return backend_ops.to_numpy(out)

    def _run(self, x, y, eps, noise, variant):
        problem = self.problem
        state = problem.start(x, y)
        flat = ops.abs(state.grad)
        adversarial, predictions = [], []
        for i in range(self.k):
            extra = {"variant": variant} if self.attack.runtime_field else {}
            v_adv, _ = self.attack.perturb(problem, state, eps[i], noise[i], **extra)
            adversarial.append(v_adv)
            predictions.append(problem.classes(problem.scores(x, v_adv)))
        return {
            "ids": state.ids,
            "clean_predictions": problem.classes(state.scores),
            "zero_gradient": ops.max(flat, axis=1) == 0,
            "adversarial": ops.stack(adversarial),
            "adversarial_predictions": ops.stack(predictions),
        }


def tensor_spec(value: Any) -> Any:
    """The batch-size-free `TensorSpec` nest of a batch."""

    def one(a):
        shape = tuple(a.shape)
        return backend_ops.TensorSpec((None, *shape[1:]), keras.backend.standardize_dtype(a.dtype))

    return keras.tree.map_structure(one, value)


class ProblemCache:
    """Problems and compiled attacks of one model, kept out of Keras' attribute tracking."""

    def __init__(self):
        self.items: dict = {}

    @staticmethod
    def of(model: Any) -> ProblemCache:
        target = attack_target(model)
        cache = getattr(target, "_keras_advreg_attacks", None)
        if cache is None:
            cache = ProblemCache()
            try:  # bypass Keras' attribute tracking: this is not model state
                object.__setattr__(target, "_keras_advreg_attacks", cache)
            except (AttributeError, TypeError):
                pass
        return cache


def get_problem(model: Any, x: Any, y: Any, loss: Any, clip_min: Any, clip_max: Any):
    """The `AttackProblem` of a model for batches like `(x, y)`, cached on the model."""
    cache = ProblemCache.of(model).items
    x_spec = tensor_spec(x)
    head_key = ("head", loss is not None, repr(x_spec))
    if head_key not in cache:
        cache[head_key] = make_head(model, x, custom_loss=loss is not None)
    head: Head = cache[head_key]
    mode = find_label_mode(keras.ops.convert_to_numpy(y), head.num_classes)
    key = ("problem", head_key, mode, id(loss), repr(clip_min), repr(clip_max))
    if key not in cache:
        threshold = 0.0
        if head.binary and head.output == "model_output":
            out = keras.ops.convert_to_numpy(head.scores(x))
            threshold = 0.5 if np.all(out >= 0) and np.all(out <= 1) else 0.0
        cache[key] = AttackProblem(head, mode, loss, x_spec, clip_min, clip_max, threshold)
    return cache[key]


def get_compiled(model: Any, attack: Any, problem: AttackProblem, x: Any, y: Any, k: int):
    """The compiled `attack` for `problem` and `k` radii per call, cached on the model."""
    cache = ProblemCache.of(model).items
    x_spec, y_spec = tensor_spec(x), tensor_spec(y)
    key = ("compiled", attack.compiled_key(), id(problem), repr(x_spec), repr(y_spec), k)
    if key not in cache:
        cache[key] = CompiledAttack(attack, problem, x_spec, y_spec, k)
    return cache[key]


def check_labels(y: Any, problem: AttackProblem) -> None:
    if problem.label_mode == "categorical":
        return
    y = keras.ops.convert_to_numpy(y)
    if y.size and (y.min() < 0 or y.max() >= problem.num_classes):
        raise ValueError(
            f"Labels must be class ids in [0, {problem.num_classes}). Received labels from "
            f"{y.min()} to {y.max()}"
        )


__all__ = [
    "AttackProblem",
    "BatchState",
    "CompiledAttack",
    "check_labels",
    "get_compiled",
    "get_problem",
    "tensor_spec",
]
