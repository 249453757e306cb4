"""AutoAttack's `rand` version (ours) beside the reference's, on a model with an active noise layer.

    KERAS_BACKEND=tensorflow python benchmarks/rand_reference.py ours --examples 200 --out ours.json
    KERAS_BACKEND=torch python benchmarks/rand_reference.py reference \\
        --reference PATH/TO/fra31/auto-attack --examples 200 --out reference.json
    python benchmarks/rand_reference.py compare ours.json reference.json

The model: `shared/models/tutorial-adv-regularized.keras` (the tutorial CNN trained with
adversarial regularization) behind a Gaussian noise layer that stays active at inference
(`ActiveGaussianNoise`, sigma `--sigma`, default 0.1; pixels are clipped to [0, 1] by the
attack, not after the noise). The data: the first `--examples` MNIST test images in file
order (`t10k-images-idx3-ubyte.gz`, pixels / 255), l-inf, box [0, 1], eps `--eps`.

- `ours`: `evaluate_robustness(model, attack=AutoAttack(eps, version="rand"))` (APGD-CE
  and APGD-DLR, 100 iterations, each gradient averaged over 20 draws, 1 run each), on the
  backend the process runs (TensorFlow in the figures of docs/autoattack-rand-and-resume.md).
- `reference`: fra31/auto-attack's `AutoAttack(version="rand")` (the same members, budget
  and draws), imported from the folder `--reference` (not shipped with this project), on
  the same Keras model through Keras' PyTorch backend (NCHW tensors transposed to NHWC).

Each writes its robust accuracy, clean accuracy (one draw), CPU and wall seconds as JSON.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from pathlib import Path

import keras
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("KERAS_ADVREG_SHARED", ROOT.parent / "shared"))


class ActiveGaussianNoise(keras.layers.Layer):
    """Adds N(0, stddev^2) noise at training and at inference (a randomized defense)."""

    def __init__(self, stddev: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.stddev, self.seed = stddev, seed
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, x):
        noise = keras.random.normal(keras.ops.shape(x), stddev=self.stddev, seed=self.generator)
        return x + keras.ops.cast(noise, x.dtype)


def noisy_model(sigma: float, seed: int) -> keras.Model:
    base = keras.models.load_model(SHARED / "models" / "tutorial-adv-regularized.keras")
    inputs = keras.Input(base.inputs[0].shape[1:])
    return keras.Model(inputs, base(ActiveGaussianNoise(sigma, seed=seed)(inputs)))


def mnist_test(n: int) -> tuple[np.ndarray, np.ndarray]:
    folder = SHARED / "data" / "mnist"
    with gzip.open(folder / "t10k-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28, 1)[:n]
    with gzip.open(folder / "t10k-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)[:n]
    return (x / 255.0).astype("float32"), y.astype("int64")


def run_ours(args) -> dict:
    from keras_advreg import evaluate_robustness
    from keras_advreg.attacks import AutoAttack

    keras.utils.set_random_seed(args.seed)
    model = noisy_model(args.sigma, args.seed)
    x, y = mnist_test(args.examples)
    attack = AutoAttack(
        args.eps, version="rand", clip_value_min=0.0, clip_value_max=1.0, seed=args.seed
    )
    report = evaluate_robustness(model, (x, y), attack=attack, batch_size=args.batch, warn=False)
    return {
        "robust_accuracy": report.accuracy[args.eps],
        "clean_accuracy": report.clean_accuracy,
        "broken_by": report.broken_by.get(args.eps),
        "attack": report.description,
        "backend": keras.backend.backend(),
    }


def run_reference(args) -> dict:
    import torch

    if keras.backend.backend() != "torch":
        raise SystemExit("the reference runs on Keras' PyTorch backend: KERAS_BACKEND=torch")
    sys.path.insert(0, str(Path(args.reference).resolve()))
    from autoattack import AutoAttack  # fra31/auto-attack

    torch.manual_seed(args.seed)
    keras.utils.set_random_seed(args.seed)
    model = noisy_model(args.sigma, args.seed)

    class Forward(torch.nn.Module):
        def forward(self, x):  # NCHW (the reference's layout) -> NHWC (the Keras model's)
            return model(x.permute(0, 2, 3, 1), training=False)

    x, y = mnist_test(args.examples)
    x_t = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    y_t = torch.from_numpy(y)
    adversary = AutoAttack(
        Forward().eval(), norm="Linf", eps=args.eps, version="rand", seed=args.seed, device="cpu"
    )
    _, y_adv = adversary.run_standard_evaluation(x_t, y_t, bs=args.batch, return_labels=True)
    clean = adversary.clean_accuracy(x_t, y_t, bs=args.batch)
    return {
        "robust_accuracy": float((y_adv == y_t).float().mean()),
        "clean_accuracy": float(clean),
        "attack": "fra31/auto-attack version='rand' (APGD-CE, APGD-DLR, eot_iter 20)",
        "backend": "torch",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=("ours", "reference", "compare"))
    parser.add_argument("files", nargs="*", help="compare: the JSON files")
    parser.add_argument("--reference", help="the fra31/auto-attack folder (reference only)")
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--sigma", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.which == "compare":
        rows = [json.loads(Path(f).read_text()) for f in args.files]
        for row in rows:
            print(json.dumps(row))
        if len(rows) == 2:
            gap = abs(rows[0]["robust_accuracy"] - rows[1]["robust_accuracy"])
            print(f"robust accuracy gap: {100 * gap:.1f} points")
        return
    cpu, wall = time.process_time(), time.perf_counter()
    result = run_ours(args) if args.which == "ours" else run_reference(args)
    result.update(
        examples=args.examples, eps=args.eps, sigma=args.sigma, seed=args.seed,
        cpu_seconds=time.process_time() - cpu, wall_seconds=time.perf_counter() - wall,
    )  # fmt: skip
    print(json.dumps(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
