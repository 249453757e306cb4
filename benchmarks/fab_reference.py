"""FAB-T and AutoAttack (standard), ours against the reference implementation, same Keras model.

The reference is fra31/auto-attack (`autoattack/fab_pt.py`, `autoattack/autoattack.py`),
not vendored here: pass the directory of a checkout with `--reference`. It runs on the
Keras model itself through Keras' PyTorch backend (the model's call wrapped as a
`torch.nn.Module` returning its logits; images NCHW on the reference's side, permuted to
the model's NHWC inside the wrapper), so both sides attack the same function. Ours runs on
the backend of the process (`KERAS_BACKEND`, TensorFlow by default), through
`evaluate_robustness`.

Each side is one process (a Keras backend is chosen per process):

    KERAS_BACKEND=torch python benchmarks/fab_reference.py --side reference \\
        --reference /path/to/auto-attack --examples 200 --attacks fab-t
    python benchmarks/fab_reference.py --side ours --examples 200 --attacks fab-t

Data: the first `--examples` images of MNIST's test file in file order, pixels / 255, l-inf,
clipped to [0, 1], at eps 0.1, 0.2 and 0.3 (`--eps`), on the models of `--models`. Prints
one JSON line per (model, attack, eps): robust accuracy, process CPU and wall seconds.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from robust_eval import DEFAULT_MNIST, mnist  # noqa: E402

MODELS = pathlib.Path(__file__).resolve().parents[2] / "shared" / "models"
DEFAULT_MODELS = [
    str(MODELS / "tutorial-base.keras"),
    str(MODELS / "tutorial-adv-regularized.keras"),
]


def ours(model, x, y, attack_name: str, epsilons: list[float], batch: int) -> dict:
    """Robust accuracy per eps under our FAB-T or AutoAttack standard (one cascade per eps
    on the examples, as the reference; several radii share the first stage's call)."""
    from keras_advreg import attacks
    from keras_advreg.evaluation import evaluate_robustness

    box = dict(clip_value_min=0.0, clip_value_max=1.0, seed=0)
    if attack_name == "fab-t":
        attack = attacks.FABTargeted(epsilons, **box)
    else:
        attack = attacks.AutoAttack(epsilons, version=attack_name, **box)
    report = evaluate_robustness(
        model, (x, y), attack=attack, batch_size=batch, warn=False, check_finite=False
    )
    return {float(e): float(report.accuracy[e]) for e in epsilons}


def reference(model, x, y, attack_name: str, eps: float, batch: int, path: str) -> float:
    """Robust accuracy at `eps` under the reference's FAB-T or AutoAttack `version`."""
    import torch

    torch.set_num_threads(1)  # on a shared CPU, idle threads spinning cost more than they give
    sys.path.insert(0, path)
    from autoattack import AutoAttack
    from autoattack.fab_pt import FABAttack_PT

    class Logits(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, images):  # NCHW -> the model's NHWC
            return self.model(images.permute(0, 2, 3, 1), training=False)

    net = Logits(model).eval()
    images = torch.tensor(np.transpose(x, (0, 3, 1, 2)))
    labels = torch.tensor(y.astype(np.int64))
    if attack_name == "fab-t":
        fab = FABAttack_PT(
            net, norm="Linf", n_restarts=1, n_iter=100, eps=eps, seed=0, targeted=True,
            n_target_classes=9, device="cpu",
        )  # fmt: skip
        advs = [
            fab.perturb(images[i : i + batch], labels[i : i + batch])
            for i in range(0, len(y), batch)
        ]
        adv = torch.cat(advs)
    else:
        aa = AutoAttack(net, norm="Linf", eps=eps, version=attack_name, device="cpu", seed=0)
        adv = aa.run_standard_evaluation(images, labels, bs=batch)
    with torch.no_grad():
        size = (adv - images).abs().reshape(len(y), -1).max(1)[0]
        assert float(size.max()) <= eps + 1e-5, float(size.max())
        pred = torch.cat([net(adv[i : i + batch]).argmax(1) for i in range(0, len(y), batch)])
    return float((pred == labels).float().mean())


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--side", choices=["ours", "reference"], required=True)
    parser.add_argument("--reference", help="a checkout of fra31/auto-attack (--side reference)")
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--attacks", default="fab-t", help="comma-separated: fab-t, standard")
    parser.add_argument("--eps", default="0.1,0.2,0.3")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    parser.add_argument("--mnist-dir", type=pathlib.Path, default=DEFAULT_MNIST)
    args = parser.parse_args()
    if args.side == "reference" and (not args.reference or keras.backend.backend() != "torch"):
        parser.error("--side reference needs --reference PATH and KERAS_BACKEND=torch")
    epsilons = [float(e) for e in args.eps.split(",")]
    x, y = mnist(args.mnist_dir, "t10k")
    x, y = x[: args.examples], y[: args.examples]
    for path in args.models.split(","):
        model = keras.models.load_model(path, compile=False)
        for attack_name in args.attacks.split(","):
            runs = [epsilons] if args.side == "ours" else [[e] for e in epsilons]
            for eps_list in runs:
                cpu, wall = time.process_time(), time.time()
                if args.side == "ours":
                    acc = ours(model, x, y, attack_name, eps_list, args.batch)
                else:
                    e = eps_list[0]
                    acc = {e: reference(model, x, y, attack_name, e, args.batch, args.reference)}
                row = {
                    "side": args.side,
                    "backend": keras.backend.backend(),
                    "model": pathlib.Path(path).stem,
                    "attack": attack_name,
                    "examples": len(y),
                    "accuracy": acc,
                    "cpu_s": round(time.process_time() - cpu, 1),
                    "wall_s": round(time.time() - wall, 1),
                }
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
