"""AutoAttack (Croce & Hein 2020): an ensemble of diverse attacks run as a cascade.

Each member runs only on the examples the previous ones left correctly classified; an
example is robust only if every member failed, so the accuracy is the per-example worst
case. `"autoattack"`: APGD-CE, APGD-T (9 targets), FAB-T (9 targets) and Square (5000
queries), 100 iterations each - the reference implementation's (fra31/auto-attack)
standard version. `version="plus"`: the reference's plus version (APGD-CE, APGD-DLR and FAB
with 5 restarts, Square, APGD-T, FAB-T). `"autoattack-fast"`: APGD-CE and APGD-T with 3
targets, this library's own cheaper cascade for per-epoch use. `version="rand"`: for randomized
models, APGD-CE and APGD-DLR with expectation over transformation (each gradient averaged
over `eot_iter` = 20 draws of the model's randomness), one run each, as the reference's
`rand` version. `version="custom"` runs the members named in `attacks_to_run`, as the
reference implementation's option of the same name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from keras_advreg.attacks.apgd import APGD, APGDTargeted, check_eot_iter
from keras_advreg.attacks.base import Attack, register_attack, register_preset
from keras_advreg.attacks.fab import FAB, FABTargeted
from keras_advreg.attacks.square import Square
from keras_advreg.utils import check_positive_int

VERSIONS = ("standard", "plus", "fast", "rand", "custom")
#: Draws of a randomized model each gradient of the `rand` version averages (the reference's).
RAND_EOT_ITER = 20
#: The members `attacks_to_run` may name (the reference's names).
MEMBERS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")
#: The members of each version, in cascade order (the reference's for standard and plus).
VERSION_MEMBERS = {
    "standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
    "plus": ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"),
    "fast": ("apgd-ce", "apgd-t"),
    "rand": ("apgd-ce", "apgd-dlr"),
}
#: Restarts of the members the reference's plus version restarts.
PLUS_RESTARTS = {"apgd-ce": 5, "apgd-dlr": 5, "fab": 5}


@register_attack("autoattack")
class AutoAttack(Attack):
    """The AutoAttack cascade.

    Members that cannot run on a model are left out, and the report says so:
    APGD-T needs at least 4 classes and FAB-T at least 3 (they use
    `min(num_targets, classes - 1)` targets), FAB at least 2 output units,
    Square one image feature, a bounded box and l-inf.

    Args:
        epsilon: float or sequence of floats. Radius. Defaults to `0.1`.
        version: str. `"standard"` (the reference's: APGD-CE, APGD-T with 9
            targets, FAB-T with 9 targets, Square 5000 queries), `"plus"`
            (the reference's: APGD-CE, APGD-DLR and FAB with 5 restarts each,
            Square, APGD-T, FAB-T), `"fast"` (this library's own: APGD-CE,
            APGD-T with 3 targets), `"rand"` (the reference's, for randomized
            models: APGD-CE and APGD-DLR, one run each, each gradient averaged
            over `eot_iter` draws) or `"custom"` (the members of
            `attacks_to_run`). Defaults to `"standard"`.
        steps: int. APGD and FAB iterations. Defaults to `100`.
        square_queries: int. Queries of the Square attack (standard version,
            l-inf). Defaults to `5000`; `0` leaves Square out (it costs
            `queries` forward passes per example still robust).
        attacks_to_run: sequence of str. With `version="custom"`, the members
            in cascade order, among "apgd-ce", "apgd-dlr", "apgd-t" (9
            targets), "fab", "fab-t" (9 targets) and "square". Defaults to
            `None`.
        eot_iter: int. Draws of the model's randomness each APGD gradient
            averages (expectation over transformation). Defaults to `None`
            (`20` for `version="rand"`, else `1`).
        **kwargs: `norm`, `clip_value_min`, `clip_value_max`, `restarts`
            (of each member; at least 5 for the ones the plus version
            restarts), `seed` (see `Attack`).

    Example:

    >>> AutoAttack(epsilon=0.3, version="fast").describe()
    'AutoAttack-fast (APGD-CE-100, APGD-T-100x3)'
    """

    def __init__(
        self,
        epsilon: Any = 0.1,
        version: str = "standard",
        steps: int = 100,
        square_queries: int = 5000,
        attacks_to_run: Sequence[str] | None = None,
        eot_iter: int | None = None,
        **kwargs: Any,
    ):
        super().__init__(epsilon, **kwargs)
        if version not in VERSIONS:
            raise ValueError(
                f"`version` must be one of {', '.join(map(repr, VERSIONS))}. "
                f"Received: version={version!r}"
            )
        self.eot_iter = None if eot_iter is None else check_eot_iter(eot_iter)
        self.version = version
        if (version == "custom") != (attacks_to_run is not None):
            raise ValueError(
                "`attacks_to_run` is given exactly when version='custom'. "
                f"Received: version={version!r}, attacks_to_run={attacks_to_run!r}"
            )
        if attacks_to_run is not None:
            names = [attacks_to_run] if isinstance(attacks_to_run, str) else list(attacks_to_run)
            unknown = [n for n in names if n not in MEMBERS]
            if not names or unknown:
                raise ValueError(
                    f"`attacks_to_run` must be a non-empty list of {', '.join(map(repr, MEMBERS))}"
                    f". Received: attacks_to_run={attacks_to_run!r}"
                )
            attacks_to_run = list(dict.fromkeys(names))
        self.attacks_to_run = attacks_to_run
        self.steps = check_positive_int("steps", steps)
        if (
            isinstance(square_queries, bool)
            or not isinstance(square_queries, int)
            or square_queries < 0
        ):
            raise ValueError(
                "`square_queries` must be an integer >= 0 (0 leaves Square out). "
                f"Received: square_queries={square_queries!r}"
            )
        self.square_queries = square_queries

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "version": self.version,
            "steps": self.steps,
            "square_queries": self.square_queries,
            "attacks_to_run": self.attacks_to_run,
            "eot_iter": self.eot_iter,
        }

    @property
    def draws(self) -> int:
        """The draws each APGD gradient averages (`eot_iter`, or the version's default)."""
        if self.eot_iter is not None:
            return self.eot_iter
        return RAND_EOT_ITER if self.version == "rand" else 1

    def members(self) -> list[Attack]:
        """The attacks of the ensemble, in cascade order."""
        common = {k: v for k, v in Attack.get_config(self).items() if k not in ("epsilon",)}
        names = self.attacks_to_run
        if names is None:
            names = VERSION_MEMBERS[self.version]
        eot = {"eot_iter": self.draws}
        targets = 3 if self.version == "fast" else 9
        members: list[Attack] = []
        for name in names:
            if self.version == "plus" and name in PLUS_RESTARTS:
                common["restarts"] = max(PLUS_RESTARTS[name], self.restarts)
            elif self.version == "rand":  # the reference's rand version: one run each
                common["restarts"] = 1
            else:
                common["restarts"] = self.restarts
            if name in ("apgd-ce", "apgd-dlr"):
                loss = name.split("-")[1]
                members.append(APGD(self.epsilon, steps=self.steps, loss=loss, **eot, **common))
            elif name == "apgd-t":
                members.append(
                    APGDTargeted(
                        self.epsilon, steps=self.steps, num_targets=targets, **eot, **common
                    )
                )
            elif name == "fab":
                members.append(FAB(self.epsilon, steps=self.steps, **common))
            elif name == "fab-t":
                members.append(
                    FABTargeted(self.epsilon, steps=self.steps, num_targets=targets, **common)
                )
            elif self.norm == "infinity" and self.square_queries:
                square = {k: v for k, v in common.items() if k != "norm"}
                members.append(Square(self.epsilon, queries=self.square_queries, **square))
        return members

    def describe(self) -> str:
        inner = ", ".join(m.describe() for m in self.members())
        name = "AutoAttack" if self.version == "standard" else f"AutoAttack-{self.version}"
        return f"{name} ({inner})"

    def stages(self, problem: Any = None) -> list[Attack]:
        stages: list[Attack] = []
        for member in self.members():
            if problem is not None and isinstance(member, APGDTargeted):
                if (1 if problem.head.binary else problem.head.num_classes) < 4:
                    continue
            if problem is not None and isinstance(member, (Square, FAB)):
                try:
                    member.check_problem(problem)
                except ValueError:
                    continue
            stages += member.stages(problem)
        return stages

    def skipped(self, problem: Any) -> list[str]:
        """The members left out on `problem`, with why."""
        ran = {s.label for s in self.stages(problem)}
        return [m.describe() for m in self.members() if m.label not in ran]


register_preset("autoattack-fast", lambda **kwargs: AutoAttack(**{"version": "fast", **kwargs}))
register_preset("autoattack-rand", lambda **kwargs: AutoAttack(**{"version": "rand", **kwargs}))
