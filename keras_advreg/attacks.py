"""White-box FGSM/PGD attacks on NSL's perturbation math.

The attack machinery that `keras_advreg.robustness` evaluates with: `AttackSpec`, the
detection of the logits to attack, label handling, batching, the loss, the compiled
(cached) attack, and `generate_adversarial_examples` for one batch.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_advreg._nsl import nsl_configs, nsl_utils
from keras_advreg.adapters import unpack_batch
from keras_advreg.config import normalize_norm


def random_in_norm_ball(tensor_structure: Any, radius: Any, norm: str) -> Any:
    """NSL's `random_in_norm_ball`, for tensors whose batch size is only known at run time.

    NSL 1.4.0 samples with the static shape (`t.shape`), which fails inside
    `model.fit` where the batch dimension is `None`; this samples the same
    distributions (uniform for l-inf; the Barthe et al. construction for l2 and
    l1) with dynamic shapes.

    Args:
        tensor_structure: A nest of batched floating-point tensors.
        radius: float. Radius of the ball.
        norm: str. `"infinity"`, `"l2"` or `"l1"`.

    Returns:
        A nest of the same structure whose examples lie in the ball.
    """
    tensors = tf.nest.flatten(tensor_structure)
    norm = getattr(norm, "value", norm)
    if norm == "infinity":
        return tf.nest.map_structure(
            lambda t: tf.random.uniform(tf.shape(t), -radius, radius, t.dtype), tensor_structure
        )
    batch = tf.shape(tensors[0])[0]

    def per_example(reduce, values):
        axes = lambda t: tf.range(1, tf.rank(t))  # noqa: E731
        return tf.add_n([reduce(v, axis=axes(v)) for v in values])

    def scale_to_rank(scale, t):
        return tf.reshape(scale, tf.concat([[batch], tf.ones([tf.rank(t) - 1], tf.int32)], 0))

    if norm == "l2":
        samples = [tf.random.normal(tf.shape(t), dtype=t.dtype) for t in tensors]
        squared = per_example(tf.reduce_sum, [tf.square(s) for s in samples])
        extra = tf.random.gamma(tf.shape(squared), 1.0, 0.5, squared.dtype)
        scale = radius / tf.sqrt(squared + extra)
    elif norm == "l1":
        samples = [
            tf.random.gamma(tf.shape(t), 1.0, 1.0, t.dtype)
            - tf.random.gamma(tf.shape(t), 1.0, 1.0, t.dtype)
            for t in tensors
        ]
        l1 = per_example(tf.reduce_sum, [tf.abs(s) for s in samples])
        extra = tf.random.gamma(tf.shape(l1), 1.0, 1.0, l1.dtype)
        scale = radius / (l1 + extra)
    else:
        raise ValueError(f"`norm` must be one of 'infinity', 'l2', 'l1'. Received: norm={norm!r}")
    return tf.nest.pack_sequence_as(
        tensor_structure, [s * scale_to_rank(scale, s) for s in samples]
    )


# =========================================================================== attacks
ATTACKS = ("fgsm", "pgd")
_SOFTMAX_NAMES = ("softmax",)
_SIGMOID_NAMES = ("sigmoid",)


def _activation_name(fn: Any) -> str | None:
    name = getattr(fn, "__name__", None)
    return name.lower() if isinstance(name, str) else None


def _check_clip(name: str, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, Mapping):
        return {str(k): _check_clip(f"{name}[{k!r}]", v) for k, v in value.items()}
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(
            f"`{name}` must be a finite number, a dict of numbers per feature, or None. "
            f"Received: {name}={value!r}"
        )
    return float(value)


def _format_eps(eps: float) -> str:
    """How an epsilon is named in log keys, reports and JSON: `f"{eps:g}"` (6 digits)."""
    return f"{eps:g}"


def _freeze(value: Any) -> Any:
    return tuple(sorted(value.items())) if isinstance(value, Mapping) else value


@dataclasses.dataclass(frozen=True)
class AttackSpec:
    """A validated attack configuration (shared by `evaluate_robustness` and the callback)."""

    epsilons: tuple[float, ...] = (0.1,)
    attack: str = "fgsm"
    norm: str = "infinity"
    pgd_steps: int = 10
    pgd_step_size: float | None = None
    random_start: bool = True
    clip_value_min: Any = None
    clip_value_max: Any = None

    def __post_init__(self):
        set_ = object.__setattr__
        eps = self.epsilons
        if isinstance(eps, numbers.Real) and not isinstance(eps, bool):
            eps = (eps,)
        if isinstance(eps, np.ndarray):
            eps = eps.tolist()
        if isinstance(eps, (str, bytes)) or not isinstance(eps, Sequence) or not eps:
            raise ValueError(
                "`epsilons` must be a number or a non-empty sequence of numbers >= 0. "
                f"Received: epsilons={self.epsilons!r}"
            )
        checked = []
        for e in eps:
            if isinstance(e, bool) or not isinstance(e, numbers.Real) or not math.isfinite(e):
                raise ValueError(
                    f"`epsilons` must hold finite numbers. Received: epsilons={self.epsilons!r}"
                )
            if e < 0:
                raise ValueError(f"`epsilons` must be >= 0. Received: epsilons={self.epsilons!r}")
            checked.append(float(e))
        if len(set(checked)) != len(checked):
            raise ValueError(f"`epsilons` has duplicates. Received: epsilons={self.epsilons!r}")
        names = [_format_eps(e) for e in checked]
        clash = next((n for n in names if names.count(n) > 1), None)
        if clash is not None:
            raise ValueError(
                "`epsilons` must differ in their first 6 significant digits: they name log keys "
                f"and report rows (formatted as '{{:g}}'), and several would be named {clash!r}. "
                f"Received: epsilons={self.epsilons!r}"
            )
        set_(self, "epsilons", tuple(checked))
        attack = self.attack.strip().lower() if isinstance(self.attack, str) else self.attack
        if attack not in ATTACKS:
            raise ValueError(
                f"`attack` must be one of 'fgsm', 'pgd'. Received: attack={self.attack!r}"
            )
        set_(self, "attack", attack)
        set_(self, "norm", normalize_norm(self.norm, "norm"))
        if attack == "pgd" and self.norm == "l1":
            raise ValueError(
                "attack='pgd' cannot be used with norm='l1': NSL can only project perturbations "
                "onto an 'infinity' or 'l2' ball. Use attack='fgsm' for l1, or norm='infinity' "
                "or 'l2' for PGD. Received: attack='pgd', norm='l1'"
            )
        steps = self.pgd_steps
        if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
            raise ValueError(f"`pgd_steps` must be an integer >= 1. Received: pgd_steps={steps!r}")
        set_(self, "pgd_steps", int(steps))
        size = self.pgd_step_size
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, numbers.Real) or not size > 0:
                raise ValueError(
                    f"`pgd_step_size` must be a number > 0 or None. Received: pgd_step_size={size!r}"
                )
            set_(self, "pgd_step_size", float(size))
        if not isinstance(self.random_start, (bool, np.bool_)):
            raise ValueError(
                f"`random_start` must be True or False. Received: random_start={self.random_start!r}"
            )
        set_(self, "random_start", bool(self.random_start))
        lo = _check_clip("clip_value_min", self.clip_value_min)
        hi = _check_clip("clip_value_max", self.clip_value_max)
        if isinstance(lo, float) and isinstance(hi, float) and lo > hi:
            raise ValueError(
                "`clip_value_min` must be <= `clip_value_max`. "
                f"Received: clip_value_min={lo!r}, clip_value_max={hi!r}"
            )
        set_(self, "clip_value_min", lo)
        set_(self, "clip_value_max", hi)

    def step_sizes(self) -> list[float]:
        """PGD step size per epsilon: `pgd_step_size`, or `2.5 * epsilon / pgd_steps`."""
        if self.pgd_step_size is not None:
            return [self.pgd_step_size] * len(self.epsilons)
        return [2.5 * e / self.pgd_steps for e in self.epsilons]

    def key(self) -> tuple:
        """What a compiled attack depends on (epsilon values are run-time inputs)."""
        return (
            self.attack,
            self.norm,
            len(self.epsilons),
            self.pgd_steps if self.attack == "pgd" else None,
            self.random_start if self.attack == "pgd" else None,
            _freeze(self.clip_value_min),
            _freeze(self.clip_value_max),
        )

    def to_dict(self) -> dict:
        return {
            f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
            for f in dataclasses.fields(self)
        }


# --------------------------------------------------------------------------- the attacked head
@dataclasses.dataclass
class _Head:
    """How to attack a classifier: `scores(x)` and the loss on them."""

    model: Any
    scores: Callable  # x -> logits (pre-softmax/sigmoid) or the model output
    output: str  # "logits" | "probabilities"
    binary: bool
    num_classes: int
    description: str


def _output_layer(model: Any):
    """The layer producing a functional/Sequential model's single output, and its input tensor."""
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        return None, None
    if not outputs or len(outputs) != 1:
        return None, None
    history = getattr(outputs[0], "_keras_history", None)
    if history is None:
        return None, None
    layer, node_index = history[0], history[1]
    nodes = getattr(layer, "_inbound_nodes", [])
    inputs = nodes[node_index].input_tensors if node_index < len(nodes) else []
    return layer, (inputs[0] if len(inputs) == 1 else None)


