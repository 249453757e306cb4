"""Cost of `keras_advreg.evaluate_robustness` next to its floors, to `model.evaluate` and to ART.

Everything runs in one process, in interleaved rounds (each round runs every method once,
in turn; medians over rounds are printed). Process CPU time (`time.process_time`, all
threads) is printed beside wall time: wall time on shared VMs sometimes stalls on a slow
thread wake-up, or on other jobs, while CPU time does not.

FGSM / PGD (10k MNIST-shaped random examples, the tutorial CNN - Conv2D 32/64/64 3x3 relu
with max-pooling, Flatten, Dense 64 relu, Dense 10 logits - fitted one epoch on 2048 of
them, batch size 256):

- `model.evaluate` (the unit of the ratios),
- a bare `tf.function` FGSM written inline here (one forward, one input-gradient
  backward, one forward per epsilon: the floor), for 1 and 4 epsilons,
- `evaluate_robustness` FGSM with 1 and 4 epsilons, and PGD-10,
- the tutorial's way: a Python loop calling `perturb_on_batch` per batch of 32
  (a Python loop; keras_advreg compiles each call's math), then predicting on the
  perturbed batch.

  Target: `evaluate_robustness` FGSM / bare FGSM <= 1.15 (CPU time), 1 and 4 epsilons.

APGD / AutoAttack / ART (the first `--apgd-examples` real MNIST test images in file order,
pixels / 255, l-inf, box [0, 1], batch `--apgd-batch`; a trained model: by default the
tutorial CNN trained with adversarial regularization,
`shared/models/tutorial-adv-regularized.keras`, where ~80% of the images survive APGD-CE
at eps 0.1, so APGD runs all its iterations; without that file the tutorial CNN is trained
here one epoch on the MNIST training set):

- `evaluate_robustness` with `attacks.APGD(0.1, steps=100)` (APGD-CE-100, seed 0),
- its floor: a bare `tf.function` with a `tf.while_loop` of 100 steps of one forward,
  one input-gradient backward (GradientTape, cross-entropy on the logits) and a sign
  step projected on the ball and the box, on the same batches.

  Target: APGD-CE-100 / floor <= 1.2 (CPU time). APGD stops a batch once every example
  of it is broken, so on a model with few survivors it is cheaper than the floor.

  Also timed: APGD's own work, `apgd_core.apgd` with the model replaced by a stub (its
  bookkeeping alone). With the 3 forward+backward passes and 1 forward per batch APGD
  makes beyond the floor's 100 (~3.3%), it gives the ratio APGD's code implies.

  Both run as `--traces` independent compiled copies (each on its own clone of the
  model); the ratio is printed on medians pooled over every copy and round, and on the
  fastest copy of each. With oneDNN on this CPU, one trace of the very same function runs
  up to ~1.6x faster than another, stably over rounds, even single-threaded on an idle
  machine (buffer placement, presumably): with one copy each the ratio is a coin flip.

- with the adversarial-robustness-toolbox installed (`pip install keras-advreg[bench]`):
  ART's `AutoProjectedGradientDescent` (eps 0.1, eps_step 0.2, max_iter 100,
  nb_random_init 1, cross-entropy, batch `--apgd-batch`, `TensorFlowV2Classifier` on the
  logits) on the same images, in the first `--art-rounds` rounds: its accuracy minus
  ours, and its time over ours. ART checks only the last iterate and draws its random
  start from NumPy, so the accuracies differ by a few examples;
- AutoAttack (standard: APGD-CE, APGD-T with 9 targets, Square 5000 queries) at eps 0.1
  and 0.2 on the first `--aa-examples` images, reported as seconds per 1000 images
  (scaled linearly from the images timed: the cost depends on how many survive each
  member), in the first `--aa-rounds` rounds;
- with ART, on the same images: ART's `AutoAttack` class with the members ART can mirror
  (APGD-CE, APGD-DLR, Square 5000; 1 restart each, untargeted: ART has no APGD-T with the
  paper's targeted DLR loss, and its targeted mode runs every member against each of the
  9 other classes in class order). Its default members (5 restarts each, DeepFool) cost
  several times more. Ours is timed twice: the standard version, and a "custom" one with
  ART's members (APGD-CE, APGD-DLR, Square 5000) for the like-for-like ratio (target:
  ART / ours >= 5x). AutoAttack runs on the model behind a layer that counts the rows
  (images) passed through it, with or without a backward pass: printed are the forward
  rows per image and the CPU time per row of each, and ART's rows over ours (see also
  `benchmarks/square_passes.py`: Square alone, next to its floor of forward passes).

Last, unless `--skip-backends`: APGD-CE-100 at eps 0.1 on the same images on each installed
Keras backend (TensorFlow, JAX, PyTorch), side by side (`benchmarks/backends.py`, one
subprocess per backend: robust accuracy, first-call and warm wall/CPU seconds).

Run: python benchmarks/robust_eval.py [--rounds 5] [--examples 10000] [--apgd-examples 1000]
Quick: python benchmarks/robust_eval.py --rounds 1 --examples 2000 --skip-tutorial \\
    --apgd-examples 200 --traces 1 --aa-examples 20
Without ART the ART rows are left out ("ART not installed: pip install keras-advreg[bench]").
"""

