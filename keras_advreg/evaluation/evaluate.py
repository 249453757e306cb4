"""`evaluate_robustness`: a classifier's accuracy under an attack, over a whole dataset."""

from __future__ import annotations

import itertools
import time
import warnings
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from keras_advreg.attacks.apgd import APGD, APGDTargeted
from keras_advreg.attacks.autoattack import RAND_EOT_ITER, AutoAttack
from keras_advreg.attacks.base import Attack, resolve
from keras_advreg.attacks.bounds import UNBOUNDED, check_in_box, is_unbounded, with_model_bounds
from keras_advreg.attacks.heads import attack_target
from keras_advreg.attacks.problem import AttackProblem, check_labels
from keras_advreg.attacks.runner import BatchResult, attack_batch, prepare
from keras_advreg.data.batching import batches, model_inputs
from keras_advreg.data.validation import check_classifier
from keras_advreg.data.validation import check_finite as check_finite_values
from keras_advreg.evaluation.checks import (
    WEAK_STRENGTHS,
    cascade_warnings,
    describe_randomness,
    gap_warning,
    randomness,
    sanity_warnings,
)
from keras_advreg.evaluation.report import RobustnessReport
from keras_advreg.evaluation.state import EvaluationState, batch_fingerprint, model_fingerprint
from keras_advreg.layers.embedding_space import EmbeddingSpace
from keras_advreg.utils import check_positive_int, require_backend

# The sanity comparison of a weak attack (FGSM, PGD) with `warn=True`: APGD-CE with
# GAP_STEPS iterations on the first GAP_SAMPLE examples of the first batch. Sized to cost
# about what FGSM on 1000 examples costs (measured on the tutorial CNN: 1000 MNIST images,
# one epsilon, 0.34 s CPU for FGSM without it); APGD-CE-100 on 128 examples cost 7x that.
GAP_SAMPLE = 64
GAP_STEPS = 20