def _pre_activation(model: Any):
    """Returns `(fn, kind)` computing the pre-softmax/sigmoid tensor, or `(None, None)`."""
    layer, layer_input = _output_layer(model)
    if layer is None or layer_input is None:
        return None, None
    if isinstance(layer, keras.layers.Softmax):
        kind = "softmax"
    elif isinstance(layer, keras.layers.Activation):
        name = _activation_name(layer.activation)
        kind = name if name in _SOFTMAX_NAMES + _SIGMOID_NAMES else None
    else:
        name = _activation_name(getattr(layer, "activation", None))
        kind = f"{name}_activation" if name in _SOFTMAX_NAMES + _SIGMOID_NAMES else None
    if kind is None:
        return None, None
    trunk = keras.Model(model.inputs, layer_input)
    if not kind.endswith("_activation"):  # a Softmax/Activation layer: its input is the logits
        return trunk, kind

    def linear(x):  # the last layer without its activation, sharing its (live) weights
        activation = layer.activation
        layer.activation = keras.activations.linear
        try:
            return layer(trunk(x, training=False), training=False)
        finally:
            layer.activation = activation

    return linear, kind.split("_")[0]


def _looks_like_probabilities(out: np.ndarray) -> bool:
    if out.shape[-1] == 1:
        return False
    return bool(np.all(out >= 0) and np.all(out <= 1) and np.allclose(out.sum(-1), 1.0, atol=1e-3))


