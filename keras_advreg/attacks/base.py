"""`Attack`: the base class of every attack, and the registry `get` looks names up in.

An attack is a small configuration object (epsilon, norm, clip range, its own settings)
with one piece of graph code, `perturb`, that moves a batch of flattened features
within the epsilon ball. Finding the logits, flattening features, batching, compiling,
restarts and cascades are shared (`keras_advreg.attacks.problem`,
`keras_advreg.evaluation`), so a new attack is one module: a subclass that implements
`perturb` and registers a name with `@register_attack("name")`.
"""

from __future__ import annotations

import copy
import json
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import keras
import numpy as np

from keras_advreg.utils import check_clip, check_positive_int, format_eps, normalize_norm

_REGISTRY: dict[str, type] = {}
_PRESETS: dict[str, Any] = {}


def check_epsilons(value: Any, name: str = "epsilon") -> tuple[float, ...]:
    """A number or a non-empty sequence of distinct finite numbers >= 0, as a tuple of floats."""
    eps = value
    if isinstance(eps, numbers.Real) and not isinstance(eps, bool):
        eps = (eps,)
    if isinstance(eps, np.ndarray):
        eps = eps.tolist()
    if isinstance(eps, (str, bytes)) or not isinstance(eps, Sequence) or not eps:
        raise ValueError(
            f"`{name}` must be a number or a non-empty sequence of numbers >= 0. "
            f"Received: {name}={value!r}"
        )
    checked = []
    for e in eps:
        if isinstance(e, bool) or not isinstance(e, numbers.Real) or not math.isfinite(e):
            raise ValueError(f"`{name}` must hold finite numbers. Received: {name}={value!r}")
        if e < 0:
            raise ValueError(f"`{name}` must be >= 0. Received: {name}={value!r}")
        checked.append(float(e))
    if len(set(checked)) != len(checked):
        raise ValueError(f"`{name}` has duplicates. Received: {name}={value!r}")
    names = [format_eps(e) for e in checked]
    clash = next((n for n in names if names.count(n) > 1), None)
    if clash is not None:
        raise ValueError(
            f"`{name}` values must differ in their first 6 significant digits: they name log "
            f"keys and report rows (formatted as '{{:g}}'), and several would be named "
            f"{clash!r}. Received: {name}={value!r}"
        )
    return tuple(checked)


def register_attack(name: str):
    """Class decorator: makes an `Attack` subclass available as `attacks.get(name)`.

    Also registers it with Keras' serialization under the package `keras_advreg`.
    """

    def decorate(cls):
        cls.name = name
        _REGISTRY[name] = cls
        return keras.saving.register_keras_serializable(package="keras_advreg")(cls)

    return decorate


def register_preset(name: str, factory: Any) -> None:
    """Makes `attacks.get(name)` return `factory(**kwargs)` (e.g. `"autoattack-fast"`)."""
    _PRESETS[name] = factory


def names() -> list[str]:
    """Every name `attacks.get` accepts."""
    return sorted(set(_REGISTRY) | set(_PRESETS))