from __future__ import annotations

import argparse
import gzip
import os
import pathlib
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_advreg  # noqa: E402
from keras_advreg import attacks  # noqa: E402
from keras_advreg.evaluation import evaluate_robustness  # noqa: E402

BATCH = 256
EPS1 = (0.1,)
EPS4 = (0.05, 0.1, 0.2, 0.3)
APGD_EPS = 0.1
APGD_STEPS = 100
AA_EPS = (0.1, 0.2)
ART_MEMBERS = ("apgd-ce", "apgd-dlr", "square")
SAME_AS_ART = "evaluate_robustness AutoAttack-custom (ART's members)"
ART_AA = "ART AutoAttack (APGD-CE, APGD-DLR, Square)"
SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared"
DEFAULT_MODEL = SHARED / "models" / "tutorial-adv-regularized.keras"
DEFAULT_MNIST = SHARED / "data" / "mnist"
ART_MISSING = "ART not installed: pip install keras-advreg[bench]"


def tutorial_cnn() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((28, 28, 1), name="image"),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10),
        ]
    )


def compile_classifier(model: keras.Model) -> keras.Model:
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


# --------------------------------------------------------------------------- FGSM floor
def make_bare_fgsm(model: keras.Model, epsilons: tuple[float, ...]):
    """The floor: 1 forward, 1 input-gradient backward, 1 forward per epsilon."""

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            tape.watch(x)
            logits = model(x, training=False)
            loss = tf.reduce_sum(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
            )
        direction = tf.sign(tape.gradient(loss, x))
        correct = [
            tf.reduce_sum(tf.cast(tf.argmax(logits, -1, output_type=tf.int32) == y, tf.int32))
        ]
        for eps in epsilons:
            x_adv = tf.clip_by_value(x + eps * direction, 0.0, 1.0)
            pred = tf.argmax(model(x_adv, training=False), -1, output_type=tf.int32)
            correct.append(tf.reduce_sum(tf.cast(pred == y, tf.int32)))
        return tf.stack(correct)

    def run(x, y):
        total = 0
        for start in range(0, len(y), BATCH):
            total = total + step(x[start : start + BATCH], y[start : start + BATCH]).numpy()
        return total / len(y)

    return run