def evaluate_robustness(
    model: keras.Model,
    data: Any,
    epsilons: Any = None,
    attack: Any = "autoattack",
    norm: str | None = None,
    pgd_steps: int | None = None,
    pgd_step_size: float | None = None,
    random_start: bool | None = None,
    clip_value_min: Any = None,
    clip_value_max: Any = None,
    batch_size: int = 256,
    loss: Any = None,
    *,
    label_keys: Any = ("label",),
    sample_weight_key: str | None = None,
    max_examples: int | None = None,
    warn: bool = True,
    check_finite: bool = True,
    state_path: Any = None,
    progress: Callable[[float], None] | None = None,
) -> RobustnessReport:
    """Measures a classifier's accuracy under a white-box attack, per epsilon.

    The default, `attack="autoattack"`, is the field's standard (Croce & Hein
    2020): APGD-CE, APGD-T, FAB-T and the gradient-free Square attack as a cascade,
    so the accuracy is the per-example worst case. `"fgsm"` and `"pgd"` (NSL's
    math) are cheaper upper bounds; the report warns when they are used, and
    when they leave markedly more accuracy than APGD-CE on a sample.

    The loss attacked is cross-entropy on the model's logits: when the model
    ends in a softmax (or a 1-unit sigmoid), the logits before it are attacked,
    never the saturated probabilities. Sparse or one-hot labels are both
    accepted. A `keras_advreg.AdversarialRegularization` is evaluated through
    its `base_model`.

    Args:
        model: keras.Model. A classifier with output `(batch, num_classes)`.
        data: `(x, y)` arrays (x may be a dict of features), a dict of
            features holding the label key(s), or a `tf.data.Dataset` of such
            batches. A dataset of single examples is batched by `batch_size`:
            it is recognized by scalar labels, by features of one rank less
            than the model's inputs, or (a model whose input rank is unknown,
            such as an unbuilt subclassed one) by features and labels of
            different static leading sizes; any other dataset is used as
            batched.
        epsilons: float or sequence of floats >= 0. Attack radii (the attack
            is run at each). Defaults to `None` (the attack's own; `0.1` for a
            name).
        attack: str (`keras_advreg.attacks.names()`: `"autoattack"`,
            `"autoattack-fast"`, `"autoattack-rand"`, `"apgd-ce"`, `"apgd-dlr"`, `"apgd-t"`,
            `"square"`, `"pgd"`, `"fgsm"`), a config dict, or a
            `keras_advreg.attacks.Attack` (which carries the norm, the clip
            range and the budget, e.g. `attacks.PGD(norm="l2", steps=40,
            clip_value_min=0.0, clip_value_max=1.0)`). An attack without clip
            values takes the model's `keras_advreg.layers.InputRange` (clip
            values that contradict the layer are a `ValueError`; data outside
            the layer's box is an error, checked batch by batch before each is
            attacked); with neither, the attack is unbounded and the report
            warns. Defaults to `"autoattack"`.
        norm: Deprecated: the attack's `norm`. When given, it sets the
            attack's field, with a `DeprecationWarning`; so do the five below.
        pgd_steps: Deprecated: `PGD`'s `steps`.
        pgd_step_size: Deprecated: `PGD`'s `step_size`.
        random_start: Deprecated: `PGD`'s `random_start`.
        clip_value_min: Deprecated: the attack's `clip_value_min`.
        clip_value_max: Deprecated: the attack's `clip_value_max`.
        batch_size: int. Batch size for array data and unbatched datasets.
            Defaults to `256`.
        loss: str, callable or `keras.losses.Loss`. Loss to attack, applied to
            the model's output. Defaults to `None` (cross-entropy on logits).
        label_keys: str or sequence of str. Label key(s) of feature dicts.
            Defaults to `("label",)`.
        sample_weight_key: str. Sample-weight key of feature dicts (ignored
            by the accuracy). Defaults to `None`.
        max_examples: int. Evaluate at most this many examples. Defaults to
            `None` (all).
        warn: bool. Issue sanity-check findings with `warnings.warn` too, and
            compare a single- or fixed-step attack (FGSM, PGD) with APGD-CE-20 on
            the first 64 examples, warning when the weak attack leaves more than
            5 points more accuracy (this adds about the cost of FGSM on 1000
            examples). `False` skips the comparison; the other findings stay
            in `report.warnings`. Defaults to `True`.
        check_finite: bool. Raise, naming the batch, feature and example,
            when a feature or label is NaN or Inf (before that batch is
            attacked). Defaults to `True`.
        state_path: str or path-like. A file that keeps the finished batches'
            counts (written atomically after every batch): an evaluation
            started again with the same `state_path` skips the batches
            recorded there and reports the numbers an uninterrupted run
            reports. A file written for another model, attack, data or
            settings raises a `ValueError` before any work, and is left as
            it is. Defaults to `None` (nothing kept).
        progress: callable. Called with the number of batches done so far,
            a float that also advances during a batch, after each stage of
            the attack (each cascade member, restart and APGD-T target), and
            with `0.0` at the start. Defaults to `None`.

    Before attacking, the model runs 5 times on the first batch: when its
    scores change between passes (noise layers, dropout at inference), a
    warning says what was seen, and AutoAttack (`"standard"`, `"fast"`) runs
    its `"rand"` version and APGD averages each gradient over 20 draws
    (expectation over transformation); `version="rand"` on a model that does
    not change warns that the draws are wasted.

    Returns:
        A `RobustnessReport`.

    Example:

    A linear classifier predicting class 0 when `x[0] > 0`: the smallest
    l-inf perturbation that flips the first example (x[0] = 0.3) is 0.3, so it
    survives epsilon 0.1 but not 0.5; the second is already wrong.

    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    >>> model.set_weights([np.array([[1.0, -1.0], [0.0, 0.0]], "float32"), np.zeros(2, "float32")])
    >>> x, y = np.array([[0.3, 0.5], [-0.05, 0.2]], "float32"), np.array([0, 0])
    >>> report = evaluate_robustness(model, (x, y), epsilons=(0.1, 0.5))
    >>> report.clean_accuracy, report.accuracy
    (0.5, {0.1: 0.5, 0.5: 0.0})
    """
    require_backend("keras_advreg.evaluate_robustness")
    check_classifier(model)
    attack = resolve(
        attack,
        epsilons,
        caller="evaluate_robustness",
        norm=norm,
        clip_value_min=clip_value_min,
        clip_value_max=clip_value_max,
        pgd_steps=pgd_steps,
        pgd_step_size=pgd_step_size,
        random_start=random_start,
    )
    attack, declared = with_model_bounds(model, attack)
    batch_size = check_positive_int("batch_size", batch_size)
    max_examples = check_positive_int("max_examples", max_examples, allow_none=True)
    start = time.perf_counter()
    target = attack_target(model)
    requested = attack
    if progress is not None:
        progress(0.0)
    stream = batches(data, batch_size, label_keys, sample_weight_key, max_examples, target)
    stream = ((model_inputs(target, x), y) for x, y in stream)
    first = next(stream, None)
    if first is None:
        raise ValueError("`data` is empty: there is nothing to evaluate.")
    if check_finite:  # before anything runs the model
        check_finite_values(*first, where="batch 0 of `data`")
    problem, seed = prepare(model, attack, *first, loss)  # builds an unbuilt model
    state = None
    if state_path is not None:  # before any attack: another evaluation's file is refused
        state = EvaluationState(
            state_path,
            {
                "attack": {"name": attack.name, **attack.get_config()},
                "settings": {
                    "batch_size": batch_size,
                    "max_examples": max_examples,
                    "loss": None if loss is None else getattr(loss, "__name__", repr(loss)),
                    "label_keys": label_keys,
                    "sample_weight_key": sample_weight_key,
                },
                "model": model_fingerprint(target),
            },
        )
        state.load()
        if state.batches:
            state.check_batch(0, batch_fingerprint(*first))
    attack, found = _adapt_to_randomness(attack, problem, first[0])
    if state is not None:
        if state.seed is None:
            state.seed = seed
        seed = state.seed
    outside = check_in_box(problem, first[0], "batch 0 of `data`", declared)
    totals = _Totals(problem.num_classes, attack.epsilons)
    first_result = None
    if state is not None and state.totals is not None:
        totals.restore(state.totals)
        first_result = _first_from_dict(state.first)
    earlier = state.seconds if state is not None else 0.0
    seen = 0
    index = -1
    for index, (x, y) in enumerate(itertools.chain([first], stream)):
        if check_finite and index:
            check_finite_values(x, y, where=f"batch {index} of `data`", offset=seen)
        check_labels(y, problem)
        if index and outside is None:  # a finding is reported once
            outside = check_in_box(problem, x, f"batch {index} of `data`", declared)
        seen += len(y)
        fingerprint = None
        if state is not None:
            fingerprint = batch_fingerprint(x, y)
            if state.check_batch(index, fingerprint):  # finished in an earlier run
                if progress is not None:
                    progress(float(index + 1))
                continue
        stage_done = None
        if progress is not None:
            stage_done = lambda fraction, i=index: progress(i + fraction)  # noqa: E731
        result = attack_batch(
            model, attack, problem, x, y, attack.epsilons, seed, index, progress=stage_done
        )
        totals.add(result)
        if index == 0:
            first_result = result
        if state is not None:
            state.batches.append(fingerprint)
            state.totals = totals.to_dict()
            state.first = _first_to_dict(first_result)
            state.seconds = earlier + time.perf_counter() - start
            state.save()
    if state is not None:
        if index + 1 < len(state.batches):
            raise ValueError(
                f"`state_path` {state.path!r} was written by a different evaluation: it "
                f"recorded {len(state.batches)} batches and `data` has {index + 1}. It was "
                "left as it is; delete it or pass another `state_path` to start over."
            )
        if not state.complete:
            state.complete = True
            state.save()
    report = totals.report(attack, problem, loss, earlier + time.perf_counter() - start)
    if found is not None:
        report.warnings.insert(0, _randomness_message(requested, attack, found, found["examples"]))
        report.config["randomness_check"] = found
    report.config["input_range"] = "model" if declared else "arguments"
    if isinstance(model, EmbeddingSpace):  # no box in embedding space
        report.config["input_range"] = None
        report.config["space"] = model.units
    elif is_unbounded(attack):
        report.config["input_range"] = None
        report.warnings.append(UNBOUNDED)
    if outside is not None:
        report.warnings.append(outside)
    if warn and attack.strength in WEAK_STRENGTHS:
        report.warnings += _compare_with_apgd(model, attack, problem, first, first_result, seed)
    if warn:
        for message in report.warnings:
            warnings.warn(message, stacklevel=2)
    return report


