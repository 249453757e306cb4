"""AdvConfig and make_adv_reg_config: NSL's names and defaults, validation, conversions."""

import dataclasses
import json

import numpy as np
import pytest

from keras_advreg import AdvConfig, make_adv_reg_config
from keras_advreg.backend.nsl import nsl


def test_defaults_equal_nsl_defaults():
    ours = AdvConfig().to_nsl()
    theirs = nsl.configs.make_adv_reg_config()
    assert ours == theirs
    assert AdvConfig.from_nsl(theirs) == AdvConfig()


def test_frozen_and_replace():
    config = AdvConfig(multiplier=0.2, adv_step_size=0.2, adv_grad_norm="infinity")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.multiplier = 0.5
    changed = config.replace(multiplier=0.5)
    assert changed.multiplier == 0.5 and config.multiplier == 0.2
    with pytest.raises(ValueError, match=r"Unknown AdvConfig field\(s\) \['step'\]"):
        config.replace(step=0.1)


def test_nsl_configs_convert_both_ways():
    nsl_config = nsl.configs.make_adv_reg_config(
        multiplier=0.3,
        adv_step_size=0.05,
        adv_grad_norm="infinity",
        clip_value_min=0.0,
        clip_value_max=1.0,
        pgd_iterations=3,
        pgd_epsilon=0.1,
    )
    config = AdvConfig.coerce(nsl_config)
    assert config == AdvConfig(
        multiplier=0.3,
        adv_step_size=0.05,
        adv_grad_norm="infinity",
        clip_value_min=0.0,
        clip_value_max=1.0,
        pgd_iterations=3,
        pgd_epsilon=0.1,
    )
    assert config.to_nsl() == nsl_config
    assert make_adv_reg_config(nsl_config) == config
    assert make_adv_reg_config(nsl_config, adv_step_size=0.2).adv_step_size == 0.2
    assert AdvConfig.from_nsl(nsl_config.adv_neighbor_config).multiplier == 0.2  # default


def test_make_adv_reg_config_matches_nsl_keywords():
    kwargs = dict(multiplier=0.2, adv_step_size=0.2, adv_grad_norm="infinity")
    assert make_adv_reg_config(**kwargs).to_nsl() == nsl.configs.make_adv_reg_config(**kwargs)


def test_get_config_is_json_and_round_trips():
    config = AdvConfig(feature_mask=np.array([1.0, 0.0]), clip_value_min={"image": 0.0})
    payload = json.loads(json.dumps(config.get_config()))
    restored = AdvConfig.from_config(payload)
    assert restored.feature_mask == [1.0, 0.0] and restored.clip_value_min == {"image": 0.0}


def test_from_hyperparameters():
    config = AdvConfig.from_hyperparameters(
        {"adv_multiplier": 0.05, "adv_step_size": 0.1, "adv_grad_norm": "l2", "units": 32}
    )
    assert (config.multiplier, config.adv_step_size, config.adv_grad_norm) == (0.05, 0.1, "l2")
    base = AdvConfig(clip_value_min=0.0, clip_value_max=1.0)
    assert AdvConfig.from_hyperparameters({"pgd_iterations": 3}, base=base).clip_value_max == 1.0
    with pytest.raises(TypeError, match="`hp` must be"):
        AdvConfig.from_hyperparameters(3)


def test_from_hyperparameters_applies_the_method_recipe():
    """`adv_method` is honoured here too (the tuner's trials are built by this function)."""
    base = AdvConfig(multiplier=0.3, clip_value_min=0.0, clip_value_max=1.0, free_replays=None)
    fast = AdvConfig.from_hyperparameters({"adv_method": "fast", "pgd_epsilon": 0.2}, base=base)
    assert (fast.adv_step_size, fast.pgd_epsilon, fast.pgd_iterations) == (0.25, 0.2, 1)
    assert fast.random_init and fast.multiplier == 0.3 and fast.adv_grad_norm == "l2"
    free = AdvConfig.from_hyperparameters({"adv_method": "free", "adv_step_size": 0.1}, base=base)
    assert (free.free_replays, free.adv_step_size, free.pgd_epsilon) == (8, 0.1, 0.1)
    assert (free.multiplier, free.clip_value_max, free.adv_loss) == (0.3, 1.0, "labeled")
    nsl = AdvConfig.from_hyperparameters({"adv_method": "nsl", "pgd_iterations": 3}, base=free)
    assert nsl.free_replays is None and nsl.pgd_iterations == 3
    assert AdvConfig.from_hyperparameters({"adv_method": None}, base=base) == base
    with pytest.raises(ValueError, match="`adv_method` must be one of 'nsl', 'fast', 'free'"):
        AdvConfig.from_hyperparameters({"adv_method": "madry"})