def _attack_target(model: Any) -> Any:
    base = getattr(model, "base_model", None)
    return base if isinstance(base, keras.Model) else model


def _make_head(model: Any, probe_x: Any, custom_loss: bool) -> _Head:
    target = _attack_target(model)
    if not callable(target):
        raise TypeError(f"`model` must be a Keras model. Received: model={model!r}")
    out = target(probe_x, training=False)  # also builds an unbuilt model
    if isinstance(out, (list, tuple, dict)) or not hasattr(out, "shape") or len(out.shape) != 2:
        shape = getattr(out, "shape", type(out).__name__)
        raise ValueError(
            "evaluate_robustness needs a classifier with one output of shape "
            f"(batch_size, num_classes). Received a model output of {shape}"
        )
    out = np.asarray(out)
    num_classes = int(out.shape[-1])
    name = type(target).__name__
    if custom_loss:
        return _Head(
            target,
            lambda x: target(x, training=False),
            "model_output",
            num_classes == 1,
            num_classes,
            f"{name} output with the given loss",
        )
    fn, kind = _pre_activation(target)
    if fn is not None:
        binary = kind == "sigmoid"
        if binary and num_classes != 1:
            raise ValueError(
                "evaluate_robustness supports single-label classifiers: a sigmoid output must "
                f"have 1 unit (binary). Received an output of shape {out.shape} with sigmoid"
            )
        return _Head(
            target, fn, "logits", binary, num_classes, f"{name}: logits before the final {kind}"
        )
    if _looks_like_probabilities(out):
        warnings.warn(
            f"The model ({name}) outputs probabilities, but its final softmax could not be "
            "located to attack the logits before it (a subclassed model, or a softmax outside "
            "the last layer). The attack uses cross-entropy on the probabilities, whose "
            "gradient vanishes where the softmax saturates: robust accuracy may be "
            "overestimated (gradient masking). Attack a model that outputs logits, or pass "
            "`loss=`.",
            stacklevel=3,
        )
        return _Head(
            target,
            lambda x: target(x, training=False),
            "probabilities",
            False,
            num_classes,
            f"{name}: probabilities (softmax not located)",
        )
    if num_classes == 1 and np.all(out >= 0) and np.all(out <= 1):
        warnings.warn(
            f"The model ({name}) has 1 output unit with values in [0, 1] but no sigmoid "
            "layer was found; it is attacked as binary logits. Pass `loss=` if it outputs "
            "probabilities.",
            stacklevel=3,
        )
    return _Head(
        target,
        lambda x: target(x, training=False),
        "logits",
        num_classes == 1,
        num_classes,
        f"{name}: logits",
    )


