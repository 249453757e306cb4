"""White-box robustness evaluation (placeholder until issue 3 lands)."""


class RobustnessReport:  # placeholder
    pass


def evaluate_robustness(*args, **kwargs):
    raise NotImplementedError("evaluate_robustness is not implemented yet")
