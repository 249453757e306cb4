"""Two worker processes under MultiWorkerMirroredStrategy on 127.0.0.1 equal one process.

tests/multiworker_worker.py does the work. The fixture here starts, at once, one process
without a strategy and a cluster of two workers (`TF_CONFIG` with ports free at run time),
waits for all three under a deadline, kills whatever is left (on success, failure or
interruption), and compares the `.npz` files they write. Under pytest-xdist the run happens
once per session, whichever xdist worker gets there first (a lock in the session's folder).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

try:
    import fcntl
except ImportError:  # pragma: no cover (Windows: every xdist worker runs its own cluster)
    fcntl = None

SCRIPT = Path(__file__).with_name("multiworker_worker.py")
DEADLINE_S = 240  # all three processes together; about 60-100 s on 2 busy cores
WORKERS = 2
WORKER_NAMES = [f"worker{i}" for i in range(WORKERS)]
PROCESSES = ["single", *WORKER_NAMES]
GLOBAL_BATCH, STEPS = 16, 3  # as in multiworker_worker.py
TOLERANCE = 1e-5

pytestmark = pytest.mark.slow


def free_ports(count: int) -> list[int]:
    """Distinct ports free on 127.0.0.1 now (each bound until all are chosen)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def child_env(tf_config: dict | None) -> dict:
    env = dict(os.environ)
    for key in [k for k in env if k.lower() in ("http_proxy", "https_proxy", "grpc_proxy")]:
        del env[key]  # gRPC would send the workers' 127.0.0.1 traffic to a proxy
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return env


def run_all(commands: dict[str, tuple[list, dict]], logs: Path, deadline_s: float) -> None:
    """Runs the commands at once; fails, after killing every one, on an error or the deadline.

    One failed worker leaves the other blocked in a collective, so the first non-zero exit
    ends the wait."""
    processes: dict[str, subprocess.Popen] = {}
    codes: dict[str, int | None] = {}
    with contextlib.ExitStack() as files:
        try:
            for name, (args, env) in commands.items():
                log = files.enter_context(open(logs / f"{name}.log", "w"))
                processes[name] = subprocess.Popen(
                    args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
                )
            end = time.monotonic() + deadline_s
            while time.monotonic() < end:
                codes = {name: p.poll() for name, p in processes.items()}
                if any(c not in (None, 0) for c in codes.values()) or all(
                    c == 0 for c in codes.values()
                ):
                    break
                time.sleep(0.2)
            codes = {name: p.poll() for name, p in processes.items()}
        finally:
            for p in processes.values():
                if p.poll() is None:
                    p.kill()
            for p in processes.values():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=30)
    failed = {name: code for name, code in codes.items() if code != 0}
    if failed:
        report = "\n".join(
            f"--- {name} (exit {code}; None: killed at the deadline)\n"
            + (logs / f"{name}.log").read_text(errors="replace")[-3000:]
            for name, code in failed.items()
        )
        pytest.fail(f"not every process finished within {deadline_s} s:\n{report}")


def run_cluster(folder: Path) -> None:
    ports = free_ports(WORKERS)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    commands = {
        "single": (
            [sys.executable, str(SCRIPT), "single", str(folder / "single.npz")],
            child_env(None),
        )
    }
    for index, name in enumerate(WORKER_NAMES):
        tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        args = [sys.executable, str(SCRIPT), "worker", str(folder / f"{name}.npz")]
        commands[name] = (args, child_env(tf_config))
    start = time.monotonic()
    run_all(commands, folder, DEADLINE_S)
    (folder / "done.json").write_text(json.dumps({"seconds": time.monotonic() - start}))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """`{"single": ..., "worker0": ..., "worker1": ...}`: what each process saved."""
    if fcntl is not None and os.environ.get("PYTEST_XDIST_WORKER"):
        folder = tmp_path_factory.getbasetemp().parent / "multiworker"  # this session's
    else:
        folder = tmp_path_factory.mktemp("multiworker")
    folder.mkdir(exist_ok=True)
    with open(folder / "lock", "w") as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        if (folder / "failed").exists():
            pytest.fail(f"the multi-worker run failed in another xdist worker: {folder}")
        if not (folder / "done.json").exists():
            try:
                run_cluster(folder)
            except BaseException:
                (folder / "failed").touch()
                raise
    return {name: dict(np.load(folder / f"{name}.npz")) for name in PROCESSES}


