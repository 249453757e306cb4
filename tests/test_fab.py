"""FAB and FAB-T: exact on linear classifiers, the box projection, targets, bad inputs.

On a linear classifier the smallest perturbation that changes the class is known in closed
form: `min_{k != y} |z_k - z_y| / ||w_k - w_y||_dual` (the dual norm: l1 for l-inf, l2 for
l2, l-inf for l1), and FAB, whose linearisation is then exact, must find it. The projection
onto a hyperplane within a box is checked against a linear/quadratic program solved by
SciPy. Backend-agnostic (`keras.ops`): CI also runs this module on JAX and PyTorch.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import ops

from keras_advreg import attacks
from keras_advreg.attacks import FAB, AutoAttack, FABTargeted, fab_core
from keras_advreg.attacks.fab_core import project_hyperplane
from keras_advreg.backend import ops as backend_ops

pytestmark = pytest.mark.backends

DUAL = {"infinity": 1, "l2": 2, "l1": np.inf}
NORMS = ("infinity", "l2", "l1")


def _np(t):
    return keras.ops.convert_to_numpy(t)


def _linear(classes: int = 3, dims: int = 8, n: int = 40, seed: int = 0):
    """A linear classifier, points in [0.3, 0.7] and the exact distances to its boundary."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(dims, classes)).astype("float32")
    b = rng.normal(size=classes).astype("float32")
    model = keras.Sequential([keras.Input((dims,)), keras.layers.Dense(classes)])
    model.set_weights([w, b])
    x = rng.uniform(0.3, 0.7, size=(n, dims)).astype("float32")
    z = x.astype(np.float64) @ w + b
    y = z.argmax(1)

    def exact(norm, target=None):
        """Per example: the smallest `norm` of a step to the boundary (towards `target`)."""
        best = np.full(n, np.inf)
        for k in range(classes):
            if target is not None and k != target:
                continue
            gap = np.abs(z[:, k] - z[np.arange(n), y])
            size = np.linalg.norm(w[:, [k]].T - w[:, y].T, ord=DUAL[norm], axis=1)
            dist = np.divide(gap, size, out=np.full(n, np.inf), where=k != y)
            best = np.minimum(best, dist)
        return best

    return model, x, y, exact


# --------------------------------------------------------------------------- the core
@pytest.mark.parametrize("norm", NORMS)
def test_fab_core_finds_the_minimal_perturbation_of_a_linear_model(norm):
    model, x, y, exact = _linear()
    w, b = (np.asarray(a) for a in model.get_weights())
    onehot = np.eye(3, dtype=bool)[y]

    def linearize(v):
        z = ops.matmul(v, w) + b
        f = z - ops.sum(ops.where(onehot, z, 0.0), axis=1, keepdims=True)
        g = w.T[None, :, :] - w[:, y].T[:, None, :]  # d(z_k - z_y)/dv
        return ops.where(onehot, fab_core.NOT_FOUND, f), ops.convert_to_tensor(g)

    def run(x, y):  # eps 0: no early stop, every example runs all 100 iterations; no box.
        return fab_core.fab(
            linearize, lambda v: ops.matmul(v, w) + b, x, y, 0.0, -np.inf, np.inf, norm=norm
        )

    adv, norms = backend_ops.to_numpy(backend_ops.compile(run, [])(x, y.astype("int32")))
    d = exact(norm)
    np.testing.assert_array_less(d * (1 - 1e-4), norms)  # nothing beats the minimum
    np.testing.assert_array_less(norms, d * 1.01)  # within 1% of it
    # The points are what they claim: misclassified, at the reported distance.
    assert np.all((adv @ w + b).argmax(1) != y)
    np.testing.assert_allclose(fab_core.lp_norm(adv - x, norm, 1), norms, rtol=1e-5)


