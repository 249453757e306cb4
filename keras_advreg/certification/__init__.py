"""Certified robustness: proved l2 radii (Lipschitz-margin certificates of 1-Lipschitz
models, `lipschitz.py`; randomized smoothing, `smoothing.py`) and their `CertificationReport`."""

from keras_advreg.certification.lipschitz import certify
from keras_advreg.certification.report import CertificationReport
from keras_advreg.certification.smoothing import RandomizedSmoothing

__all__ = ["CertificationReport", "RandomizedSmoothing", "certify"]
