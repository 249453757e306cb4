"""One `AdversarialRegularization` train step per case on the backend of KERAS_BACKEND.

Run by tests/test_training_jax.py once per backend (one process has one Keras backend):

    KERAS_BACKEND=jax python tests/training_backend_worker.py OUT_DIR [CASE ...]

For each case it builds the same base model with the same weights (drawn with NumPy), the
same batch and the same `AdvConfig` on every backend, and saves `OUT_DIR/CASE.npz` with the
neighbour `perturb_on_batch` gives before the step (`adv*`), the logs of one
`train_on_batch` step (`log_*`), the weights after it (`weight_*`), and the logs of
`evaluate` on the batch after it (`eval_*`).
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["KERAS_ADVREG_LAZY_IMPORT"] = "1"  # import only what the training wrapper needs

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_advreg.training import AdvConfig, AdversarialRegularization  # noqa: E402

BATCH = 12


@keras.saving.register_keras_serializable(package="keras_advreg_worker")
class Subclassed(keras.Model):
    """A subclassed classifier: Dense(8, relu) -> Dense(3)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(8, activation="relu")
        self.out = keras.layers.Dense(3)

    def call(self, inputs):
        return self.out(self.hidden(inputs))


def _sequential():
    return keras.Sequential(
        [
            keras.Input((4,), name="feature"),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(3),
        ]
    )


def _functional():
    inputs = keras.Input((4,), name="feature")
    hidden = keras.layers.Dense(8, activation="tanh")(inputs)
    return keras.Model(inputs, keras.layers.Dense(3)(hidden))


def _subclassed():
    model = Subclassed()
    model(np.zeros((1, 4), "float32"))
    return model


def _regularized_batchnorm():
    """Weight and activity regularizers (the base model's own losses join the labeled
    loss) and BatchNorm (its moving statistics change in every call in training mode)."""
    inputs = keras.Input((4,), name="feature")
    hidden = keras.layers.Dense(
        8,
        kernel_regularizer=keras.regularizers.L2(0.01),
        activity_regularizer=keras.regularizers.L1(0.001),
    )(inputs)
    hidden = keras.layers.BatchNormalization(momentum=0.5)(hidden)
    hidden = keras.layers.Activation("relu")(hidden)
    return keras.Model(inputs, keras.layers.Dense(3)(hidden))


def _two_inputs():
    """A dict of two float inputs and an integer one (never perturbed)."""
    a = keras.Input((3,), name="a")
    b = keras.Input((2,), name="b")
    ids = keras.Input((1,), name="ids", dtype="int32")
    ids_float = keras.layers.Lambda(lambda t: keras.ops.cast(t, "float32") * 0.1)(ids)
    hidden = keras.layers.Dense(8, activation="relu")(keras.layers.Concatenate()([a, b, ids_float]))
    return keras.Model({"a": a, "b": b, "ids": ids}, keras.layers.Dense(3)(hidden))


def _two_outputs():
    inputs = keras.Input((4,), name="feature")
    hidden = keras.layers.Dense(6, activation="tanh")(inputs)
    digit = keras.layers.Dense(2, name="digit")(hidden)
    colour = keras.layers.Dense(3, name="colour")(hidden)
    return keras.Model(inputs, [digit, colour])


MODELS = {
    "sequential": _sequential,
    "functional": _functional,
    "subclassed": _subclassed,
    "regularized_batchnorm": _regularized_batchnorm,
    "two_inputs": _two_inputs,
    "two_outputs": _two_outputs,
}