def test_the_free_recipe_has_one_default():
    """8 replays (Shafahi et al.'s m = 8), whether built directly or as a search's method."""
    from keras_advreg.training.config import DEFAULT_FREE_REPLAYS

    assert DEFAULT_FREE_REPLAYS == 8
    assert AdvConfig.free(0.3).free_replays == 8
    searched = AdvConfig.from_hyperparameters({"adv_method": "free", "pgd_epsilon": 0.3})
    assert searched.free_replays == 8 and searched.adv_step_size == 0.3
    fast = AdvConfig.from_hyperparameters({"adv_method": "fast", "pgd_epsilon": 0.3})
    assert fast == AdvConfig.fast(
        0.3, multiplier=0.2, clip_value_min=None, clip_value_max=None, adv_grad_norm="l2"
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"adv_grad_norm": "L3"},
            r"`adv_grad_norm` must be one of 'infinity', 'l2', 'l1'. Received: adv_grad_norm='L3'",
        ),
        ({"adv_step_size": -0.1}, r"`adv_step_size` must be >= 0.0. Received: adv_step_size=-0.1"),
        (
            {"multiplier": float("nan")},
            r"`multiplier` must be a finite number. Received: multiplier=nan",
        ),
        (
            {"pgd_iterations": 0},
            r"`pgd_iterations` must be an integer >= 1 .*Received: pgd_iterations=0",
        ),
        ({"pgd_iterations": 2.5}, r"Received: pgd_iterations=2.5"),
        ({"pgd_epsilon": 0.0}, r"`pgd_epsilon` must be > 0.0"),
        (
            {"adv_grad_norm": "l1", "pgd_epsilon": 0.1},
            r"NSL can only project .*'infinity' or 'l2' ball",
        ),
        (
            {"clip_value_min": 1.0, "clip_value_max": 0.0},
            r"`clip_value_min` must be <= `clip_value_max`",
        ),
        ({"random_init": "yes"}, r"`random_init` must be True or False"),
        (
            {"clip_value_min": float("nan")},
            r"`clip_value_min` must be finite. Received: clip_value_min=nan",
        ),
        (
            {"clip_value_max": "1"},
            r"`clip_value_max` must be a finite number, an array .*Received: clip_value_max='1'",
        ),
        ({"clip_value_min": {"image": np.inf}}, r"`clip_value_min\['image'\]` must be finite"),
        (
            {"feature_mask": "abc"},
            r"`feature_mask` must hold numbers .*Received: feature_mask='abc'",
        ),
    ],
)
def test_validation_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AdvConfig(**kwargs)


def test_norm_spellings():
    assert AdvConfig(adv_grad_norm="L2").adv_grad_norm == "l2"
    assert AdvConfig(adv_grad_norm="inf").adv_grad_norm == "infinity"
    assert AdvConfig(adv_grad_norm=nsl.configs.NormType.L1).adv_grad_norm == "l1"


def test_coerce_rejects_other_types():
    with pytest.raises(TypeError, match=r"`adv_config` must be .*Received: adv_config=0.2"):
        AdvConfig.coerce(0.2)


def test_nsl_style_clip_values_and_masks_are_accepted():
    config = AdvConfig(
        clip_value_min={"image": 0.0, "aux": None},
        clip_value_max=np.ones((28, 28, 1)),
        feature_mask={"image": np.ones((28, 28, 1)), "aux": [1, 0]},
    )
    assert config.clip_value_min == {"image": 0.0, "aux": None}
    assert config.to_nsl().adv_neighbor_config.clip_value_max.shape == (28, 28, 1)


def test_equality_and_hash_with_array_masks():
    a = AdvConfig(feature_mask=np.ones(4))
    assert a == AdvConfig(feature_mask=np.ones(4)) == AdvConfig(feature_mask=[1.0] * 4)
    assert hash(a) == hash(AdvConfig(feature_mask=[1.0] * 4))
    assert a != AdvConfig(feature_mask=np.zeros(4)) and a != AdvConfig()
    assert len({AdvConfig(), AdvConfig(), AdvConfig(multiplier=0.5)}) == 2