@pytest.mark.parametrize("dims", [6, 120])
@pytest.mark.parametrize("norm", NORMS)
def test_projection_onto_a_hyperplane_in_a_box_solves_the_program(norm, dims):
    scipy_optimize = pytest.importorskip("scipy.optimize")
    rng = np.random.default_rng(1)
    n = 12  # with 120 features, the solution crosses many of the box's faces
    t = np.clip(rng.uniform(-0.3, 1.3, (n, dims)), 0, 1).astype("float32")
    w = rng.normal(size=(n, dims)).astype("float32")
    w[0, :2] = 0.0  # coordinates that do not matter
    b = (np.sum(w * t, 1) + rng.normal(scale=dims / 6, size=n)).astype("float32")
    b[1] = np.sum(w[1] * t[1]) + 100.0 * dims  # out of reach: the closest corner
    lo, hi = np.float32(0.0), np.float32(1.0)
    d = _np(project_hyperplane(t, w, b, lo, hi, norm))
    assert np.all(t + d >= lo - 1e-6) and np.all(t + d <= hi + 1e-6)
    for i in range(n):
        bounds = list(zip(lo - t[i], hi - t[i]))
        # What w . d can be in the box: whether the plane is within reach.
        low = np.sum(np.where(w[i] > 0, w[i] * (lo - t[i]), w[i] * (hi - t[i])))
        high = np.sum(np.where(w[i] > 0, w[i] * (hi - t[i]), w[i] * (lo - t[i])))
        need = b[i] - np.sum(w[i] * t[i])
        if not low <= need <= high:  # the corner of the box closest to the plane
            corner = np.where((w[i] > 0) == (need > 0), hi - t[i], lo - t[i])
            corner = np.where(w[i] == 0, 0.0, corner)
            np.testing.assert_allclose(d[i], corner, atol=1e-5)
            continue
        np.testing.assert_allclose(np.sum(w[i] * d[i]), need, atol=1e-4)
        if norm == "infinity":  # min s: -s <= d <= s, w . d = need (variables d, s)
            c = np.r_[np.zeros(dims), 1.0]
            a_ub = np.block(
                [[np.eye(dims), -np.ones((dims, 1))], [-np.eye(dims), -np.ones((dims, 1))]]
            )
            res = scipy_optimize.linprog(
                c, A_ub=a_ub, b_ub=np.zeros(2 * dims), A_eq=np.r_[w[i], 0.0][None],
                b_eq=[need], bounds=bounds + [(0, None)],
            )  # fmt: skip
            best = res.fun
        elif norm == "l1":  # d = p - m, min sum(p + m)
            c = np.ones(2 * dims)
            res = scipy_optimize.linprog(
                c, A_eq=np.r_[w[i], -w[i]][None], b_eq=[need],
                bounds=[(0, max(h, 0)) for _, h in bounds] + [(0, max(-lo_, 0)) for lo_, _ in bounds],
            )  # fmt: skip
            best = res.fun
        else:
            res = scipy_optimize.minimize(
                lambda v: np.sum(v**2), np.zeros(dims), jac=lambda v: 2 * v,
                constraints=[{"type": "eq", "fun": lambda v, i=i, need=need: np.sum(w[i] * v) - need}],
                bounds=bounds, method="SLSQP", options={"ftol": 1e-12, "maxiter": 500},
            )  # fmt: skip
            best = np.sqrt(res.fun)
        assert res.success
        np.testing.assert_allclose(
            _np(fab_core.lp_norm(d[i : i + 1], norm, 1))[0], best, rtol=1e-4, atol=1e-6
        )


# --------------------------------------------------------------------------- the attacks
def _broken(model, x, y, attack):
    _, clean, adv = attacks.generate_adversarial_examples(model, x, y, attack=attack)
    return (clean == y) & (adv != y)


@pytest.mark.parametrize("norm", ["infinity", "l2"])
def test_fab_breaks_exactly_the_examples_within_their_distance(norm):
    model, x, y, exact = _linear(n=24)
    d = exact(norm)
    eps = float(np.median(d))
    broken = _broken(model, x, y, FAB(eps, norm=norm, seed=0))
    # Sound: never an example farther than eps; strong: every one within eps / 1.01.
    assert not np.any(broken & (d > eps))
    assert np.all(broken[d < eps / 1.01])
    assert 0 < broken.sum() < len(y)


def test_fab_with_eps_below_every_distance_breaks_nothing_and_above_breaks_all():
    model, x, y, exact = _linear(n=24)
    d = exact("infinity")
    assert not _broken(model, x, y, FAB(0.99 * d.min(), seed=0)).any()
    assert _broken(model, x, y, FAB(1.01 * d.max(), seed=0)).all()


