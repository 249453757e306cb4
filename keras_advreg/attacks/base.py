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
import warnings
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


#: The keyword arguments of the entry points that predate attack objects, and the field of
#: `Attack` each one sets. An attack adds its own (e.g. `PGD`'s `pgd_steps`) in its
#: `legacy_arguments`.
LEGACY_ARGUMENTS = {
    "norm": "norm",
    "clip_value_min": "clip_value_min",
    "clip_value_max": "clip_value_max",
}


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
    #: The deprecated keyword arguments of the entry points that set this attack's fields
    #: (name -> field; see `resolve`). An attack adds its own, as `PGD` does `pgd_steps`.
    legacy_arguments: ClassVar[dict[str, str]] = LEGACY_ARGUMENTS

    def __init__(
        self,
        epsilon: Any = 0.1,
        norm: str = "infinity",
        clip_value_min: Any = None,
        clip_value_max: Any = None,
        restarts: int = 1,
        seed: int | None = None,
        **unknown: Any,
    ):
        if unknown:
            shown = ", ".join(f"{k}={v!r}" for k, v in unknown.items())
            raise ValueError(
                f"Unrecognized argument(s) {sorted(unknown)} for attack {self.name!r} "
                f"({type(self).__name__}). Received: {shown}"
            )
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

    def details(self) -> list[str]:
        """Phrases for the attack's own budget in a one-line summary (e.g. `["100 steps"]`)."""
        steps = getattr(self, "steps", None)
        return [] if steps is None else [f"{steps} steps"]

    def report_fields(self) -> dict:
        """Values a report's `config` shows beside `get_config()` (e.g. PGD's step sizes)."""
        return {}

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


def with_options(attack: Attack, options: Mapping[str, Any]) -> Attack:
    """`attack` with the options that are not None applied: field names, or the names of its
    `legacy_arguments` (e.g. `pgd_steps` for PGD's `steps`), as a command line passes them.

    Raises:
        ValueError: For an option the attack has no field for.
    """
    fields = {}
    for key, value in options.items():
        if value is None:
            continue
        field = type(attack).legacy_arguments.get(key, key if key in attack.get_config() else None)
        if field is None:
            raise ValueError(
                f"`{key}` does not apply to attack={attack.name!r} ({type(attack).__name__}, "
                f"whose settings are {sorted(attack.get_config())}). Received: {key}={value!r}"
            )
        fields[field] = value
    return attack.replace(**fields) if fields else attack


def resolve(
    attack: Any,
    epsilons: Any = None,
    *,
    epsilons_name: str = "epsilons",
    caller: str = "",
    stacklevel: int = 3,
    **legacy: Any,
) -> Attack:
    """The attack an entry point runs: `attack` (a name, config dict or `Attack`) at `epsilons`.

    The one place the entry points (`evaluate_robustness`, `generate_adversarial_examples`,
    the callbacks, the hypermodel) turn their arguments into an `Attack`. `epsilons`, when
    not None, replaces the attack's radii (the convenience that sweeps an attack over
    several radii). `legacy` holds the deprecated keyword arguments (`norm`,
    `clip_value_min`, `clip_value_max`, and an attack's own such as `pgd_steps`): those
    that are not None set the attack's fields, with a `DeprecationWarning` that names the
    attack to pass instead.

    Args:
        attack: str, config dict or `Attack`.
        epsilons: float or sequence of floats, or None (the attack's own).
        epsilons_name: str. The caller's name of `epsilons`, for errors.
        caller: str. The entry point, for the warning (e.g. `"evaluate_robustness"`).
        stacklevel: int. Of the warning: 3 points at the caller of the function
            that calls `resolve`.
        **legacy: The deprecated keyword arguments as the caller received them.

    Example:

    >>> resolve("pgd", 0.3).describe(), resolve("pgd", 0.3).epsilons
    ('PGD-10', (0.3,))
    """
    resolved = get(attack)
    if epsilons is not None:
        resolved = resolved.replace(epsilon=check_epsilons(epsilons, epsilons_name))
    given = {k: v for k, v in legacy.items() if v is not None}
    if given:
        resolved = with_options(resolved, given)
        shown = ", ".join(f"{k}={v!r}" for k, v in given.items())
        warnings.warn(
            f"{caller + ': ' if caller else ''}the keyword argument(s) {shown} are deprecated "
            "and will be removed: set them on the attack instead, "
            f"attack=keras_advreg.attacks.{resolved!r}",
            DeprecationWarning,
            stacklevel=stacklevel,
        )
    return resolved
