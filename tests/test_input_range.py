"""`keras_advreg.layers.InputRange`: the layer, and every entry point reading its bounds.

Expectations are computed independently: the normalisation by hand in NumPy, FGSM on a
linear classifier by hand (its input gradient's sign is known), and the attacks on a model
declaring [0, 1] against the existing clip-argument path on the same model without the
layer (tested on its own elsewhere).
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
from conftest import KERNEL, MODEL_KINDS, make_model

import keras_advreg
from keras_advreg.attacks.bounds import UNBOUNDED
from keras_advreg.layers import InputRange
from keras_advreg.layers.input_range import find_input_ranges, model_bounds

pytestmark = pytest.mark.backends

TRAINING_BACKENDS = ("tensorflow", "jax")


def dense(units=3, inputs=4, seed=0):
    rng = np.random.default_rng(seed)
    layer = keras.layers.Dense(units)
    layer.build((None, inputs))
    layer.set_weights([rng.normal(size=(inputs, units)).astype("float32"), np.zeros(units, "f")])
    return layer


def data(n=12, d=4, seed=1):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (n, d)).astype("float32"), rng.integers(0, 3, n)


def bounded(layer, **kwargs):
    return keras.Sequential([keras.Input((4,)), InputRange(0, 1, **kwargs), layer])


def plain(layer):
    return keras.Sequential([keras.Input((4,)), layer])


def unbounded_warnings(caught):
    return [w for w in caught if str(w.message) == UNBOUNDED]


# --------------------------------------------------------------------------- the layer
def test_identity_at_inference_and_saved_round_trip(tmp_path):
    layer = dense()
    model = bounded(layer)
    x, _ = data()
    kernel, bias = layer.get_weights()
    np.testing.assert_allclose(model.predict(x, verbose=0), x @ kernel + bias, atol=1e-5)
    # The identity adds no op: the layer returns its input object itself.
    t = keras.ops.convert_to_tensor(x)
    assert model.layers[0](t) is t
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.layers[0], InputRange)
    assert loaded.layers[0].bounds == (0.0, 1.0)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), x @ kernel + bias, atol=1e-5)
    assert model_bounds(loaded) == (0.0, 1.0)
    lines = []
    loaded.summary(print_fn=lambda line, *a, **k: lines.append(line))
    assert "InputRange" in "\n".join(lines)
    assert keras.saving.get_registered_name(InputRange) == "keras_advreg>InputRange"


def test_normalisation_is_folded_in_per_channel_and_saved(tmp_path):
    mean, std = [120.0, 100.0, 80.0], [60.0, 50.0, 40.0]
    model = keras.Sequential(
        [keras.Input((2, 2, 3)), InputRange(0, 255, mean=mean, std=std), keras.layers.Flatten()]
    )
    x = np.random.default_rng(0).uniform(0, 255, (5, 2, 2, 3)).astype("float32")
    expected = ((x - np.array(mean)) / np.array(std)).reshape(5, -1)
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-5)
    path = tmp_path / "n.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.layers[0].get_config()["mean"] == mean
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-5)
    scalar = InputRange(0, 255, mean=127.5)  # scalar mean, no std: a shift only
    np.testing.assert_allclose(keras.ops.convert_to_numpy(scalar(x)), x - 127.5, atol=1e-4)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(min_value=1, max_value=1), "`min_value` must be < `max_value`"),
        (dict(min_value=0, max_value=float("inf")), "`max_value` must be a finite number"),
        (dict(min_value=0, max_value=1, std=[1.0, 0.0]), "`std` must be > 0"),
        (dict(min_value=0, max_value=1, mean="a"), "`mean` must be a number"),
    ],
)
def test_invalid_arguments(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        InputRange(**kwargs)


def test_per_channel_values_must_match_the_channels():
    with pytest.raises(ValueError, match="one per channel of the last axis"):
        keras.Sequential([keras.Input((4,)), InputRange(0, 1, mean=[0.5, 0.5, 0.5])])


# --------------------------------------------------------------------------- finding it
def _with_range(kind):
    if kind == "sequential":
        return keras.Sequential([keras.Input((4,)), InputRange(0, 255), dense()])
    if kind == "functional":
        inputs = keras.Input((4,))
        return keras.Model(inputs, dense()(InputRange(0, 255)(inputs)))
    if kind == "subclassed":

        class Model(keras.Model):
            def __init__(self):
                super().__init__()
                self.range, self.out = InputRange(0, 255), dense()

            def call(self, x):
                return self.out(self.range(x))

        return Model()
    if kind == "nested":  # a functional model around a Sequential that declares the range
        inner = keras.Sequential([keras.Input((4,)), InputRange(0, 255), dense()])
        inputs = keras.Input((4,))
        return keras.Model(inputs, keras.layers.Activation("linear")(inner(inputs)))
    raise ValueError(kind)


@pytest.mark.parametrize("kind", [*MODEL_KINDS, "nested"])
def test_bounds_are_found_in_every_kind_of_model(kind):
    assert model_bounds(_with_range(kind)) == (0.0, 255.0)
    if kind != "nested":
        assert model_bounds(make_model(kind)) == (None, None)


@pytest.mark.skipif(
    keras.backend.backend() not in TRAINING_BACKENDS, reason="AdversarialRegularization"
)
def test_bounds_are_found_through_the_training_wrapper():
    wrapper = keras_advreg.AdversarialRegularization(_with_range("functional"))
    assert model_bounds(wrapper) == (0.0, 255.0)


def test_two_layers_on_one_input_are_rejected():
    model = keras.Sequential([keras.Input((4,)), InputRange(0, 1), InputRange(0, 1), dense()])
    with pytest.raises(ValueError, match="2 `InputRange` layers"):
        find_input_ranges(model)
    x, y = data()
    with pytest.raises(ValueError, match="2 `InputRange` layers"):
        keras_advreg.evaluate_robustness(model, (x, y), attack="fgsm", warn=False)


@pytest.mark.parametrize("kind", ["sequential", "functional", "nested"])
def test_a_layer_not_on_an_input_is_rejected(kind):
    if kind == "sequential":
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4), InputRange(0, 1)])
    elif kind == "functional":
        inputs = keras.Input((4,))
        model = keras.Model(inputs, InputRange(0, 1)(keras.layers.Dense(4)(inputs)))
    else:  # the inner model declares it on its input, but is itself applied after a layer
        inner = keras.Sequential([keras.Input((4,)), InputRange(0, 1), dense()])
        inputs = keras.Input((4,))
        model = keras.Model(inputs, inner(keras.layers.Dense(4)(inputs)))
    with pytest.raises(ValueError, match="must be applied directly to a model input"):
        find_input_ranges(model)


def test_one_layer_per_input_of_a_multi_input_model():
    a, b = keras.Input((2,), name="a"), keras.Input((2,), name="b")
    joined = keras.layers.Concatenate()([InputRange(0, 1)(a), InputRange(-1, 1)(b)])
    model = keras.Model({"a": a, "b": b}, keras.layers.Dense(2)(joined))
    assert model_bounds(model) == ({"a": 0.0, "b": -1.0}, {"a": 1.0, "b": 1.0})


# --------------------------------------------------------------------------- attacks
def test_attacks_read_the_bounds_like_the_clip_arguments():
    layer = dense()
    x, y = data()
    with_layer, without = bounded(layer), plain(layer)
    pgd = keras_advreg.attacks.PGD(0.3, steps=5, seed=3)
    unclipped, _, _ = keras_advreg.generate_adversarial_examples(without, x, y, attack=pgd)
    assert unclipped.min() < 0 or unclipped.max() > 1  # so that the box matters here
    ours, clean, adv = keras_advreg.generate_adversarial_examples(with_layer, x, y, attack=pgd)
    clipped = keras_advreg.generate_adversarial_examples(
        without, x, y, attack=pgd.replace(clip_value_min=0.0, clip_value_max=1.0)
    )
    assert ours.min() >= 0.0 and ours.max() <= 1.0
    np.testing.assert_allclose(ours, clipped[0], atol=1e-6)
    np.testing.assert_array_equal(adv, clipped[2])
    for attack in ("fgsm", keras_advreg.attacks.APGD(loss="ce", steps=10, seed=0)):
        a = keras_advreg.evaluate_robustness(
            with_layer, (x, y), epsilons=(0.1, 0.3), attack=attack, warn=False
        )
        b = keras_advreg.evaluate_robustness(
            without,
            (x, y),
            epsilons=(0.1, 0.3),
            attack=attack,
            clip_value_min=0.0,
            clip_value_max=1.0,
            warn=False,
        )
        assert a.accuracy == b.accuracy
        assert a.config["clip_value_min"] == 0.0 and a.config["input_range"] == "model"


def test_fgsm_in_pixel_units_matches_the_hand_computed_points():
    """FGSM on z1 - z0 = 2*x1 - x2 (label 1: x1 down, x2 up), in 0-255 units through
    InputRange(0, 255) -> Rescaling(1/255), clipped to the declared box."""
    model = keras.Sequential(
        [
            keras.Input((2,)),
            InputRange(0, 255),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Dense(2, use_bias=False),
        ]
    )
    model.layers[-1].set_weights([KERNEL])
    x = np.array([[10.0, 250.0], [200.0, 100.0]], "float32")
    y = np.array([1, 0])
    eps = 25.5
    x_adv, _, _ = keras_advreg.generate_adversarial_examples(model, x, y, eps, attack="fgsm")
    sign = np.array([[-1.0, 1.0], [1.0, -1.0]])
    np.testing.assert_allclose(x_adv, np.clip(x + eps * sign, 0, 255), atol=1e-3)
    report = keras_advreg.evaluate_robustness(
        model, (x, y), epsilons=76.5, attack="fgsm", warn=False
    )
    assert report.describe() == "FGSM (infinity) eps 76.5 on inputs in [0, 255]"
    assert "clipped to [0.0, 255.0] (the model's InputRange)" in str(report)
    assert "epsilon in the units of the inputs in [0, 255]" in str(report)


def test_clip_values_that_contradict_the_layer_are_rejected():
    model = bounded(dense())
    x, y = data()
    with pytest.raises(ValueError, match="`clip_value_max` contradicts the model's `InputRange`"):
        keras_advreg.evaluate_robustness(model, (x, y), attack="fgsm", clip_value_max=255.0)
    with pytest.raises(ValueError, match="`clip_value_min` contradicts"):
        keras_advreg.generate_adversarial_examples(model, x, y, 0.1, clip_value_min=-1.0)
    report = keras_advreg.evaluate_robustness(  # the same values are fine
        model, (x, y), attack="fgsm", clip_value_min=0, clip_value_max=1, warn=False
    )
    assert report.config["clip_value_max"] == 1.0


def test_data_outside_the_box_is_rejected_before_work():
    model = bounded(dense())
    x, y = data()
    with pytest.raises(ValueError, match="0-255 pixels fed to a model that expects"):
        keras_advreg.evaluate_robustness(model, (x * 255, y), attack="fgsm")
    with pytest.raises(ValueError, match="batch 1 of `data`"):  # a later batch too
        keras_advreg.evaluate_robustness(
            model, (np.concatenate([x, x + 2]), np.concatenate([y, y])), batch_size=12
        )
    with pytest.raises(ValueError, match="outside the input range"):
        keras_advreg.generate_adversarial_examples(model, x - 1, y, 0.1)
    # Outside the call's own clip values: a warning (clipping to a narrower range than the
    # data's is NSL's semantics), once per call.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = keras_advreg.evaluate_robustness(
            plain(dense()),
            (np.concatenate([x, x * 255]), np.concatenate([y, y])),
            attack=keras_advreg.attacks.APGD(0.1, loss="ce", steps=2),
            clip_value_min=0.0,
            clip_value_max=1.0,
            batch_size=4,
        )
    found = [w for w in caught if "set by clip_value_min/clip_value_max" in str(w.message)]
    assert len(found) == 1 and "batch 3 of `data`" in str(found[0].message)
    assert sum("outside the input range" in w for w in report.warnings) == 1


def test_an_linf_epsilon_wider_than_the_box_is_rejected():
    model = bounded(dense())
    x, y = data()
    with pytest.raises(ValueError, match="at most the width of the model's input range"):
        keras_advreg.evaluate_robustness(model, (x, y), epsilons=(0.1, 1.5), attack="fgsm")
    report = keras_advreg.evaluate_robustness(  # l2 radii are not bounded by the box width
        model, (x, y), epsilons=1.5, attack="fgsm", norm="l2", warn=False
    )
    assert report.accuracy[1.5] <= report.clean_accuracy


def test_unbounded_attacks_warn_once_per_call():
    x, y = data(n=12)
    apgd = keras_advreg.attacks.APGD(0.1, loss="ce", steps=2)  # not weak: no APGD comparison
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = keras_advreg.evaluate_robustness(plain(dense()), (x, y), attack=apgd, batch_size=4)
    assert len(unbounded_warnings(caught)) == 1  # 3 batches, one warning
    assert report.units == "unbounded inputs"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        keras_advreg.generate_adversarial_examples(plain(dense()), x, y, 0.1, attack="fgsm")
        keras_advreg.evaluate_robustness(bounded(dense()), (x, y), attack=apgd, batch_size=4)
    assert len(unbounded_warnings(caught)) == 1  # generate's; none with the layer


def test_the_callback_reads_the_bounds_and_warns_once():
    x, y = data(n=16)
    model = bounded(dense())
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    bad = keras_advreg.AdversarialRobustnessCallback((x * 255, y), epsilons=0.1, attack="fgsm")
    with pytest.raises(ValueError, match="outside the input range"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[bad])
    good = keras_advreg.AdversarialRobustnessCallback((x, y), epsilons=0.1, attack="fgsm")
    model.fit(x, y, epochs=1, verbose=0, callbacks=[good])
    assert good.last_report.config["clip_value_max"] == 1.0
    free = plain(dense())
    free.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    callback = keras_advreg.AdversarialRobustnessCallback((x, y), epsilons=0.1, attack="fgsm")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        free.fit(x, y, epochs=3, verbose=0, callbacks=[callback])
    assert sum(UNBOUNDED in str(w.message) for w in caught) == 1


# --------------------------------------------------------------------------- training
@pytest.mark.skipif(
    keras.backend.backend() not in TRAINING_BACKENDS, reason="AdversarialRegularization"
)
def test_training_clips_to_the_declared_box():
    x, y = data(n=8)
    config = keras_advreg.AdvConfig(adv_step_size=0.5, adv_grad_norm="infinity")
    model = keras_advreg.AdversarialRegularization(bounded(dense()), adv_config=config)
    assert (model.adv_config.clip_value_min, model.adv_config.clip_value_max) == (0.0, 1.0)
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x_adv = model.perturb_on_batch((x, y))[0]
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert np.abs(x_adv - x).max() > 0.4  # it moved, up to the box
    with pytest.raises(ValueError, match="outside the input range"):
        model.fit(x * 255, y, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="`clip_value_max` contradicts"):
        keras_advreg.AdversarialRegularization(
            bounded(dense()), adv_config=config.replace(clip_value_max=255.0)
        )
    with pytest.raises(ValueError, match="`adv_step_size` must be at most the width"):
        keras_advreg.AdversarialRegularization(
            bounded(dense()), adv_config=config.replace(adv_step_size=2.0)
        )


# --------------------------------------------------------------------------- the CLI
@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="the CLI needs TensorFlow")
def test_cli_evaluate_reads_the_bounds_and_states_the_units(tmp_path, capsys):
    from keras_advreg.apps import cli

    model = keras.Sequential(
        [keras.Input((4,)), InputRange(0, 255), keras.layers.Rescaling(1 / 255), dense()]
    )
    path = tmp_path / "m.keras"
    model.save(path)
    x, y = data()
    npz = tmp_path / "d.npz"
    np.savez(npz, x=x * 255, y=y)
    argv = ["evaluate", str(path), "--dataset", str(npz), "--attack", "fgsm", "--no-plots"]
    assert cli.main([*argv, "--epsilons", "76.5", "--quiet", "--output-dir", ""]) == 0
    out = capsys.readouterr().out
    assert "clipped to [0, 255] (the model's InputRange)" in out.splitlines()[0]
    assert "epsilon in the units of the inputs in [0, 255]" in out
    assert cli.main([*argv, "--clip-max", "1", "--quiet", "--output-dir", ""]) == 2
    assert "contradicts the model's `InputRange`" in capsys.readouterr().err