def _adapt_to_randomness(attack: Attack, problem: AttackProblem, x: Any):
    """The randomness check on the first batch, and the attack to run after it.

    A randomized model gets expectation over transformation: AutoAttack's `rand` version,
    APGD's gradients averaged over 20 draws. Returns `(attack, finding or None)`; a finding
    is returned when the model is randomized, or when `version="rand"` meets a
    deterministic model.
    """
    found = randomness(problem.head.scores, x)
    if not found["randomized"]:
        if isinstance(attack, AutoAttack) and attack.version == "rand":
            return attack, found
        return attack, None
    if isinstance(attack, AutoAttack) and attack.version in ("standard", "fast"):
        return attack.replace(version="rand"), found
    if isinstance(attack, (APGD, APGDTargeted)) and attack.eot_iter == 1:
        return attack.replace(eot_iter=RAND_EOT_ITER), found
    return attack, found


def _randomness_message(requested: Attack, attack: Attack, found: dict, examples: int) -> str:
    if not found["randomized"]:
        return (
            f"{requested.describe()} is meant for randomized models, but {found['passes']} "
            f"forward passes on the same {examples} examples gave the same scores: each "
            f"gradient averages {requested.draws} identical draws. AutoAttack's 'standard' "
            "version is the evaluation for a deterministic model."
        )
    seen = describe_randomness(found, examples)
    if attack is not requested:
        return (
            f"The model is randomized: {seen}. {requested.describe()} was replaced by "
            f"{attack.describe()}: each gradient is the mean over {_draws(attack)} draws of "
            "the model's randomness (expectation over transformation), and each accuracy is "
            "one draw's."
        )
    return (
        f"The model is randomized: {seen}. {attack.describe()} does not average over its "
        "draws; use attack='autoattack' (its 'rand' version) or APGD with eot_iter=20 "
        "(expectation over transformation)."
    )