# --------------------------------------------------------------------------- labels and data
def _label_mode(y: np.ndarray, num_classes: int) -> str:
    """'sparse' or 'categorical', after checking the labels fit the output."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[-1] == num_classes and num_classes > 1:
        if np.any(y < 0) or np.any(y > 1) or not np.allclose(y.sum(-1), 1.0, atol=1e-3):
            raise ValueError(
                "One-hot labels must be rows of 0/1 (or probabilities) summing to 1. "
                f"Received labels such as {y[:3].tolist()}"
            )
        return "categorical"
    if y.ndim > 2 or (y.ndim == 2 and y.shape[-1] != 1):
        raise ValueError(
            f"Labels must have shape (batch,) or (batch, 1) (class ids) or (batch, {num_classes}) "
            f"(one-hot) for a model with {num_classes} output(s). Received labels of shape "
            f"{y.shape}"
        )
    classes = max(num_classes, 2)
    if not np.issubdtype(y.dtype, np.number) or np.any(y != np.round(y)):
        raise ValueError(f"Class-id labels must be integers. Received labels such as {y[:5]}")
    if np.any(y < 0) or np.any(y >= classes):
        raise ValueError(
            f"Labels must be class ids in [0, {classes}) for a model with {num_classes} "
            f"output(s). Received labels from {y.min()} to {y.max()}"
        )
    return "sparse"


def _as_floatx(value: Any) -> Any:
    def convert(a):
        a = np.asarray(a) if not tf.is_tensor(a) else a
        if isinstance(a, np.ndarray) and np.issubdtype(a.dtype, np.floating):
            return a.astype(keras.config.floatx(), copy=False)
        return a

    return tf.nest.map_structure(convert, value)


def _is_shape(value: Any) -> bool:
    return isinstance(value, (tuple, list)) and all(
        d is None or isinstance(d, numbers.Integral) for d in value
    )


def _model_input_ranks(model: Any) -> list[int] | None:
    """The ranks (batch dimension included) of the model's inputs, when known."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if inputs:
        return [len(t.shape) for t in inputs]
    shapes = getattr(model, "_build_shapes_dict", None)  # a built subclassed model
    if not isinstance(shapes, Mapping) or len(shapes) != 1:
        return None
    ranks = [len(shape) for shape in _flatten_shapes(next(iter(shapes.values())))]
    return ranks or None


def _flatten_shapes(nest: Any) -> list[tuple]:
    if _is_shape(nest):
        return [tuple(nest)]
    if isinstance(nest, Mapping):
        return [s for k in sorted(nest) for s in _flatten_shapes(nest[k])]
    if isinstance(nest, (tuple, list)):
        return [s for v in nest for s in _flatten_shapes(v)]
    return []


