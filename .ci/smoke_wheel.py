"""Smoke test of an installed wheel: run in a clean venv, outside the checkout.

Checks that the package imports from site-packages (not from a source tree), ships its
`py.typed` marker, and runs one FGSM evaluation on a tiny model with known robustness.
"""

import pathlib

import keras
import numpy as np

import keras_advreg

package = pathlib.Path(keras_advreg.__file__).parent
assert "site-packages" in str(package), f"imported from {package}, not from the wheel"
assert (package / "py.typed").exists(), "py.typed is missing from the wheel"

# A linear classifier predicting class 0 when x[0] > 0: the first example (x[0] = 0.3) needs
# an l-inf perturbation of 0.3 to flip, so it survives epsilon 0.1 and not 0.5; the second
# is already misclassified.
model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
model.set_weights([np.array([[1.0, -1.0], [0.0, 0.0]], "float32"), np.zeros(2, "float32")])
x, y = np.array([[0.3, 0.5], [-0.05, 0.2]], "float32"), np.array([0, 0])
report = keras_advreg.evaluate_robustness(
    model, (x, y), epsilons=(0.1, 0.5), attack="fgsm", warn=False
)
assert report.clean_accuracy == 0.5, report.clean_accuracy
assert report.accuracy == {0.1: 0.5, 0.5: 0.0}, report.accuracy
print(f"keras_advreg {keras_advreg.__version__} from {package}: FGSM smoke test passed")