def _draws(attack: Attack) -> int:
    return getattr(attack, "draws", None) or getattr(attack, "eot_iter", RAND_EOT_ITER)


def _first_to_dict(result: BatchResult) -> dict:
    """The first batch's predictions (what the comparison with APGD-CE needs)."""
    return {
        "ids": result.ids.tolist(),
        "clean_predictions": result.clean_predictions.tolist(),
        "adversarial_predictions": result.adversarial_predictions.tolist(),
    }


def _first_from_dict(stored: dict | None) -> BatchResult | None:
    if stored is None:
        return None
    predictions = np.asarray(stored["adversarial_predictions"], np.int64)
    return BatchResult(
        ids=np.asarray(stored["ids"], np.int64),
        clean_predictions=np.asarray(stored["clean_predictions"], np.int64),
        zero_gradient=np.zeros(predictions.shape[1], bool),
        adversarial=np.zeros((*predictions.shape, 0), np.float32),
        adversarial_predictions=predictions,
        broken_by=[],
    )


class _Totals:
    """Counts summed over batches: per class, per epsilon, per cascade stage."""

    def __init__(self, num_classes: int, epsilons: tuple[float, ...]):
        self.classes, self.epsilons = num_classes, epsilons
        self.total = np.zeros(num_classes, np.int64)
        self.clean = np.zeros(num_classes, np.int64)
        self.adversarial = np.zeros((len(epsilons), num_classes), np.int64)
        self.flipped = np.zeros(len(epsilons), np.int64)
        self.zero = 0
        self.broken_by: list[dict] = [{} for _ in epsilons]

    def add(self, result: BatchResult) -> None:
        count = lambda mask: np.bincount(result.ids[mask], minlength=self.classes)  # noqa: E731
        clean = result.clean_predictions == result.ids
        robust = result.robust
        self.total += count(np.ones_like(clean))
        self.clean += count(clean)
        for i in range(len(self.epsilons)):
            self.adversarial[i] += count(robust[i])
            self.flipped[i] += int(np.sum(clean & ~robust[i]))
            for name, n in result.broken_by[i].items():
                self.broken_by[i][name] = self.broken_by[i].get(name, 0) + n
        self.zero += int(result.zero_gradient.sum())

    def to_dict(self) -> dict:
        """The counts, JSON-ready (`restore` inverts it)."""
        return {
            "total": self.total.tolist(),
            "clean": self.clean.tolist(),
            "adversarial": self.adversarial.tolist(),
            "flipped": self.flipped.tolist(),
            "zero": self.zero,
            "broken_by": self.broken_by,
        }

    def restore(self, stored: dict) -> None:
        self.total = np.asarray(stored["total"], np.int64)
        self.clean = np.asarray(stored["clean"], np.int64)
        self.adversarial = np.asarray(stored["adversarial"], np.int64).reshape(
            len(self.epsilons), self.classes
        )
        self.flipped = np.asarray(stored["flipped"], np.int64)
        self.zero = int(stored["zero"])
        self.broken_by = [dict(b) for b in stored["broken_by"]]

    def report(self, attack: Attack, problem: AttackProblem, loss: Any, seconds: float):
        n = int(self.total.sum())
        present = [c for c in range(self.classes) if self.total[c] > 0]
        clean_correct = int(self.clean.sum())

        def per_class(correct):
            return {c: float(correct[c] / self.total[c]) for c in present}

        accuracy, success, classes, broken = {}, {}, {}, {}
        for i, eps in enumerate(self.epsilons):
            accuracy[eps] = float(self.adversarial[i].sum() / n)
            success[eps] = float(self.flipped[i] / clean_correct) if clean_correct else 0.0
            classes[eps] = per_class(self.adversarial[i])
            broken[eps] = {k: v / n for k, v in self.broken_by[i].items()}
        report = RobustnessReport(
            clean_accuracy=clean_correct / n,
            accuracy=accuracy,
            attack_success_rate=success,
            clean_per_class_accuracy=per_class(self.clean),
            per_class_accuracy=classes,
            num_examples=n,
            attack=attack.name,
            norm=attack.norm,
            zero_gradient_fraction=self.zero / n,
            config=report_config(attack, problem, loss),
            seconds=seconds,
            broken_by=broken,
            description=attack.describe(),
        )
        report.warnings = sanity_warnings(report, attack.strength) + cascade_warnings(report)
        return report


