"""Resumable evaluations: the counts of the finished batches, kept in a file between runs.

`evaluate_robustness(..., state_path=PATH)` writes, after every batch, what the report
needs (the counts per class, per radius and per cascade stage, the first batch's
predictions, the seed, the time spent) to `PATH`, atomically (a temporary file in the
same folder, then `os.replace`). A run started again with the same `PATH` skips the
batches recorded there and reports the numbers an uninterrupted run reports: every
batch's random draws are a pure function of the seed and the batch's index.

The file is fingerprinted: the attack's configuration, the evaluation's settings, a hash
of the model's weights and a hash of every finished batch. A file written by another
evaluation is refused before any work, and never overwritten.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from typing import Any

import keras
import numpy as np

FORMAT = 1


def _update(digest: Any, array: Any) -> None:
    array = np.ascontiguousarray(keras.ops.convert_to_numpy(array))
    digest.update(f"{array.dtype.str}{array.shape}".encode())
    digest.update(array.tobytes())


def model_fingerprint(model: Any) -> str:
    """A hash of the model's weights (in order: shapes, dtypes, values), without
    random-number state.

    Layer names are left out (Keras numbers them per process: `dense_1` in one, `dense_3`
    in the next), and so is the state of a `keras.random.SeedGenerator`, which advances
    as a randomized model runs: neither makes the model a different one.
    """
    digest = hashlib.sha256()
    for variable in model.variables:
        path = getattr(variable, "path", variable.name)
        if path.rsplit("/", 1)[-1] == "seed_generator_state":
            continue
        _update(digest, variable)
    return digest.hexdigest()


def batch_fingerprint(x: Any, y: Any) -> str:
    """A hash of one batch: every feature and label (structure, shapes, dtypes, values)."""
    digest = hashlib.sha256()
    for leaf in keras.tree.flatten((x, y)):
        _update(digest, leaf)
    return digest.hexdigest()


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=repr))


class EvaluationState:
    """The finished part of one evaluation, loaded from and saved to `path`.

    Args:
        path: str or path-like. The state file (created on the first save).
        fingerprint: dict. What identifies the evaluation: the attack's config, the
            settings, the model's weight hash (JSON-ready).
    """

    def __init__(self, path: Any, fingerprint: dict):
        self.path = os.fspath(path)
        self.fingerprint = _jsonable(fingerprint)
        self.seed: int | None = None
        self.batches: list[str] = []  # fingerprints of the finished batches, in order
        self.totals: dict | None = None
        self.first: dict | None = None
        self.seconds = 0.0
        self.complete = False

    # ------------------------------------------------------------------ loading
    def load(self) -> None:
        """Reads `path` when it exists; raises ValueError when another evaluation wrote it."""
        if not os.path.exists(self.path):
            return
        try:
            with open(self.path, encoding="utf-8") as f:
                stored = json.load(f)
        except (OSError, ValueError) as e:
            raise ValueError(
                f"`state_path` {self.path!r} is not a state file of evaluate_robustness "
                f"({e}). Delete it or pass another `state_path`."
            ) from None
        if not isinstance(stored, dict) or stored.get("format") != FORMAT:
            raise ValueError(
                f"`state_path` {self.path!r} is not a state file of evaluate_robustness "
                f"(format {FORMAT}). Delete it or pass another `state_path`."
            )
        old = stored.get("fingerprint", {})
        for part, what in (
            ("model", "the model's weights"),
            ("attack", "the attack"),
            ("settings", "the evaluation's settings"),
        ):
            if old.get(part) != self.fingerprint.get(part):
                shown = "" if part == "model" else f" (stored: {old.get(part)!r}; now: "
                shown += "" if part == "model" else f"{self.fingerprint.get(part)!r})"
                raise ValueError(
                    f"`state_path` {self.path!r} was written by a different evaluation: "
                    f"{what} differ{'s' if part == 'attack' else ''}{shown}. It was left "
                    "as it is; delete it or pass another `state_path` to start over."
                )
        self.seed = stored["seed"]
        self.batches = list(stored["batches"])
        self.totals = stored["totals"]
        self.first = stored["first"]
        self.seconds = float(stored["seconds"])
        self.complete = bool(stored["complete"])

    def check_batch(self, index: int, fingerprint: str) -> bool:
        """Whether batch `index` is finished; raises ValueError when the data differ."""
        if index >= len(self.batches):
            if self.complete:
                raise ValueError(
                    f"`state_path` {self.path!r} was written by a different evaluation: "
                    f"`data` has more batches than the {len(self.batches)} it recorded. It "
                    "was left as it is; delete it or pass another `state_path` to start over."
                )
            return False
        if self.batches[index] != fingerprint:
            raise ValueError(
                f"`state_path` {self.path!r} was written by a different evaluation: batch "
                f"{index} of `data` differs from the one it recorded. It was left as it is; "
                "delete it or pass another `state_path` to start over."
            )
        return True

    # ------------------------------------------------------------------ saving
    def save(self) -> None:
        """Writes the state atomically (a complete old file or a complete new one, never half)."""
        content = {
            "format": FORMAT,
            "fingerprint": self.fingerprint,
            "seed": self.seed,
            "batches": self.batches,
            "totals": self.totals,
            "first": self.first,
            "seconds": self.seconds,
            "complete": self.complete,
        }
        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=".state-", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(content, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            if os.path.exists(temporary):
                os.unlink(temporary)
            raise


__all__ = ["EvaluationState", "batch_fingerprint", "model_fingerprint"]