def test_fab_t_moves_towards_its_target_class():
    model, x, y, exact = _linear(classes=4, n=24)
    z = _np(model(x))
    second = np.argsort(-np.where(np.eye(4, dtype=bool)[y], -np.inf, z), axis=1)[:, 0]
    d_target = np.array([exact("l2", t)[i] for i, t in enumerate(second)])
    eps = float(d_target.max() * 1.02)
    attack = FABTargeted(eps, norm="l2", num_targets=1, seed=0)
    x_adv, clean, adv = attacks.generate_adversarial_examples(model, x, y, attack=attack)
    assert np.all(adv == second)  # each one lands in its target class (the most likely other)
    assert np.all(np.linalg.norm(x_adv - x, axis=1) <= eps * (1 + 1e-6))


def test_fab_keeps_to_the_box_and_restarts_from_random_points():
    model, x, y, exact = _linear(n=24)
    attack = FAB(0.25, restarts=3, clip_value_min=0.35, clip_value_max=0.65, seed=0)
    x_adv, _, _ = attacks.generate_adversarial_examples(
        model, np.clip(x, 0.35, 0.65), y, attack=attack
    )
    # The box in float32, as the points are: float32(0.35) < 0.35.
    assert x_adv.min() >= np.float32(0.35) and x_adv.max() <= np.float32(0.65)
    stages = attack.stages()
    assert [s.restart_index for s in stages] == [0, 1, 2] and all(s.restarts == 1 for s in stages)
    rng = np.random.default_rng(0)
    problem = type("P", (), {"dims": 5})()
    assert not stages[0].draw(problem, 2, rng)["start"].any()  # the first: the clean point
    assert stages[1].draw(problem, 2, rng)["start"].any()


def test_fab_t_needs_three_classes_before_any_work():
    model, x, y, _ = _linear(classes=2, n=8)
    with pytest.raises(ValueError, match="at least 3 classes"):
        attacks.generate_adversarial_examples(model, x, y, attack="fab-t")
    assert _broken(model, x, y, FAB(10.0, seed=0)).all()  # untargeted FAB runs on 2 classes


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(steps=0), "steps"),
        (dict(alpha_max=1.0), "alpha_max"),
        (dict(eta=0.5), "eta"),
        (dict(beta=0.0), "beta"),
        (dict(norm="l3"), "norm"),
        (dict(restart_index=-1), "restart_index"),
    ],
)
def test_fab_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FAB(0.1, **kwargs)


def test_fab_config_round_trip_and_names():
    attack = FABTargeted(epsilon=[0.1, 0.2], norm="l2", steps=50, num_targets=5, restarts=2, seed=3)
    again = attacks.deserialize(attacks.serialize(attack))
    assert again == attack and again.get_config() == attack.get_config()
    assert attacks.get("fab-t", epsilon=0.3).describe() == "FAB-T-100x9"
    assert attacks.get("fab").describe() == "FAB-100"
    assert FAB.from_config(FAB(0.2, beta=0.8).get_config()) == FAB(0.2, beta=0.8)
    # 5 targets x 2 restarts, one trace for all of them.
    stages = attack.stages()
    assert len(stages) == 10 and len({s.compiled_key() for s in stages}) == 1


def test_autoattack_standard_runs_the_reference_members():
    standard = AutoAttack(epsilon=0.3)
    assert standard.describe() == (
        "AutoAttack (APGD-CE-100, APGD-T-100x9, FAB-T-100x9, Square-5000)"
    )
    plus = AutoAttack(epsilon=0.3, version="plus")
    assert [m.label for m in plus.members()] == [
        "apgd-ce",
        "apgd-dlr",
        "fab",
        "square",
        "apgd-t",
        "fab-t",
    ]
    assert [m.restarts for m in plus.members()] == [5, 5, 5, 1, 1, 1]
    custom = AutoAttack(epsilon=0.3, version="custom", attacks_to_run=["fab", "fab-t"])
    assert [m.label for m in custom.members()] == ["fab", "fab-t"]
