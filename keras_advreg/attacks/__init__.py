"""Attacks as objects, looked up by name like `keras.losses.get`.

- `FGSM`, `PGD`: NSL's perturbation math (single step; fixed-step iterations).
- `APGD` (APGD-CE / APGD-DLR), `APGDTargeted` (APGD-T): Croce & Hein's step-size-free
  attacks; `FAB` / `FABTargeted` (FAB-T): minimal perturbations to the decision boundary;
  `Square`: a gradient-free attack; `AutoAttack`: their cascade
  (`"autoattack"`, and the cheaper `"autoattack-fast"`).

`get("pgd", epsilon=0.3, steps=40)`, `get(config_dict)` or an instance go wherever an
attack is taken (`evaluate_robustness`, the callback, the tuner, the CLI).
"""

from keras_advreg.attacks.apgd import APGD, APGDTargeted
from keras_advreg.attacks.autoattack import AutoAttack
from keras_advreg.attacks.base import Attack, deserialize, get, names, register_attack, serialize
from keras_advreg.attacks.fab import FAB, FABTargeted
from keras_advreg.attacks.fgsm import FGSM
from keras_advreg.attacks.generate import generate_adversarial_examples
from keras_advreg.attacks.pgd import PGD
from keras_advreg.attacks.square import Square
from keras_advreg.ball import random_in_norm_ball

__all__ = [
    "APGD",
    "APGDTargeted",
    "Attack",
    "AutoAttack",
    "FAB",
    "FABTargeted",
    "FGSM",
    "PGD",
    "Square",
    "deserialize",
    "generate_adversarial_examples",
    "get",
    "names",
    "random_in_norm_ball",
    "register_attack",
    "serialize",
]
