"""`keras_advreg.layers.AdversarialPerturbation` and the neighbour at embeddings.

The layer is the identity outside `AdversarialRegularization`'s step, passes the mask on,
round-trips through `.keras` files and refuses integer tensors; the neighbour at an
embedding equals Miyato et al.'s one computed by hand with NumPy (l2 per example over the
whole sequence, relative to the RMS embedding norm, padded positions left alone), with one
and with two such layers. Backend-agnostic (marker `backends`): CI runs it on TensorFlow,
JAX and PyTorch (where `AdversarialRegularization` does not train, the layer still works).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

import keras_advreg
from keras_advreg.layers import AdversarialPerturbation

pytestmark = pytest.mark.backends

TRAINS = keras.backend.backend() in ("tensorflow", "jax")
trains = pytest.mark.skipif(not TRAINS, reason="AdversarialRegularization trains on TF and JAX")
LOGITS_CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
V, T, D, C = 7, 4, 3, 3  # vocabulary, sequence length, embedding size, classes


def _tokens():
    # Padding (0) at the end of the first two sequences; the third is full.
    return np.array([[1, 3, 0, 0], [2, 5, 6, 0], [4, 1, 2, 6]], dtype="int32")


def _text_model(relative=True, branches=1, seed=0):
    """`branches` token inputs, each Embedding(mask_zero) -> AdversarialPerturbation ->
    Flatten (Flatten ignores the mask, so a perturbed padded position would show in the
    logits), concatenated -> Dense."""
    keras.utils.set_random_seed(seed)
    inputs, flat = [], []
    for i in range(branches):
        x = keras.Input((T,), dtype="int32", name=f"tokens{i}")
        h = keras.layers.Embedding(V, D, mask_zero=True, name=f"embedding{i}")(x)
        h = AdversarialPerturbation(relative=relative, name=f"perturbation{i}")(h)
        inputs.append(x)
        flat.append(keras.layers.Flatten()(h))
    h = flat[0] if branches == 1 else keras.layers.Concatenate()(flat)
    out = keras.layers.Dense(C, name="logits")(h)
    return keras.Model(inputs[0] if branches == 1 else inputs, out)


def _softmax(z):
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def _ce(z, y):
    return -np.log(_softmax(z)[np.arange(len(y)), y])


# ------------------------------------------------------------------ the layer
def test_identity_outside_training_and_mask_passed_on():
    model = _text_model()
    x = _tokens()
    embed = model.get_layer("embedding0")
    layer = model.get_layer("perturbation0")
    h = embed(x)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(layer(h)), keras.ops.convert_to_numpy(h)
    )
    # The Embedding's mask goes through (a mask-aware pooling after it sees it).
    pooled = keras.Sequential(
        [keras.Input((T,), dtype="int32"), embed, layer, keras.layers.GlobalAveragePooling1D()]
    )
    got = keras.ops.convert_to_numpy(pooled(x))
    E = keras.ops.convert_to_numpy(embed.embeddings)
    m = (x != 0)[..., None]
    want = (E[x] * m).sum(1) / m.sum(1)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_offset_in_scope_skips_padding_and_scales_by_the_rms_norm():
    from keras_advreg.layers.perturbation import perturbation_scope

    model = _text_model()
    x = _tokens()
    embed, layer = model.get_layer("embedding0"), model.get_layer("perturbation0")
    h = embed(x)
    mask = embed.compute_mask(x)
    offset = np.random.default_rng(0).normal(size=(3, T, D)).astype("float32")
    with perturbation_scope(offsets={"perturbation0": keras.ops.convert_to_tensor(offset)}):
        out = keras.ops.convert_to_numpy(layer(h, mask=mask))
    h = keras.ops.convert_to_numpy(h)
    m = (x != 0)[..., None]
    rms = np.sqrt(((h**2).sum(-1) * m[..., 0]).sum(1) / m[..., 0].sum(1))
    np.testing.assert_allclose(out, h + m * rms[:, None, None] * offset, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out[0, 2:], h[0, 2:])  # padding untouched


def test_save_load_round_trip_and_config(tmp_path):
    model = _text_model(relative=False)
    path = tmp_path / "text.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    layer = restored.get_layer("perturbation0")
    assert isinstance(layer, AdversarialPerturbation) and layer.relative is False
    x = _tokens()
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(restored(x)), keras.ops.convert_to_numpy(model(x)), atol=1e-6
    )
    assert keras.saving.get_registered_name(AdversarialPerturbation) == (
        "keras_advreg>AdversarialPerturbation"
    )


def test_integer_input_and_bad_argument_fail_at_construction():
    x = keras.Input((T,), dtype="int32")
    with pytest.raises(ValueError, match="Place it after the `Embedding`.*int32"):
        AdversarialPerturbation()(x)
    with pytest.raises(ValueError, match="`relative` must be True or False. Received: relative=1"):
        AdversarialPerturbation(relative=1)


# ------------------------------------------------------------------ the neighbour, by hand
def _expected_labeled(model, xs, y, eps, relative, multiplier):
    """NumPy: FGSM-l2 (NSL's labeled loss) at the perturbation layers of `_text_model`."""
    W = keras.ops.convert_to_numpy(model.get_layer("logits").kernel).astype("float64")
    b = keras.ops.convert_to_numpy(model.get_layer("logits").bias).astype("float64")
    hs, masks, scales = [], [], []
    for i, x in enumerate(xs):
        E = keras.ops.convert_to_numpy(model.get_layer(f"embedding{i}").embeddings)
        h = E.astype("float64")[x]  # (B, T, D)
        m = (x != 0).astype("float64")[..., None]
        rms = np.sqrt((m[..., 0] * (h**2).sum(-1)).sum(1) / m[..., 0].sum(1))
        hs.append(h)
        masks.append(m)
        scales.append(rms[:, None, None] if relative else np.ones((len(x), 1, 1)))
    flat = np.concatenate([h.reshape(len(y), -1) for h in hs], 1)
    z = flat @ W + b
    dz = _softmax(z)
    dz[np.arange(len(y)), y] -= 1.0  # d CE / d logits, per example
    dflat = dz @ W.T  # (B, branches*T*D)
    grads, offset = [], 0
    for h, m, s in zip(hs, masks, scales):
        size = T * D
        g = dflat[:, offset : offset + size].reshape(h.shape) * m * s  # d loss / d offset
        grads.append(g)
        offset += size
    norm = np.sqrt(sum((g**2).reshape(len(y), -1).sum(1) for g in grads))
    adv = [
        h + m * s * (eps * g / norm[:, None, None]) for h, m, s, g in zip(hs, masks, scales, grads)
    ]
    z_adv = np.concatenate([a.reshape(len(y), -1) for a in adv], 1) @ W + b
    clean = _ce(z, y).mean()
    return clean, multiplier * _ce(z_adv, y).mean(), adv


@trains
@pytest.mark.parametrize("relative", [True, False])
@pytest.mark.parametrize("branches", [1, 2])
def test_embedding_neighbour_equals_hand_computed(relative, branches):
    base = _text_model(relative=relative, branches=branches)
    config = keras_advreg.AdvConfig(multiplier=0.7, adv_step_size=0.4, adv_grad_norm="l2")
    model = keras_advreg.AdversarialRegularization(base, adv_config=config)
    model.compile("sgd", LOGITS_CE)
    rng = np.random.default_rng(1)
    xs = [_tokens()] + [rng.integers(0, V, (3, T)).astype("int32") for _ in range(branches - 1)]
    y = np.array([0, 2, 1])
    clean, scaled_adv, adv = _expected_labeled(base, xs, y, 0.4, relative, 0.7)
    x = xs[0] if branches == 1 else {f"tokens{i}": v for i, v in enumerate(xs)}
    logs = model.evaluate(x, y, batch_size=3, verbose=0, return_dict=True)
    assert logs["labeled_loss"] == pytest.approx(clean, rel=1e-5)
    assert logs["scaled_adversarial_loss"] == pytest.approx(scaled_adv, rel=1e-4)
    assert scaled_adv > 0.7 * clean  # the neighbour is adversarial


@trains
def test_token_ids_train_with_the_layer_and_not_without():
    base = _text_model()
    model = keras_advreg.AdversarialRegularization(
        base, adv_config=keras_advreg.AdvConfig(multiplier=1.0, adv_step_size=0.5)
    )
    model.compile("adam", LOGITS_CE)
    x = np.random.default_rng(0).integers(1, V, (32, T)).astype("int32")
    y = (x[:, 0] > 3).astype("int32")
    history = model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert np.isfinite(history.history["scaled_adversarial_loss"]).all()
    # The same token-id model without the layer has nothing to perturb.
    plain = keras.Sequential(
        [keras.Input((T,), dtype="int32"), keras.layers.Embedding(V, D), keras.layers.Flatten(),
         keras.layers.Dense(C)]
    )  # fmt: skip
    model = keras_advreg.AdversarialRegularization(plain)
    model.compile("adam", LOGITS_CE)
    with pytest.raises(ValueError, match="AdversarialPerturbation"):
        model.fit(x, y, epochs=1, verbose=0, batch_size=16)


@trains
def test_one_step_at_the_layer_moves_batch_statistics_once():
    # VAT keeps batch normalization's moving statistics to the clean pass: after one step
    # from moving_mean 0 with momentum m, the moving mean is (1 - m) * the batch mean of the
    # clean flattened embeddings (the embedding table before the step), moved once.
    m = 0.5

    def build():
        keras.utils.set_random_seed(0)
        x = keras.Input((T,), dtype="int32")
        h = keras.layers.Embedding(V, D, name="embedding")(x)
        h = keras.layers.Flatten()(AdversarialPerturbation()(h))
        h = keras.layers.BatchNormalization(momentum=m, name="bn")(h)
        return keras.Model(x, keras.layers.Dense(C)(h))

    table = keras.ops.convert_to_numpy(build().get_layer("embedding").embeddings)
    base = build()
    config = keras_advreg.AdvConfig(adv_loss="vat", multiplier=1.0, adv_step_size=0.5)
    model = keras_advreg.AdversarialRegularization(base, adv_config=config)
    model.compile(keras.optimizers.SGD(0.1), LOGITS_CE)
    x = _tokens()
    model.fit(x, np.array([0, 1, 2]), batch_size=3, epochs=1, shuffle=False, verbose=0)
    clean = table[x].reshape(len(x), -1)
    got = keras.ops.convert_to_numpy(base.get_layer("bn").moving_mean)
    np.testing.assert_allclose(got, (1 - m) * clean.mean(0), rtol=1e-4, atol=1e-6)


@trains
def test_trades_at_the_layer_is_refused():
    if keras.backend.backend() != "tensorflow":
        pytest.skip("TRADES runs on TensorFlow only")
    model = keras_advreg.AdversarialRegularization(
        _text_model(), adv_config=keras_advreg.AdvConfig(adv_loss="trades")
    )
    model.compile("sgd", LOGITS_CE)
    with pytest.raises(ValueError, match="perturbs the model's inputs only"):
        model.fit(_tokens(), np.array([0, 1, 2]), verbose=0)


@trains
def test_example_block_runs():
    import re
    import textwrap

    block = re.search(r"```python\n(.*?)```", AdversarialPerturbation.__doc__, re.S)
    namespace: dict = {}
    exec(compile(textwrap.dedent(block.group(1)), "example", "exec"), namespace)
    assert namespace["model"].optimizer.iterations.numpy() > 0