def _is_unbatched(spec: Any, model: Any, label_keys: Any, sample_weight_key: Any) -> bool:
    """Whether a dataset's elements are single examples (`spec` is its element spec).

    Scalar labels mean single examples. Otherwise the feature ranks are compared with the
    ranks of the model's inputs (one less: single examples). Without a known input rank,
    elements whose features and labels have different static leading sizes (e.g. 2
    features and 3 one-hot classes) cannot be batches; anything else is taken as batched.
    """
    x_spec, y_spec, _ = unpack_batch(spec, label_keys, sample_weight_key)
    if y_spec is None:
        return False
    y_leaves = tf.nest.flatten(y_spec)
    if any(s.shape.rank == 0 for s in y_leaves):
        return True
    x_leaves = tf.nest.flatten(x_spec)
    ranks = _model_input_ranks(model) if model is not None else None
    if ranks is not None:
        x_model = tf.nest.flatten(_model_inputs(model, x_spec))
        features = [s.shape.rank for s in x_model]
        if len(features) == len(ranks) and None not in features:
            if sorted(features) == sorted(r - 1 for r in ranks):
                return True
            if sorted(features) == sorted(ranks):
                return False
    leading = {s.shape[0] for s in x_leaves + y_leaves if s.shape.rank and s.shape[0] is not None}
    return len(leading) > 1


def _batches(
    data: Any,
    batch_size: int,
    label_keys: Any,
    sample_weight_key: Any,
    max_examples: int | None,
    model: Any = None,
) -> Iterator[tuple[Any, Any]]:
    """Yields `(features, labels)` batches.

    A tf.data dataset of single examples (see `_is_unbatched`; `model` is the model to
    attack, whose input ranks tell) is batched by `batch_size`; others are used as batched.
    """
    remaining = max_examples

    def cut(x, y):
        nonlocal remaining
        if remaining is not None:
            n = int(tf.nest.flatten(y)[0].shape[0])
            if n > remaining:
                x, y = tf.nest.map_structure(lambda a: a[:remaining], (x, y))
                n = remaining
            remaining -= n
        return x, y

    if isinstance(data, tf.data.Dataset):
        if _is_unbatched(data.element_spec, model, label_keys, sample_weight_key):
            data = data.batch(batch_size)
        for element in data:
            x, y, _ = unpack_batch(element, label_keys, sample_weight_key)
            if y is None:
                raise ValueError(_NO_LABELS)
            yield cut(x, y)
            if remaining == 0:
                return
        return
    if isinstance(data, (tuple, list, Mapping)):
        x, y, _ = unpack_batch(data, label_keys, sample_weight_key)
        if y is None:
            raise ValueError(_NO_LABELS)
        x, y = _as_floatx(x), np.asarray(y)
        n = len(y) if remaining is None else min(len(y), remaining)
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            yield tf.nest.map_structure(lambda a, s=start, e=stop: a[s:e], (x, y))
        return
    raise TypeError(
        "`data` must be `(x, y)` arrays, a dict of features and labels, or a tf.data.Dataset "
        f"of such batches. Received: data of type {type(data).__name__}"
    )


_NO_LABELS = (
    "`data` must include labels: `(x, y)` tuples, or feature dicts with the label key(s) "
    "(`label_keys`). Received data without labels."
)


def _model_inputs(model: Any, x: Any) -> Any:
    """Feature dicts -> what the model takes: its named inputs (one input: the tensor)."""
    if not isinstance(x, Mapping):
        return x
    try:
        names = [getattr(t, "name", None) for t in (model.inputs or [])]
    except (AttributeError, ValueError):
        return x
    if names and all(name in x for name in names):
        return x[names[0]] if len(names) == 1 else {name: x[name] for name in names}
    if len(names) == 1 and len(x) == 1:
        return next(iter(x.values()))
    return x


def _spec(value: Any) -> Any:
    def one(a):
        a = tf.convert_to_tensor(a)
        return tf.TensorSpec((None, *a.shape[1:]), a.dtype)

    return tf.nest.map_structure(one, value)