class Attack:
    """Base class of the attacks: the settings every attack shares, and the interface.

    Args:
        epsilon: float or sequence of floats >= 0. Attack radius; several radii
            are evaluated in one pass (each log key and report row is named by
            its epsilon). Defaults to `0.1`.
        norm: str. `"infinity"`, `"l2"` (or `"l1"` where the attack supports
            it). Defaults to `"infinity"`.
        clip_value_min: float or dict of floats per feature. Lower bound of
            the perturbed features (e.g. `0.0` for images). Defaults to `None`.
        clip_value_max: float or dict of floats per feature. Upper bound.
            Defaults to `None`.
        restarts: int. Runs of a randomised attack; each restart runs only on
            the examples still classified correctly. Defaults to `1`.
        seed: int. Seed of the random draws: the same seed gives the same
            result on every call. Defaults to `None` (drawn from NumPy's
            global state at each evaluation, so `keras.utils.set_random_seed`
            makes runs repeatable).
    """

    name: ClassVar[str] = ""
    #: "single-step", "fixed-step" or "adaptive": how much an accuracy under it can flatter.
    strength: ClassVar[str] = "adaptive"
    #: Whether the attack needs input gradients (False: gradient-free, forward passes only).
    uses_gradients: ClassVar[bool] = True
    norms: ClassVar[tuple[str, ...]] = ("infinity", "l2")
    #: An int field whose value is passed to the compiled attack at run time (as `perturb`'s
    #: `variant`), so that the stages differing only in it share one trace; or None.
    runtime_field: ClassVar[str | None] = None

    def __init__(
        self,
        epsilon: Any = 0.1,
        norm: str = "infinity",
        clip_value_min: Any = None,
        clip_value_max: Any = None,
        restarts: int = 1,
        seed: int | None = None,
    ):
        self.epsilon = check_epsilons(epsilon)
        self.norm = normalize_norm(norm, "norm")
        if self.norm not in self.norms:
            allowed = ", ".join(repr(n) for n in self.norms)
            raise ValueError(
                f"`norm` must be one of {allowed} for attack {self.name!r}. Received: norm={norm!r}"
            )
        self.clip_value_min = check_clip("clip_value_min", clip_value_min)
        self.clip_value_max = check_clip("clip_value_max", clip_value_max)
        lo, hi = self.clip_value_min, self.clip_value_max
        if isinstance(lo, float) and isinstance(hi, float) and lo > hi:
            raise ValueError(
                "`clip_value_min` must be <= `clip_value_max`. "
                f"Received: clip_value_min={lo!r}, clip_value_max={hi!r}"
            )
        if isinstance(lo, float) and isinstance(hi, float):
            wide = [e for e in self.epsilon if e > hi - lo and self.norm == "infinity"]
            if wide:
                raise ValueError(
                    f"`epsilon` must be at most the size of the clip range ({hi - lo:g}) for "
                    "an l-inf attack: a larger ball contains every input. "
                    f"Received: epsilon={wide[0]!r}, clip range [{lo:g}, {hi:g}]"
                )
        self.restarts = check_positive_int("restarts", restarts)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
            raise ValueError(f"`seed` must be an integer or None. Received: seed={seed!r}")
        self.seed = None if seed is None else int(seed)

    # ------------------------------------------------------------------ configuration
    @property
    def epsilons(self) -> tuple[float, ...]:
        """The attack radii, as a tuple."""
        return self.epsilon

    def get_config(self) -> dict:
        """The constructor arguments, JSON-ready; `from_config` inverts it."""
        return {
            "epsilon": list(self.epsilon) if len(self.epsilon) > 1 else self.epsilon[0],
            "norm": self.norm,
            "clip_value_min": self.clip_value_min,
            "clip_value_max": self.clip_value_max,
            "restarts": self.restarts,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config: Mapping) -> Attack:
        return cls(**config)

    def replace(self, **changes: Any) -> Attack:
        """A copy with `changes` applied (validated again)."""
        return type(self).from_config({**self.get_config(), **changes})

    def key(self) -> str:
        """What a compiled version depends on: the configuration without radii and seed."""
        config = {k: v for k, v in self.get_config().items() if k not in ("epsilon", "seed")}
        return f"{type(self).__name__}:{json.dumps(config, sort_keys=True, default=repr)}"

    def compiled_key(self) -> str:
        """`key()` without the `runtime_field` (one compiled function for all its values)."""
        if self.runtime_field is None:
            return self.key()
        return self.replace(**{self.runtime_field: None}).key()

    def runtime_value(self) -> int:
        """The value of the `runtime_field` passed to the compiled attack (0 when none)."""
        return int(getattr(self, self.runtime_field) or 0) if self.runtime_field else 0

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self) -> int:
        return hash(self.key())

    def __deepcopy__(self, memo: dict) -> Attack:
        return self.replace()

    def describe(self) -> str:
        """A short human-readable name with the budget, e.g. `"PGD-40"`."""
        return self.name.upper()

    # ------------------------------------------------------------------ what runs
    @property
    def label(self) -> str:
        """The name of this attack in reports' per-attack counts (e.g. `"apgd-ce"`)."""
        return self.name

    def stages(self, problem: Any = None) -> list[Attack]:
        """The attacks run in turn, each on the examples the previous ones left robust.

        Args:
            problem: The `AttackProblem` about to be attacked (an ensemble may
                leave out members that cannot run on it), or None.
        """
        return [self]

    def check_problem(self, problem: Any) -> None:
        """Raises before any work when the attack cannot run on `problem` (e.g. too few classes)."""

    def draw(self, problem: Any, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """The random numbers one run on `n` examples uses, drawn on the host.

        Drawn with NumPy and passed to the compiled attack as arrays, so that every
        Keras backend gets the same numbers (and the same adversarial points).

        Args:
            problem: The `AttackProblem` (its `dims`, `image_shape`).
            n: int. The number of examples.
            rng: `np.random.Generator` of this run (derived from the seed).

        Returns:
            A dict of float32 arrays, passed to `perturb` as `noise` (`{}`: none).
        """
        return {}

    def perturb(self, problem: Any, state: Any, eps: Any, noise: dict) -> tuple[Any, Any]:
        """Compiled code (`keras.ops`): the adversarial points of one batch for one radius.

        Args:
            problem: `keras_advreg.attacks.problem.AttackProblem`: the model's
                scores, gradients, labels and box on flattened features.
            state: `keras_advreg.attacks.problem.BatchState`: the batch
                (`v0`, `ids`, the clean scores and input gradient).
            eps: float32 scalar tensor. The radius.
            noise: dict of tensors. What `draw` returned for this run.

        An attack with a `runtime_field` also takes `variant`, an int32 scalar
        tensor holding that field's value.

        Returns:
            `(v_adv, broken)`: points of shape `(batch, D)` inside the ball and
            the box, and whether each one is misclassified.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement `perturb`.")


def get(identifier: Any, **kwargs: Any) -> Attack:
    """Returns an attack from a name, a config dict or an instance (like `keras.losses.get`).

    Args:
        identifier: str (one of `keras_advreg.attacks.names()`, e.g. `"pgd"`,
            `"apgd-ce"`, `"autoattack"`), a dict from `serialize`, or an
            `Attack` (returned as is, or a copy with `kwargs` applied).
        **kwargs: Constructor arguments (e.g. `epsilon=0.3, steps=40`).

    Example:

    >>> from keras_advreg import attacks
    >>> attacks.get("pgd", epsilon=0.3, steps=40).describe()
    'PGD-40'
    """
    if isinstance(identifier, Attack):
        return identifier.replace(**kwargs) if kwargs else identifier
    if isinstance(identifier, Mapping):
        attack = deserialize(identifier)
        return attack.replace(**kwargs) if kwargs else attack
    if isinstance(identifier, str):
        key = identifier.strip().lower().replace("_", "-")
        if key in _PRESETS:
            return _PRESETS[key](**kwargs)
        if key in _REGISTRY:
            return _REGISTRY[key](**kwargs)
    raise ValueError(
        f"`attack` must be one of {names()}, an attack config dict or a "
        f"keras_advreg.attacks.Attack. Received: attack={identifier!r}"
    )


def serialize(attack: Attack) -> dict:
    """`{"class_name": ..., "config": ...}` (Keras' format, registered names)."""
    return keras.saving.serialize_keras_object(attack)


def deserialize(config: Mapping) -> Attack:
    """Inverse of `serialize`."""
    attack = keras.saving.deserialize_keras_object(dict(config))
    if not isinstance(attack, Attack):
        raise ValueError(f"`config` does not describe an attack. Received: config={config!r}")
    return copy.copy(attack)


def from_arguments(
    attack: Any,
    epsilon: Any = None,
    norm: Any = None,
    clip_value_min: Any = None,
    clip_value_max: Any = None,
    pgd_steps: Any = None,
    pgd_step_size: Any = None,
    random_start: Any = None,
) -> Attack:
    """The attack described by the keyword arguments that predate attack objects.

    `attack` is a name, a config dict or an `Attack`; the other arguments, where not
    None, set the attack's fields (`pgd_*` and `random_start` only for `"pgd"`).
    """
    if epsilon is not None:  # named as the callers' argument
        epsilon = check_epsilons(epsilon, "epsilons")
    common = {
        "epsilon": epsilon,
        "norm": norm,
        "clip_value_min": clip_value_min,
        "clip_value_max": clip_value_max,
    }
    common = {k: v for k, v in common.items() if v is not None}
    if pgd_steps is not None:  # checked under the callers' names, whichever the attack
        check_positive_int("pgd_steps", pgd_steps)
    if pgd_step_size is not None and (
        isinstance(pgd_step_size, bool)
        or not isinstance(pgd_step_size, numbers.Real)
        or not pgd_step_size > 0
    ):
        raise ValueError(
            f"`pgd_step_size` must be a number > 0 or None. Received: pgd_step_size={pgd_step_size!r}"
        )
    pgd = {"steps": pgd_steps, "step_size": pgd_step_size, "random_start": random_start}
    pgd = {k: v for k, v in pgd.items() if v is not None}
    if isinstance(attack, (Attack, Mapping)):
        if pgd:
            raise ValueError(
                "`pgd_steps`, `pgd_step_size` and `random_start` describe attack='pgd'; set "
                "them on the attack object instead, e.g. attacks.PGD(steps=40). Received: "
                f"attack={attack!r} with {', '.join(f'{k}={v!r}' for k, v in pgd.items())}"
            )
        return get(attack, **common)
    name = attack.strip().lower() if isinstance(attack, str) else attack
    return get(name, **common, **(pgd if name == "pgd" else {}))
