"""The one place that imports NSL on TensorFlow >= 2.16."""

import subprocess
import sys

import pytest
import tensorflow as tf

import keras_advreg  # noqa: F401  (installs the shim)
from keras_advreg.backend import nsl as _nsl


def test_nsl_math_layer_is_importable():
    assert _nsl.nsl.__version__.startswith("1.4")
    assert callable(_nsl.adversarial_neighbor.gen_adv_neighbor)
    assert callable(_nsl.nsl.keras.adversarial_loss)


@pytest.mark.skipif(_nsl._tf_has_estimator(), reason="this TensorFlow still ships tf.estimator")
def test_estimator_stand_in_explains_itself():
    import neural_structured_learning as nsl  # a user's own import keeps working

    assert nsl is _nsl.nsl
    with pytest.raises(
        ImportError, match=r"needs `tf.estimator`.*keras_advreg.AdversarialRegularization"
    ):
        nsl.estimator.add_adversarial_regularization(None)


def test_only_the_estimator_module_is_replaced():
    code = (
        "import sys, tensorflow as tf\n"
        "before = set(m for m in sys.modules if m.startswith('neural_structured_learning'))\n"
        "import keras_advreg.backend.nsl as shim\n"
        "import neural_structured_learning as nsl\n"
        "stand_ins = [n for n, m in sys.modules.items() if getattr(m, '_keras_advreg_stand_in', False)]\n"
        "print(sorted(stand_ins), sorted(before))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    expected = [] if hasattr(tf, "estimator") else ["neural_structured_learning.estimator"]
    assert out.stdout.strip().splitlines()[-1] == f"{expected} []"