# --------------------------------------------------------------------------- the compiled attack
def _loss_fn(head: _Head, label_mode: str, loss: Any) -> Callable:
    if loss is not None:
        fn = keras.losses.get(loss) if isinstance(loss, (str, dict)) else loss
        return lambda y, out: fn(y, out)
    if head.binary:
        # softplus(-s * z), s = +-1: binary cross-entropy with a gradient that stays exact
        # for confident examples (TF's sigmoid cross-entropy rounds it to 0).
        return lambda y, z: tf.nn.softplus(
            -(2.0 * tf.cast(tf.reshape(y, tf.shape(z)), z.dtype) - 1.0) * z
        )
    if head.output == "probabilities":
        if label_mode == "sparse":
            return keras.losses.sparse_categorical_crossentropy
        return keras.losses.categorical_crossentropy

    def cross_entropy(y, z):
        """Cross-entropy as softplus(logsumexp_{j != y}(z_j - z_y)): the same value, but its
        gradient stays exact where the softmax saturates (the usual `softmax - onehot`
        rounds to 0 once p_y rounds to 1 in float32, which looks like gradient masking)."""
        if label_mode == "categorical":
            ids = tf.argmax(y, axis=-1, output_type=tf.int32)
        else:
            ids = tf.cast(tf.reshape(y, [-1]), tf.int32)
        is_label = tf.one_hot(ids, tf.shape(z)[-1], on_value=True, off_value=False)
        z_y = tf.reduce_sum(tf.where(is_label, z, tf.zeros_like(z)), axis=-1, keepdims=True)
        others = tf.where(is_label, tf.fill(tf.shape(z), tf.constant(-1e9, z.dtype)), z - z_y)
        return tf.nn.softplus(tf.reduce_logsumexp(others, axis=-1))

    return cross_entropy