def test_cluster_has_two_workers_of_one_replica(runs):
    for index, name in enumerate(WORKER_NAMES):
        assert int(runs[name]["replicas"]) == WORKERS
        assert int(runs[name]["task_id"]) == index


@pytest.mark.parametrize("feed", ["function", "autoshard"])
def test_each_worker_reads_its_half_of_every_global_batch(runs, feed):
    """At step s worker i reads rows [16 s + 8 i, 16 s + 8 i + 8): the workers' batches
    together are the single process's batch, each row once."""
    half = GLOBAL_BATCH // WORKERS
    for index, name in enumerate(WORKER_NAMES):
        expected = [
            np.arange(GLOBAL_BATCH * s + half * index, GLOBAL_BATCH * s + half * (index + 1))
            for s in range(STEPS)
        ]
        np.testing.assert_array_equal(runs[name][f"{feed}_rows"], np.array(expected))


def test_the_comparison_can_fail(runs):
    """Training moves the weights, and FGSM and PGD neighbours train differently, both by far
    more than the tolerance."""
    single = runs["single"]
    assert np.abs(single["fgsm_single_w0"] - single["initial_w0"]).max() > 1e-2
    assert np.abs(single["fgsm_single_w0"] - single["pgd_single_w0"]).max() > 1e-4


@pytest.mark.parametrize("feed", ["function", "autoshard"])
@pytest.mark.parametrize("config", ["fgsm", "pgd"])
def test_two_workers_train_like_one_process(runs, config, feed):
    single = runs["single"]
    for name in WORKER_NAMES:
        run, label = runs[name], f"{name}, {config}, {feed}"
        for i in range(4):
            np.testing.assert_allclose(
                run[f"{config}_{feed}_w{i}"],
                single[f"{config}_single_w{i}"],
                atol=TOLERANCE,
                err_msg=f"{label}: weight {i}",
            )
        for key in ("loss", "labeled_loss", "scaled_adversarial_loss", "accuracy"):
            np.testing.assert_allclose(
                run[f"{config}_{feed}_{key}"],
                single[f"{config}_single_{key}"],
                rtol=TOLERANCE,
                err_msg=f"{label}: history {key}",
            )
        # The logs callbacks get after each step: the replicas' mean, which is the global
        # batch's value as the halves are of equal size.
        np.testing.assert_allclose(
            run[f"{config}_{feed}_batch_logs"],
            single[f"{config}_single_batch_logs"],
            rtol=TOLERANCE,
            err_msg=f"{label}: batch logs (loss, accuracy)",
        )


@pytest.mark.parametrize("feed", ["function", "autoshard"])
def test_two_workers_evaluate_like_one_process(runs, feed):
    single = runs["single"]
    keys = [k[len("fgsm_single_evaluate_") :] for k in single if "_single_evaluate_" in k]
    assert {"loss", "scaled_adversarial_loss", "accuracy"} <= set(keys)
    for name in WORKER_NAMES:
        for key in keys:
            np.testing.assert_allclose(
                runs[name][f"fgsm_{feed}_evaluate_{key}"],
                single[f"fgsm_single_evaluate_{key}"],
                rtol=TOLERANCE,
                err_msg=f"{name}, {feed}: evaluate {key}",
            )


@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_evaluate_robustness_in_scope_gives_every_worker_the_single_answer(runs, attack):
    """evaluate_robustness runs in each process on that process's copy of the data, with no
    collective: each worker reports the accuracy over the whole data set, counted once."""
    single = runs["single"]
    clean, *robust = single[f"eval_{attack}"]
    assert int(single[f"eval_{attack}_examples"]) == 40
    assert 0 < robust[-1] < clean < 1  # the attack flips some examples, not all
    for name in WORKER_NAMES:
        assert int(runs[name][f"eval_{attack}_examples"]) == 40
        np.testing.assert_array_equal(runs[name][f"eval_{attack}"], single[f"eval_{attack}"])