def make_tutorial_loop(model: keras.Model, x: np.ndarray, y: np.ndarray):
    """The NSL tutorial's evaluation: a Python loop of `perturb_on_batch` per batch of 32."""
    wrapper_cls = keras_advreg.AdversarialRegularization
    config = keras_advreg.make_adv_reg_config(
        multiplier=0.2,
        adv_step_size=0.1,
        adv_grad_norm="infinity",
        clip_value_min=0.0,
        clip_value_max=1.0,
    )
    adv_model = compile_classifier(wrapper_cls(model, label_keys=("label",), adv_config=config))

    def perturb(batch):
        return adv_model.perturb_on_batch(batch)["image"]

    label = "tutorial loop (perturb_on_batch per batch of 32, then predict)"

    def run(*_):
        correct = 0
        for start in range(0, len(y), 32):
            batch = {"image": x[start : start + 32], "label": y[start : start + 32]}
            x_adv = perturb(batch)
            pred = np.argmax(model(x_adv, training=False), -1)
            correct += int(np.sum(pred == batch["label"]))
        return correct / len(y)

    return label, run


# --------------------------------------------------------------------------- APGD floor
def make_gradient_floor(model: keras.Model, eps: float, steps: int, batch: int):
    """The floor of a `steps`-iteration gradient attack, compiled like keras_advreg's.

    One `tf.function` per batch holding a `tf.while_loop` of `steps` iterations of one
    forward, one input-gradient backward (cross-entropy on the logits) and an l-inf sign
    step projected on the eps-ball and the box [0, 1]: no step-size schedule, no momentum,
    no best-point or broken-example tracking, no final prediction.
    """
    spec = (
        tf.TensorSpec((None, *model.input_shape[1:]), tf.float32),
        tf.TensorSpec((None,), tf.int32),
    )

    @tf.function(input_signature=spec)
    def attack(x, y):
        low, high = tf.maximum(x - eps, 0.0), tf.minimum(x + eps, 1.0)

        def body(i, xa):
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(xa)
                logits = model(xa, training=False)
                loss = tf.reduce_sum(
                    tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
                )
            step = (0.25 * eps) * tf.sign(tape.gradient(loss, xa))
            return i + 1, tf.minimum(tf.maximum(xa + step, low), high)

        _, xa = tf.while_loop(lambda i, _: i < steps, body, (tf.constant(0), x))
        return xa

    def run(x, y):
        for start in range(0, len(y), batch):
            attack(x[start : start + batch], y[start : start + batch]).numpy()

    return run


def make_bookkeeping_only(eps: float, steps: int, batch: int, classes: int = 10):
    """`apgd_core.apgd` as APGD-CE runs it, with the model replaced by a stub.

    The stub's loss is linear in the point and its logits always pick the label (no example
    is ever broken, so every iteration runs): what is left is APGD's own per-iteration work
    (step, projections, momentum, best-point and broken-example tracking, step-size
    checkpoints), which a trace-to-trace difference of the model's passes cannot hide.
    """
    from keras_advreg.attacks import apgd_core

    spec = (
        tf.TensorSpec((None, None), tf.float32),
        tf.TensorSpec((None,), tf.int32),
        tf.TensorSpec((None, None), tf.float32),
    )

    @tf.function(input_signature=spec)
    def attack(v0, ids, start):
        weights = tf.random.stateless_normal(tf.shape(v0)[1:], [1, 2])
        logits = tf.one_hot(ids, classes)

        def value_and_grad(v, closure):
            loss = tf.linalg.matvec(v, weights)
            return loss, logits + 0.0 * loss[:, None], tf.broadcast_to(weights, tf.shape(v))

        v_adv, _ = apgd_core.apgd(
            value_and_grad, v0, ids, eps, 0.0, 1.0, norm="infinity", steps=steps,
            loss_fn=apgd_core.cross_entropy, start=start,
        )  # fmt: skip
        return v_adv

    def run(x, y):
        v = x.reshape(len(y), -1)
        rng = np.random.default_rng(0)
        for start in range(0, len(y), batch):
            rows = v[start : start + batch]
            draws = apgd_core.draw_start(rng, len(rows), rows.shape[1], "infinity")
            attack(rows, y[start : start + batch], draws).numpy()

    return run


# --------------------------------------------------------------------------- data and model
def read_idx(path: pathlib.Path, header: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), np.uint8, offset=header)


