"""One process of the MultiWorkerMirroredStrategy tests (tests/test_multiworker.py).

`python tests/multiworker_worker.py single OUT.npz` trains and evaluates without a strategy;
`python tests/multiworker_worker.py worker OUT.npz` does the same as one worker of the
cluster described by the `TF_CONFIG` environment variable (the parent sets it), under
`tf.distribute.MultiWorkerMirroredStrategy` (one CPU replica per worker).

Both roles train `keras_advreg.AdversarialRegularization` for `STEPS` SGD steps of the
global batch `GLOBAL_BATCH` from the same initial weights, for each config of `CONFIGS`,
and run `keras_advreg.evaluate_robustness` on the same data. A worker trains twice per
config, once per way of feeding it its half of each global batch:

- `function`: `strategy.distribute_datasets_from_function`, where input pipeline `i` reads
  rows `[s * GLOBAL_BATCH + i * per_replica, ... + per_replica)` of step `s` (exact by
  construction);
- `autoshard`: the dataset a single process uses (batched by the global batch), with
  `auto_shard_policy = DATA`, given to `fit` as is (Keras calls
  `strategy.experimental_distribute_dataset`, which rebatches it to the per-replica batch
  and gives the pieces to the workers in turn).

Why the comparison is exact: the data carry sample weights and the loss reduces with
`sum_over_batch_size`, so a replica's loss is the sum over its half divided by the half's
size, which Keras scales by 1 / num_replicas; the gradients summed over the two workers are
those of the global batch's mean. The perturbations are per example (a sign, or a
projection per example), hence the same in both settings.

Saved besides the weights: the history, the logs callbacks see after each step, the
`evaluate` logs (FGSM config), the robustness reports, and the rows each worker reads per
step (so that the test can check which half of each global batch a worker saw).
"""

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

ROLE, OUTPUT = sys.argv[1], sys.argv[2]
if ROLE not in ("single", "worker"):
    raise SystemExit(f"role must be 'single' or 'worker', got {ROLE!r}")
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(2)
# The strategy must exist before any other TensorFlow op runs in this process.
STRATEGY = tf.distribute.MultiWorkerMirroredStrategy() if ROLE == "worker" else None

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_advreg  # noqa: E402

GLOBAL_BATCH = 16
STEPS = 3
EVAL_EXAMPLES = 40
CONFIGS = {
    "fgsm": dict(multiplier=0.2, adv_step_size=0.05, adv_grad_norm="infinity"),
    "pgd": dict(
        multiplier=0.2,
        adv_step_size=0.05,
        adv_grad_norm="infinity",
        pgd_iterations=3,
        pgd_epsilon=0.1,
        random_init=False,
    ),
}
ATTACKS = {
    "fgsm": dict(attack="fgsm", epsilons=(0.05, 0.2)),
    # PGD's random start draws from a stateless seed taken from NumPy's global state
    # (seeded alike in every process below).
    "pgd": dict(
        attack={"class_name": "keras_advreg>PGD", "config": {"steps": 5}}, epsilons=(0.05, 0.2)
    ),
}


def make_data():
    rng = np.random.default_rng(0)
    n = GLOBAL_BATCH * STEPS
    data = (
        rng.uniform(0, 1, (n, 6)).astype("float32"),
        rng.integers(0, 3, n).astype("int64"),
        rng.uniform(0.5, 1.5, n).astype("float32"),
    )
    weights = [rng.normal(0, 0.5, s).astype("float32") for s in [(6, 8), (8,), (8, 3), (3,)]]
    eval_x = rng.uniform(0, 1, (EVAL_EXAMPLES, 6)).astype("float32")
    return data, weights, eval_x


def scope():
    return STRATEGY.scope() if STRATEGY is not None else tf.distribute.get_strategy().scope()


