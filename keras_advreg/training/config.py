"""Adversarial-regularization hyperparameters: `AdvConfig` and `make_adv_reg_config`.

The field names and defaults are NSL's (`nsl.configs.AdvRegConfig` plus its
`AdvNeighborConfig`), flattened into one frozen dataclass. NSL's own config
objects are accepted everywhere a config is, and converted at the boundary, so
NSL code ports by changing the import.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np

from keras_advreg.utils import normalize_norm

# The fields of NSL's `AdvNeighborConfig` (the perturbation part of `AdvRegConfig`).
NEIGHBOR_FIELDS = (
    "feature_mask",
    "adv_step_size",
    "adv_grad_norm",
    "clip_value_min",
    "clip_value_max",
    "pgd_iterations",
    "pgd_epsilon",
    "random_init",
)
ADV_LOSSES = ("labeled", "trades", "vat")

# The one legacy spelling of a field: keras_advreg's tuner called `multiplier` `adv_multiplier`
# (NSL's own keyword, and the prefix of its other adversarial fields).
_FIELD_ALIASES = {"adv_multiplier": "multiplier"}
#: The training methods the `adv_method` hyperparameter chooses between (see
#: `AdvConfig.from_hyperparameters`): NSL's neighbours as configured, `AdvConfig.fast`'s
#: recipe, `AdvConfig.free`'s recipe.
ADV_METHODS = ("nsl", "fast", "free")
#: Replays per minibatch of "free" training when not given (`AdvConfig.free`, `adv_method`).
DEFAULT_FREE_REPLAYS = 8


def _check_number(name: str, value: Any, *, minimum: float = 0.0, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"`{name}` must be a finite number. Received: {name}={value!r}")
    if value < minimum or (strict and value == minimum):
        bound = f"> {minimum}" if strict else f">= {minimum}"
        raise ValueError(f"`{name}` must be {bound}. Received: {name}={value!r}")
    return float(value)


def _check_count(name: str, value: Any, expected: str) -> int:
    """An integer >= 1 (an integral float is accepted), or a Keras-style error."""
    number = value
    if isinstance(number, numbers.Real) and float(number).is_integer():
        number = int(number)
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        raise ValueError(f"`{name}` must be {expected}. Received: {name}={value!r}")
    return number


def _check_clip_value(name: str, value: Any) -> Any:
    """NSL's clip bounds: a number or an array broadcastable to the features, or a dict/list
    of them per feature (a `None` entry leaves that feature unclipped). Scalars become floats."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        return {k: _check_clip_value(f"{name}[{k!r}]", v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) and any(v is None or isinstance(v, Mapping) for v in value):
        return [_check_clip_value(f"{name}[{i}]", v) for i, v in enumerate(value)]
    if _is_scalar(value):
        if not math.isfinite(value):
            raise ValueError(f"`{name}` must be finite. Received: {name}={value!r}")
        return float(value)
    try:
        array = np.asarray(value)
        ok = array.dtype.kind in "iuf" and bool(np.all(np.isfinite(array)))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(
            f"`{name}` must be a finite number, an array of them broadcastable to the features, "
            f"a dict/list of those per feature, or None. Received: {name}={value!r}"
        )
    return value


def _check_feature_mask(value: Any) -> None:
    """A mask is numbers or booleans: an array-like, or a dict/list of them per feature."""
    if value is None:
        return
    if isinstance(value, Mapping):
        for item in value.values():
            _check_feature_mask(item)
        return
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        try:
            dtype = np.asarray(value).dtype
        except ValueError:  # a list of masks of different shapes, one per input
            for item in value:
                _check_feature_mask(item)
            return
    if np.dtype(getattr(dtype, "as_numpy_dtype", dtype)).kind not in "biuf":
        raise ValueError(
            "`feature_mask` must hold numbers (0/1 per feature element), as an array or a "
            f"dict/list of arrays per feature, or be None. Received: feature_mask={value!r}"
        )