def mnist(directory: pathlib.Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """`(images (n, 28, 28, 1) float32 in [0, 1], labels (n,) int32)` in file order."""
    images = read_idx(directory / f"{split}-images-idx3-ubyte.gz", 16)
    labels = read_idx(directory / f"{split}-labels-idx1-ubyte.gz", 8)
    return images.reshape(-1, 28, 28, 1).astype("float32") / 255.0, labels.astype("int32")


def trained_model(path: pathlib.Path, mnist_dir: pathlib.Path) -> tuple[keras.Model, str]:
    if path.exists():
        return keras.models.load_model(path, compile=False), str(path)
    x, y = mnist(mnist_dir, "train")
    model = compile_classifier(tutorial_cnn())
    model.fit(x, y, batch_size=128, epochs=1, verbose=0)
    return model, f"the tutorial CNN trained here 1 epoch on MNIST ({path} not found)"


# --------------------------------------------------------------------------- counting
class RowCounter(keras.layers.Layer):
    """The identity, adding the number of rows of each call to `rows`."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.rows = tf.Variable(0, dtype=tf.int64, trainable=False)

    def call(self, x):
        self.rows.assign_add(tf.cast(tf.shape(x)[0], tf.int64))
        return x


def counted(model: keras.Model) -> tuple[keras.Model, RowCounter]:
    """`model` behind a `RowCounter` (same weights, same outputs)."""
    counter = RowCounter()
    inputs = keras.Input(model.input_shape[1:])
    return keras.Model(inputs, model(counter(inputs))), counter


def counting(counter: RowCounter, fn: Callable, counts: list[int]) -> Callable:
    """`fn`, appending to `counts` the rows `counter` saw during each call."""

    def run():
        before = int(counter.rows.numpy())
        out = fn()
        counts.append(int(counter.rows.numpy()) - before)
        return out

    return run


# --------------------------------------------------------------------------- ART
def import_art():
    try:
        with warnings.catch_warnings():  # "PyTorch not found. Not importing DeepZ ..."
            warnings.simplefilter("ignore")
            from art.attacks.evasion import AutoAttack as ArtAutoAttack
            from art.attacks.evasion import AutoProjectedGradientDescent, SquareAttack
            from art.estimators.classification import TensorFlowV2Classifier
    except ImportError:
        return None
    return TensorFlowV2Classifier, AutoProjectedGradientDescent, SquareAttack, ArtAutoAttack


def art_classifier(art, model: keras.Model):
    """ART's `TensorFlowV2Classifier` on the logits of `model`, inputs in [0, 1]."""
    return art[0](
        model=model,
        nb_classes=model.output_shape[-1],
        input_shape=tuple(model.input_shape[1:]),
        loss_object=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        clip_values=(0.0, 1.0),
    )


def make_art(art, model: keras.Model, batch: int):
    """`(apgd_ce(x, y, eps), autoattack(x, y, eps))`, each returning the accuracy it leaves."""
    _, apgd_cls, square_cls, autoattack_cls = art
    classifier = art_classifier(art, model)

    def apgd(eps, loss_type):
        return apgd_cls(
            classifier,
            eps=eps,
            eps_step=2 * eps,
            max_iter=APGD_STEPS,
            nb_random_init=1,
            batch_size=batch,
            loss_type=loss_type,
            verbose=False,
        )

    def accuracy(x, y, x_adv):
        return float(np.mean(np.argmax(classifier.predict(x_adv, batch_size=batch), -1) == y))

    def apgd_ce(x, y, eps):
        np.random.seed(0)
        return accuracy(x, y, apgd(eps, "cross_entropy").generate(x, y))

    def autoattack(x, y, eps):
        np.random.seed(0)
        members = [
            apgd(eps, "cross_entropy"),
            apgd(eps, "difference_logits_ratio"),
            square_cls(classifier, eps=eps, max_iter=5000, p_init=0.8, nb_restarts=1,
                       batch_size=batch, verbose=False),
        ]  # fmt: skip
        attack = autoattack_cls(
            classifier, eps=eps, eps_step=2 * eps, attacks=members, batch_size=batch
        )
        return accuracy(x, y, attack.generate(x, y))

    return apgd_ce, autoattack


# --------------------------------------------------------------------------- timing
class Method:
    """Timed function(s): one per trace (instance), the images attacked, the rounds it runs in."""

    def __init__(self, fns: Callable | list[Callable], images: int = 0, rounds: int | None = None):
        self.fns = fns if isinstance(fns, list) else [fns]
        self.images, self.rounds = images, rounds
        self.cpu: list[list[float]] = [[] for _ in self.fns]
        self.wall: list[list[float]] = [[] for _ in self.fns]
        self.result = None

    def time(self) -> None:
        for i, fn in enumerate(self.fns):
            c0, w0 = time.process_time(), time.perf_counter()
            self.result = fn()
            self.cpu[i].append(time.process_time() - c0)
            self.wall[i].append(time.perf_counter() - w0)

    @property
    def c(self) -> float:  # median over every trace and round
        return statistics.median(t for ts in self.cpu for t in ts)

    @property
    def w(self) -> float:
        return statistics.median(t for ts in self.wall for t in ts)

    @property
    def best(self) -> float:  # the fastest trace's median CPU time
        return min(statistics.median(ts) for ts in self.cpu)

    def per_trace(self) -> str:
        return "/".join(f"{statistics.median(ts):.1f}" for ts in self.cpu)


def clone(model: keras.Model) -> keras.Model:
    """A copy with its own weight buffers (and its own keras_advreg compiled attacks)."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--examples", type=int, default=10_000, help="FGSM/PGD part")
    parser.add_argument("--apgd-examples", type=int, default=1000)
    parser.add_argument("--apgd-batch", type=int, default=500)
    parser.add_argument(
        "--traces", type=int, default=4, help="independent compiled copies of APGD and its floor"
    )
    parser.add_argument("--art-rounds", type=int, default=2, help="rounds ART's APGD runs in")
    parser.add_argument("--aa-examples", type=int, default=100, help="AutoAttack, ours and ART's")
    parser.add_argument("--aa-rounds", type=int, default=1, help="rounds AutoAttack runs in")
    parser.add_argument("--model", type=pathlib.Path, default=DEFAULT_MODEL)
    parser.add_argument("--mnist-dir", type=pathlib.Path, default=DEFAULT_MNIST)
    parser.add_argument("--skip-fgsm", action="store_true", help="skip the FGSM/PGD part")
    parser.add_argument("--skip-tutorial", action="store_true")
    parser.add_argument("--skip-apgd", action="store_true")
    parser.add_argument("--skip-autoattack", action="store_true")
    parser.add_argument(
        "--skip-backends", action="store_true", help="skip APGD-CE on each Keras backend"
    )
    parser.add_argument("--skip-art", action="store_true")
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    methods: dict[str, Method] = {}
    aa_rows: dict[str, list[int]] = {}  # AutoAttack: forward rows through the model per run
    warm: list[Callable] = []  # untimed first calls (tracing), run before the rounds

    # ---------------------------------------------------------------- FGSM / PGD
    fgsm_names: list[str] = []
    if not args.skip_fgsm:
        rng = np.random.default_rng(0)
        x = rng.random((args.examples, 28, 28, 1), dtype=np.float32)
        y = rng.integers(0, 10, args.examples).astype("int32")
        model = compile_classifier(tutorial_cnn())
        model.fit(x[:2048], y[:2048], batch_size=BATCH, epochs=1, verbose=0)  # not all-random

        def ours(epsilons, attack="fgsm"):
            return lambda: evaluate_robustness(
                model,
                (x, y),
                epsilons=epsilons,
                attack=attacks.get(attack, clip_value_min=0.0, clip_value_max=1.0),
                batch_size=BATCH,
                warn=False,
            )

        bare1, bare4 = make_bare_fgsm(model, EPS1), make_bare_fgsm(model, EPS4)
        n = args.examples
        methods["model.evaluate"] = Method(
            lambda: model.evaluate(x, y, batch_size=BATCH, verbose=0), n
        )
        methods["bare FGSM, 1 eps"] = Method(lambda: bare1(x, y), n)
        methods["evaluate_robustness FGSM, 1 eps"] = Method(ours(EPS1), n)
        methods["bare FGSM, 4 eps"] = Method(lambda: bare4(x, y), n)
        methods["evaluate_robustness FGSM, 4 eps"] = Method(ours(EPS4), n)
        methods["evaluate_robustness PGD-10, 1 eps"] = Method(ours(EPS1, "pgd"), n)
        if not args.skip_tutorial:
            label, loop = make_tutorial_loop(model, x, y)
            methods[label] = Method(loop, n)

        # Same answers: the FGSM accuracies must agree with the floor's.
        r1, r4, b1, b4 = ours(EPS1)(), ours(EPS4)(), bare1(x, y), bare4(x, y)
        assert abs(r1.clean_accuracy - b1[0]) < 1e-9, (r1, b1)
        assert abs(r1.accuracy[0.1] - b1[1]) < 1e-9, (r1, b1)
        assert np.allclose([r4.accuracy[e] for e in EPS4], b4[1:]), (r4, b4)
        fgsm_names = list(methods)
        warm += [f for m in methods.values() for f in m.fns]

    # ---------------------------------------------------------------- APGD / AutoAttack / ART
    art = None if args.skip_art else import_art()
    art_note = "ART skipped (--skip-art)" if args.skip_art else (None if art else ART_MISSING)
    floor_name, apgd_name = (
        "APGD floor: 100 x (fwd + bwd + sign step)",
        "evaluate_robustness APGD-CE-100",
    )
    book_name = "APGD-CE-100 bookkeeping alone (model stubbed)"
    art_apgd_name = "ART AutoProjectedGradientDescent CE-100"
    model_note = ""
    if not (args.skip_apgd and args.skip_autoattack):
        mx, my = mnist(args.mnist_dir, "t10k")
        amodel, model_note = trained_model(args.model, args.mnist_dir)
        n_apgd, n_aa = min(args.apgd_examples, len(my)), min(args.aa_examples, len(my))
        xa, ya = mx[:n_apgd], my[:n_apgd]
        small = (mx[:16], my[:16])
        art_fns = make_art(art, amodel, args.apgd_batch) if art else None

        def ours_apgd(model, data):
            attack = attacks.APGD(
                APGD_EPS, steps=APGD_STEPS, clip_value_min=0.0, clip_value_max=1.0, seed=0
            )
            return evaluate_robustness(
                model, data, attack=attack, batch_size=args.apgd_batch, warn=False
            )

        # AutoAttack runs on the model behind a row counter: the forward rows each makes.
        aa_model, aa_counter = counted(amodel)
        art_aa = make_art(art, aa_model, args.apgd_batch)[1] if art else None

        def ours_aa(data, eps, members=None):
            version = "standard" if members is None else "custom"
            attack = attacks.AutoAttack(
                eps, version=version, attacks_to_run=members, clip_value_min=0.0,
                clip_value_max=1.0, seed=0,
            )  # fmt: skip
            return evaluate_robustness(
                aa_model, data, attack=attack, batch_size=args.apgd_batch, warn=False
            )

        def counted_run(name, fn):
            return counting(aa_counter, fn, aa_rows.setdefault(name, []))

        if not args.skip_apgd:
            copies = [amodel] + [clone(amodel) for _ in range(args.traces - 1)]
            floors = [make_gradient_floor(m, APGD_EPS, APGD_STEPS, args.apgd_batch) for m in copies]
            methods[floor_name] = Method([lambda f=f: f(xa, ya) for f in floors], n_apgd)
            methods[apgd_name] = Method(
                [lambda m=m: ours_apgd(m, (xa, ya)) for m in copies], n_apgd
            )
            warm += [lambda f=f: f(*small) for f in floors]
            warm += [lambda m=m: ours_apgd(m, small) for m in copies]
            book = make_bookkeeping_only(APGD_EPS, APGD_STEPS, args.apgd_batch)
            methods[book_name] = Method(lambda: book(xa, ya), n_apgd)
            warm.append(lambda: book(*small))
            if art_fns:
                methods[art_apgd_name] = Method(
                    lambda: art_fns[0](xa, ya, APGD_EPS), n_apgd, args.art_rounds
                )
                warm.append(lambda: art_fns[0](*small, APGD_EPS))
        if not args.skip_autoattack:
            xs, ys = mx[:n_aa], my[:n_aa]
            for eps in AA_EPS:
                name = f"evaluate_robustness AutoAttack, eps {eps}"
                methods[name] = Method(
                    counted_run(name, lambda eps=eps: ours_aa((xs, ys), eps)), n_aa, args.aa_rounds
                )
            warm.append(lambda: ours_aa((mx[:32], my[:32]), AA_EPS[0]))  # traces every stage
            for eps in AA_EPS:  # the members ART's AutoAttack runs below
                name = f"{SAME_AS_ART}, eps {eps}"
                methods[name] = Method(
                    counted_run(name, lambda eps=eps: ours_aa((xs, ys), eps, list(ART_MEMBERS))),
                    n_aa,
                    args.aa_rounds,
                )
            warm.append(lambda: ours_aa((mx[:32], my[:32]), AA_EPS[0], list(ART_MEMBERS)))
            if art_aa:
                for eps in AA_EPS:
                    name = f"{ART_AA}, eps {eps}"
                    methods[name] = Method(
                        counted_run(name, lambda eps=eps: art_aa(xs, ys, eps)), n_aa, args.aa_rounds
                    )

    for fn in warm:  # tracing is not timed
        fn()
    for r in range(args.rounds):
        for m in methods.values():
            if m.rounds is None or r < m.rounds:
                m.time()

    # ---------------------------------------------------------------- report
    print(
        f"\n{args.rounds} interleaved rounds, medians; TF {tf.__version__}, "
        f"Keras {keras.__version__}, {os.cpu_count()} CPUs"
    )
    if fgsm_names:
        base = methods["model.evaluate"]
        print(f"\nFGSM / PGD: {args.examples} random MNIST-shaped examples, batch {BATCH}")
        print(f"{'method':<72} {'cpu s':>7} {'wall s':>7} {'cpu/eval':>8} {'wall/eval':>9}")
        for name in fgsm_names:
            m = methods[name]
            print(f"{name:<72} {m.c:7.3f} {m.w:7.3f} {m.c / base.c:8.2f} {m.w / base.w:9.2f}")
        print("\nevaluate_robustness / bare FGSM (target <= 1.15):")
        for k in ("1 eps", "4 eps"):
            ours_m, bare_m = methods[f"evaluate_robustness FGSM, {k}"], methods[f"bare FGSM, {k}"]
            print(f"  {k}: cpu {ours_m.c / bare_m.c:.3f}x, wall {ours_m.w / bare_m.w:.3f}x")

    rest = [name for name in methods if name not in fgsm_names]
    if rest:
        print(
            f"\nAPGD / AutoAttack at eps {APGD_EPS} unless said: the first images of MNIST t10k, "
            f"l-inf, box [0, 1], batch {args.apgd_batch}; model: {model_note}"
        )
        print(
            f"{'method':<56} {'images':>6} {'runs':>4} {'cpu s':>7} {'wall s':>7} "
            f"{'cpu s/1k':>8} {'wall s/1k':>9}  cpu s per trace"
        )
        for name in rest:
            m = methods[name]
            k, runs = 1000 / m.images, sum(len(ts) for ts in m.cpu)
            traces = m.per_trace() if len(m.fns) > 1 else ""
            print(
                f"{name:<56} {m.images:6d} {runs:4d} {m.c:7.2f} {m.w:7.2f} "
                f"{m.c * k:8.1f} {m.w * k:9.1f}  {traces}"
            )
    if apgd_name in methods:
        ours_m, floor_m = methods[apgd_name], methods[floor_name]
        rep = ours_m.result
        print(
            f"\n{rep.description} at eps {APGD_EPS}: clean {rep.clean_accuracy:.3f}, robust "
            f"{rep.accuracy[APGD_EPS]:.3f}"
        )
        print(
            f"APGD-CE-100 / floor (target <= 1.2): cpu {ours_m.c / floor_m.c:.3f}x, "
            f"wall {ours_m.w / floor_m.w:.3f}x (medians over {args.traces} traces x rounds)"
        )
        print(
            f"  fastest trace of each: cpu {ours_m.best / floor_m.best:.3f}x (identical compiled "
            "copies of one function run up to ~1.6x apart here, stably over rounds)"
        )
        book_m = methods[book_name]
        share = book_m.c / floor_m.best
        print(
            f"  APGD's own work: bookkeeping {share:.1%} of the fastest floor trace, plus 3 "
            "forward+backward passes and 1 forward per batch beyond the floor's 100 (the "
            f"clean point twice, the random start; the final prediction): ~{1.033 + share:.3f}x"
        )
        if art_apgd_name in methods:
            art_m = methods[art_apgd_name]
            diff = art_m.result - rep.accuracy[APGD_EPS]
            print(
                f"ART APGD-CE-100: robust {art_m.result:.3f} (ART - ours: {diff:+.3f}); "
                f"ART / ours: cpu {art_m.c / ours_m.c:.2f}x, wall {art_m.w / ours_m.w:.2f}x"
            )
    for name in rest:
        if "AutoAttack" in name:
            result = methods[name].result
            if hasattr(result, "accuracy"):
                (eps, acc), broken = next(iter(result.accuracy.items())), result.broken_by
                parts = ", ".join(f"{k} {v:.3f}" for k, v in broken[eps].items() if v)
                print(f"{name}: robust {acc:.3f} (broken by {parts or 'none'})")
            else:
                print(f"{name}: robust {result:.3f}")
    for eps in AA_EPS:
        ours_name, art_name = f"{SAME_AS_ART}, eps {eps}", f"{ART_AA}, eps {eps}"
        if ours_name in methods and art_name in methods:
            ours_m, art_m = methods[ours_name], methods[art_name]
            rows = statistics.median(aa_rows[art_name]) / statistics.median(aa_rows[ours_name])
            print(
                f"AutoAttack with the same members (APGD-CE, APGD-DLR, Square-5000) at eps {eps}: "
                f"ART / ours: cpu {art_m.c / ours_m.c:.2f}x, wall {art_m.w / ours_m.w:.2f}x "
                f"(target >= 5x); forward rows through the model {rows:.2f}x, CPU per row "
                f"{art_m.c / ours_m.c / rows:.2f}x"
            )
    for name, counts in aa_rows.items():
        n_rows = statistics.median(counts)
        print(
            f"  {name}: {n_rows / methods[name].images:.0f} forward rows per image, "
            f"{methods[name].c / n_rows * 1e6:.0f} CPU us per row"
        )
    if art_note:
        print(f"\n{art_note}")
    if not args.skip_backends:
        # One process has one Keras backend: `benchmarks/backends.py` runs each in its own.
        print("\nThe same attack on each installed Keras backend (benchmarks/backends.py):")
        subprocess.run(
            [
                sys.executable, str(pathlib.Path(__file__).with_name("backends.py")),
                "--attack", "apgd-ce", "--eps", str(APGD_EPS),
                "--examples", str(args.apgd_examples), "--batch", str(args.apgd_batch),
                "--model", str(args.model), "--mnist-dir", str(args.mnist_dir),
            ],
            check=False,
        )  # fmt: skip


if __name__ == "__main__":
    main()