def report_config(attack: Attack, problem: AttackProblem, loss: Any) -> dict:
    """The attack's settings and what was attacked, as the report and JSON show them."""
    config = {"attack": attack.name, "description": attack.describe(), **attack.get_config()}
    config["epsilons"] = list(attack.epsilons)
    del config["epsilon"]
    config.update(attack.report_fields())
    skipped = getattr(attack, "skipped", None)
    if skipped is not None:
        config["skipped"] = skipped(problem)
    config["attacked"] = problem.head.description
    config["label_mode"] = problem.label_mode
    config["loss"] = "cross-entropy" if loss is None else getattr(loss, "__name__", repr(loss))
    return config


def _compare_with_apgd(model, attack, problem, first, result, seed) -> list[str]:
    """APGD-CE on a sample of the first batch: does the weak attack overstate robustness?"""
    n = min(GAP_SAMPLE, len(result.ids))
    x, y = keras.tree.map_structure(lambda a: np.asarray(a)[:n], first)
    strong = APGD(
        attack.epsilons,
        steps=GAP_STEPS,
        norm=attack.norm if attack.norm != "l1" else "l2",
        clip_value_min=attack.clip_value_min,
        clip_value_max=attack.clip_value_max,
    )
    if attack.norm == "l1":
        return []
    weak_acc = result.robust[:, :n].mean(axis=1)
    strong_acc = attack_batch(model, strong, problem, x, y, attack.epsilons, seed, 0).robust.mean(
        axis=1
    )
    weak = RobustnessReport(
        0,
        dict(zip(attack.epsilons, weak_acc)),
        {},
        {},
        {},
        n,
        attack.name,
        attack.norm,
        0,
        {},
        description=attack.describe(),
    )
    strong_report = RobustnessReport(
        0,
        dict(zip(attack.epsilons, strong_acc)),
        {},
        {},
        {},
        n,
        "apgd",
        attack.norm,
        0,
        {},
        description=strong.describe(),
    )
    return gap_warning(weak, strong_report)


__all__ = ["evaluate_robustness", "report_config"]
