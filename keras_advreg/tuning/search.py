"""Running a search: `search` (failed trials made visible) and the robustness `objective`."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import keras_tuner as kt

# The log keys of the robust accuracy (first attack epsilon, written by the robustness
# callback) and of `robust_weight * val_adv_accuracy + (1 - robust_weight) * clean accuracy`.
from keras_advreg.log_keys import ADV_ACCURACY, CLEAN_ADV_ACCURACY


# ---------------------------------------------------------------------- module helpers
def objective(kind: str = "robust") -> Any:
    """Returns the `keras_tuner.Objective` for the robustness metrics.

    Args:
        kind: str. `"robust"` (`val_adv_accuracy`) or `"clean_adv"`
            (`val_clean_adv_accuracy`). Defaults to `"robust"`.

    Example:

    >>> spec = objective("robust")
    >>> spec.name, spec.direction
    ('val_adv_accuracy', 'max')
    """
    names = {"robust": ADV_ACCURACY, "clean_adv": CLEAN_ADV_ACCURACY}
    if kind not in names:
        raise ValueError(f"`kind` must be one of {sorted(names)}. Received: kind={kind!r}")
    return kt.Objective(names[kind], "max")


def search(tuner: Any, *fit_args: Any, **fit_kwargs: Any) -> list:
    """Runs `tuner.search(...)` and makes failed trials visible.

    keras-tuner marks a trial that raises as failed/invalid and goes on, so a
    search where every trial failed returns normally with no scores. This
    raises instead, with the first failed trial's error, and warns when only
    some trials failed. On a distributed worker (`KERASTUNER_TUNER_ID` not a
    chief) the chief holds the trials, and nothing is checked.

    Args:
        tuner: A keras-tuner tuner (`RandomSearch`, `BayesianOptimization`,
            `Hyperband`, ...).
        *fit_args: Passed to `tuner.search` (e.g. `x, y`).
        **fit_kwargs: Passed to `tuner.search` (e.g. `epochs`,
            `validation_data`).

    Returns:
        The completed trials (`keras_tuner.engine.trial.Trial`), in trial order.

    Raises:
        RuntimeError: If trials ran and none completed.
    """
    try:
        tuner.search(*fit_args, **fit_kwargs)
    except RuntimeError as e:
        # keras-tuner stops after `max_consecutive_failed_trials` failures with the
        # last trial's traceback; report the first one, like a search that ran out.
        failed, completed = _failed_and_completed(tuner)
        if failed and not completed:
            raise RuntimeError(_all_failed_message(failed)) from e
        raise
    failed, completed = _failed_and_completed(tuner)
    if failed and not completed:
        raise RuntimeError(_all_failed_message(failed))
    if failed:
        warnings.warn(
            f"{len(failed)} of {len(failed) + len(completed)} trials failed; the first "
            f"(trial {failed[0].trial_id}) with {_last_line(failed[0].message)}\n"
            f"{failed[0].message}",
            RuntimeWarning,
            stacklevel=2,
        )
    return completed


def _failed_and_completed(tuner: Any) -> tuple[list, list]:
    trials = getattr(tuner.oracle, "trials", None)
    if not isinstance(trials, Mapping):  # OracleClient on a distributed worker
        return [], []
    ordered = sorted(trials.values(), key=lambda t: _trial_order(t.trial_id))
    completed = [t for t in ordered if t.status == "COMPLETED"]
    failed = [t for t in ordered if t.status in ("FAILED", "INVALID")]
    return failed, completed


def _all_failed_message(failed: list) -> str:
    first = failed[0]
    return (
        f"All {len(failed)} trial(s) of the search failed. The first trial's error "
        f"(trial {first.trial_id}, status {first.status}): {_last_line(first.message)}\n"
        f"{first.message}"
    )


def _last_line(message: str | None) -> str:
    lines = [line for line in (message or "").splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(no message)"


def _trial_order(trial_id: str) -> tuple:
    return (0, int(trial_id), "") if str(trial_id).isdigit() else (1, 0, str(trial_id))


__all__ = ["ADV_ACCURACY", "CLEAN_ADV_ACCURACY", "objective", "search"]
