"""Resumable evaluations (`evaluate_robustness(state_path=...)`, evaluation/state.py).

An interruption is simulated in-process by a `progress` callback that raises after a
chosen batch; tests/test_resume.py kills a real subprocess with SIGKILL.
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from keras_advreg import attacks
from keras_advreg.evaluation import evaluate, evaluate_robustness

N, FEATURES, CLASSES, BATCH = 48, 6, 5, 8  # 6 batches


class Interrupted(Exception):
    pass


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((N, FEATURES), dtype=np.float32)
    return x, (np.arange(N) % CLASSES).astype("int64")


def _model(seed=0):
    rng = np.random.default_rng(seed)
    model = keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(CLASSES)])
    model.set_weights(
        [rng.normal(size=(FEATURES, CLASSES)).astype("float32"), np.zeros(CLASSES, "float32")]
    )
    return model


def _attack(**changes):
    config = {"epsilon": (0.05, 0.2), "steps": 5, "num_targets": 2, "seed": 3, **changes}
    return attacks.get("apgd-t", **config)


def _cheap(**changes):  # one compiled call per batch, random (its start) like any attack
    return attacks.get("pgd", **{"epsilon": (0.05, 0.2), "steps": 3, "seed": 3, **changes})


def _stop_after(batches):
    def progress(done):
        if done > batches:  # during batch `batches` (0-based), after its first stage
            raise Interrupted

    return progress


def _same(a, b):
    assert a.accuracy == b.accuracy
    assert a.clean_accuracy == b.clean_accuracy
    assert a.per_class_accuracy == b.per_class_accuracy
    assert a.attack_success_rate == b.attack_success_rate
    assert a.broken_by == b.broken_by and a.num_examples == b.num_examples


@pytest.mark.slow
def test_an_interrupted_evaluation_resumes_without_redoing_finished_batches(tmp_path, monkeypatch):
    model, data, path = _model(), _data(), tmp_path / "state.json"
    uninterrupted = evaluate_robustness(model, data, attack=_attack(), batch_size=BATCH, warn=False)
    with pytest.raises(Interrupted):
        evaluate_robustness(
            model, data, attack=_attack(), batch_size=BATCH, state_path=path,
            progress=_stop_after(3), warn=False,
        )  # fmt: skip
    stored = json.loads(path.read_text())
    assert len(stored["batches"]) == 3 and not stored["complete"]
    assert sum(stored["totals"]["total"]) == 3 * BATCH
    attacked = []
    real = evaluate.attack_batch

    def counting(*args, **kwargs):
        attacked.append(args[7])  # the batch index
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate, "attack_batch", counting)
    resumed = evaluate_robustness(
        model, data, attack=_attack(), batch_size=BATCH, state_path=path, warn=False
    )
    assert attacked == [3, 4, 5]
    _same(resumed, uninterrupted)
    assert json.loads(path.read_text())["complete"]
    # A finished state: the same report again, without attacking.
    attacked.clear()
    again = evaluate_robustness(
        model, data, attack=_attack(), batch_size=BATCH, state_path=path, warn=False
    )
    assert attacked == []
    _same(again, uninterrupted)


def test_a_resumed_run_keeps_the_seed_drawn_by_the_first(tmp_path):
    model, data, path = _model(), _data(), tmp_path / "state.json"
    attack = _cheap(seed=None)
    keras.utils.set_random_seed(7)
    uninterrupted = evaluate_robustness(model, data, attack=attack, batch_size=BATCH, warn=False)
    keras.utils.set_random_seed(7)
    with pytest.raises(Interrupted):
        evaluate_robustness(
            model, data, attack=attack, batch_size=BATCH, state_path=path,
            progress=_stop_after(2), warn=False,
        )  # fmt: skip
    keras.utils.set_random_seed(123)  # another global seed: the stored one is used
    resumed = evaluate_robustness(
        model, data, attack=attack, batch_size=BATCH, state_path=path, warn=False
    )
    _same(resumed, uninterrupted)


def _partial_state(tmp_path):
    path = tmp_path / "state.json"
    with pytest.raises(Interrupted):
        evaluate_robustness(
            _model(), _data(), attack=_cheap(), batch_size=BATCH, state_path=path,
            progress=_stop_after(2), warn=False,
        )  # fmt: skip
    return path, path.read_bytes()


@pytest.mark.parametrize(
    "change, match",
    [
        ({"model": 1}, "the model's weights differ"),
        ({"attack": {"epsilon": (0.05, 0.3)}}, "the attack differs"),
        ({"attack": {"steps": 4}}, "the attack differs"),
        ({"batch_size": 4}, "settings differ"),
        ({"data": 1}, "batch 0 of `data` differs"),
        ({"data_tail": True}, "batch 1 of `data` differs"),
    ],
)
def test_a_state_of_another_evaluation_is_refused_and_left_as_it_is(tmp_path, change, match):
    path, before = _partial_state(tmp_path)
    model = _model(change.get("model", 0))
    x, y = _data(change.get("data", 0))
    if change.get("data_tail"):
        x = x.copy()
        x[BATCH + 1, 0] += 0.5
    attack = _cheap(**change.get("attack", {}))
    with pytest.raises(ValueError, match=match) as error:
        evaluate_robustness(
            model, (x, y), attack=attack, batch_size=change.get("batch_size", BATCH),
            state_path=path, warn=False,
        )  # fmt: skip
    assert "delete it or pass another `state_path`" in str(error.value)
    assert path.read_bytes() == before


def test_a_state_of_fewer_or_more_batches_and_a_broken_file_are_refused(tmp_path):
    path = tmp_path / "state.json"
    model, (x, y) = _model(), _data()
    evaluate_robustness(model, (x, y), attack=_cheap(), batch_size=BATCH, state_path=path)
    before = path.read_bytes()
    more = (np.concatenate([x, x[:BATCH]]), np.concatenate([y, y[:BATCH]]))
    with pytest.raises(ValueError, match="more batches than the 6"):
        evaluate_robustness(model, more, attack=_cheap(), batch_size=BATCH, state_path=path)
    with pytest.raises(ValueError, match="recorded 6 batches and `data` has 5"):
        evaluate_robustness(
            model, (x[:-BATCH], y[:-BATCH]), attack=_cheap(), batch_size=BATCH, state_path=path
        )
    assert path.read_bytes() == before
    path.write_text("{not json")
    with pytest.raises(ValueError, match="is not a state file of evaluate_robustness"):
        evaluate_robustness(model, (x, y), attack=_cheap(), batch_size=BATCH, state_path=path)
    assert path.read_text() == "{not json"


# --------------------------------------------------------------------------- progress
@pytest.mark.slow
def test_progress_advances_per_stage_within_a_batch():
    # AutoAttack-fast on 5 classes: APGD-CE, then APGD-T's 3 targets, each 3 * steps passes
    # per example: a quarter of the batch each. Two batches: 0, .25, .5, .75, 1, 1.25, ...
    seen = []
    attack = attacks.AutoAttack(0.1, version="fast", steps=2, seed=0)
    x, y = _data()
    evaluate_robustness(
        _model(), (x[:16], y[:16]), attack=attack, batch_size=BATCH, progress=seen.append,
        warn=False,
    )  # fmt: skip
    assert seen == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0])


def test_progress_bar_shows_parts_of_a_batch_and_an_estimate():
    import io

    from keras_advreg.apps.reporting import ProgressBar

    stream = io.StringIO()
    ticks = iter([0.0, 50.0, 100.0, 200.0])
    bar = ProgressBar(1, title="AutoAttack", stream=stream, clock=lambda: next(ticks))
    for done in (0.0, 0.25, 0.5, 1.0):
        bar.update(done)
    assert stream.getvalue().splitlines() == [
        "AutoAttack",
        "  0/1 batches (0%), 0s",
        "  0.2/1 batches (25%), 50s, eta 150s",  # 50 s for a quarter: 150 s to go
        "  0.5/1 batches (50%), 100s, eta 100s",
        "  1/1 batches (100%), 200s",
    ]


# --------------------------------------------------------------------------- command line
@pytest.mark.filterwarnings("ignore:FGSM accuracy is an upper bound")
def test_cli_evaluate_resumes_from_state_and_refuses_another_attack(tmp_path, capsys):
    from keras_advreg.apps import cli

    model_path, data_path, state = tmp_path / "m.keras", tmp_path / "d.npz", tmp_path / "s.json"
    _model().save(model_path)
    np.savez(data_path, x=_data()[0], y=_data()[1])
    argv = [
        "evaluate", str(model_path), "--dataset", str(data_path), "--attack", "fgsm",
        "--batch-size", str(BATCH), "--output-dir", "", "--state", str(state), "--quiet",
    ]  # fmt: skip
    assert cli.main([*argv, "--epsilons", "0.1"]) == 0
    first = capsys.readouterr().out
    stored = json.loads(state.read_text())
    assert stored["complete"] and len(stored["batches"]) == N // BATCH
    assert cli.main([*argv, "--epsilons", "0.1"]) == 0  # done: the same table again
    assert (
        capsys.readouterr().out.split("Robustness report")[1].split("seconds")[0]
        == (first.split("Robustness report")[1].split("seconds")[0])
    )
    before = state.read_bytes()
    assert cli.main([*argv, "--epsilons", "0.2"]) == 2
    err = capsys.readouterr().err
    assert "was written by a different evaluation: the attack differs" in err
    assert state.read_bytes() == before


class SubclassedClassifier(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(CLASSES)

    def call(self, x):
        return self.dense(x)


def test_an_unbuilt_subclassed_model_is_fingerprinted_by_its_built_weights(tmp_path):
    path = tmp_path / "state.json"
    keras.utils.set_random_seed(1)
    evaluate_robustness(
        SubclassedClassifier(), _data(), attack=_cheap(), batch_size=BATCH, state_path=path
    )
    before = path.read_bytes()
    keras.utils.set_random_seed(2)  # other initial weights, drawn when it is built
    with pytest.raises(ValueError, match="the model's weights differ"):
        evaluate_robustness(
            SubclassedClassifier(), _data(), attack=_cheap(), batch_size=BATCH, state_path=path
        )
    assert path.read_bytes() == before