class _CompiledAttack:
    """One attack, traced once per (model, attack configuration, input signature)."""

    def __init__(
        self,
        head: _Head,
        spec: AttackSpec,
        label_mode: str,
        loss: Any,
        x_spec: Any,
        y_spec: Any,
        threshold: float,
    ):
        self.head, self.spec, self.label_mode = head, spec, label_mode
        self.num_classes = max(head.num_classes, 2)
        self._loss = _loss_fn(head, label_mode, loss)
        self._threshold = threshold
        self._norm_type = nsl_configs.NormType(spec.norm)
        if isinstance(x_spec, Mapping):  # clip values may be given per top-level feature name
            paths = [k for k in sorted(x_spec) for _ in tf.nest.flatten(x_spec[k])]
        else:
            paths = [""] * len(tf.nest.flatten(x_spec))
        leaves = tf.nest.flatten(x_spec)
        self._float_index = [i for i, s in enumerate(leaves) if s.dtype.is_floating]
        if not self._float_index:
            raise ValueError("`data` has no floating-point features to perturb.")
        self._names = [paths[i] for i in self._float_index]
        k = len(spec.epsilons)
        signature = [x_spec, y_spec, tf.TensorSpec([k], tf.float32), tf.TensorSpec([k], tf.float32)]
        self.counts = tf.function(self._counts, input_signature=signature)
        self.examples = tf.function(self._examples, input_signature=signature)

    # ---------------------------------------------------------------- pieces
    def _classes(self, out):
        if out.shape[-1] == 1:
            return tf.cast(tf.reshape(out, [-1]) > self._threshold, tf.int32)
        return tf.argmax(out, axis=-1, output_type=tf.int32)

    def _true_ids(self, y):
        if self.label_mode == "categorical":
            return tf.argmax(y, axis=-1, output_type=tf.int32)
        return tf.cast(tf.reshape(y, [-1]), tf.int32)

    def _clip(self, position, t):
        lo, hi = self.spec.clip_value_min, self.spec.clip_value_max
        name = self._names[position]
        lo = lo.get(name) if isinstance(lo, dict) else lo
        hi = hi.get(name) if isinstance(hi, dict) else hi
        if lo is not None:
            t = tf.maximum(t, tf.cast(lo, t.dtype))
        if hi is not None:
            t = tf.minimum(t, tf.cast(hi, t.dtype))
        return t

    def _pack(self, x, floats):
        leaves = tf.nest.flatten(x)
        for i, t in zip(self._float_index, floats, strict=True):
            leaves[i] = t
        return tf.nest.pack_sequence_as(x, leaves)

    def _scores_and_grads(self, x, floats, y):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(floats)
            out = self.head.scores(self._pack(x, floats))
            loss = tf.reduce_sum(self._loss(y, out))
        grads = tape.gradient(loss, floats)
        grads = [tf.zeros_like(f) if g is None else g for f, g in zip(floats, grads, strict=True)]
        flat = [tf.reshape(tf.abs(g), [tf.shape(g)[0], -1]) for g in grads]
        peak = tf.reduce_max(tf.stack([tf.reduce_max(g, axis=1) for g in flat]), axis=0)
        zero = tf.reduce_sum(tf.cast(peak == 0, tf.int32))
        if self.spec.norm != "infinity":
            # Same direction, but NSL's l2 normalization divides by max(norm, 1e-6): scale
            # tiny gradients up first so that confident examples still move by epsilon.
            scale = tf.where(peak > 0, 1.0 / peak, tf.ones_like(peak))
            grads = [g * tf.reshape(scale, [-1] + [1] * (g.shape.rank - 1)) for g in grads]
        return out, grads, zero

    def _attack(self, x, y, eps, steps):
        """Returns clean scores, adversarial float features per epsilon and zero-gradient count."""
        origin = [tf.nest.flatten(x)[i] for i in self._float_index]
        spec = self.spec
        if spec.attack == "fgsm":
            out, grads, zero = self._scores_and_grads(x, origin, y)
            directions = nsl_utils.maximize_within_unit_norm(grads, self._norm_type)
            adversarial = [
                [
                    self._clip(j, o + tf.cast(eps[i], o.dtype) * d)
                    for j, (o, d) in enumerate(zip(origin, directions, strict=True))
                ]
                for i in range(len(spec.epsilons))
            ]
            return out, adversarial, zero
        out = self.head.scores(x)
        adversarial, zero = [], tf.constant(0, tf.int32)
        for i in range(len(spec.epsilons)):
            radius, size = eps[i], steps[i]
            floats = origin
            if spec.random_start:
                noise = random_in_norm_ball(origin, radius, spec.norm)
                floats = [
                    self._clip(j, o + n) for j, (o, n) in enumerate(zip(origin, noise, strict=True))
                ]

            def body(t, floats, zero, radius=radius, size=size):
                _, grads, z = self._scores_and_grads(x, floats, y)
                zero = tf.where(t == 0, z, zero)
                directions = nsl_utils.maximize_within_unit_norm(grads, self._norm_type)
                delta = [
                    f + tf.cast(size, f.dtype) * d - o
                    for f, d, o in zip(floats, directions, origin, strict=True)
                ]
                delta = nsl_utils.project_to_ball(delta, radius, self._norm_type)
                floats = [
                    self._clip(j, o + d) for j, (o, d) in enumerate(zip(origin, delta, strict=True))
                ]
                return t + 1, floats, zero

            _, floats, z = tf.while_loop(
                lambda t, *_: t < spec.pgd_steps, body, (tf.constant(0), floats, zero)
            )
            zero = z if i == 0 else zero
            adversarial.append(floats)
        return out, adversarial, zero

    # ---------------------------------------------------------------- traced entry points
    def _counts(self, x, y, eps, steps):
        out, adversarial, zero = self._attack(x, y, eps, steps)
        ids = self._true_ids(y)
        segment = lambda ok: tf.math.unsorted_segment_sum(  # noqa: E731
            tf.cast(ok, tf.int32), ids, self.num_classes
        )
        clean_ok = tf.equal(self._classes(out), ids)
        adv_ok = [
            tf.equal(self._classes(self.head.scores(self._pack(x, f))), ids) for f in adversarial
        ]
        return {
            "total": segment(tf.ones_like(ids)),
            "clean": segment(clean_ok),
            "adversarial": tf.stack([segment(ok) for ok in adv_ok]),
            "flipped": tf.stack(
                [tf.reduce_sum(tf.cast(clean_ok & ~ok, tf.int32)) for ok in adv_ok]
            ),
            "zero_gradient": zero,
        }

    def _examples(self, x, y, eps, steps):
        out, adversarial, _ = self._attack(x, y, eps, steps)
        packed = [self._pack(x, f) for f in adversarial]
        return {
            "clean_predictions": self._classes(out),
            "adversarial": packed,
            "adversarial_predictions": [self._classes(self.head.scores(p)) for p in packed],
        }


