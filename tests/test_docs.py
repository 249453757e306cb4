"""The docstring examples run: `>>>` examples as doctests, and the wrapper's Example block."""

import doctest
import importlib
import pkgutil
import re
import textwrap

import pytest

import keras_advreg
from keras_advreg.training import model as wrappers

# The modules of an optional dependency (keras-tuner, or a Keras backend's own framework:
# `backend.jax_ops` needs jax) are imported only when it is installed.
NEEDS = {
    "keras_advreg.tuning": "keras_tuner",
    "keras_advreg.backend.jax_ops": "jax",
    "keras_advreg.training.jax_step": "jax",
    "keras_advreg.backend.torch_ops": "torch",
}
MODULES = sorted(
    name
    for _, name, _ in pkgutil.walk_packages(keras_advreg.__path__, "keras_advreg.")
    if all(
        importlib.util.find_spec(package)
        for prefix, package in NEEDS.items()
        if name.startswith(prefix)
    )
)


# Modules whose docstrings carry runnable `>>>` examples.
WITH_EXAMPLES = {
    "keras_advreg.data.adapters",
    "keras_advreg.training.config",
    "keras_advreg.apps.tutorial",
    "keras_advreg.evaluation.evaluate",
    "keras_advreg.tuning.search",
    "keras_advreg.attacks.base",
    "keras_advreg.attacks.fgsm",
    "keras_advreg.attacks.pgd",
    "keras_advreg.attacks.apgd",
    "keras_advreg.attacks.square",
    "keras_advreg.attacks.fab",
    "keras_advreg.attacks.autoattack",
    "keras_advreg.attacks.generate",
    "keras_advreg.log_keys",
    "keras_advreg.layers.lipschitz",
    "keras_advreg.layers.activations",
    "keras_advreg.losses",
    "keras_advreg.certification.lipschitz",
    "keras_advreg.certification.smoothing",
    "keras_advreg.layers.input_range",
}


@pytest.mark.parametrize("module_name", MODULES)
def test_doctests(module_name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    module = importlib.import_module(module_name)
    result = doctest.testmod(
        module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {module_name}"
    if module_name in WITH_EXAMPLES:  # guards against examples silently turned off
        assert result.attempted > 0, f"no doctest ran in {module_name}"


def test_wrapper_example_block_runs():
    block = re.search(r"```python\n(.*?)```", wrappers.AdversarialRegularization.__doc__, re.S)
    namespace = {}
    exec(compile(textwrap.dedent(block.group(1)), "example", "exec"), namespace)
    assert "scaled_adversarial_loss" in namespace["history"].history


def test_adversarial_loss_example_block_runs():
    from keras_advreg.training import functional

    block = re.search(r"```python\n(.*?)```", functional.adversarial_loss.__doc__, re.S)
    namespace = {}
    exec(compile(textwrap.dedent(block.group(1)), "example", "exec"), namespace)
    assert float(namespace["total_loss"]) > float(namespace["labeled_loss"]) > 0
