"""The per-backend pieces of the attacks: input gradients and compilation.

Keras 3 has no backend-agnostic `grad`, so the attacks' math is `keras.ops` everywhere and
only two things differ per backend, each in its own small module: the gradient of a scalar
with respect to the attacked input (`tensorflow_ops`: `tf.GradientTape`; `jax_ops`:
`jax.value_and_grad`; `torch_ops`: `torch.autograd.grad`) and how a whole attack is compiled
(`tf.function`; `jax.jit` over the model's variables as arguments, in a
`keras.StatelessScope`; PyTorch runs eagerly). The backend is read per call from
`keras.backend.backend()`, and only its own module is imported.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Sequence
from typing import Any

import keras

BACKENDS = ("tensorflow", "jax", "torch")
_MODULES = {
    "tensorflow": "keras_advreg.backend.tensorflow_ops",
    "jax": "keras_advreg.backend.jax_ops",
    "torch": "keras_advreg.backend.torch_ops",
}


class TensorSpec:
    """A backend-neutral tensor spec (shape with None for unknown sizes, dtype name): the
    cache key of a compiled attack, and its `tf.TensorSpec` on TensorFlow."""

    def __init__(self, shape: tuple, dtype: str):
        self.shape = tuple(None if d is None else int(d) for d in shape)
        self.dtype = keras.backend.standardize_dtype(dtype)

    @property
    def is_floating(self) -> bool:
        return "float" in self.dtype

    def __repr__(self) -> str:
        return f"TensorSpec(shape={self.shape}, dtype={self.dtype!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TensorSpec) and (self.shape, self.dtype) == (
            other.shape,
            other.dtype,
        )

    def __hash__(self) -> int:
        return hash((self.shape, self.dtype))


def name() -> str:
    """The Keras backend in use (`keras.backend.backend()`)."""
    return keras.backend.backend()


_LOADED: dict[str, Any] = {}


def _module(what: str = "keras_advreg") -> Any:
    backend = name()
    module = _LOADED.get(backend)  # no import machinery inside traced code
    if module is not None:
        return module
    if backend not in _MODULES:
        raise RuntimeError(
            f"{what} runs on the TensorFlow, JAX and PyTorch backends of Keras 3. "
            f"Received: backend={backend!r}"
        )
    module = _LOADED[backend] = importlib.import_module(_MODULES[backend])
    return module


def value_and_grad(fn: Callable[[Any], tuple[Any, Any]], v: Any) -> tuple[Any, Any]:
    """`(aux, d total / d v)` where `fn(v) = (total, aux)` and `total` is a scalar.

    A gradient that does not depend on `v` is zeros (never None). Works inside a compiled
    function of `compile` (and eagerly).
    """
    return _module().value_and_grad(fn, v)


def compile(  # noqa: A001 - the backend's notion of compiling, as keras' `jit_compile`
    fn: Callable[..., Any],
    variables: Sequence[Any] = (),
    input_signature: Any = None,
) -> Callable[..., Any]:
    """`fn` compiled for this backend; the result takes NumPy arrays or backend tensors.

    Args:
        fn: A function of tensors (nests allowed) returning a nest of tensors; it may call
            Keras models whose variables are among `variables`.
        variables: The Keras variables `fn` reads (a model's `variables`). JAX traces them
            as arguments (`keras.StatelessScope`), so the compiled function always sees
            their current values; TensorFlow and PyTorch read them directly.
        input_signature: A list with a `TensorSpec` nest per argument, or None. TensorFlow
            traces once for all shapes that match it (None: any size); JAX traces once per
            shape; PyTorch ignores it.
    """
    return _module().compile(fn, variables, input_signature)


def fuse(fn: Callable[..., Any], rows: Sequence[int] = ()) -> Callable[..., Any]:
    """`fn` run as one fused kernel where that pays.

    TensorFlow compiles it with XLA (`jit_compile=True`; inside a compiled attack too, where
    it replaces dozens of separate elementwise kernels by a few); under JAX's `jit`
    everything is fused already and PyTorch runs eagerly, so there it is `fn` itself.
    Results equal `fn`'s up to the order of floating-point sums.

    Args:
        fn: A pure function of tensors (no model, no variables); Python scalars and strings
            are static arguments.
        rows: The positions of the arguments whose first axis is the batch, when `fn` treats
            rows independently and returns a nest of tensors with that first axis. XLA
            compiles once per input shape (about half a second on a CPU), and attacks meet
            many batch sizes (the examples left after each stage), so on TensorFlow these
            arguments are padded with zero rows to the next of a few sizes (multiples of 8
            up to 64, then eight per octave: above 64 rows, at most an eighth is padding)
            and the results cut back: one compilation per size class. Zero rows must be
            harmless to `fn`.

    Returns:
        A function with `fn`'s arguments and results.
    """
    fused: dict[str, Callable[..., Any]] = {}
    rows = tuple(rows)

    @functools.wraps(fn)
    def call(*args: Any) -> Any:
        backend = name()
        run = fused.get(backend)
        if run is None:
            run = fused[backend] = _module().fuse(fn, rows)
        return run(*args)

    return call


def fresh_randomness(model: Any, v: Any) -> Any:
    """A context for one forward pass of `model` at the point `v` inside an attack: a
    randomized model (noise layers, dropout at inference) draws new random numbers in each
    pass, on every backend (JAX: seeds derived per pass, since a compiled function cannot
    advance a `SeedGenerator`; TensorFlow and PyTorch: the generators advance)."""
    return _module().fresh_randomness(model, v)


def dynamic_shapes() -> bool:
    """Whether compiled code may build tensors whose shape depends on values (subsets of
    rows): TensorFlow and PyTorch yes, JAX's `jit` no."""
    return _module().DYNAMIC_SHAPES


def to_numpy(tree: Any) -> Any:
    """A nest of backend tensors as NumPy arrays."""
    return keras.tree.map_structure(keras.ops.convert_to_numpy, tree)


__all__ = [
    "BACKENDS",
    "TensorSpec",
    "compile",
    "dynamic_shapes",
    "fresh_randomness",
    "fuse",
    "name",
    "to_numpy",
    "value_and_grad",
]