# --------------------------------------------------------------------------- entry points
def _check_positive_int(name: str, value: Any, allow_none: bool = False) -> Any:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"`{name}` must be an integer >= 1. Received: {name}={value!r}")
    return int(value)


def _compiled(model: Any, spec: AttackSpec, x: Any, y: Any, loss: Any) -> _CompiledAttack:
    """The compiled attack for this model and configuration, cached on the model."""
    target = _attack_target(model)
    x_spec, y_spec = _spec(x), _spec(y)
    cache = getattr(target, "_keras_advreg_attacks", None)
    if cache is None:
        cache = {}
        try:  # bypass Keras' attribute tracking: this is not model state
            object.__setattr__(target, "_keras_advreg_attacks", cache)
        except (AttributeError, TypeError):
            pass
    head_key = ("head", loss is not None, repr(x_spec))
    if head_key not in cache:
        cache[head_key] = _make_head(model, x, custom_loss=loss is not None)
    head = cache[head_key]
    y_np = np.asarray(y)
    label_mode = _label_mode(y_np, head.num_classes)
    key = (
        spec.key(),
        label_mode,
        id(loss) if loss is not None else None,
        repr(x_spec),
        repr(y_spec),
    )
    if key not in cache:
        threshold = 0.0
        if head.binary and head.output == "model_output":
            out = np.asarray(head.scores(x))
            threshold = 0.5 if np.all(out >= 0) and np.all(out <= 1) else 0.0
        cache[key] = _CompiledAttack(head, spec, label_mode, loss, x_spec, y_spec, threshold)
    return cache[key]


def _check_labels(y: Any, compiled: _CompiledAttack) -> None:
    if compiled.label_mode == "categorical":
        return
    y = np.asarray(y)
    if y.size and (y.min() < 0 or y.max() >= compiled.num_classes):
        raise ValueError(
            f"Labels must be class ids in [0, {compiled.num_classes}). Received labels from "
            f"{y.min()} to {y.max()}"
        )


def generate_adversarial_examples(
    model: keras.Model,
    x: Any,
    y: Any,
    epsilon: float = 0.1,
    attack: str = "fgsm",
    norm: str = "infinity",
    pgd_steps: int = 10,
    pgd_step_size: float | None = None,
    random_start: bool = True,
    clip_value_min: Any = None,
    clip_value_max: Any = None,
    loss: Any = None,
) -> tuple[Any, np.ndarray, np.ndarray]:
    """Perturbs one batch with the attack `evaluate_robustness` uses.

    Args:
        model: keras.Model. The classifier to attack (white-box).
        x: array or dict of arrays. One batch of features.
        y: array. Its labels (class ids or one-hot).
        epsilon: float. Attack radius. Defaults to `0.1`.
        attack, norm, pgd_steps, pgd_step_size, random_start, clip_value_min,
            clip_value_max, loss: As in `evaluate_robustness`.

    Returns:
        `(x_adv, clean_predictions, adversarial_predictions)` as numpy values.

    Example:

    >>> x_adv, clean, adv = generate_adversarial_examples(
    ...     model, x[:16], y[:16], epsilon=0.2, clip_value_min=0.0, clip_value_max=1.0
    ... )  # doctest: +SKIP
    """
    spec = AttackSpec(
        (epsilon,),
        attack,
        norm,
        pgd_steps,
        pgd_step_size,
        random_start,
        clip_value_min,
        clip_value_max,
    )
    x, y = _model_inputs(_attack_target(model), _as_floatx(x)), np.asarray(y)
    compiled = _compiled(model, spec, x, y, loss)
    _check_labels(y, compiled)
    out = compiled.examples(
        x, y, tf.constant(spec.epsilons, tf.float32), tf.constant(spec.step_sizes(), tf.float32)
    )
    x_adv = tf.nest.map_structure(lambda t: t.numpy(), out["adversarial"][0])
    return (x_adv, out["clean_predictions"].numpy(), out["adversarial_predictions"][0].numpy())


__all__ = [
    "AttackSpec",
    "generate_adversarial_examples",
    "random_in_norm_ball",
]
