"""The norm-ball math of the attacks: kept for imports of `keras_advreg.attacks.norms`; it
lives in `keras_advreg.ball`, below both the attacks and the training."""

from keras_advreg.ball import (  # noqa: F401
    EPSILON,
    NORMS,
    project,
    random_in_norm_ball,
    random_unit_ball,
    unit_direction,
)