def build(weights, config):
    with scope():
        base = keras.Sequential(
            [
                keras.Input((6,), name="feature"),
                keras.layers.Dense(8, activation="tanh"),
                keras.layers.Dense(3),
            ]
        )
        base.set_weights(weights)
        model = keras_advreg.AdversarialRegularization(
            base, adv_config=keras_advreg.AdvConfig(**config)
        )
        model.compile(
            keras.optimizers.SGD(0.5),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
    return base, model


def global_dataset(data):
    """The dataset of the single process: `STEPS` batches of `GLOBAL_BATCH` rows, in order."""
    dataset = tf.data.Dataset.from_tensor_slices(data).batch(GLOBAL_BATCH)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def sharded_by_function(data):
    """Input pipeline `i` of `n` reads the `i`-th of `n` equal slices of every global batch."""

    def dataset_fn(context):
        per_replica = context.get_per_replica_batch_size(GLOBAL_BATCH)
        first = context.input_pipeline_id * per_replica
        rows = np.concatenate(
            [
                np.arange(s * GLOBAL_BATCH + first, s * GLOBAL_BATCH + first + per_replica)
                for s in range(STEPS)
            ]
        )
        dataset = tf.data.Dataset.from_tensor_slices(tuple(a[rows] for a in data))
        return dataset.batch(per_replica)

    return STRATEGY.distribute_datasets_from_function(dataset_fn)


def rows_seen(distributed, x):
    """Per step, the indices of the rows of `x` this process's replica reads."""
    seen = []
    for step, batch in enumerate(distributed):
        if step == STEPS:
            break
        (local,) = STRATEGY.experimental_local_results(batch[0])
        local = local.numpy()
        seen.append([int(np.flatnonzero((x == row).all(axis=1))[0]) for row in local])
    return np.array(seen)


def train(prefix, weights, config, dataset, evaluate):
    """Trains `STEPS` steps from `weights`; the final weights, history and batch logs."""
    out = {}
    base, model = build(weights, config)
    batch_logs = []  # what callbacks see after each step (the replicas' mean)
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: batch_logs.append(
            [float(np.squeeze(logs[k])) for k in ("loss", "accuracy")]
        )
    )
    history = model.fit(
        dataset(), epochs=1, steps_per_epoch=STEPS, shuffle=False, verbose=0, callbacks=[record]
    )
    for i, w in enumerate(base.get_weights()):
        out[f"{prefix}_w{i}"] = w
    for key, values in history.history.items():
        out[f"{prefix}_{key}"] = np.array(values)
    out[f"{prefix}_batch_logs"] = np.array(batch_logs)
    if evaluate:  # `evaluate` (test_step) of the trained model on the same batches
        logs = model.evaluate(dataset(), steps=STEPS, verbose=0, return_dict=True)
        for key, value in logs.items():
            out[f"{prefix}_evaluate_{key}"] = np.array(value)
    return out


def main():
    start = time.perf_counter()
    keras.utils.set_random_seed(0)
    data, weights, eval_x = make_data()
    out = {"initial_w0": weights[0]}
    feeds = {"single": lambda: global_dataset(data)}
    if STRATEGY is not None:
        out["replicas"] = np.array(STRATEGY.num_replicas_in_sync)
        out["task_id"] = np.array(STRATEGY.cluster_resolver.task_id)
        feeds = {
            "function": lambda: sharded_by_function(data),
            "autoshard": lambda: global_dataset(data),
        }
        out["function_rows"] = rows_seen(sharded_by_function(data), data[0])
        out["autoshard_rows"] = rows_seen(
            STRATEGY.experimental_distribute_dataset(global_dataset(data)), data[0]
        )
    for name, config in CONFIGS.items():
        for feed, make in feeds.items():
            out.update(train(f"{name}_{feed}", weights, config, make, evaluate=name == "fgsm"))
    # Robustness of a model created in the strategy's scope (its variables mirrored across
    # the workers), evaluated in that scope: each process attacks the data it is given.
    base, model = build(weights, CONFIGS["fgsm"])
    labels = np.argmax(keras.ops.convert_to_numpy(base(eval_x, training=False)), axis=1)
    labels[::4] = (labels[::4] + 1) % 3  # some examples wrong from the start
    for name, kwargs in ATTACKS.items():
        np.random.seed(0)
        with scope():
            report = keras_advreg.evaluate_robustness(
                model, (eval_x, labels), batch_size=16, warn=False, **kwargs
            )
        out[f"eval_{name}"] = np.array(
            [report.clean_accuracy, *(report.accuracy[e] for e in kwargs["epsilons"])]
        )
        out[f"eval_{name}_examples"] = np.array(report.num_examples)
    out["seconds"] = np.array(time.perf_counter() - start)
    np.savez(OUTPUT, **out)
    print(json.dumps({"role": ROLE, "seconds": float(out["seconds"])}))


if __name__ == "__main__":
    main()