# case -> (model, AdvConfig fields)
CASES = {
    "fgsm_linf_sequential": (
        "sequential",
        dict(multiplier=0.5, adv_step_size=0.05, adv_grad_norm="infinity"),
    ),
    "fgsm_l2_functional": ("functional", dict(multiplier=0.7, adv_step_size=0.1)),
    "fgsm_l1_subclassed": (
        "subclassed",
        dict(multiplier=0.3, adv_step_size=0.2, adv_grad_norm="l1"),
    ),
    "pgd_linf_subclassed": (
        "subclassed",
        dict(
            multiplier=0.5,
            adv_step_size=0.03,
            adv_grad_norm="infinity",
            pgd_iterations=4,
            pgd_epsilon=0.07,
            clip_value_min=0.0,
            clip_value_max=1.0,
        ),
    ),
    "pgd_l2_sequential": (
        "sequential",
        dict(
            multiplier=1.0,
            adv_step_size=0.08,
            adv_grad_norm="l2",
            pgd_iterations=5,
            pgd_epsilon=0.2,
        ),
    ),
    "pgd_linf_functional_clipped": (
        "functional",
        dict(
            multiplier=0.4,
            adv_step_size=0.1,
            adv_grad_norm="infinity",
            pgd_iterations=3,
            pgd_epsilon=0.25,
            clip_value_min=0.1,
            clip_value_max=0.9,
        ),
    ),
    "pgd_l2_regularized_batchnorm": (
        "regularized_batchnorm",
        dict(multiplier=0.5, adv_step_size=0.1, pgd_iterations=3, pgd_epsilon=0.15),
    ),
    "pgd_l2_two_inputs_masked": (
        "two_inputs",
        dict(
            multiplier=0.6,
            adv_step_size=0.1,
            adv_grad_norm="l2",
            pgd_iterations=3,
            pgd_epsilon=0.2,
            feature_mask={"a": [1.0, 0.0, 1.0]},
            clip_value_min={"a": 0.0, "b": -0.05},
            clip_value_max={"a": 1.0},
        ),
    ),
    # NSL's dict data: two labels (one per output) and the sample weights under keys.
    "pgd_linf_two_outputs_dict_data": (
        "two_outputs",
        dict(
            multiplier=0.8,
            adv_step_size=0.04,
            adv_grad_norm="infinity",
            pgd_iterations=2,
            pgd_epsilon=0.06,
        ),
    ),
}
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _batch(case: str, model_name: str):
    rng = np.random.default_rng(sorted(CASES).index(case))
    y = rng.integers(0, 3, BATCH)
    w = rng.uniform(0.5, 1.5, BATCH).astype("float32")
    if model_name == "two_inputs":
        x = {
            "a": rng.uniform(0, 1, (BATCH, 3)).astype("float32"),
            "b": rng.uniform(0, 1, (BATCH, 2)).astype("float32"),
            "ids": rng.integers(0, 5, (BATCH, 1)).astype("int32"),
        }
    else:
        x = rng.uniform(0, 1, (BATCH, 4)).astype("float32")
    return x, y, w


def _set_weights(base: keras.Model, seed: int) -> None:
    """The same weights on every backend (BatchNorm's moving variance positive)."""
    rng = np.random.default_rng(seed)
    values = []
    for weight in base.weights:
        if weight.path.endswith("moving_variance"):
            values.append(rng.uniform(0.5, 1.5, weight.shape).astype("float32"))
        else:
            values.append(rng.normal(0, 0.5, weight.shape).astype("float32"))
    base.set_weights(values)


def run_case(case: str) -> dict:
    model_name, fields = CASES[case]
    base = MODELS[model_name]()
    _set_weights(base, 7)
    optimizer = keras.optimizers.SGD(0.1, momentum=0.5)
    x, y, w = _batch(case, model_name)
    if model_name == "two_outputs":
        model = AdversarialRegularization(
            base,
            label_keys=("digit_label", "colour_label"),
            sample_weight_key="weight",
            adv_config=AdvConfig(**fields),
        )
        model.compile(
            optimizer,
            loss={"digit": LOSS, "colour": LOSS},
            loss_weights={"digit": 1.0, "colour": 0.5},
            metrics={"digit": ["accuracy"], "colour": ["accuracy"]},
        )
        data = {"feature": x, "digit_label": y % 2, "colour_label": y, "weight": w}
        batch, args, kwargs = data, (data,), {}
    else:
        model = AdversarialRegularization(base, adv_config=AdvConfig(**fields))
        model.compile(optimizer, LOSS, metrics=["accuracy"])
        batch, args, kwargs = (x, y, w), (x, y), {"sample_weight": w}
    out = {}
    adv = model.perturb_on_batch(batch)
    adv = adv if isinstance(adv, dict) else adv[0]
    if isinstance(adv, dict):
        out.update({f"adv_{k}": np.asarray(v) for k, v in adv.items()})
    else:
        out["adv"] = np.asarray(adv)
    logs = model.train_on_batch(*args, **kwargs, return_dict=True)
    out.update({f"log_{k}": np.asarray(v) for k, v in logs.items()})
    for i, weight in enumerate(model.base_model.weights):
        out[f"weight_{i}"] = keras.ops.convert_to_numpy(weight.value)
    evaluation = model.evaluate(*args, **kwargs, verbose=0, return_dict=True)
    out.update({f"eval_{k}": np.asarray(v) for k, v in evaluation.items()})
    return out


def main(argv: list[str]) -> None:
    out_dir, cases = argv[0], argv[1:] or list(CASES)
    keras.utils.set_random_seed(0)
    for case in cases:
        np.savez(os.path.join(out_dir, f"{case}.npz"), **run_case(case))
    print("done", keras.backend.backend(), len(cases))


if __name__ == "__main__":
    main(sys.argv[1:])
