"""The same attack on each installed Keras backend, side by side in one run.

Each backend runs in its own subprocess (one process has one Keras backend), one after
the other, on the same saved model and the first `--examples` MNIST test images:
`evaluate_robustness` with the attack (seed 0), once to compile and warm up, then
`--repeats` more times (median). Process CPU time is printed beside wall time; the ratio
column is each backend's CPU time over TensorFlow's. Backends that are not installed are
listed as such. The robust accuracies must agree (the attacks are the same code and the
same random draws on every backend).

Run: python benchmarks/backends.py [--attack apgd-ce] [--examples 500] [--eps 0.1]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
SHARED = HERE.parents[1] / "shared"
BACKENDS = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attack", default="apgd-ce")
    parser.add_argument("--examples", type=int, default=500)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--model", type=pathlib.Path, default=SHARED / "models" / "tutorial-adv-regularized.keras"
    )
    parser.add_argument("--mnist-dir", type=pathlib.Path, default=SHARED / "data" / "mnist")
    parser.add_argument("--backends", default="tensorflow,jax,torch")
    args = parser.parse_args()
    rows = []
    for backend in args.backends.split(","):
        if importlib.util.find_spec(BACKENDS[backend]) is None:
            rows.append({"backend": backend, "missing": True})
            continue
        env = {**os.environ, "KERAS_BACKEND": backend}
        command = [
            sys.executable, str(HERE / "backend_worker.py"), str(args.model), str(args.mnist_dir),
            args.attack, str(args.examples), str(args.eps), str(args.batch), str(args.repeats),
        ]  # fmt: skip
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            rows.append({"backend": backend, "error": done.stderr.strip().splitlines()[-1]})
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(
        f"{args.attack} eps {args.eps} on the first {args.examples} MNIST test images, batch "
        f"{args.batch} ({args.model.name}); median of {args.repeats} runs after a first one"
    )
    print(
        f"{'backend':<11} {'robust acc':>10} {'first wall s':>12} {'first CPU s':>11} "
        f"{'wall s':>8} {'CPU s':>8} {'CPU / TF':>8}"
    )
    tf_cpu = next((r["cpu"] for r in rows if r.get("backend") == "tensorflow" and "cpu" in r), None)
    for r in rows:
        if r.get("missing"):
            print(f"{r['backend']:<11} not installed (pip install keras-advreg[{r['backend']}])")
            continue
        if "error" in r:
            print(f"{r['backend']:<11} failed: {r['error']}")
            continue
        ratio = f"{r['cpu'] / tf_cpu:8.2f}" if tf_cpu else f"{'-':>8}"
        print(
            f"{r['backend']:<11} {r['accuracy']:>10.4f} {r['first_wall']:>12.1f} "
            f"{r['first_cpu']:>11.1f} {r['wall']:>8.1f} {r['cpu']:>8.1f} {ratio}"
        )


if __name__ == "__main__":
    main()
