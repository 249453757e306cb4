"""Robustness evaluation: run an attack over a dataset, report, and sanity-check the numbers."""

from keras_advreg.evaluation.checks import check_attack_strength
from keras_advreg.evaluation.evaluate import evaluate_robustness
from keras_advreg.evaluation.report import RobustnessReport

__all__ = ["RobustnessReport", "check_attack_strength", "evaluate_robustness"]
