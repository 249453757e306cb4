"""A token-id classifier trained with adversarial regularization and with VAT at its
embeddings (`keras_advreg.layers.AdversarialPerturbation`), on a synthetic task.

Task: sequences of 6-20 token ids (vocabulary 40, 0 = padding at the end). Each sequence
holds 1, 3 or 5 "signal" tokens (ids 1-8) at random positions among noise tokens (ids
9-39); the label is 1 when most signal tokens are among ids 1-4. So the label depends on a
few tokens and the rest is noise. Train: `--labeled` labeled sequences (VAT also gets `--unlabeled`
unlabeled ones, label -1, via `semi_supervised_batches`); test: 2,000 sequences.

Network: Embedding(40, 16, mask_zero=True) -> AdversarialPerturbation() ->
GlobalAveragePooling1D -> Dense(16, relu) -> Dense(2). Methods, the same number of Adam
updates each: plain Keras; `AdversarialRegularization` with NSL's labeled loss
(multiplier 1, adv_step_size `--eps`, l2, relative to the RMS embedding norm); VAT
(multiplier 1, adv_step_size `--eps`, one power iteration). Runs on the current Keras
backend (`KERAS_BACKEND=tensorflow` or `jax`).

    KERAS_BACKEND=jax python benchmarks/text_synthetic.py [--seeds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

VOCAB, LENGTH = 40, 20


def make_data(n: int, rng: np.random.Generator):
    x = np.zeros((n, LENGTH), dtype="int32")
    y = np.zeros(n, dtype="int64")
    for i in range(n):
        length = rng.integers(6, LENGTH + 1)
        tokens = rng.integers(9, VOCAB, length)
        k = rng.choice([1, 3, 5])
        signal = rng.integers(1, 9, k)
        tokens[rng.choice(length, k, replace=False)] = signal
        x[i, :length] = tokens
        y[i] = int((signal <= 4).sum() * 2 > k)
    return x, y


def model(seed: int):
    import keras

    from keras_advreg.layers import AdversarialPerturbation

    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((LENGTH,), dtype="int32"),
        keras.layers.Embedding(VOCAB, 16, mask_zero=True),
        AdversarialPerturbation(),
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(16, activation="relu"),
        keras.layers.Dense(2),
    ])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--labeled", type=int, default=40)
    parser.add_argument("--unlabeled", type=int, default=4000)
    parser.add_argument("--updates", type=int, default=400)
    parser.add_argument("--eps", type=float, default=1.0)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()

    import keras

    import keras_advreg
    from keras_advreg.data import semi_supervised_batches

    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    results = {}
    for seed in range(args.seeds):
        rng = np.random.default_rng(seed)
        x_lab, y_lab = make_data(args.labeled, rng)
        x_unl, _ = make_data(args.unlabeled, rng)
        x_test, y_test = make_data(2000, rng)
        steps = -(-args.labeled // 16)
        epochs = max(1, args.updates // steps)
        runs = {
            "plain": None,
            "adversarial": keras_advreg.AdvConfig(multiplier=1.0, adv_step_size=args.eps),
            "vat": keras_advreg.AdvConfig(adv_loss="vat", multiplier=1.0, adv_step_size=args.eps),
        }
        for name, config in runs.items():
            base = model(seed)
            net = base if config is None else keras_advreg.AdversarialRegularization(
                base, adv_config=config
            )  # fmt: skip
            net.compile(keras.optimizers.Adam(3e-3), ce)
            c0, w0 = time.process_time(), time.perf_counter()
            if name == "vat":
                batches = semi_supervised_batches(
                    x_lab, y_lab, x_unl, batch_size=64, labeled_batch_size=16, seed=seed
                )
                net.fit(batches, epochs=epochs, steps_per_epoch=steps, verbose=0)
            else:
                net.fit(x_lab, y_lab, batch_size=16, epochs=epochs, verbose=0)
            cpu, wall = time.process_time() - c0, time.perf_counter() - w0
            pred = np.argmax(base.predict(x_test, batch_size=500, verbose=0), -1)
            acc = float(np.mean(pred == y_test))
            results.setdefault(name, []).append(acc)
            print(json.dumps({"seed": seed, "method": name, "test_accuracy": acc,
                              "updates": epochs * steps, "cpu_s": round(cpu, 1),
                              "wall_s": round(wall, 1)}), flush=True)  # fmt: skip
    summary = {k: {"mean": round(float(np.mean(v)), 4), "runs": v} for k, v in results.items()}
    print(json.dumps({"backend": keras.backend.backend(), "summary": summary}), flush=True)


if __name__ == "__main__":
    main()