def _is_scalar(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _to_serializable(value: Any) -> Any:
    """Feature masks and per-feature clip values may be arrays: store them as lists."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _to_serializable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_serializable(v) for v in value]
    return np.asarray(value).tolist()


@dataclasses.dataclass(frozen=True, eq=False)
class AdvConfig:
    """Hyperparameters of adversarial regularization (NSL's fields and defaults).

    Args:
        multiplier: float. Weight of the adversarial loss in the training
            objective. Defaults to `0.2`.
        adv_step_size: float. Size of each perturbation step (epsilon of FGSM).
            Defaults to `0.001`.
        adv_grad_norm: str. Norm the gradient is normalised in: `"infinity"`,
            `"l2"` or `"l1"`. NSL's `NormType` is accepted. Defaults to `"l2"`.
        clip_value_min: float, or a dict of floats per feature. Perturbed
            features are clipped to at least this. Defaults to `None`.
        clip_value_max: float, or a dict of floats per feature. Perturbed
            features are clipped to at most this. Defaults to `None`.
        pgd_iterations: int. Number of projected-gradient steps; `1` is FGSM.
            Defaults to `1`.
        pgd_epsilon: float. Radius of the ball the PGD perturbation is projected
            onto (l-inf or l2 only; NSL cannot project onto an l1 ball).
            Defaults to `None` (no projection).
        random_init: bool. Start from a random point in the ball of radius
            `pgd_epsilon` (or `adv_step_size`). Defaults to `False`.
        feature_mask: tensor-like or dict. 0/1 mask applied to the gradient;
            only masked-in features are perturbed. Defaults to `None`.
        adv_loss: str. The adversarial term: `"labeled"` (NSL's: the training
            loss on the neighbour, found by maximising that loss) or
            `"trades"` (TRADES, Zhang et al. 2019: KL(f(x) || f(x_adv)), the
            neighbour found by maximising the KL from a random start in the
            ball; `multiplier` is TRADES' beta; needs a classification loss), or
            `"vat"` (virtual adversarial training, Miyato et al. 2018:
            KL(p(x) || p(x + r)), the clean prediction held constant, `r` of
            size `adv_step_size` along the direction found by `pgd_iterations`
            power iterations from a random start; no labels needed: examples
            labeled `-1` enter only this term; needs a classification loss).
            Defaults to `"labeled"`.
        free_replays: int. "Free" adversarial training (Shafahi et al. 2019):
            each minibatch is replayed this many times (the paper's m), each
            replay one forward/backward pass at `x + delta` whose input gradient
            moves `delta` by `adv_step_size` (within the `pgd_epsilon` ball,
            which is required) for the next replay; the weights train on the
            perturbed points only, and one Keras step makes `free_replays`
            optimizer updates. See `AdvConfig.free`. Defaults to `None` (off).
        vat_xi: float. VAT's finite-difference step of the power iteration
            (the paper's xi), in the units of the perturbed tensor. Defaults to
            `1e-3`: the paper's 1e-6 is below float32's resolution for a confident
            model (on an MNIST MLP its direction is mostly rounding noise: cosine
            0.33 with the float64 direction, 0.9999 at 1e-3).
        vat_entropy: float >= 0. With `adv_loss="vat"`, the weight of a
            conditional-entropy term added to VAT's KL (Miyato et al.'s
            "VAT+EntMin"): the mean entropy of the clean predictions of every
            example, labeled or not, which trains the model to be confident on
            unlabeled data; both are scaled by `multiplier`. Defaults to `0.0`
            (VAT alone).
        vat_balance: float >= 0. With `adv_loss="vat"`, the weight of a
            class-balance term: the KL of the batch's mean clean prediction
            `m` from the uniform distribution, `log(classes) - H(m)` (the
            marginal-entropy term of Hu et al. 2017's IMSAT; 0 when the batch's
            predictions spread evenly), scaled by `multiplier` too. It keeps
            the model from giving a whole unlabeled cluster of one class to
            another. It assumes one class prediction per example and classes
            roughly balanced in every batch: use batches of a few hundred
            examples (at batch size 1 it cancels `vat_entropy`). Defaults to
            `0.0` (off).

    Example:

    >>> config = AdvConfig(multiplier=0.2, adv_step_size=0.2, adv_grad_norm="infinity")
    >>> config.adv_grad_norm
    'infinity'
    >>> config.replace(multiplier=0.5).multiplier
    0.5
    """

    multiplier: float = 0.2
    adv_step_size: float = 0.001
    adv_grad_norm: str = "l2"
    clip_value_min: Any = None
    clip_value_max: Any = None
    pgd_iterations: int = 1
    pgd_epsilon: float | None = None
    random_init: bool = False
    feature_mask: Any = None
    adv_loss: str = "labeled"
    free_replays: int | None = None
    vat_xi: float = 1e-3
    vat_entropy: float = 0.0
    vat_balance: float = 0.0

    def __post_init__(self):
        set_ = object.__setattr__  # frozen: normalise values in place once
        set_(self, "multiplier", _check_number("multiplier", self.multiplier))
        set_(self, "adv_step_size", _check_number("adv_step_size", self.adv_step_size))
        set_(self, "adv_grad_norm", normalize_norm(self.adv_grad_norm))
        set_(
            self,
            "pgd_iterations",
            _check_count("pgd_iterations", self.pgd_iterations, "an integer >= 1 (1 is FGSM)"),
        )
        if self.pgd_epsilon is not None:
            set_(
                self,
                "pgd_epsilon",
                _check_number("pgd_epsilon", self.pgd_epsilon, strict=True),
            )
            if self.adv_grad_norm == "l1":
                raise ValueError(
                    "`pgd_epsilon` cannot be used with adv_grad_norm='l1': NSL can only project "
                    "perturbations onto an 'infinity' or 'l2' ball. Use one of those norms, or "
                    f"leave pgd_epsilon=None. Received: pgd_epsilon={self.pgd_epsilon!r}, "
                    "adv_grad_norm='l1'"
                )
        if not isinstance(self.random_init, (bool, np.bool_)):
            raise ValueError(
                f"`random_init` must be True or False. Received: random_init={self.random_init!r}"
            )
        set_(self, "random_init", bool(self.random_init))
        if self.adv_loss not in ADV_LOSSES:
            choices = ", ".join(repr(name) for name in ADV_LOSSES)
            raise ValueError(
                f"`adv_loss` must be one of {choices}. Received: adv_loss={self.adv_loss!r}"
            )
        set_(self, "vat_xi", _check_number("vat_xi", self.vat_xi, strict=True))
        for name in ("vat_entropy", "vat_balance"):
            set_(self, name, _check_number(name, getattr(self, name)))
            if getattr(self, name) and self.adv_loss != "vat":
                raise ValueError(
                    f"`{name}` weighs an entropy term of virtual adversarial training and "
                    "needs adv_loss='vat'. "
                    f"Received: {name}={getattr(self, name)!r}, adv_loss={self.adv_loss!r}"
                )
        self._check_free_replays()
        set_(self, "clip_value_min", _check_clip_value("clip_value_min", self.clip_value_min))
        set_(self, "clip_value_max", _check_clip_value("clip_value_max", self.clip_value_max))
        _check_feature_mask(self.feature_mask)
        lo, hi = self.clip_value_min, self.clip_value_max
        if _is_scalar(lo) and _is_scalar(hi) and lo > hi:
            raise ValueError(
                "`clip_value_min` must be <= `clip_value_max`. "
                f"Received: clip_value_min={lo!r}, clip_value_max={hi!r}"
            )

    def _check_free_replays(self) -> None:
        if self.free_replays is None:
            return
        replays = _check_count(
            "free_replays",
            self.free_replays,
            "an integer >= 1 (the number of times each minibatch is replayed), or None",
        )
        object.__setattr__(self, "free_replays", replays)
        problems = []
        if self.adv_loss != "labeled":
            problems.append(f"adv_loss={self.adv_loss!r} (free training uses the labeled loss)")
        if self.pgd_iterations != 1:
            problems.append(
                f"pgd_iterations={self.pgd_iterations!r} (each replay takes one step; "
                "use more replays instead)"
            )
        if self.pgd_epsilon is None:
            problems.append(
                "pgd_epsilon=None (the perturbation carried across replays needs a ball)"
            )
        if problems:
            raise ValueError(
                "`free_replays` needs adv_loss='labeled', pgd_iterations=1 and a `pgd_epsilon`. "
                f"Received: free_replays={replays!r} with " + "; ".join(problems)
            )

    # Equality by value, also when `feature_mask` is an array (and after a save/load round
    # trip, where arrays come back as lists).
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AdvConfig):
            return NotImplemented
        return self.get_config() == other.get_config()

    def __hash__(self) -> int:
        return hash(json.dumps(self.get_config(), sort_keys=True))

    # ------------------------------------------------------------------ conversions
    def replace(self, **changes: Any) -> AdvConfig:
        """Returns a copy with `changes` applied (validated again)."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ValueError(
                f"Unknown AdvConfig field(s) {unknown}. Expected some of "
                f"{[f.name for f in dataclasses.fields(self)]}."
            )
        return dataclasses.replace(self, **changes)

    def to_nsl(self):
        """Returns the equivalent `nsl.configs.AdvRegConfig`."""
        from keras_advreg.backend.nsl import nsl_configs

        return nsl_configs.AdvRegConfig(
            multiplier=self.multiplier,
            adv_neighbor_config=self.to_nsl_neighbor_config(),
        )

    def to_nsl_neighbor_config(self, **overrides: Any):
        """Returns NSL's `AdvNeighborConfig` (the perturbation part), with `overrides`."""
        from keras_advreg.backend.nsl import nsl_configs

        config = self.replace(**overrides) if overrides else self
        return nsl_configs.AdvNeighborConfig(**{f: getattr(config, f) for f in NEIGHBOR_FIELDS})

    @classmethod
    def fast(
        cls,
        epsilon: float,
        multiplier: float = 1.0,
        clip_value_min: Any = 0.0,
        clip_value_max: Any = 1.0,
        **fields: Any,
    ) -> AdvConfig:
        """ "Fast" adversarial training (Wong et al. 2020): FGSM from a random start.

        One step of `1.25 * epsilon` from a uniform random point of the l-inf
        ball of radius `epsilon`, projected back onto the ball (NSL's
        `random_init`, `pgd_iterations=1`). Pair it with an
        `AdversarialRobustnessCallback` on a multi-step attack and
        `stop_on_collapse`: its known failure, catastrophic overfitting, shows
        as that accuracy collapsing within an epoch.

        Example:

        >>> AdvConfig.fast(0.3).adv_step_size
        0.375
        """
        settings = dict(
            multiplier=multiplier,
            adv_step_size=1.25 * epsilon,
            adv_grad_norm="infinity",
            clip_value_min=clip_value_min,
            clip_value_max=clip_value_max,
            pgd_iterations=1,
            pgd_epsilon=epsilon,
            random_init=True,
        )
        return cls(**{**settings, **fields})

    @classmethod
    def free(
        cls,
        epsilon: float,
        replays: int = DEFAULT_FREE_REPLAYS,
        clip_value_min: Any = 0.0,
        clip_value_max: Any = 1.0,
        random_init: bool = False,
        **fields: Any,
    ) -> AdvConfig:
        """ "Free" adversarial training (Shafahi et al. 2019) in the l-inf ball of `epsilon`.

        Each minibatch is replayed `replays` times; every replay's single backward pass
        gives the weights' update and an FGSM step of size `epsilon` for the next replay's
        perturbation (projected onto the ball). An update costs about one plain step: to
        match the compute of `E` plain epochs, train for `E / replays` epochs.

        Example:

        >>> config = AdvConfig.free(0.3, replays=8)
        >>> config.free_replays, config.adv_step_size, config.pgd_epsilon
        (8, 0.3, 0.3)
        """
        settings = dict(
            adv_step_size=epsilon,
            adv_grad_norm="infinity",
            clip_value_min=clip_value_min,
            clip_value_max=clip_value_max,
            pgd_iterations=1,
            pgd_epsilon=epsilon,
            random_init=random_init,
            free_replays=replays,
        )
        return cls(**{**settings, **fields})

    @classmethod
    def from_nsl(cls, config: Any, **overrides: Any) -> AdvConfig:
        """Converts NSL's `AdvRegConfig` or `AdvNeighborConfig` to an `AdvConfig`."""
        neighbor = getattr(config, "adv_neighbor_config", config)
        fields = {f: getattr(neighbor, f) for f in NEIGHBOR_FIELDS}
        if hasattr(config, "multiplier"):
            fields["multiplier"] = config.multiplier
        fields.update(overrides)
        return cls(**fields)

    @classmethod
    def coerce(cls, config: Any, name: str = "adv_config") -> AdvConfig:
        """Accepts `None`, an `AdvConfig`, NSL's configs, or a dict of fields."""
        if config is None:
            return cls()
        if isinstance(config, cls):
            return config
        if isinstance(config, Mapping):
            return cls.from_config(dict(config))
        if hasattr(config, "adv_neighbor_config") or hasattr(config, "adv_step_size"):
            return cls.from_nsl(config)
        raise TypeError(
            f"`{name}` must be a keras_advreg.AdvConfig, an nsl.configs.AdvRegConfig, a dict "
            f"of AdvConfig fields, or None. Received: {name}={config!r} "
            f"(of type {type(config).__name__})"
        )

    def get_config(self) -> dict:
        """Returns a JSON-serialisable dict; `AdvConfig.from_config` inverts it."""
        return {f.name: _to_serializable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_config(cls, config: Mapping) -> AdvConfig:
        unknown = sorted(set(config) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(
                f"Unknown AdvConfig field(s) {unknown}. Expected some of "
                f"{[f.name for f in dataclasses.fields(cls)]}."
            )
        return cls(**config)

    @classmethod
    def from_hyperparameters(cls, hp: Any, base: AdvConfig | None = None) -> AdvConfig:
        """Builds a config from hyperparameter values (e.g. the best keras-tuner trial's).

        The one translation of hyperparameters into a config:
        `keras_advreg.tuning.AdversarialHyperModel` builds every trial's config
        with it.

        Args:
            hp: `keras_tuner.HyperParameters` or a dict of values. Values named
                after an `AdvConfig` field set it (`adv_multiplier` is also
                read as `multiplier`); `adv_method` (one of `ADV_METHODS`), when
                present and not None, then applies that method's recipe:
                `"nsl"` keeps NSL's neighbours as configured (no free
                replays); `"fast"` is `AdvConfig.fast` and `"free"`
                `AdvConfig.free` (`free_replays` replays, `DEFAULT_FREE_REPLAYS`
                if neither the values nor `base` set them) in the ball of
                `pgd_epsilon` (or `adv_step_size` when None), keeping the
                config's multiplier, norm, clip values and feature mask. Other
                values are ignored.
            base: AdvConfig. Values for fields the hyperparameters do not set.
                Defaults to `AdvConfig()`.

        Example:

        >>> AdvConfig.from_hyperparameters({"adv_multiplier": 0.5, "adv_grad_norm": "l2"}).multiplier
        0.5
        >>> AdvConfig.from_hyperparameters({"adv_method": "free", "pgd_epsilon": 0.3}).free_replays
        8
        """
        values = hp if isinstance(hp, Mapping) else getattr(hp, "values", None)
        if not isinstance(values, Mapping):
            raise TypeError(
                f"`hp` must be keras_tuner.HyperParameters or a dict of values. Received: hp={hp!r}"
            )
        fields = {f.name for f in dataclasses.fields(cls)}
        changes = {
            _FIELD_ALIASES.get(name, name): value
            for name, value in values.items()
            if _FIELD_ALIASES.get(name, name) in fields
        }
        base = base or cls()
        method = values.get("adv_method")
        if method is None:
            return base.replace(**changes)
        if method not in ADV_METHODS:
            raise ValueError(
                f"`adv_method` must be one of {', '.join(map(repr, ADV_METHODS))}. "
                f"Received: adv_method={method!r}"
            )
        replays = changes.pop("free_replays", None) or base.free_replays
        config = base.replace(**changes, free_replays=None)
        if method == "nsl":
            return config
        eps = config.pgd_epsilon if config.pgd_epsilon is not None else config.adv_step_size
        keep = ("multiplier", "adv_grad_norm", "clip_value_min", "clip_value_max", "feature_mask")
        kept = {f: getattr(config, f) for f in keep}
        if method == "fast":
            return cls.fast(eps, **kept, adv_loss=config.adv_loss)
        return cls.free(
            eps, replays or DEFAULT_FREE_REPLAYS, **kept, random_init=config.random_init
        )


def make_adv_reg_config(
    multiplier: Any = 0.2,
    feature_mask: Any = None,
    adv_step_size: float = 0.001,
    adv_grad_norm: Any = "l2",
    clip_value_min: Any = None,
    clip_value_max: Any = None,
    pgd_iterations: int = 1,
    pgd_epsilon: float | None = None,
    random_init: bool = False,
) -> AdvConfig:
    """NSL's keyword helper, returning a validated `AdvConfig`.

    Same arguments and defaults as `nsl.configs.make_adv_reg_config`. The first
    argument may also be an existing config (`AdvConfig` or NSL's
    `AdvRegConfig`) to convert; then the other arguments must stay at their
    defaults.

    Args:
        multiplier: float. Weight of the adversarial loss. Defaults to `0.2`.
        feature_mask: 0/1 mask on the gradient. Defaults to `None`.
        adv_step_size: float. Perturbation step size. Defaults to `0.001`.
        adv_grad_norm: str. `"infinity"`, `"l2"` or `"l1"`. Defaults to `"l2"`.
        clip_value_min: float. Lower clip of perturbed features. Defaults to `None`.
        clip_value_max: float. Upper clip of perturbed features. Defaults to `None`.
        pgd_iterations: int. PGD steps (1 is FGSM). Defaults to `1`.
        pgd_epsilon: float. PGD projection radius. Defaults to `None`.
        random_init: bool. Random start inside the ball. Defaults to `False`.

    Returns:
        An `AdvConfig`.

    Example:

    >>> make_adv_reg_config(multiplier=0.2, adv_step_size=0.2, adv_grad_norm="infinity")
    AdvConfig(multiplier=0.2, adv_step_size=0.2, adv_grad_norm='infinity', clip_value_min=None, clip_value_max=None, pgd_iterations=1, pgd_epsilon=None, random_init=False, feature_mask=None, adv_loss='labeled', free_replays=None, vat_xi=0.001, vat_entropy=0.0, vat_balance=0.0)
    """
    fields = dict(
        feature_mask=feature_mask,
        adv_step_size=adv_step_size,
        adv_grad_norm=adv_grad_norm,
        clip_value_min=clip_value_min,
        clip_value_max=clip_value_max,
        pgd_iterations=pgd_iterations,
        pgd_epsilon=pgd_epsilon,
        random_init=random_init,
    )
    if _is_scalar(multiplier):
        return AdvConfig(multiplier=multiplier, **fields)
    # An existing config to convert; arguments left at their defaults keep its values.
    defaults = AdvConfig()
    changed = {
        k: v
        for k, v in fields.items()
        if _to_serializable(v) != _to_serializable(getattr(defaults, k))
    }
    config = AdvConfig.coerce(multiplier, name="multiplier")
    return config.replace(**changed) if changed else config
